// The `simulate` subcommand: option parsing, one run or a sweep of seeds,
// and the report on stdout (see simulate_command.hpp).
//
// Why a sweep stops at the first failing seed: that seed, with the command
// that replays it, is what a developer needs; later seeds add nothing until
// it is fixed.
#include "apps/simulate_command.hpp"

#include <charconv>
#include <iostream>

#include "sim/scenario.hpp"
#include "sim/simulator.hpp"

namespace apiary::apps {

namespace {

void usage(std::ostream& o) {
  o << "Usage: apiary simulate SCENARIO [--seed S] [--seeds N] [--trace FILE] [--json]\n"
       "  SCENARIO      a scenario in protobuf text format (docs/simulation.md)\n"
       "  --seed S      the seed of the run (default 1)\n"
       "  --seeds N     run seeds S..S+N-1; stop at the first failing one and print\n"
       "                the command that replays it\n"
       "  --trace FILE  write every trace line to FILE (with --seeds: the last run's)\n"
       "  --json        the report as JSON instead of text\n";
}

bool number(const std::string& s, uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

int simulate_command(const std::vector<std::string>& args) {
  std::string path, trace;
  uint64_t seed = 1, seeds = 0;
  bool json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      usage(std::cout);
      return 0;
    }
    if (a == "--json") {
      json = true;
      continue;
    }
    if (a == "--seed" || a == "--seeds" || a == "--trace") {
      if (i + 1 >= args.size()) {
        std::cerr << "apiary simulate: " << a << " needs a value\n";
        return 2;
      }
      const std::string& v = args[++i];
      if (a == "--trace") {
        trace = v;
      } else if (!number(v, a == "--seed" ? seed : seeds) || (a == "--seeds" && seeds == 0)) {
        std::cerr << "apiary simulate: " << a << ": not a positive number: " << v << "\n";
        return 2;
      }
      continue;
    }
    if (!a.empty() && a[0] == '-') {
      std::cerr << "apiary simulate: unknown option " << a << "\n";
      usage(std::cerr);
      return 2;
    }
    if (!path.empty()) {
      std::cerr << "apiary simulate: one scenario at a time (got " << path << " and " << a << ")\n";
      return 2;
    }
    path = a;
  }
  if (path.empty()) {
    usage(std::cerr);
    return 2;
  }
  v1::Scenario scenario;
  try {
    scenario = sim::load_scenario(path);
  } catch (const sim::ScenarioError& e) {
    std::cerr << "apiary simulate: " << e.what() << "\n";
    return 2;
  }
  sim::SimOptions o;
  o.scenario_path = path;
  o.trace_path = trace;
  auto failed = [](const v1::SimReport& r) { return !r.violations().empty() || !r.ok(); };
  try {
    if (!seeds) {
      o.seed = seed;
      const auto r = sim::simulate(scenario, o);
      std::cout << (json ? sim::render_json(r.report) : sim::render_text(r.report));
      return failed(r.report) ? 1 : 0;
    }
    for (uint64_t k = 0; k < seeds; ++k) {
      const uint64_t s = seed + k;  // wraps past 2^64-1 instead of ending the sweep early
      o.seed = s;
      const auto r = sim::simulate(scenario, o);
      std::cerr << "seed " << s << ": trace hash: " << r.report.trace_hash() << ", " << r.report.events()
                << " events, " << r.report.violations_size() << " violation(s)"
                << (r.report.ok() ? "" : ", expectations not met") << "\n";
      if (failed(r.report)) {
        std::cout << (json ? sim::render_json(r.report) : sim::render_text(r.report));
        std::cout << "first failing seed: " << s << "\nreplay: " << r.report.replay() << "\n";
        return 1;
      }
    }
    std::cout << "all " << seeds << " seeds passed (" << seed << ".." << seed + seeds - 1 << ")\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "apiary simulate: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace apiary::apps
