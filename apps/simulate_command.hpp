// `apiary simulate SCENARIO [--seed S] [--seeds N] [--trace FILE] [--json]`:
// the deterministic failure simulator (sim/, docs/simulation.md).
#pragma once

#include <string>
#include <vector>

namespace apiary::apps {

// Exit status: 0 when the run (every run of a sweep) has no violation and
// meets the scenario's expectations; 1 on a violation or an expectation not
// met; 2 for bad arguments or a scenario that does not load.
int simulate_command(const std::vector<std::string>& args);

}  // namespace apiary::apps
