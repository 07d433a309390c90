// bench_simulation: how fast is the deterministic simulator at scale, and
// how much does it cost per delivered message compared with bare CAF on the
// same scheduler?
//
// Why this program: the simulator's scale figures (wall time, events per
// second, peak RSS of `apiary simulate` on the 1,000 nodes x 100 instances
// scenario) used to be read off the command's own report by hand. The
// project's rule is that performance claims come from bench/, as ratios
// against a baseline measured in the same run, each printed as one line
// `figure: <name> <value> <unit>` (docs/benchmarks.md). So:
//
//   BM_SimScale     runs `apiary simulate tests/sim/scenarios/scale_1000x100
//                   .textproto --seed 1 --json` as a child process (the
//                   production binary, exactly as a developer runs it),
//                   killed after kChildDeadline. Measured here: the wall time
//                   from spawn to reap, and the child's own peak RSS and CPU
//                   time (wait4's rusage). Read from the child: its JSON
//                   report (apiary.v1.SimReport; the counter "sim.events" is
//                   the number of delivered messages) and, on stderr with
//                   APIARY_SIM_PHASES=1, the split into setup, run loop and
//                   shutdown. The run must be what the scenario promises:
//                   exit status 0, `ok`, no violation, "sim.events" equal to
//                   the report's event count; anything else fails the
//                   program loudly (exit status 1, the end of the child's
//                   stderr shown).
//   BM_BareCafRing  the baseline: CAF 0.17's deterministic test_coordinator
//                   (scheduler.policy = testing, the simulator's scheduler),
//                   kBareActors trivial event-based actors in a ring, and
//                   kBareTokens tokens travelling around it, each hop one
//                   message, kBareMessages in all, delivered by the
//                   coordinator's own FIFO loop (run()). Spawning and
//                   teardown are outside the timed region. This is the floor
//                   of "one actor message on this scheduler": no tracing, no
//                   invariants, no seeded choice of the next job, no work in
//                   the handlers.
//
// The baseline runs twice, before and after the simulation (registration
// order: bare, sim, bare), so slow drift of a shared host lands on both; its
// figure is the mean of the two rounds. The ratio sim_vs_bare_caf_ratio is
// the simulator's run-loop events/s (delivered messages / the run phase,
// which excludes setup and shutdown just as the baseline excludes spawn and
// teardown) over bare CAF's messages/s: the fraction of bare CAF's message
// rate the simulator keeps once every message is traced, checked against the
// invariants and does the production actors' real work. The same ratio over
// the whole process wall time is printed as sim_vs_bare_caf_ratio_wall.
//
// The scale scenario has requirements (the issue "Scale: a million simulated
// instances"): the whole run, process start to exit, under kWallRequirement;
// its peak RSS under kRssRequirementMib; the run loop at least
// kRatioRequirement of bare CAF's message rate. Each is printed as a
// `figure: <name> 1|0 bool` line, and a miss makes the exit status 1.
//
// Own flags: --quick (or APIARY_BENCH_QUICK=1 in the environment) runs the
// same scenario with a tenth of the nodes (every expected counter scaled
// alike; a temp copy written through the Scenario proto) and a tenth of the
// baseline's actors (as many messages); its figures end in "_quick" and it
// has no wall-time requirement. --large runs the issue's second scenario,
// scale_10000x100 (1,000,000 instances; requirements kLargeWallRequirement
// and kLargeRssRequirementMib, killed after kLargeChildDeadline) against a
// ring of kLargeBareActors; its figures end in "_large". It needs about
// 16 GiB and several minutes, so `make bench` does not run it.
// --bare_actors=N and --bare_messages=N size the
// baseline. The --benchmark_* flags are Google Benchmark's
// (--benchmark_filter=Bare runs the baseline alone); any other argument is
// ignored with a note. Takes about a minute and 4 GiB for the child at full
// size. See docs/benchmarks.md, "Simulation".
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/bench_support.hpp"
#include "proto/apiary/v1/scenario.pb.h"

#ifndef APIARY_BINARY
#error "APIARY_BINARY must name the apiary executable"
#endif
#ifndef APIARY_SCENARIO_DIR
#error "APIARY_SCENARIO_DIR must name tests/sim/scenarios"
#endif

extern char** environ;

namespace {

namespace v1 = apiary::v1;
using apiary::bench::read_all;
using apiary::bench::seconds;
using apiary::bench::TempDir;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// --- the simulation -----------------------------------------------------------
constexpr const char* kScenarioFile = "scale_1000x100.textproto";
constexpr const char* kLargeScenarioFile = "scale_10000x100.textproto";  // --large
constexpr const char* kSeed = "1";
constexpr const char* kEventsCounter = "sim.events";  // delivered messages
constexpr auto kChildDeadline = 300s;                  // then SIGKILL: the run failed
constexpr auto kLargeChildDeadline = 1200s;            // --large
constexpr auto kReapPollPause = 10ms;                  // between wait4(WNOHANG) polls
constexpr auto kWallRequirement = 15s;                 // the scale run, start to exit
constexpr double kRssRequirementMib = 1536;            // its peak RSS
constexpr auto kLargeWallRequirement = 150s;           // --large: 1,000,000 instances
constexpr double kLargeRssRequirementMib = 16384;
constexpr double kRatioRequirement = 0.25;             // sim_vs_bare_caf_ratio
constexpr uint32_t kQuickDivisor = 10;                 // --quick: a tenth of the nodes
constexpr size_t kTailBytes = 3000;                    // of the child's stderr, shown on failure
constexpr double kKibPerMib = 1024.0;

// --- the baseline ---------------------------------------------------------------
constexpr uint64_t kBareActors = 100'000;       // one per simulated instance
constexpr uint64_t kLargeBareActors = 1'000'000;  // --large
constexpr uint64_t kBareTokens = 1'000;         // messages in flight at once
constexpr uint64_t kBareMessages = 5'000'000;   // about the scale run's 4.9 M events
constexpr uint64_t kMaxBareActors = 10'000'000;
constexpr uint64_t kMaxBareMessages = 1'000'000'000;

using hop_atom = caf::atom_constant<caf::atom("hop")>;

struct Settings {
  bool quick = false;
  bool large = false;  // scale_10000x100 instead of scale_1000x100
  uint64_t bare_actors = kBareActors;
  uint64_t bare_messages = kBareMessages;
  bool bare_actors_set = false;
};
Settings g_settings;

const char* scenario_file() { return g_settings.large ? kLargeScenarioFile : kScenarioFile; }
std::chrono::seconds child_deadline() { return g_settings.large ? kLargeChildDeadline : kChildDeadline; }

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double thread_cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

long thread_minor_faults() {
  struct rusage ru {};
  ::getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_minflt;
}

std::string tail(std::string s) {
  if (s.size() > kTailBytes) s = "..." + s.substr(s.size() - kTailBytes);
  return s;
}

std::string describe(int wait_status) {
  if (WIFEXITED(wait_status)) return "exit status " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return std::string("signal ") + ::strsignal(WTERMSIG(wait_status));
  return "wait status " + std::to_string(wait_status);
}

// --- the simulation run --------------------------------------------------------

struct SimRun {
  v1::SimReport report;
  uint64_t events = 0;       // counter sim.events
  double wall_s = 0;         // spawn to reap, measured here
  double setup_s = 0, loop_s = 0, shutdown_s = 0;  // APIARY_SIM_PHASES
  double peak_rss_mib = 0;   // the child's ru_maxrss
  double cpu_user_s = 0, cpu_sys_s = 0;
  long minor_faults = 0;
};
std::optional<SimRun> g_sim;
apiary::bench::Requirements g_requirements("bench_simulation");

// The scale scenario with a tenth of the nodes and every expected counter
// divided alike (they all grow with the node count), written to `dir`.
std::string quick_scenario(const std::string& full_path, const std::string& dir) {
  v1::Scenario s;
  if (!google::protobuf::TextFormat::ParseFromString(read_all(full_path), &s))
    throw std::runtime_error("cannot parse " + full_path);
  for (auto& g : *s.mutable_nodes()) g.set_count(g.count() / kQuickDivisor);
  for (auto* m : {s.mutable_expect()->mutable_counters_at_least(), s.mutable_expect()->mutable_counters_at_most()})
    for (auto& [key, value] : *m) value /= kQuickDivisor;
  s.set_name(s.name() + "_quick");
  std::string text;
  google::protobuf::TextFormat::PrintToString(s, &text);
  const std::string path = dir + "/scale_quick.textproto";
  std::ofstream(path) << text;
  return path;
}

SimRun run_simulation(bool quick) {
  TempDir dir("apiary-bench-sim");  // the child's output (and --quick's scenario)
  const std::string full =
      std::string(APIARY_SCENARIO_DIR) + "/" + scenario_file();
  const std::string scenario = quick ? quick_scenario(full, dir.path) : full;
  const std::string out_path = dir.path + "/report.json", err_path = dir.path + "/stderr.log";

  std::vector<std::string> args{APIARY_BINARY, "simulate", scenario, "--seed", kSeed, "--json"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The parent's environment plus the phase split on stderr.
  std::string phases_var = "APIARY_SIM_PHASES=1";
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e)
    if (std::string_view(*e).substr(0, 18) != "APIARY_SIM_PHASES=") envp.push_back(*e);
  envp.push_back(phases_var.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  const auto t0 = Clock::now();
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + std::string(APIARY_BINARY) + ": " + std::strerror(rc));

  // Reap, with the deadline. wait4 gives this child's own rusage.
  int status = 0;
  struct rusage ru {};
  bool killed = false;
  for (;;) {
    const pid_t r = ::wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) throw std::runtime_error(std::string("wait4: ") + std::strerror(errno));
    if (Clock::now() - t0 > child_deadline()) {
      ::kill(pid, SIGKILL);
      while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
      }
      killed = true;
      break;
    }
    std::this_thread::sleep_for(kReapPollPause);
  }
  SimRun run;
  run.wall_s = seconds(Clock::now() - t0);
  run.peak_rss_mib = static_cast<double>(ru.ru_maxrss) / kKibPerMib;
  run.cpu_user_s = seconds(ru.ru_utime);
  run.cpu_sys_s = seconds(ru.ru_stime);
  run.minor_faults = ru.ru_minflt;

  const std::string err = read_all(err_path);
  auto fail = [&](const std::string& why) {
    return std::runtime_error(why + "\n--- `apiary simulate " + scenario + " --seed " + kSeed +
                              " --json` stderr:\n" + tail(err));
  };
  if (killed)
    throw fail("apiary simulate did not finish within " +
               std::to_string(child_deadline().count()) +
               " s and was killed");

  // The report first: on a violation the exit status is 1 and the report
  // says why.
  const std::string json = read_all(out_path);
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(json, &run.report, opts).ok())
    throw fail("the report on stdout is not an apiary.v1.SimReport (" + describe(status) +
               "): " + json.substr(0, 300));
  const auto& r = run.report;
  if (r.violations_size() > 0) {
    std::string v;
    for (const auto& x : r.violations())
      v += "\n  " + x.invariant() + " at " + std::to_string(x.time_ms()) + " ms: " + x.detail();
    throw fail(std::to_string(r.violations_size()) + " violation(s):" + v);
  }
  if (!r.ok()) {
    std::string v;
    for (const auto& x : r.expectation_failures()) v += "\n  " + x;
    throw fail("the scenario's expectations were not met:" + v);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw fail("apiary simulate ended with " + describe(status) + " despite an ok report");
  const auto ev = r.counters().find(kEventsCounter);
  if (ev == r.counters().end() || ev->second == 0)
    throw fail(std::string("the report has no counter ") + kEventsCounter);
  if (ev->second != r.events())
    throw fail(std::string("counter ") + kEventsCounter + " = " + std::to_string(ev->second) +
               " but the report's events = " + std::to_string(r.events()));
  run.events = ev->second;

  static const std::regex phases(R"(phases: setup ([0-9.]+) s, run ([0-9.]+) s, shutdown ([0-9.]+) s)");
  std::smatch m;
  if (!std::regex_search(err, m, phases))
    throw fail("no `phases:` line on stderr (APIARY_SIM_PHASES=1 was set)");
  run.setup_s = std::stod(m[1]);
  run.loop_s = std::stod(m[2]);
  run.shutdown_s = std::stod(m[3]);
  if (run.loop_s <= 0) throw fail("a run phase of 0 s");
  return run;
}

// --- the baseline: bare CAF on the test coordinator -----------------------------

struct Ring {
  std::vector<caf::actor> members;
  uint64_t delivered = 0;
};

// One member: count the token, pass it on to the next member while it has
// hops left.
caf::behavior ring_member(caf::event_based_actor* self, Ring* ring, size_t index) {
  return {[=](hop_atom, uint64_t left) {
    ++ring->delivered;
    if (left > 0) self->send(ring->members[(index + 1) % ring->members.size()], hop_atom::value, left - 1);
  }};
}

struct BareRun {
  uint64_t messages = 0;
  size_t jobs_run = 0;  // run_once() calls: resumptions of an actor
  double loop_s = 0;
  double loop_cpu_s = 0;  // this thread's CPU time over the loop: shows time lost to other processes
  long loop_minor_faults = 0;
  double msgs_per_s() const { return static_cast<double>(messages) / loop_s; }
};
std::vector<BareRun> g_bare;

BareRun run_bare(uint64_t actors, uint64_t messages) {
  const uint64_t tokens = std::min({kBareTokens, actors, messages});
  const uint64_t hops = messages / tokens;  // per token, its first delivery included
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("testing"));
  cfg.set("logger.verbosity", caf::atom("quiet"));
  BareRun out;
  Ring ring;
  {
    caf::actor_system sys{cfg};
    auto& sched = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
    ring.members.reserve(actors);
    for (uint64_t i = 0; i < actors; ++i) ring.members.push_back(sys.spawn(ring_member, &ring, i));
    sched.run();  // the actors' initialization: not timed
    for (uint64_t t = 0; t < tokens; ++t)
      caf::anon_send(ring.members[t * actors / tokens], hop_atom::value, hops - 1);
    const auto t0 = Clock::now();
    const double cpu0 = thread_cpu_seconds();
    const long faults0 = thread_minor_faults();
    out.jobs_run = sched.run();
    out.loop_cpu_s = thread_cpu_seconds() - cpu0;
    out.loop_minor_faults = thread_minor_faults() - faults0;
    out.loop_s = seconds(Clock::now() - t0);
    out.messages = ring.delivered;
    if (out.messages != tokens * hops)
      throw std::runtime_error("bare CAF ring: " + std::to_string(out.messages) + " messages delivered, expected " +
                               std::to_string(tokens * hops));
    for (auto& a : ring.members) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    sched.run();
    ring.members.clear();
  }
  return out;
}

// --- benchmarks and figures ------------------------------------------------------

bool g_failed = false;

void BM_SimScale(benchmark::State& state) {
  for (auto _ : state) {
    try {
      SimRun r = run_simulation(g_settings.quick);
      state.SetIterationTime(r.wall_s);
      state.counters["events"] = static_cast<double>(r.events);
      state.counters["loop_events_per_s"] = static_cast<double>(r.events) / r.loop_s;
      state.counters["peak_rss_mib"] = r.peak_rss_mib;
      g_sim = std::move(r);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_simulation: FAILED: %s\n", e.what());
      g_failed = true;
      state.SkipWithError("the simulation failed (see above)");
      break;
    }
  }
}

void BM_BareCafRing(benchmark::State& state) {
  for (auto _ : state) {
    try {
      BareRun r = run_bare(g_settings.bare_actors, g_settings.bare_messages);
      state.SetIterationTime(r.loop_s);
      state.counters["msgs_per_s"] = r.msgs_per_s();
      state.counters["msgs_per_job"] = static_cast<double>(r.messages) / static_cast<double>(r.jobs_run);
      g_bare.push_back(r);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_simulation: FAILED: %s\n", e.what());
      g_failed = true;
      state.SkipWithError("the bare CAF baseline failed (see above)");
      break;
    }
  }
}

void print_details(FILE* out) {
  if (g_sim) {
    const auto& s = *g_sim;
    std::fprintf(out,
                 "simulation: %s seed %s: %llu events, %llu trace lines, trace hash %s, %llu ms simulated\n"
                 "  wall %.2f s (setup %.2f s, run loop %.2f s, shutdown %.2f s; the report says %.2f s)\n"
                 "  child CPU: user %.2f s, sys %.2f s; %ld minor faults; peak RSS %.0f MiB\n",
                 s.report.scenario().c_str(), kSeed, static_cast<unsigned long long>(s.events),
                 static_cast<unsigned long long>(s.report.trace_lines()), s.report.trace_hash().c_str(),
                 static_cast<unsigned long long>(s.report.simulated_ms()), s.wall_s, s.setup_s, s.loop_s,
                 s.shutdown_s, s.report.wall_seconds(), s.cpu_user_s, s.cpu_sys_s, s.minor_faults, s.peak_rss_mib);
  }
  for (size_t i = 0; i < g_bare.size(); ++i) {
    const auto& b = g_bare[i];
    std::fprintf(out, "bare CAF round %zu: %llu actors, %llu messages in %.3f s, %.3f s CPU, %ld minor faults (%.0f "
                 "msgs/s, %.2f per run_once)\n",
                 i + 1, static_cast<unsigned long long>(g_settings.bare_actors),
                 static_cast<unsigned long long>(b.messages), b.loop_s, b.loop_cpu_s, b.loop_minor_faults,
                 b.msgs_per_s(),
                 static_cast<double>(b.messages) / static_cast<double>(b.jobs_run));
  }
}

// One figure per line. Returns false when the wall-time requirement failed.
bool print_figures(FILE* out) {
  const std::string q = g_settings.quick ? "_quick" : g_settings.large ? "_large" : "";
  auto name = [&](const char* base) { return std::string(base) + q; };
  std::fprintf(out, "\n");
  double bare = 0;
  if (!g_bare.empty()) {
    for (const auto& b : g_bare) bare += b.msgs_per_s();
    bare /= static_cast<double>(g_bare.size());
    std::fprintf(out, "figure: %s %.0f msgs/s\n", name("caf_bare_msgs_per_s").c_str(), bare);
  }
  if (g_sim) {
    const auto& s = *g_sim;
    const double events = static_cast<double>(s.events);
    const double wall_rate = events / s.wall_s, loop_rate = events / s.loop_s;
    std::fprintf(out, "figure: %s %.1f s\n", name("sim_scale_wall").c_str(), s.wall_s);
    std::fprintf(out, "figure: %s %.1f s\n", name("sim_scale_loop").c_str(), s.loop_s);
    std::fprintf(out, "figure: %s %llu events\n", name("sim_scale_events").c_str(),
                 static_cast<unsigned long long>(s.events));
    std::fprintf(out, "figure: %s %.0f events/s\n", name("sim_scale_events_per_s").c_str(), wall_rate);
    std::fprintf(out, "figure: %s %.0f events/s\n", name("sim_scale_loop_events_per_s").c_str(), loop_rate);
    std::fprintf(out, "figure: %s %.0f MiB\n", name("sim_scale_peak_rss").c_str(), s.peak_rss_mib);
    std::fprintf(out, "figure: %s %.1f s\n", name("sim_scale_cpu").c_str(), s.cpu_user_s + s.cpu_sys_s);
    if (bare > 0) {
      std::fprintf(out, "figure: %s %.3f x\n", name("sim_vs_bare_caf_ratio").c_str(), loop_rate / bare);
      std::fprintf(out, "figure: %s %.3f x\n", name("sim_vs_bare_caf_ratio_wall").c_str(), wall_rate / bare);
    }
    if (g_settings.large) {
      g_requirements.check(out, "sim_scale_large_under_150s", "sim_scale_wall_large", s.wall_s, false,
                           seconds(kLargeWallRequirement), "s");
      g_requirements.check(out, "sim_scale_large_under_16gib", "sim_scale_peak_rss_large", s.peak_rss_mib, false,
                           kLargeRssRequirementMib, "MiB");
      if (bare > 0)
        g_requirements.check(out, "sim_ratio_large_at_least_0_25", "sim_vs_bare_caf_ratio_large", loop_rate / bare,
                             true, kRatioRequirement, "x");
    } else if (!g_settings.quick) {
      g_requirements.check(out, "sim_scale_under_15s", "sim_scale_wall", s.wall_s, false, seconds(kWallRequirement),
                           "s");
      g_requirements.check(out, "sim_scale_under_1536mib", "sim_scale_peak_rss", s.peak_rss_mib, false,
                           kRssRequirementMib, "MiB");
      if (bare > 0)
        g_requirements.check(out, "sim_ratio_at_least_0_25", "sim_vs_bare_caf_ratio", loop_rate / bare, true,
                             kRatioRequirement, "x");
    }
  }
  std::fflush(out);
  return g_requirements.all_met();
}

bool parse_count(std::string_view arg, std::string_view flag, uint64_t max, uint64_t& out) {
  if (arg.substr(0, flag.size()) != flag) return false;
  const std::string value(arg.substr(flag.size()));
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v == 0 || v > max) return false;
  out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  for (int i = 1; i < argc; ++i) json = json || std::string_view(argv[i]) == "--benchmark_format=json";
  benchmark::Initialize(&argc, argv);
  if (const char* e = std::getenv("APIARY_BENCH_QUICK"); e && *e && std::string_view(e) != "0")
    g_settings.quick = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") {
      g_settings.quick = true;
    } else if (arg == "--large") {
      g_settings.large = true;
    } else if (parse_count(arg, "--bare_actors=", kMaxBareActors, g_settings.bare_actors)) {
      g_settings.bare_actors_set = true;
    } else if (!parse_count(arg, "--bare_messages=", kMaxBareMessages, g_settings.bare_messages)) {
      std::fprintf(stderr, "bench_simulation: ignoring argument %s\n", argv[i]);
    }
  }
  // --quick: a tenth of the actors, as many messages (fewer would make a
  // round a tenth of a second, too short to stand out of a shared host's noise).
  if (g_settings.quick && g_settings.large) {
    std::fprintf(stderr, "bench_simulation: --quick and --large exclude each other\n");
    return 2;
  }
  if (g_settings.quick && !g_settings.bare_actors_set) g_settings.bare_actors = kBareActors / kQuickDivisor;
  // --large: one bare actor per simulated instance, as in the default run.
  if (g_settings.large && !g_settings.bare_actors_set) g_settings.bare_actors = kLargeBareActors;
  std::fprintf(stderr,
               "bench_simulation: %s%s (seed %s) through %s; baseline: %llu bare CAF actors, %llu messages, before "
               "and after\n",
               scenario_file(), g_settings.quick ? " with a tenth of the nodes" : "", kSeed, APIARY_BINARY,
               static_cast<unsigned long long>(g_settings.bare_actors),
               static_cast<unsigned long long>(g_settings.bare_messages));

  auto reg = [](const char* name, void (*fn)(benchmark::State&)) {
    benchmark::RegisterBenchmark(name, fn)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
  };
  reg("BM_BareCafRing/round:1", BM_BareCafRing);
  reg("BM_SimScale", BM_SimScale);
  reg("BM_BareCafRing/round:2", BM_BareCafRing);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  FILE* out = json ? stderr : stdout;
  print_details(out);
  const bool met = print_figures(out);
  g_requirements.report();
  return g_failed || !met ? 1 : 0;  // filtered out (nothing ran) is success
}
