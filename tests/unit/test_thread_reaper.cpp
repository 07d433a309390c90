// The thread reaper (actors/thread_reaper.hpp): handing a thread over never
// waits for it; a thread that needs several kicks to leave its blocking call
// is kicked again until it does; what the thread used is released only after
// the join; and a thread that never stops is said on stderr and does not hold
// the others up.
#define BOOST_TEST_MODULE thread_reaper
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "actors/thread_reaper.hpp"

using apiary::actors::ThreadReaper;
using namespace std::chrono_literals;

namespace {

// A thread blocked until it has been kicked `needed` times (a vCPU whose
// first kicks land before it enters the guest, or that the guest holds).
struct Stubborn {
  explicit Stubborn(int needed) : needed_(needed) {
    thread = std::thread([this] {
      std::unique_lock lock(m_);
      cv_.wait(lock, [&] { return kicks_ >= needed_ || let_go_; });
      lock.unlock();
      finished->store(true);
    });
  }
  void kick() {
    {
      std::lock_guard lock(m_);
      ++kicks_;
    }
    cv_.notify_all();
  }
  // Leaves without more kicks (the test's own way out).
  void let_go() {
    {
      std::lock_guard lock(m_);
      let_go_ = true;
    }
    cv_.notify_all();
  }
  int kicks() {
    std::lock_guard lock(m_);
    return kicks_;
  }
  ThreadReaper::Job job(std::shared_ptr<void> keep, Stubborn* self_for_kick) {
    ThreadReaper::Job j;
    j.thread = std::move(thread);
    j.finished = finished;
    j.kick = [self_for_kick] { self_for_kick->kick(); };
    j.keep = std::move(keep);
    j.what = "a test thread";
    return j;
  }

  std::thread thread;
  std::shared_ptr<std::atomic<bool>> finished = std::make_shared<std::atomic<bool>>(false);

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int kicks_ = 0;
  bool let_go_ = false;
  const int needed_;
};

ThreadReaper::Timing fast() {
  ThreadReaper::Timing t;
  t.poll = 1ms;
  t.kick_interval = 5ms;
  t.warn_after = 200ms;
  t.drain_at_exit = 300ms;
  return t;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_thread_that_needs_several_kicks_is_kicked_until_it_leaves_then_joined) {
  ThreadReaper reaper(fast());
  auto s = std::make_shared<Stubborn>(5);
  std::weak_ptr<Stubborn> watch = s;
  const auto t0 = std::chrono::steady_clock::now();
  Stubborn* raw = s.get();
  reaper.reap(raw->job(s, raw));
  s.reset();  // the reaper's `keep` is now the only owner
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 50ms));  // handing over does not wait
  BOOST_TEST(reaper.drain(5s));
  BOOST_TEST(reaper.pending() == 0u);
  BOOST_TEST(watch.expired());  // released after the join
}

BOOST_AUTO_TEST_CASE(what_a_thread_uses_stays_until_it_is_joined) {
  ThreadReaper reaper(fast());
  auto s = std::make_shared<Stubborn>(1 << 30);  // does not leave on kicks in this test
  std::weak_ptr<Stubborn> watch = s;
  Stubborn* raw = s.get();
  reaper.reap(raw->job(s, raw));
  s.reset();
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(reaper.pending() == 1u);
  BOOST_TEST(!watch.expired());  // still in use by the running thread
  BOOST_TEST(raw->kicks() > 1);   // kicked again, not once
  raw->let_go();
  BOOST_TEST(reaper.drain(5s));
  BOOST_TEST(watch.expired());
}

BOOST_AUTO_TEST_CASE(a_thread_that_never_stops_holds_up_no_other) {
  ThreadReaper reaper(fast());
  auto stuck = std::make_shared<Stubborn>(1 << 30);  // never kicked enough in this test
  Stubborn* stuck_raw = stuck.get();
  reaper.reap(stuck_raw->job(stuck, stuck_raw));
  auto quick = std::make_shared<Stubborn>(1);
  std::weak_ptr<Stubborn> quick_watch = quick;
  Stubborn* quick_raw = quick.get();
  reaper.reap(quick_raw->job(quick, quick_raw));
  quick.reset();
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (!quick_watch.expired() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
  BOOST_TEST(quick_watch.expired());
  BOOST_TEST(!reaper.drain(300ms));  // the stuck one is still there
  BOOST_TEST(reaper.pending() == 1u);
  // Let it go before the reaper ends (its destructor would leave it behind).
  stuck_raw->let_go();
  stuck.reset();
  BOOST_TEST(reaper.drain(5s));
}

BOOST_AUTO_TEST_CASE(a_thread_that_is_not_running_is_released_at_once) {
  ThreadReaper reaper(fast());
  auto keep = std::make_shared<int>(7);
  std::weak_ptr<int> watch = keep;
  ThreadReaper::Job j;  // no thread
  j.keep = std::move(keep);
  reaper.reap(std::move(j));
  BOOST_TEST(watch.expired());
  BOOST_TEST(reaper.pending() == 0u);
}
