// The instance, vCPU, device and console actors on the simulated vCPU
// backend under CAF's deterministic scheduler: every lifecycle path of the
// seed, the fan-out deadlines, refusals, and the state stream — with
// simulated time, so a missing ack costs no wall-clock seconds.
#define BOOST_TEST_MODULE instance_sim
#include <boost/algorithm/string/join.hpp>

#include "actors/deadline_timer.hpp"
#include "actors/device_actor.hpp"
#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "proto/apiary/v1/diagnostics.pb.h"
#include "tests/support/lifecycle_walk.hpp"
#include "tests/support/sim_harness.hpp"
#include "tests/support/test_support.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using namespace apiary::actors;
using namespace std::chrono_literals;
using vmm::SimStep;

namespace {

InstanceConfig sim_config(std::vector<std::vector<SimStep>> programs = {}, uint32_t vcpus = 2) {
  InstanceConfig c;
  c.name = "sim-vm";
  c.machine.backend = devices::VcpuBackendKind::simulated;
  c.machine.kernel = test::guest_image("hello.elf");
  c.machine.memory_mib = 16;
  c.machine.vcpus = vcpus;
  c.machine.sim_programs = std::move(programs);
  c.phase_deadline = 2000ms;
  return c;
}

struct Fixture : test::SimHarness {
  instance_actor inst;
  std::vector<std::string> seen;  // states from the subscription, in order

  void spawn(InstanceConfig c) {
    inst = spawn_instance(sys, std::move(c));
    self->send(inst, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
    run();
    expect_ack();
  }
  ~Fixture() {
    self->send_exit(inst, caf::exit_reason::user_shutdown);
    run();
  }
  // Collects state events (and nothing else) waiting in the mailbox.
  void drain_states() {
    while (take([&](state_atom, const std::string&, const std::string& s, uint64_t, const std::string&, const std::string&) {
      seen.push_back(s);
    })) {
    }
  }
  void expect_ack() {
    bool ok = false;
    std::string err;
    take([&](ack_atom) { ok = true; }, [&](caf::error& e) { err = describe(e); });
    BOOST_TEST(ok, "expected ack, got: " << err);
  }
  std::string expect_error() {
    std::string err;
    take([&](ack_atom) {}, [&](caf::error& e) { err = describe(e); });
    BOOST_TEST(!err.empty(), "expected an error");
    return err;
  }
  template <class Atom>
  void call(Atom a) {
    self->send(inst, a);
    run();
  }
  std::tuple<std::string, uint64_t, std::string> state() {
    self->send(inst, get_state_atom::value);
    run();
    std::tuple<std::string, uint64_t, std::string> out;
    // State events may be queued ahead of the reply.
    for (;;) {
      bool got_reply = false;
      take([&](const std::string& s, uint64_t g, const std::string& t) {
        out = {s, g, t};
        got_reply = true;
      },
           [&](state_atom, const std::string&, const std::string& s, uint64_t, const std::string&, const std::string&) {
             seen.push_back(s);
           });
      if (got_reply) return out;
    }
  }
  std::string current() { return std::get<0>(state()); }
  v1::InstanceDiagnostics diagnostics() {
    self->send(inst, diag_atom::value);
    run();
    v1::InstanceDiagnostics d;
    for (bool done = false; !done;) {
      take([&](const std::string& bytes) {
        d.ParseFromString(bytes);
        done = true;
      },
           [&](state_atom, const std::string&, const std::string& s, uint64_t, const std::string&, const std::string&) {
             seen.push_back(s);
           });
    }
    return d;
  }
};

std::vector<std::string> v(std::initializer_list<const char*> l) { return {l.begin(), l.end()}; }

}  // namespace

BOOST_FIXTURE_TEST_CASE(start_runs_then_pause_resume_and_poweroff, Fixture) {
  spawn(sim_config());
  call(start_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"initialize", "boot", "run"}), boost::test_tools::per_element());
  seen.clear();

  call(pause_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"quiesce"}), boost::test_tools::per_element());
  BOOST_TEST(std::get<2>(state()) == "quiesce");

  call(resume_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(current() == "run");

  seen.clear();
  call(poweroff_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"quiesce", "halt", "destroy"}), boost::test_tools::per_element());
  // Diagnostics were collected at Halt: every vCPU and every device.
  auto d = diagnostics();
  BOOST_TEST(d.vcpus_size() == 2);
  BOOST_TEST(d.devices_size() >= 4);
  BOOST_TEST(d.missing_size() == 0);
  BOOST_TEST(d.reason() == "forced poweroff");
}

// Device actors on demand (instance_actor.hpp, "Device actors"): a running
// instance whose devices only hold register state has actors for itself,
// its vCPUs and its console; its first pause gives every device one, and the
// pause reaches each (diagnostics at Halt show every device paused). A
// virtio device, whose pause waits for in-flight requests, has its actor
// from the start.
BOOST_FIXTURE_TEST_CASE(devices_get_their_actors_at_the_first_pause, Fixture) {
  for (bool rng : {false, true}) {
    auto c = sim_config();
    c.machine.rng = rng;
    const size_t devices = devices::Machine(c.machine).devices().size();
    const size_t before = sys.registry().running();
    spawn(c);
    call(start_atom::value);
    expect_ack();
    BOOST_TEST(current() == "run");
    // The instance, two vCPUs, the console, and the virtio-rng if any.
    BOOST_TEST(sys.registry().running() - before == 4u + (rng ? 1u : 0u), "rng " << rng);
    call(halt_atom::value);
    expect_ack();
    drain_states();
    BOOST_TEST(current() == "halt");
    BOOST_TEST(sys.registry().running() - before == 4u + devices, "rng " << rng);
    auto d = diagnostics();
    BOOST_TEST(static_cast<size_t>(d.devices_size()) == devices);
    for (const auto& dev : d.devices())
      BOOST_TEST(dev.counters().at("run_state") == static_cast<uint64_t>(devices::DeviceRunState::paused), dev.device());
    call(poweroff_atom::value);
    expect_ack();
    drain_states();
    BOOST_TEST(current() == "destroy");
    BOOST_TEST(sys.registry().running() - before == 1u);  // the instance itself, destroyed
    self->send_exit(inst, caf::exit_reason::user_shutdown);
    run();
  }
}

BOOST_FIXTURE_TEST_CASE(forced_reset_reboots_back_to_run, Fixture) {
  spawn(sim_config());
  call(start_atom::value);
  expect_ack();
  drain_states();
  seen.clear();
  call(hard_reset_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"quiesce", "halt", "reboot", "boot", "run"}), boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(calls_in_the_wrong_state_are_refused_and_change_nothing, Fixture) {
  spawn(sim_config());
  call(resume_atom::value);
  BOOST_TEST(expect_error().find("wrong_state: cannot resume instance 'sim-vm' in state start") == 0);
  call(pause_atom::value);
  BOOST_TEST(expect_error().find("wrong_state") == 0);
  call(soft_reset_atom::value);
  BOOST_TEST(expect_error().find("wrong_state") == 0);
  call(hard_reset_atom::value);
  BOOST_TEST(expect_error().find("wrong_state") == 0);
  auto [s, gen, target] = state();
  BOOST_TEST(s == "start");
  BOOST_TEST(gen == 0u);
  BOOST_TEST(target == "");
  call(start_atom::value);
  expect_ack();
  call(start_atom::value);
  BOOST_TEST(expect_error().find("wrong_state") == 0);
  call(poweroff_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(current() == "destroy");
  call(poweroff_atom::value);
  BOOST_TEST(expect_error().find("destroyed") == 0);
  call(start_atom::value);
  BOOST_TEST(expect_error().find("wrong_state") == 0);
}

BOOST_FIXTURE_TEST_CASE(the_power_button_of_a_guest_that_has_not_armed_it_is_refused, Fixture) {
  // The simulated guest never enables PWRBTN_EN: a soft poweroff would wait
  // for nothing, so it is refused and the VM keeps running (the node then
  // powers it off at once for Nova's stop).
  spawn(sim_config());
  call(start_atom::value);
  expect_ack();
  drain_states();
  call(soft_off_atom::value);
  BOOST_TEST(expect_error() == "wrong_state: the guest has not armed the ACPI power button");
  BOOST_TEST(current() == "run");
}

BOOST_FIXTURE_TEST_CASE(guest_debug_exit_destroys_with_its_status, Fixture) {
  spawn(sim_config({{{SimStep::Kind::pio_write, layout::kPostPort, 1, 0x11},
                     {SimStep::Kind::pio_write, layout::kDebugExitPort, 1, 3}}}));
  call(start_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"initialize", "boot", "run", "quiesce", "halt", "destroy"}), boost::test_tools::per_element());
  self->send(inst, exit_status_atom::value);
  run();
  int32_t status = -1;
  take([&](int32_t s) { status = s; });
  BOOST_TEST(status == 7);
}

BOOST_FIXTURE_TEST_CASE(triple_faults_reboot_until_powered_off, Fixture) {
  // The simulated guest triple-faults on every boot (its program replays).
  spawn(sim_config({{{SimStep::Kind::pio_write, layout::kPostPort, 1, 1}, {SimStep::Kind::shutdown}}}, 1));
  // This guest never quiesces, so the scheduler runs a bounded number of jobs
  // instead of running to quiescence.
  self->send(inst, start_atom::value);
  for (int i = 0; i < 300 && sched.try_run_once(); ++i) {
  }
  expect_ack();
  drain_states();
  const auto reboots = std::count(seen.begin(), seen.end(), "reboot");
  BOOST_TEST(reboots >= 2);
  self->send(inst, poweroff_atom::value);
  for (int i = 0; i < 2000 && sched.try_run_once(); ++i) {
  }
  drain_states();
  BOOST_REQUIRE(!seen.empty());
  BOOST_TEST(seen.back() == "destroy");
}

BOOST_FIXTURE_TEST_CASE(guest_fault_halts_and_keeps_diagnostics, Fixture) {
  spawn(sim_config({{{SimStep::Kind::internal_error}}}, 1));
  call(start_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"initialize", "boot", "run", "quiesce", "halt"}), boost::test_tools::per_element());
  auto d = diagnostics();
  BOOST_TEST(d.reason().find("guest_fault: vCPU 0: internal error (suberror 1: emulation failure)") == 0);
  BOOST_TEST(d.vcpus_size() == 1);
  // Halt is kept until someone destroys it.
  BOOST_TEST(std::get<2>(state()) == "halt");
  call(poweroff_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(current() == "destroy");
}

// A running instance whose pause is under way and stuck: com1 (device 0)
// swallows its pause request.
void pause_with_com1_silent(Fixture& f) {
  f.spawn(sim_config());
  f.call(start_atom::value);
  f.expect_ack();
  f.drain_states();
  f.self->send(f.inst, fault_hook_atom::value, std::string("ignore_pause"), 0u);  // device 0 = com1
  f.run();
  f.expect_ack();
  f.call(pause_atom::value);
  f.expect_ack();
  f.drain_states();
}

BOOST_FIXTURE_TEST_CASE(a_device_that_never_acks_pause_is_a_named_fault, Fixture) {
  pause_with_com1_silent(*this);
  BOOST_TEST(current() == "run");  // the device pause phase is still waiting
  advance(2500ms);                 // past the phase deadline, in simulated time
  drain_states();
  BOOST_TEST(current() == "destroy");
  auto d = diagnostics();
  BOOST_TEST_MESSAGE("reason: " << d.reason());
  BOOST_TEST(d.reason().find("ack_timeout in device pause: device com1: ") == 0);
  BOOST_TEST(d.reason().find("request_timeout") != std::string::npos);
  // Only the silent device is named: the others answered before the deadline.
  BOOST_TEST(d.reason().find("device ", d.reason().find("com1")) == std::string::npos, d.reason());
}

// The fan-out timer is the instance's own delayed message: the same
// message from anyone else (any generation) expires nothing.
BOOST_FIXTURE_TEST_CASE(a_forged_fan_out_deadline_changes_nothing, Fixture) {
  pause_with_com1_silent(*this);
  for (uint64_t id = 0; id < 64; ++id) self->send(inst, fan_out_deadline_atom::value, id);
  run();
  drain_states();
  BOOST_TEST(current() == "run");  // the device pause phase still waits for com1
  advance(2500ms);                 // its real deadline
  drain_states();
  BOOST_TEST(current() == "destroy");
  BOOST_TEST(diagnostics().reason().find("ack_timeout in device pause: device com1: ") == 0);
}

// One timer serves every phase under way: pauses and resumes that follow
// the start within its deadline file nothing more with the clock.
BOOST_FIXTURE_TEST_CASE(phases_within_a_deadline_share_one_timer, Fixture) {
  spawn(sim_config());
  call(start_atom::value);
  expect_ack();
  drain_states();
  BOOST_REQUIRE(current() == "run");
  const size_t filed = sched.clock().schedule().size();  // the start phases' timer among them
  for (int i = 0; i < 3; ++i) {
    call(pause_atom::value);
    expect_ack();
    call(resume_atom::value);
    expect_ack();
  }
  drain_states();
  BOOST_TEST(current() == "run");
  BOOST_TEST(sched.clock().schedule().size() == filed);  // twelve phases, no new clock entry
}

// A phase that starts while the timer is set for an earlier phase's deadline
// fails at its own deadline: not when that timer fires, and not never.
BOOST_FIXTURE_TEST_CASE(a_later_phase_fails_at_its_own_deadline_not_the_shared_timers, Fixture) {
  spawn(sim_config());
  call(start_atom::value);  // t = 0: the start phases set the timer for t = 2.0 s
  expect_ack();
  drain_states();
  advance(1500ms);  // t = 1.5 s: a pause whose device phase com1 never answers (deadline 3.5 s)
  self->send(inst, fault_hook_atom::value, std::string("ignore_pause"), 0u);
  run();
  expect_ack();
  call(pause_atom::value);
  expect_ack();
  drain_states();
  advance(600ms);  // t = 2.1 s: the shared timer has fired; the pause is not due yet
  drain_states();
  BOOST_TEST(current() == "run");
  advance(1300ms);  // t = 3.4 s
  drain_states();
  BOOST_TEST(current() == "run");
  advance(200ms);  // t = 3.6 s: past the pause's own deadline
  drain_states();
  BOOST_TEST(current() == "destroy");
  BOOST_TEST(diagnostics().reason().find("ack_timeout in device pause: device com1: ") == 0);
}

// A device actor takes its five lifecycle operations as one message; any
// other operation is refused by name and changes nothing.
BOOST_FIXTURE_TEST_CASE(a_device_actor_refuses_an_unknown_lifecycle_operation, test::SimHarness) {
  auto machine = std::make_shared<devices::Machine>(sim_config().machine);
  devices::Device& com1 = *machine->devices().front();
  auto dev = spawn_device(sys, machine, com1);
  const auto before = com1.run_state();
  auto bad = ask<ack_atom>(dev, device_op_atom::value, caf::atom("reboot"));
  BOOST_REQUIRE(!bad);
  BOOST_TEST(describe(bad.error()).find("invalid_argument") != std::string::npos, describe(bad.error()));
  BOOST_TEST(describe(bad.error()).find("unknown lifecycle operation reboot") != std::string::npos);
  BOOST_TEST(static_cast<int>(com1.run_state()) == static_cast<int>(before));
  for (caf::atom_value op : std::initializer_list<caf::atom_value>{start_atom::value, pause_atom::value,
                                                                   resume_atom::value, reset_atom::value,
                                                                   halt_atom::value})
    BOOST_TEST(static_cast<bool>(ask<ack_atom>(dev, device_op_atom::value, op)), to_string(op));
  BOOST_TEST(static_cast<int>(com1.run_state()) == static_cast<int>(devices::DeviceRunState::halted));
  self->send_exit(dev, caf::exit_reason::user_shutdown);
  run();
}

BOOST_FIXTURE_TEST_CASE(a_vcpu_that_ignores_kicks_is_a_named_fault, Fixture) {
  spawn(sim_config());
  call(start_atom::value);
  expect_ack();
  self->send(inst, fault_hook_atom::value, std::string("ignore_kicks"), 1u);
  run();
  expect_ack();
  call(poweroff_atom::value);
  expect_ack();
  advance(2500ms);
  drain_states();
  BOOST_TEST(current() == "destroy");
  auto d = diagnostics();
  BOOST_TEST(d.reason().find("ack_timeout in vcpu hold: vcpu-1: ") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(boot_waits_for_a_console_reader, Fixture) {
  InstanceConfig c = sim_config();
  c.wait_for_console = true;
  c.console_wait = 10000ms;
  spawn(std::move(c));
  call(start_atom::value);
  expect_ack();
  drain_states();
  BOOST_TEST(seen == v({"initialize", "boot"}), boost::test_tools::per_element());
  advance(5000ms);  // half the wait: still gated
  BOOST_TEST(current() == "boot");
  self->send(inst, console_atom::value);
  run();
  console_actor con;
  take([&](console_actor c2) { con = c2; });
  BOOST_REQUIRE(con);
  self->send(con, attach_atom::value, caf::actor_cast<caf::actor>(self), true);
  run();
  drain_states();
  BOOST_TEST(current() == "run");
}

BOOST_FIXTURE_TEST_CASE(boot_condition_timeout_is_a_named_fault, Fixture) {
  InstanceConfig c = sim_config();
  c.wait_for_console = true;
  c.console_wait = 1000ms;
  spawn(std::move(c));
  call(start_atom::value);
  expect_ack();
  advance(1500ms);
  drain_states();
  BOOST_TEST(current() == "destroy");
  auto d = diagnostics();
  BOOST_TEST(d.reason().find("boot condition wait_for_console not met within 1000 ms") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(wait_state_answers_after_a_generation, Fixture) {
  spawn(sim_config());
  self->send(inst, wait_state_atom::value, uint64_t{2});
  run();
  bool early = take([](const std::string&, uint64_t) {});
  BOOST_TEST(!early);  // nothing happened yet: the request waits
  call(start_atom::value);
  std::string s;
  uint64_t g = 0;
  for (int i = 0; i < 10 && g == 0; ++i)
    take([&](const std::string& st, uint64_t gen) { s = st; g = gen; }, [](ack_atom) {},
         [&](state_atom, const std::string&, const std::string& st, uint64_t, const std::string&, const std::string&) { seen.push_back(st); });
  BOOST_TEST(g == 3u);
  BOOST_TEST(s == "run");
}

// Every transition of the table, and no other, taken by the real actors on
// the simulated backend; refused calls change nothing (see above).
BOOST_AUTO_TEST_CASE(table_walk_takes_every_transition_and_only_those) {
  std::set<test::Transition> observed;
  auto scenario = [&](InstanceConfig c, auto&& steps) {
    Fixture f;
    f.spawn(std::move(c));
    steps(f);
    f.drain_states();
    BOOST_TEST_MESSAGE("states: " << boost::algorithm::join(f.seen, " "));
    auto t = test::transitions_of(f.seen);
    observed.insert(t.begin(), t.end());
  };
  // start -> initialize -> boot -> run -> quiesce -> run (pause, resume),
  // then a forced reset (quiesce -> halt -> reboot -> boot -> run) and a
  // poweroff (quiesce -> halt -> destroy).
  scenario(sim_config(), [](Fixture& f) {
    f.call(start_atom::value);
    f.call(pause_atom::value);
    f.call(resume_atom::value);
    f.call(hard_reset_atom::value);
    f.call(poweroff_atom::value);
  });
  // boot -> quiesce: powered off while the boot condition holds it.
  InstanceConfig gated = sim_config();
  gated.wait_for_console = true;
  scenario(std::move(gated), [](Fixture& f) {
    f.call(start_atom::value);
    f.call(poweroff_atom::value);
  });
  // start -> destroy: powered off before it was ever started.
  scenario(sim_config(), [](Fixture& f) { f.call(poweroff_atom::value); });
  // initialize -> destroy: the machine cannot be built (not a kernel).
  InstanceConfig broken = sim_config();
  broken.machine.kernel = {0x7f, 'E', 'L', 'F'};
  scenario(std::move(broken), [](Fixture& f) { f.call(start_atom::value); });
  test::check_walk_covers_the_table(observed);
}

// actors/deadline_timer.hpp's Deadlines, alone: what a node's state waits
// and the simulator's placements keep. Deadlines end in their order (ties
// in the order they were added), one removed in time never ends, and the
// clock holds one live timer however many deadlines there are.
namespace {
using test_dl_atom = caf::atom_constant<caf::atom("testdl")>;
using add_dl_atom = caf::atom_constant<caf::atom("adddl")>;
using remove_dl_atom = caf::atom_constant<caf::atom("rmdl")>;

struct DeadlinesOwner {
  Deadlines<int, test_dl_atom> deadlines;
  std::map<int, Deadlines<int, test_dl_atom>::entry> open;
};

caf::behavior deadlines_owner(caf::stateful_actor<DeadlinesOwner>* self, std::shared_ptr<std::vector<int>> ended) {
  return {
      [=](add_dl_atom, int key, int ms) {
        self->state.open[key] = self->state.deadlines.add(self, self->clock().now() + std::chrono::milliseconds(ms), key);
      },
      [=](remove_dl_atom, int key) {
        self->state.deadlines.remove(self->state.open.at(key));
        self->state.open.erase(key);
      },
      [=](test_dl_atom, uint64_t generation) {
        self->state.deadlines.fired(self, generation, [&](int key) {
          self->state.open.erase(key);
          ended->push_back(key);
        });
      },
  };
}
}  // namespace

BOOST_FIXTURE_TEST_CASE(deadlines_end_in_order_under_one_timer, test::SimHarness) {
  auto ended = std::make_shared<std::vector<int>>();
  auto owner = sys.spawn(deadlines_owner, ended);
  const size_t before = sched.clock().schedule().size();
  for (auto [key, ms] : std::vector<std::pair<int, int>>{{1, 300}, {2, 100}, {3, 200}, {4, 100}, {5, 400}}) {
    self->send(owner, add_dl_atom::value, key, ms);
    run();
  }
  // 1 set the timer for 300 ms, 2 for 100 ms; 3, 4 and 5 filed nothing.
  BOOST_TEST(sched.clock().schedule().size() - before == 2u);
  self->send(owner, remove_dl_atom::value, 3);
  run();
  advance(150ms);
  BOOST_TEST(*ended == (std::vector<int>{2, 4}));
  advance(100ms);  // 3's deadline: it was removed in time
  BOOST_TEST(*ended == (std::vector<int>{2, 4}));
  advance(100ms);  // the superseded 300 ms timer and the re-armed one
  BOOST_TEST(*ended == (std::vector<int>{2, 4, 1}));
  // A forged timer message (any generation) ends nothing early.
  for (uint64_t g = 0; g < 8; ++g) self->send(owner, test_dl_atom::value, g);
  run();
  BOOST_TEST(*ended == (std::vector<int>{2, 4, 1}));
  advance(100ms);
  BOOST_TEST(*ended == (std::vector<int>{2, 4, 1, 5}));
  BOOST_TEST(sched.clock().schedule().size() == before);  // nothing left with the clock
}
