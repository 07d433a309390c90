// Drives an instance actor on a real (threaded) actor system from a test:
// start it, follow its state stream, read its console, all with deadlines.
#pragma once

#include <caf/all.hpp>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "proto/apiary/v1/diagnostics.pb.h"

namespace apiary::test {

struct InstanceDriver {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  actors::instance_actor inst;
  actors::console_actor console;
  std::vector<std::string> states;  // in order, from the subscription
  std::string output;               // console output seen by this reader
  std::chrono::milliseconds reply_deadline{10000};

  static caf::actor_system_config& quiet(caf::actor_system_config& c) {
    c.set("logger.verbosity", caf::atom("quiet"));
    return c;
  }
  explicit InstanceDriver(actors::InstanceConfig c) : sys(quiet(cfg)), self(sys) {
    inst = actors::spawn_instance(sys, std::move(c));
    call(actors::subscribe_atom::value, caf::actor_cast<caf::actor>(self));
  }
  ~InstanceDriver() {
    self->send_exit(inst, caf::exit_reason::user_shutdown);
  }

  // A request that must be acknowledged; returns the error text otherwise.
  template <class... Ts>
  std::string call(Ts... xs) {
    std::string err;
    bool done = false;
    self->request(inst, reply_deadline, xs...)
        .receive([&](actors::ack_atom) { done = true; }, [&](caf::error& e) { err = actors::describe(e); });
    if (!done && err.empty()) err = "no reply";
    return err;
  }

  // Handles state events and console output until `pred` holds or the deadline passes.
  template <class Pred>
  bool wait_until(Pred pred, std::chrono::milliseconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= end) return false;
      self->receive(
          [&](actors::state_atom, const std::string&, const std::string& s, uint64_t, const std::string&, const std::string&) {
            states.push_back(s);
          },
          [&](actors::output_atom, const std::string& bytes) { output += bytes; },
          caf::after(std::chrono::milliseconds(50)) >> [] {});
    }
    return true;
  }
  bool wait_state(const std::string& s, std::chrono::milliseconds d = std::chrono::milliseconds(30000)) {
    return wait_until([&] { return !states.empty() && states.back() == s; }, d);
  }
  bool wait_output(const std::string& text, std::chrono::milliseconds d = std::chrono::milliseconds(30000)) {
    return wait_until([&] { return output.find(text) != std::string::npos; }, d);
  }
  size_t count_state(const std::string& s) const { return static_cast<size_t>(std::count(states.begin(), states.end(), s)); }

  // Attaches this test as a console reader (and the writer).
  void attach_console() {
    self->request(inst, reply_deadline, actors::console_atom::value)
        .receive([&](actors::console_actor c) { console = c; }, [](caf::error&) {});
    BOOST_REQUIRE(console);
    self->request(console, reply_deadline, actors::attach_atom::value, caf::actor_cast<caf::actor>(self), true)
        .receive([&](const std::string& history, bool) { output += history; }, [](caf::error&) {});
  }
  void type(const std::string& text) {
    self->request(console, reply_deadline, actors::input_atom::value, caf::actor_cast<caf::actor>(self), text)
        .receive([](uint64_t) {}, [](caf::error&) {});
  }
  v1::InstanceDiagnostics diagnostics() {
    v1::InstanceDiagnostics d;
    self->request(inst, reply_deadline, actors::diag_atom::value)
        .receive([&](const std::string& b) { d.ParseFromString(b); }, [](caf::error&) {});
    return d;
  }
  int32_t exit_status() {
    int32_t s = -2;
    self->request(inst, reply_deadline, actors::exit_status_atom::value)
        .receive([&](int32_t v) { s = v; }, [](caf::error&) {});
    return s;
  }
};

}  // namespace apiary::test
