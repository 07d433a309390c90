// A process's main actor (the controller, a node) stops on its own only
// when it cannot go on: the controller's store could not commit a batch of
// writes (a failed fsync), after which what it holds in memory is not what
// the file holds; a handler of either threw (actors/errors.hpp, crashed).
// A process that kept running then would look alive and do nothing: a
// controller's API would answer nothing, a node would keep its connection
// and never check in again. So `apiary controller`, `apiary cluster` and
// `apiary node` watch it, and such a stop ends the process with exit status
// kActorFailedStatus and the reason on stderr, for the supervisor to restart
// it (a new controller recovers from the store; a new node registers again).
#pragma once

#include <signal.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <memory>
#include <mutex>
#include <string>

#include "actors/errors.hpp"

namespace apiary::apps {

inline constexpr int kActorFailedStatus = 5;

class ActorWatch {
 public:
  // Watches `watched`; its stop for any reason but a user_shutdown is
  // recorded and raises SIGTERM, which the command's sigwait takes.
  ActorWatch(caf::actor_system& sys, const caf::actor& watched) : failure_(std::make_shared<Failure>()) {
    auto failure = failure_;
    watcher_ = sys.spawn([watched, failure](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(watched);
      self->set_down_handler([self, failure](caf::down_msg& m) {
        if (m.reason && m.reason != caf::exit_reason::user_shutdown) {
          {
            std::lock_guard lock(failure->mutex);
            failure->reason = actors::describe(m.reason);  // "crashed: node ...", not CAF's error(12, 'apiary', ...)
          }
          ::kill(::getpid(), SIGTERM);
        }
        self->quit();
      });
      return {[](int) {}};  // nothing to handle: it only watches
    });
  }
  ~ActorWatch() { caf::anon_send_exit(watcher_, caf::exit_reason::user_shutdown); }
  ActorWatch(const ActorWatch&) = delete;
  ActorWatch& operator=(const ActorWatch&) = delete;

  // Why the watched actor stopped, or "" while it runs (or was told to stop).
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
