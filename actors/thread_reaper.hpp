// Joins threads that were told to stop, off the caller's thread.
//
// Why: a vCPU actor's thread is stopped when the actor ends, on whichever
// CAF worker runs its cleanup. Joining it there waits for the thread to
// leave KVM_RUN, which a kick normally brings about in microseconds; but a
// vCPU that does not come out (seen under TCG's nested SVM: a CPU that stays
// in the nested guest, docs/kvm-vm.md) held that worker for good, and with
// a few such vCPUs every worker of a node's scheduler: the node stopped
// checking in while its process looked alive (chaos suite, 2026-12-06).
// The reaper takes the thread over instead, kicks it again at an interval
// until it has finished (a kick can also land just before the vCPU enters
// the guest), joins it, and only then lets go of what the thread used.
//
// One reaper thread per process, started on first use. Nothing here knows
// about CAF: a handed-over thread releases its own actor handles.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace apiary::actors {

class ThreadReaper {
 public:
  struct Job {
    std::thread thread;
    // Set by the thread as its last step: joining it then returns at once.
    std::shared_ptr<std::atomic<bool>> finished;
    // Makes the thread leave a blocking call (e.g. a vCPU kick); called
    // again every kick_interval until the thread has finished.
    std::function<void()> kick;
    // What the thread uses, released only after the join.
    std::shared_ptr<void> keep;
    std::string what;  // for the log: "vCPU 0 of instance i-..."
  };

  struct Timing {
    std::chrono::milliseconds poll{5};             // how often finished flags are looked at
    std::chrono::milliseconds kick_interval{50};   // between kicks of one thread
    std::chrono::milliseconds warn_after{10000};   // a thread still running then is said once (stderr)
    std::chrono::milliseconds drain_at_exit{2000}; // the destructor's wait before it detaches the rest
  };

  explicit ThreadReaper(Timing t);
  ~ThreadReaper();
  ThreadReaper(const ThreadReaper&) = delete;
  ThreadReaper& operator=(const ThreadReaper&) = delete;

  // The process's reaper.
  static ThreadReaper& instance();

  // Takes the job's thread over (it must have been told to stop already).
  void reap(Job job);
  // Threads handed over and not joined yet.
  size_t pending() const;
  // Waits until every thread handed over so far is joined; false if some
  // are still running at `deadline`.
  bool drain(std::chrono::milliseconds deadline);

 private:
  struct Entry {
    Job job;
    std::chrono::steady_clock::time_point since, last_kick;
    bool warned = false;
  };
  void loop();

  const Timing timing_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;       // jobs arrived, or stop
  std::condition_variable drained_;  // a job was joined
  std::vector<Entry> entries_;
  size_t joining_ = 0;  // taken out of entries_, being joined
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace apiary::actors
