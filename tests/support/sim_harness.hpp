// CAF's deterministic test scheduler driven from Boost.Test: every actor
// runs on one thread, only when the test says so, and time moves only when
// the test advances it. (CAF's own test DSL needs CAF's runner, so this is
// the small part of it the suites need.)
#pragma once

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <optional>

namespace apiary::test {

inline caf::actor_system_config& deterministic_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("testing"));
  cfg.set("logger.verbosity", caf::atom("quiet"));
  return cfg;
}

struct SimHarness {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;

  SimHarness()
      : sys(deterministic_config(cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys) {}

  // Runs every runnable job (and the jobs they create) to quiescence.
  void run() { sched.run(); }
  // Moves simulated time forward, firing due timeouts, then runs.
  void advance(std::chrono::milliseconds d) {
    sched.advance_time(d);
    sched.run();
  }

  // Sends a message, runs the system to quiescence, takes the reply (an
  // error, or request_timeout when nothing answered).
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& h, Ts... xs) {
    self->send(h, xs...);
    run();
    std::optional<T> out;
    caf::error err;
    bool got = take([&](const T& v) { out = v; }, [&](caf::error& e) { err = e; });
    if (!got) return caf::make_error(caf::sec::request_timeout);
    if (out) return std::move(*out);
    return err;
  }

  // Moves simulated time in steps so every periodic timer fires in order.
  void pass(std::chrono::milliseconds total, std::chrono::milliseconds step = std::chrono::seconds(5)) {
    for (std::chrono::milliseconds t{0}; t < total; t += step) advance(step);
  }

  // Takes the next message already in the test's mailbox, if any.
  template <class... Fs>
  bool take(Fs... fs) {
    bool got = true;
    self->receive(fs..., caf::after(std::chrono::seconds(0)) >> [&] { got = false; });
    return got;
  }
};

}  // namespace apiary::test
