// Shared by the control-plane suites: how an error answer reads in a test
// message — control-plane errors as "409: message", others as describe() —
// and the harness they build their clusters on: the controller and node
// settings they have in common, and the record queries they all make.
#pragma once

#include <caf/error.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "cluster/control_types.hpp"
#include "cluster/controller_actor.hpp"
#include "actors/errors.hpp"
#include "cluster/node_actor.hpp"
#include "tests/support/sim_harness.hpp"
#include "tests/support/test_support.hpp"

namespace apiary::test {

inline std::string show(const caf::error& e) {
  if (actors::http_status(e)) return std::to_string(actors::http_status(e)) + ": " + actors::message_of(e);
  if (!e) return "no error";
  return actors::describe(e);
}

// A controller and nodes under the deterministic scheduler. Suites spawn
// `ctl` from controller_config() and their nodes from node_config(), then
// adjust what they test.
struct ControlPlaneHarness : SimHarness {
  actors::controller_actor ctl;

  // An in-memory store, seeded ids, a 5 s sweep and 30 s action deadlines.
  static actors::ControllerConfig controller_config(uint64_t id_seed) {
    using namespace std::chrono_literals;
    actors::ControllerConfig c;
    c.store_path = ":memory:";
    c.id_seed = id_seed;
    c.sweep_interval = 5s;
    c.action_deadline = 30s;
    return c;
  }
  // A node on the simulated vCPU backend, 1 GiB, checking in every 10 s,
  // with the in-tree guests as its embedded images.
  actors::NodeConfig node_config(const std::string& name, uint32_t vcpus) const {
    using namespace std::chrono_literals;
    actors::NodeConfig n;
    n.name = name;
    n.vcpus = vcpus;
    n.memory_mib = 1024;
    n.controller = caf::actor_cast<caf::actor>(ctl);
    n.checkin_interval = 10s;
    n.simulated = true;
    n.embedded_guest = [](const std::string& g) { return guest_image(g + ".elf"); };
    n.phase_deadline = 2s;
    n.state_deadline = 10s;
    n.inline_file_jobs = true;  // disk-file jobs ordered by the test scheduler, not a thread
    return n;
  }

  actors::InstanceInfo get(const std::string& id) {
    auto r = ask<actors::InstanceInfo>(ctl, actors::get_atom::value, id);
    if (!r) BOOST_FAIL("get failed: " << show(r.error()));
    return *r;
  }
  std::vector<actors::ActionInfo> actions(const std::string& id) {
    auto r = ask<std::vector<actors::ActionInfo>>(ctl, actors::actions_atom::value, id);
    BOOST_REQUIRE(r);
    return *r;
  }
};

}  // namespace apiary::test
