// The controller actor stops on its own only when it cannot go on: its
// store could not commit a batch of writes (a failed fsync), after which
// what it holds in memory is not what the file holds. A process that kept
// serving its API then would answer nothing (every request to a dead actor
// fails); so `apiary controller` and `apiary cluster` watch it, and such a
// stop ends the process with exit status kControllerFailedStatus and the
// reason on stderr, for the supervisor to restart it (a new controller
// recovers from the store).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <memory>
#include <mutex>
#include <string>

namespace apiary::apps {

inline constexpr int kControllerFailedStatus = 5;

class ControllerWatch {
 public:
  // Watches `controller`; its stop for any reason but a user_shutdown is
  // recorded and raises SIGTERM, which the command's sigwait takes.
  ControllerWatch(caf::actor_system& sys, const caf::actor& controller) : failure_(std::make_shared<Failure>()) {
    auto failure = failure_;
    watcher_ = sys.spawn([controller, failure](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(controller);
      self->set_down_handler([self, failure](caf::down_msg& m) {
        if (m.reason && m.reason != caf::exit_reason::user_shutdown) {
          {
            std::lock_guard lock(failure->mutex);
            failure->reason = self->system().render(m.reason);
          }
          ::kill(::getpid(), SIGTERM);
        }
        self->quit();
      });
      return {[](int) {}};  // nothing to handle: it only watches
    });
  }
  ~ControllerWatch() { caf::anon_send_exit(watcher_, caf::exit_reason::user_shutdown); }
  ControllerWatch(const ControllerWatch&) = delete;
  ControllerWatch& operator=(const ControllerWatch&) = delete;

  // Why the controller stopped, or "" while it runs (or was told to stop).
  std::string failure() const {
    std::lock_guard lock(failure_->mutex);
    return failure_->reason;
  }

 private:
  struct Failure {
    std::mutex mutex;
    std::string reason;
  };
  std::shared_ptr<Failure> failure_;
  caf::actor watcher_;
};

}  // namespace apiary::apps
