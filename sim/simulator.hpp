// The deterministic failure simulator: the production controller, node,
// instance, vCPU (simulated backend) and device actors, all on one thread
// under CAF's test coordinator, with simulated time, seeded scheduling and
// seeded faults, and invariants checked as the run goes (FoundationDB's
// simulation is the model).
//
// How a run goes (simulator.cpp):
//  * Every runnable actor is a job of the test coordinator. Each step the
//    simulator picks one job with the seeded generator and lets it handle one
//    message. Mailboxes stay FIFO, so CAF's guarantee (messages between one
//    pair of actors arrive in order) holds; everything else may interleave.
//  * When nothing is runnable, simulated time jumps to the next timer (a
//    delayed message, a request deadline) or scenario event (an API call, a
//    fault, a heal), whichever is first.
//  * Every delivered message, fault and observed state change is a trace
//    line; the FNV-1a hash of the trace identifies the run. Same scenario and
//    seed: the same hash.
//  * Invariants (invariants.hpp) are checked after every delivered message
//    (the instance lifecycle table, one node per instance) and at every
//    checkpoint (each simulated second, and right after a fault) against the
//    controller's SQLite store, read through a second connection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/apiary/v1/scenario.pb.h"
#include "vmm-core/shared_bytes.hpp"

namespace apiary::sim {

struct SimOptions {
  uint64_t seed = 1;
  std::string trace_path;       // write every trace line here ("" = no file)
  bool keep_trace = false;      // keep the lines in memory (SimResult::trace)
  std::string scenario_path;    // for the replay command in the report
  uint64_t checkpoint_ms = 1000;  // store checks at most this often (and after faults)
  size_t timeline_limit = 4000;   // timeline entries kept in the report
};

struct SimResult {
  v1::SimReport report;
  std::vector<std::string> trace;  // with keep_trace
};

// Runs a normalized scenario (scenario.hpp) once. Throws ScenarioError for a
// scenario that cannot run (e.g. a target that matches nothing) and
// std::runtime_error when the simulator itself cannot start (no temp dir).
SimResult simulate(const v1::Scenario& scenario, const SimOptions& options);

// The report as text (timeline, violations, tables, counters) or JSON.
std::string render_text(const v1::SimReport& report);
std::string render_json(const v1::SimReport& report);

// The tiny multiboot image every simulated instance boots (the simulated
// backend runs no guest code; the loader still checks and loads an image).
const vmm::SharedBytes& tiny_guest_image();  // one buffer, shared by every simulated machine

}  // namespace apiary::sim
