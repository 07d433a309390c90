// The deterministic failure simulator (sim/, `apiary simulate`) on the
// scenarios in tests/sim/scenarios/: each scenario's expected outcome, the
// determinism of the trace, seed sweeps, and a deliberately broken rule that
// the invariants must catch (so we know they can fail).
#define BOOST_TEST_MODULE simulate
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "apps/simulate_command.hpp"
#include "sim/invariants.hpp"
#include "sim/scenario.hpp"
#include "sim/simulator.hpp"

using namespace apiary;

namespace {

std::string scenario_path(const std::string& name) {
  return (std::filesystem::path(__FILE__).parent_path() / "scenarios" / (name + ".textproto")).string();
}

sim::SimResult run(const std::string& name, uint64_t seed = 1, bool keep = false) {
  sim::SimOptions o;
  o.seed = seed;
  o.keep_trace = keep;
  o.scenario_path = scenario_path(name);
  return sim::simulate(sim::load_scenario(o.scenario_path), o);
}

uint64_t counter(const v1::SimReport& r, const std::string& key) {
  auto it = r.counters().find(key);
  return it == r.counters().end() ? 0 : it->second;
}

std::set<std::string> violated(const v1::SimReport& r) {
  std::set<std::string> out;
  for (const auto& v : r.violations()) out.insert(v.invariant());
  return out;
}

// A scenario passes when it meets its own expectations (scenario.expect).
void expect_ok(const sim::SimResult& r) {
  for (const auto& f : r.report.expectation_failures()) BOOST_ERROR(r.report.scenario() << ": " << f);
  BOOST_TEST(r.report.ok(), sim::render_text(r.report));
}

}  // namespace

BOOST_AUTO_TEST_CASE(smoke_runs_the_real_actors_without_violations) {
  auto r = run("smoke");
  expect_ok(r);
  BOOST_TEST(r.report.violations_size() == 0);
  BOOST_TEST(r.report.trace_hash().size() == 16u);
  BOOST_TEST(counter(r.report, "actions.pause.success") == 4u);
}

BOOST_AUTO_TEST_CASE(node_failure_storm_errors_every_instance_of_the_crashed_nodes) {
  auto r = run("node_failure_storm");
  expect_ok(r);
  BOOST_TEST(violated(r.report).empty());
  BOOST_TEST(counter(r.report, "nodes.state.error") == 2u);
  BOOST_TEST(counter(r.report, "sim.node_crashes") == 2u);
  // The crashed nodes' instances (3 each) are errored; the rest run.
  BOOST_TEST(counter(r.report, "instances.sf_state.error") == 6u);
  BOOST_TEST(counter(r.report, "instances.sf_state.created") == 54u);
}

BOOST_AUTO_TEST_CASE(partition_of_half_the_nodes_heals_and_reconciles) {
  auto r = run("partition_heal");
  expect_ok(r);
  BOOST_TEST(violated(r.report).empty());
  BOOST_TEST(counter(r.report, "nodes.state.created") == 10u);
  // The cut-off nodes went missing and came back (timeline).
  size_t missing = 0, back = 0;
  for (const auto& e : r.report.timeline()) {
    if (e.kind() != "node_state") continue;
    if (e.detail().find("created -> missing") != std::string::npos) ++missing;
    if (e.detail().find("missing -> created") != std::string::npos) ++back;
  }
  BOOST_TEST(missing == 5u);
  BOOST_TEST(back == 5u);
}

BOOST_AUTO_TEST_CASE(a_stuck_device_ack_ends_the_pause_in_error_not_in_a_hang) {
  auto r = run("stuck_device");
  expect_ok(r);
  BOOST_TEST(violated(r.report).empty());
  BOOST_TEST(counter(r.report, "actions.pause.error") == 2u);
  BOOST_TEST(counter(r.report, "actions.pause.success") == 1u);
  BOOST_TEST(counter(r.report, "instances.task_state.none") == 6u);  // nothing left in flight
}

BOOST_AUTO_TEST_CASE(a_triple_fault_storm_reboots_the_guests_and_nothing_else) {
  auto r = run("triple_fault_storm");
  expect_ok(r);
  BOOST_TEST(violated(r.report).empty());
  BOOST_TEST(counter(r.report, "sim.triple_faults") == 100u);
  BOOST_TEST(counter(r.report, "sim.instance_reboots") >= 100u);
  BOOST_TEST(counter(r.report, "instances.vm_state.active") == 40u);
}

BOOST_AUTO_TEST_CASE(a_controller_crash_in_the_middle_of_50_creates_loses_no_acknowledged_record) {
  for (uint64_t seed : {1, 2, 8}) {
    auto r = run("controller_crash_creates", seed);
    expect_ok(r);
    BOOST_TEST(violated(r.report).empty(), "seed " << seed << "\n" << sim::render_text(r.report));
    BOOST_TEST(counter(r.report, "sim.controller_crashes") == 1u);
    BOOST_TEST(counter(r.report, "sim.controller_restarts") == 1u);
    // Every create was either acknowledged (and is in the store) or refused.
    BOOST_TEST(counter(r.report, "sim.creates_acked") + counter(r.report, "sim.creates_failed") == 50u);
    BOOST_TEST(counter(r.report, "instances.total") == counter(r.report, "sim.creates_acked"));
  }
}

// Forced poweroffs of stuck instances under a mix of faults: every state an
// instance actor takes reaches its node and the lifecycle table holds.
// Seeds 2-5 reported "run -> halt" before the simulator observed every
// message of a mailbox round (see the scenario).
BOOST_AUTO_TEST_CASE(forced_poweroffs_under_mixed_faults_keep_the_lifecycle_table) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    auto r = run("stop_under_faults", seed);
    expect_ok(r);
    BOOST_TEST(violated(r.report).empty(), "seed " << seed << "\n" << sim::render_text(r.report));
    BOOST_TEST(counter(r.report, "sim.instance_state_events") > 0u);
  }
}

BOOST_AUTO_TEST_CASE(disk_io_errors_revert_the_disk_actions_until_the_disks_heal) {
  auto r = run("disk_errors");
  expect_ok(r);
  BOOST_TEST(r.report.violations_size() == 0);
  BOOST_TEST(counter(r.report, "actions.snapshot.reverted") == 8u);  // during the fault
  BOOST_TEST(counter(r.report, "actions.backup.reverted") == 8u);
  BOOST_TEST(counter(r.report, "actions.snapshot.success") == 8u);   // after the heal
  BOOST_TEST(counter(r.report, "instances.vm_state.error") == 0u);
}

BOOST_AUTO_TEST_CASE(a_vcpu_that_ignores_kicks_fails_its_pause_by_deadline) {
  auto r = run("ignore_kicks");
  expect_ok(r);
  BOOST_TEST(r.report.violations_size() == 0);
  BOOST_TEST(counter(r.report, "actions.pause.error") == 1u);
  BOOST_TEST(counter(r.report, "actions.pause.success") == 3u);
}

BOOST_AUTO_TEST_CASE(delayed_messages_arrive_late_in_order_and_every_action_ends) {
  auto r = run("message_delay");
  expect_ok(r);
  BOOST_TEST(r.report.violations_size() == 0);
  BOOST_TEST(counter(r.report, "sim.message_delays") == 2u);
  BOOST_TEST(counter(r.report, "actions.pause.success") == 8u);
  // The same seed, the same trace; the jitter comes from the seed.
  BOOST_TEST(run("message_delay", 1).report.trace_hash() == r.report.trace_hash());
  BOOST_TEST(run("message_delay", 2).report.trace_hash() != r.report.trace_hash());
}

BOOST_AUTO_TEST_CASE(a_broken_error_fanout_is_caught) {
  auto r = run("broken_error_fanout");
  expect_ok(r);  // it expects the violation
  BOOST_TEST(violated(r.report) == std::set<std::string>{sim::kErrorFanout});
  const auto& v = r.report.violations(0);
  BOOST_TEST(v.time_ms() > 0u);
  BOOST_TEST(v.trace_position() > 0u);
  BOOST_TEST(v.actors_size() >= 2);  // the node and its instance(s)
  BOOST_TEST(v.detail().find("not errored") != std::string::npos);
  // The command reports it with a non-zero status.
  BOOST_TEST(apps::simulate_command({scenario_path("broken_error_fanout")}) == 1);
}

// The story, with nodes as slow and lossy as real node processes
// (SimLinks defaults): 4 clients, 120 creates with idempotency keys, the
// controller killed twice during the burst. No acknowledged create ends in
// ERROR, none is lost or duplicated.
BOOST_AUTO_TEST_CASE(creates_survive_two_controller_crashes_with_late_nodes) {
  for (uint64_t seed : {1, 2, 3}) {
    auto r = run("controller_restart_creates", seed);
    expect_ok(r);
    BOOST_TEST(violated(r.report).empty(), "seed " << seed << "\n" << sim::render_text(r.report));
    BOOST_TEST(counter(r.report, "sim.controller_crashes") == 2u);
    BOOST_TEST(counter(r.report, "sim.node_reconnects") == 4u);  // 2 nodes, 2 restarts
    BOOST_TEST(counter(r.report, "sim.creates_acked") == 120u);
    BOOST_TEST(counter(r.report, "instances.total") == 120u);
    BOOST_TEST(counter(r.report, "instances.sf_state.error") == 0u);
  }
  // Reconnect delays and losses come from the seed: same seed, same trace.
  BOOST_TEST(run("controller_restart_creates", 2).report.trace_hash() ==
             run("controller_restart_creates", 2).report.trace_hash());
}

// The same story with the controller's placement wait switched off: the
// creates scheduled before the nodes check in again end in ERROR, and
// create_error says so.
BOOST_AUTO_TEST_CASE(without_the_placement_wait_a_restart_costs_creates) {
  auto r = run("broken_placement_wait");
  expect_ok(r);  // it expects the violation
  BOOST_TEST(violated(r.report) == std::set<std::string>{sim::kCreateError});
  BOOST_TEST(counter(r.report, "instances.sf_state.error") > 0u);
  bool named = false;
  for (const auto& v : r.report.violations())
    if (v.detail().find("no valid host") != std::string::npos) named = true;
  BOOST_TEST(named, sim::render_text(r.report));
  // The command reports it with a non-zero status, as every violation.
  BOOST_TEST(apps::simulate_command({scenario_path("broken_placement_wait"), "--seed", "1"}) == 1);
}

// Slow check-ins: one node's check-ins arrive 9-12 s late, later than the
// 10 s silence window's first sweep would like, in order, and deterministically.
BOOST_AUTO_TEST_CASE(slow_checkins_arrive_late_in_order_and_from_the_seed) {
  const std::string text =
      "name: \"slow\"\nduration_ms: 60000\nnodes { count: 2 }\ninstances { count: 4 at_ms: 1000 spacing_ms: 100 }\n"
      "links { slow_checkin_nodes { count: 1 } slow_checkin_delay_ms: 9000 slow_checkin_jitter_ms: 3000 }\n"
      "expect { counters_at_least { key: \"actions.create.success\" value: 4 } }\n";
  sim::SimOptions o;
  o.seed = 3;
  auto a = sim::simulate(sim::parse_scenario(text, "slow"), o);
  auto b = sim::simulate(sim::parse_scenario(text, "slow"), o);
  expect_ok(a);
  BOOST_TEST(violated(a.report).empty(), sim::render_text(a.report));
  BOOST_TEST(counter(a.report, "sim.slow_checkins") >= 4u);
  BOOST_TEST(counter(a.report, "nodes.state.created") == 2u);
  BOOST_TEST(a.report.trace_hash() == b.report.trace_hash());
  BOOST_CHECK_THROW(sim::parse_scenario("name: \"x\"\nduration_ms: 1\nnodes { count: 1 }\n"
                                        "links { reconnect_min_ms: 5 reconnect_max_ms: 1 }\n",
                                        "t"),
                    sim::ScenarioError);
}

BOOST_AUTO_TEST_CASE(the_same_seed_gives_the_same_trace) {
  auto a = run("partition_heal", 7, true);
  auto b = run("partition_heal", 7, true);
  BOOST_TEST(a.report.trace_hash() == b.report.trace_hash());
  BOOST_TEST(a.trace == b.trace, boost::test_tools::per_element());
  BOOST_TEST(a.report.events() == b.report.events());
  auto c = run("controller_crash_creates", 3);
  auto d = run("controller_crash_creates", 3);
  BOOST_TEST(c.report.trace_hash() == d.report.trace_hash());
}

// The scale scenario's promise, in small: 2,000 preplaced instances and a
// crash of 10% of the nodes, twice with one seed, give one trace hash; another
// seed gives another.
BOOST_AUTO_TEST_CASE(a_scale_scenario_gives_the_same_trace_hash_twice) {
  auto a = run("scale_50x40", 1);
  expect_ok(a);
  BOOST_TEST(counter(a.report, "sim.preplaced") == 2000u);
  BOOST_TEST(counter(a.report, "sim.node_crashes") == 5u);
  auto b = run("scale_50x40", 1);
  BOOST_TEST(a.report.trace_hash() == b.report.trace_hash());
  BOOST_TEST(a.report.events() == b.report.events());
  BOOST_TEST(a.report.events() > 40'000u);  // about 25 per instance: the whole production path ran
  // Every instance's VMM went through Initialize, Boot and Run, as its node saw it.
  BOOST_TEST(counter(a.report, "sim.instance_state_events") >= 3 * 2000u);
  BOOST_TEST(run("scale_50x40", 2).report.trace_hash() != a.report.trace_hash());
}

BOOST_AUTO_TEST_CASE(twenty_seeds_give_twenty_traces_and_no_violation) {
  std::set<std::string> hashes;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    auto r = run("partition_heal", seed);
    BOOST_TEST(r.report.violations_size() == 0, "seed " << seed << "\n" << sim::render_text(r.report));
    BOOST_TEST(r.report.ok(), "seed " << seed);
    hashes.insert(r.report.trace_hash());
  }
  BOOST_TEST(hashes.size() == 20u);
}

BOOST_AUTO_TEST_CASE(the_command_sweeps_seeds_and_names_the_first_failing_one) {
  std::ostringstream captured;
  auto* old = std::cout.rdbuf(captured.rdbuf());
  const int ok = apps::simulate_command({scenario_path("smoke"), "--seeds", "3"});
  const int bad = apps::simulate_command({scenario_path("broken_error_fanout"), "--seed", "5", "--seeds", "2"});
  const int json = apps::simulate_command({scenario_path("smoke"), "--json"});
  std::cout.rdbuf(old);
  BOOST_TEST(ok == 0);
  BOOST_TEST(bad == 1);
  BOOST_TEST(json == 0);
  const std::string out = captured.str();
  BOOST_TEST(out.find("all 3 seeds passed") != std::string::npos);
  BOOST_TEST(out.find("first failing seed: 5") != std::string::npos);
  BOOST_TEST(out.find("replay: apiary simulate " + scenario_path("broken_error_fanout") + " --seed 5") !=
             std::string::npos);
  BOOST_TEST(out.find("\"trace_hash\"") != std::string::npos);
  BOOST_TEST(apps::simulate_command({"/nonexistent.textproto"}) == 2);
}

BOOST_AUTO_TEST_CASE(scenario_errors_name_the_place) {
  try {
    sim::parse_scenario("name: \"x\"\nduration_ms: 10\nnodes { count: 1 bogus: 3 }\n", "t.textproto");
    BOOST_FAIL("a misspelt field parsed");
  } catch (const sim::ScenarioError& e) {
    BOOST_TEST(std::string(e.what()).find("t.textproto:3:") == 0, e.what());
  }
  try {
    sim::parse_scenario("name: \"x\"\nduration_ms: 10\nnodes { count: 1 }\nfaults { at_ms: 1 partition { } }\n", "t");
    BOOST_FAIL("a fault without targets passed");
  } catch (const sim::ScenarioError& e) {
    BOOST_TEST(std::string(e.what()) == "faults[0].partition.nodes: names, count or fraction is required");
  }
  BOOST_CHECK_THROW(sim::parse_scenario("name: \"x\"\nnodes { count: 1 }\n", "t"), sim::ScenarioError);  // no duration
}

BOOST_AUTO_TEST_CASE(the_placement_tracker_fails_on_two_nodes_and_on_a_table_violation) {
  const std::vector<std::string> names{"n0", "n1"};
  sim::PlacementTracker t(2);
  BOOST_TEST(!t.observe(0, "n0", "i-1", 1, "initialize", names));
  BOOST_TEST(!t.observe(0, "n0", "i-1", 1, "boot", names));
  BOOST_TEST(!t.observe(0, "n0", "i-1", 1, "run", names));
  auto two = t.observe(1, "n1", "i-1", 1, "initialize", names);
  BOOST_REQUIRE(two);
  BOOST_TEST(std::string(two->invariant) == sim::kSinglePlacement);
  auto skip = t.observe(0, "n0", "i-1", 1, "halt", names);  // run -> halt skips quiesce
  BOOST_REQUIRE(skip);
  BOOST_TEST(std::string(skip->invariant) == sim::kLifecycleTable);
  t.node_crashed(1);
  BOOST_TEST(!t.node_of("i-1"));
  BOOST_TEST(sim::reachable(control::sf_instance_transitions(), control::SfInstanceState::created,
                            control::SfInstanceState::error));
  BOOST_TEST(!sim::reachable(control::sf_instance_transitions(), control::SfInstanceState::deleted,
                             control::SfInstanceState::created));
}

// Events due at time 0 (the proto3 default for at_ms) fire at 0 and move the
// clock no further: the creates are acknowledged within the first second,
// long before the controller's first purge (60 s) or sweep (5 s).
BOOST_AUTO_TEST_CASE(events_at_time_zero_do_not_fast_forward_the_clock) {
  const auto sc = sim::parse_scenario(
      "name: \"t0\"\nduration_ms: 4000\nnodes { count: 2 }\ninstances { count: 2 at_ms: 0 }\n"
      "expect { counters_at_least { key: \"actions.create.success\" value: 2 } }\n",
      "t0");
  sim::SimOptions o;
  o.seed = 1;
  auto r = sim::simulate(sc, o);
  expect_ok(r);
  BOOST_TEST(counter(r.report, "sim.creates_acked") == 2u);
  BOOST_TEST(counter(r.report, "actions.create.success") == 2u);
}
