#include "actors/thread_reaper.hpp"

#include <cstdio>

namespace apiary::actors {

ThreadReaper::ThreadReaper(Timing t) : timing_(t) {
  thread_ = std::thread([this] { loop(); });
}

ThreadReaper::~ThreadReaper() {
  std::unique_lock lock(mutex_);
  drained_.wait_for(lock, timing_.drain_at_exit, [&] { return entries_.empty() && joining_ == 0; });
  // Still running at exit: left to the process's end. What they use is
  // never released (it is still in use); their std::thread is detached.
  for (auto& e : entries_) {
    std::fprintf(stderr, "apiary: %s did not stop before the process ended\n", e.job.what.c_str());
    e.job.thread.detach();
    new std::shared_ptr<void>(std::move(e.job.keep));  // deliberately leaked
  }
  entries_.clear();
  stopping_ = true;
  cv_.notify_all();
  lock.unlock();
  thread_.join();
}

ThreadReaper& ThreadReaper::instance() {
  static ThreadReaper reaper{Timing{}};
  return reaper;
}

void ThreadReaper::reap(Job job) {
  if (!job.thread.joinable()) return;  // nothing runs: what it kept goes now
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  entries_.push_back(Entry{std::move(job), now, now});
  cv_.notify_one();
}

size_t ThreadReaper::pending() const {
  std::lock_guard lock(mutex_);
  return entries_.size() + joining_;
}

bool ThreadReaper::drain(std::chrono::milliseconds deadline) {
  std::unique_lock lock(mutex_);
  return drained_.wait_for(lock, deadline, [&] { return entries_.empty() && joining_ == 0; });
}

void ThreadReaper::loop() {
  using Clock = std::chrono::steady_clock;
  std::unique_lock lock(mutex_);
  for (;;) {
    if (entries_.empty()) {
      if (stopping_) return;
      cv_.wait(lock, [&] { return stopping_ || !entries_.empty(); });
      continue;
    }
    std::vector<Entry> done;
    std::vector<std::function<void()>> kicks;
    std::vector<std::string> late;
    const auto now = Clock::now();
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->job.finished && it->job.finished->load()) {
        done.push_back(std::move(*it));
        it = entries_.erase(it);
        continue;
      }
      if (now - it->last_kick >= timing_.kick_interval) {
        kicks.push_back(it->job.kick);
        it->last_kick = now;
      }
      if (!it->warned && now - it->since >= timing_.warn_after) {
        late.push_back(it->job.what);
        it->warned = true;
      }
      ++it;
    }
    joining_ += done.size();
    lock.unlock();
    for (auto& k : kicks)
      if (k) k();
    for (auto& w : late)
      std::fprintf(stderr, "apiary: %s has not stopped %.1f s after it was told to; still kicking it\n", w.c_str(),
                   static_cast<double>(timing_.warn_after.count()) / 1000.0);
    for (auto& d : done) {
      d.job.thread.join();  // finished: returns at once
      d.job.keep.reset();
    }
    const size_t joined = done.size();
    done.clear();
    lock.lock();
    joining_ -= joined;
    if (joined) drained_.notify_all();
    if (!entries_.empty()) cv_.wait_for(lock, timing_.poll);
  }
}

}  // namespace apiary::actors
