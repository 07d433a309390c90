// bench_exit_dispatch: what Apiary's port-I/O exit path costs compared with
// the cheapest possible VMM loop.
//
// The KVM benchmarks boot the same guest (guest/pio_bench, `n=<exits>` on its
// command line) which does nothing but `outb` to layout::kNoopPort n times,
// then a progress code and a debug exit. Per timed iteration one fresh VM
// runs the guest from its first instruction to the debug exit; VM creation,
// kernel loading and teardown are outside the timed region (UseManualTime:
// steady_clock around the run loop only, plus the thread's CPU time over the
// same span as the counter cpu_ns_per_exit).
//
//   BM_RawKvmLoop      baseline: raw ioctls, one memslot, the guest state
//                      devices::Machine gives the BSP (bench/raw_kvm.hpp),
//                      and the minimal hand-written
//                      `while (KVM_RUN) switch (exit_reason)` loop that
//                      only counts noop-port exits.
//   BM_RawKvmLoopResetXcr0  the same loop on a VM whose vCPU keeps KVM's
//                      reset XCR0 (x87 alone) instead of Apiary's boot XCR0
//                      (x86::boot_xcr0, PKRU included): what that guest
//                      state costs per exit by itself. It is not Apiary's
//                      dispatch; until 2026-12-06 the baseline kept the
//                      reset value, and this cost was most of the gap the
//                      ratio showed (docs/benchmarks.md).
//   BM_ApiaryDispatch  devices::Machine + KvmVcpuBackend::run() on this
//                      thread: every exit goes through decode_exit and the
//                      Bus to the NoopPort device, exactly as in production.
//   BM_UserspaceDispatch  no KVM: Apiary's user-space work per exit alone
//                      (decode, bus lookup, NoopPort) on a simulated-backend
//                      Machine's bus, in ns.
//
// The three are registered as alternating rounds (raw with the reset XCR0,
// raw, apiary, raw with the reset XCR0, ...) so slow drift of the host
// affects all equally and each raw/apiary pair runs back to back. A reporter
// collects every round's per-exit cost; after the Google Benchmark output the
// program prints medians and their ratios as `figure:` lines
// (scripts/run-benchmarks.sh gathers them). The figures use CPU time, which
// on a shared host is immune to other processes' time slices; the wall-time
// ratio is printed too. See docs/benchmarks.md.
//
// Own flags (the rest are Google Benchmark's --benchmark_* flags):
//   --exits=N        noop exits per guest run        (default 20000)
//   --rounds=N       rounds of the three              (default 11)
//   --iterations=N   guest runs per round             (default 2)
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bench/raw_kvm.hpp"
#include "devices/machine.hpp"
#include "vmm-core/boot.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/exit.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/kvm.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/vcpu.hpp"
#include "vmm-core/x86_setup.hpp"

#ifndef APIARY_GUEST_DIR
#error "APIARY_GUEST_DIR must name the directory holding pio_bench.elf"
#endif

namespace {

using namespace apiary;
using Clock = std::chrono::steady_clock;

constexpr const char* kRawName = "BM_RawKvmLoop";
constexpr const char* kRawResetXcr0Name = "BM_RawKvmLoopResetXcr0";
constexpr const char* kApiaryName = "BM_ApiaryDispatch";
constexpr const char* kUserspaceName = "BM_UserspaceDispatch";
constexpr uint64_t kMemoryMib = 64;  // MachineConfig's default, used by every VM here

struct Settings {
  uint64_t exits = 20000;
  int rounds = 11;
  int iterations = 2;
};
Settings g_settings;
std::vector<uint8_t> g_image;  // pio_bench.elf, read once

std::string guest_cmdline() { return "n=" + std::to_string(g_settings.exits); }

// One timed guest run: wall time and this thread's CPU time (user + kernel,
// which includes KVM's work inside KVM_RUN) of the run loop, and the noop
// exits seen.
struct RunSample {
  double seconds = 0;
  double cpu_seconds = 0;
  uint64_t noop_exits = 0;
};

double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ------------------------------------------------------------- raw KVM --

using bench::RawVm;
using bench::fail;

void build_raw_vm(RawVm& r, bench::RawXcr0 xcr0) {
  bench::build_raw_vm(r, g_image, guest_cmdline(), kMemoryMib, xcr0);
}

// The baseline loop: nothing but KVM_RUN and a switch on the exit reason.
RunSample run_raw(RawVm& r) {
  const int vcpu = r.vcpu;
  kvm_run* const run = r.run;
  uint64_t count = 0;
  bool done = false, bad_exit = false;
  const double c0 = thread_cpu_seconds();
  const auto t0 = Clock::now();
  while (!done && ::ioctl(vcpu, KVM_RUN, 0) == 0) {
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        if (run->io.port == layout::kNoopPort) {
          ++count;
        } else if (run->io.port == layout::kDebugExitPort) {
          done = true;
        }
        break;  // every other port: ignored
      default:
        done = bad_exit = true;
        break;
    }
  }
  const int run_errno = errno;
  const auto t1 = Clock::now();
  const double c1 = thread_cpu_seconds();
  if (!done) {
    errno = run_errno;
    fail("KVM_RUN");
  }
  if (bad_exit) throw std::runtime_error("unexpected exit reason " + std::to_string(run->exit_reason));
  return {std::chrono::duration<double>(t1 - t0).count(), c1 - c0, count};
}

// --------------------------------------------------------------- Apiary --

std::unique_ptr<devices::Machine> build_machine(std::atomic<bool>& done, std::atomic<int>& status) {
  devices::MachineConfig cfg;
  cfg.vcpus = 1;
  cfg.memory_mib = kMemoryMib;
  cfg.kernel = g_image;
  cfg.cmdline = guest_cmdline();
  auto m = std::make_unique<devices::Machine>(std::move(cfg));
  devices::Machine* raw = m.get();
  // Runs inside run(), on this thread: note the exit and kick the vCPU so
  // run() returns (ExitInterrupted) instead of re-entering the halted guest.
  m->set_event_handler([raw, &done, &status](const devices::MachineEvent& e) {
    if (auto* d = std::get_if<devices::EventDebugExit>(&e)) {
      status = d->status;
      done = true;
      raw->vcpus().front()->kick();
    }
  });
  return m;
}

RunSample run_apiary(devices::Machine& m, const std::atomic<bool>& done) {
  vmm::VcpuBackend& vcpu = *m.vcpus().front();
  std::string error;
  const double c0 = thread_cpu_seconds();
  const auto t0 = Clock::now();
  while (!done.load(std::memory_order_relaxed)) {
    vmm::Exit e = vcpu.run();
    if (std::holds_alternative<vmm::ExitInterrupted>(e)) continue;
    error = vmm::describe(e);
    break;
  }
  const auto t1 = Clock::now();
  const double c1 = thread_cpu_seconds();
  if (!error.empty()) throw std::runtime_error("guest stopped: " + error);
  return {std::chrono::duration<double>(t1 - t0).count(), c1 - c0, m.noop().writes()};
}

// ------------------------------------------------------------ benchmarks --

// The timed loop the KVM benchmarks share: `one_run` builds a VM outside the
// timed region and returns the measured run. Manual time is the run loop's
// wall time; the counters give the round's cost per exit by wall and by CPU
// time, and the exits per run.
template <class OneRun>
void run_round(benchmark::State& state, OneRun one_run) {
  RunSample total;
  try {
    for (auto _ : state) {
      const RunSample s = one_run();
      state.SetIterationTime(s.seconds);
      if (s.noop_exits != g_settings.exits) {
        const std::string msg = "saw " + std::to_string(s.noop_exits) + " noop exits, expected " +
                                std::to_string(g_settings.exits);
        state.SkipWithError(msg.c_str());
        return;
      }
      total.seconds += s.seconds;
      total.cpu_seconds += s.cpu_seconds;
      total.noop_exits += s.noop_exits;
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  if (total.noop_exits == 0) return;
  const double exits = static_cast<double>(total.noop_exits);
  state.counters["ns_per_exit"] = benchmark::Counter(total.seconds * 1e9 / exits);
  state.counters["cpu_ns_per_exit"] = benchmark::Counter(total.cpu_seconds * 1e9 / exits);
  state.counters["exits"] = benchmark::Counter(exits, benchmark::Counter::kAvgIterations);
}

void BM_RawKvmLoop(benchmark::State& state) {
  run_round(state, [] {
    RawVm vm;
    build_raw_vm(vm, bench::RawXcr0::boot);
    return run_raw(vm);
  });
}

void BM_RawKvmLoopResetXcr0(benchmark::State& state) {
  run_round(state, [] {
    RawVm vm;
    build_raw_vm(vm, bench::RawXcr0::reset);
    return run_raw(vm);
  });
}

void BM_ApiaryDispatch(benchmark::State& state) {
  run_round(state, [] {
    std::atomic<bool> done{false};
    std::atomic<int> status{-1};
    auto machine = build_machine(done, status);
    const RunSample s = run_apiary(*machine, done);
    machine->set_event_handler(nullptr);
    if (status != layout::debug_exit_status(0))
      throw std::runtime_error("guest ended with debug-exit status " + std::to_string(status.load()));
    return s;
  });
}

// Apiary's user-space work per exit on its own, no KVM: decode a kvm_run
// page holding a 1-byte OUT to the noop port and dispatch it through the
// bus of a real (simulated-backend) Machine, with the two counter
// increments run() does per exit. The raw loop's equivalent is one switch
// and one compare.
void BM_UserspaceDispatch(benchmark::State& state) {
  devices::MachineConfig cfg;
  cfg.memory_mib = kMemoryMib;
  cfg.kernel = g_image;
  cfg.backend = devices::VcpuBackendKind::simulated;
  std::unique_ptr<devices::Machine> m;
  try {
    m = std::make_unique<devices::Machine>(std::move(cfg));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  vmm::Bus& bus = m->bus();
  struct Page {
    kvm_run run;
    uint8_t data[8];
  };
  auto page = std::make_unique<Page>();
  page->run.exit_reason = KVM_EXIT_IO;
  page->run.io.direction = KVM_EXIT_IO_OUT;
  page->run.io.size = 1;
  page->run.io.port = layout::kNoopPort;
  page->run.io.count = 1;
  page->run.io.data_offset = offsetof(Page, data);
  std::atomic<uint64_t> runs{0}, pio_exits{0};
  for (auto _ : state) {
    benchmark::ClobberMemory();  // as if KVM had just written the page
    runs.fetch_add(1, std::memory_order_relaxed);
    const vmm::Exit e = vmm::decode_exit(page->run);
    const auto* pio = std::get_if<vmm::ExitPio>(&e);
    if (!pio) continue;
    pio_exits.fetch_add(1, std::memory_order_relaxed);
    uint64_t value = 0;
    std::memcpy(&value, reinterpret_cast<const uint8_t*>(&page->run) + pio->data_offset, pio->size);
    bus.write(vmm::AddressSpace::pio, pio->port, pio->size, value);
  }
  if (m->noop().writes() != static_cast<uint64_t>(state.iterations()))
    state.SkipWithError("the noop port missed writes");
}

// --------------------------------------------------------------- figures --

// Every successful round's counters, by benchmark family ("BM_RawKvmLoop")
// and counter name ("ns_per_exit").
using Samples = std::map<std::string, std::map<std::string, std::vector<double>>>;

// The display reporter chosen by --benchmark_format, plus a copy of each
// successful round's per-exit counters for the figures.
template <class Base>
class FigureCollector final : public Base {
 public:
  template <class... BaseArgs>
  explicit FigureCollector(Samples& out, BaseArgs... args) : Base(args...), out_(out) {}
  void ReportRuns(const std::vector<benchmark::BenchmarkReporter::Run>& reports) override {
    for (const auto& r : reports) {
      if (r.error_occurred || r.run_type != benchmark::BenchmarkReporter::Run::RT_Iteration) continue;
      const std::string name = r.benchmark_name();
      auto& family = out_[name.substr(0, name.find('/'))];
      for (const char* counter : {"ns_per_exit", "cpu_ns_per_exit"}) {
        auto it = r.counters.find(counter);
        if (it != r.counters.end()) family[counter].push_back(it->second.value);
      }
      if (r.time_unit == benchmark::kNanosecond) family["cpu_ns"].push_back(r.GetAdjustedCPUTime());
    }
    Base::ReportRuns(reports);
  }

 private:
  Samples& out_;
};

// The display flags Google Benchmark would apply to its own reporter
// (Initialize() consumes them, so main() reads them first).
struct DisplayFlags {
  std::string format = "console";
  std::string color = "auto";
  std::string tabular = "true";  // one column per counter reads best here
};

bool truthy(const std::string& v) { return v == "true" || v == "yes" || v == "1" || v == "on"; }

std::unique_ptr<benchmark::BenchmarkReporter> make_reporter(const DisplayFlags& flags, Samples& out) {
  if (flags.format == "json") return std::make_unique<FigureCollector<benchmark::JSONReporter>>(out);
  // CSV is deprecated in Google Benchmark; --benchmark_out_format=csv still works.
  if (flags.format != "console")
    std::fprintf(stderr, "bench_exit_dispatch: --benchmark_format=%s shown as console\n", flags.format.c_str());
  const char* term = std::getenv("TERM");
  const bool color = flags.color == "auto"
                         ? ::isatty(STDOUT_FILENO) && term && std::string_view(term) != "dumb"
                         : truthy(flags.color);
  int opts = benchmark::ConsoleReporter::OO_None;
  if (color) opts |= benchmark::ConsoleReporter::OO_Color;
  if (flags.tabular.empty() || truthy(flags.tabular)) opts |= benchmark::ConsoleReporter::OO_Tabular;
  return std::make_unique<FigureCollector<benchmark::ConsoleReporter>>(
      out, static_cast<benchmark::ConsoleReporter::OutputOptions>(opts));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Medians, spreads and the figure lines. `out` is stdout for the console
// format, stderr when stdout carries JSON.
void print_figures(const Samples& samples, FILE* out) {
  auto find = [&](const char* family, const char* counter) -> const std::vector<double>* {
    auto f = samples.find(family);
    if (f == samples.end()) return nullptr;
    auto c = f->second.find(counter);
    return c == f->second.end() || c->second.empty() ? nullptr : &c->second;
  };
  auto spread = [out](const char* what, const std::vector<double>& v) {
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    std::fprintf(out, "  %-34s median %8.3f  min %8.3f  max %8.3f  (%zu rounds)\n", what, median(v), *lo, *hi,
                 v.size());
  };
  if (find(kRawName, "ns_per_exit") || find(kApiaryName, "ns_per_exit"))
    std::fprintf(out, "\nper-exit cost in us, and apiary/raw ratios:\n");
  struct Medians {
    double raw = 0, apiary = 0;
  };
  std::map<std::string, Medians> medians;
  auto us = [](const std::vector<double>& v) {
    std::vector<double> r;
    for (double x : v) r.push_back(x / 1000);
    return r;
  };
  for (const char* counter : {"ns_per_exit", "cpu_ns_per_exit"}) {
    const bool cpu = counter[0] == 'c';
    const auto* raw = find(kRawName, counter);
    const auto* apiary = find(kApiaryName, counter);
    if (const auto* reset = find(kRawResetXcr0Name, counter))
      spread(cpu ? "raw loop, reset XCR0, CPU time" : "raw loop, reset XCR0, wall time", us(*reset));
    if (raw) spread(cpu ? "raw loop, thread CPU time" : "raw loop, wall time", us(*raw));
    if (apiary) spread(cpu ? "apiary, thread CPU time" : "apiary, wall time", us(*apiary));
    if (raw && apiary && raw->size() == apiary->size()) {
      // Each round pair ran back to back: their ratio is immune to slow drift.
      std::vector<double> paired;
      for (size_t i = 0; i < raw->size(); ++i) paired.push_back((*apiary)[i] / (*raw)[i]);
      spread(cpu ? "ratio per round pair, CPU time" : "ratio per round pair, wall time", paired);
    }
    if (raw && apiary) medians[counter] = {median(*raw), median(*apiary)};
  }
  std::fprintf(out, "\n");
  // The figures use thread CPU time: the run loop never blocks, so on an
  // idle host it equals wall time (checked: within 1%), and unlike wall time
  // it does not count the slices other processes take from this thread.
  if (auto it = medians.find("cpu_ns_per_exit"); it != medians.end()) {
    std::fprintf(out, "figure: raw_pio_exit_ns %.0f ns\n", it->second.raw);
    std::fprintf(out, "figure: apiary_pio_exit_ns %.0f ns\n", it->second.apiary);
    std::fprintf(out, "figure: exit_dispatch_ratio %.2f x\n", it->second.apiary / it->second.raw);
  } else if (find(kRawName, "cpu_ns_per_exit") || find(kApiaryName, "cpu_ns_per_exit")) {
    std::fprintf(out, "bench_exit_dispatch: no ratio, only one of raw and apiary has a successful round\n");
  }
  if (auto it = medians.find("ns_per_exit"); it != medians.end())
    std::fprintf(out, "figure: exit_dispatch_ratio_wall %.2f x\n", it->second.apiary / it->second.raw);
  // The boot XCR0's own cost: the raw loop with it over the raw loop
  // without; and Apiary over the raw loop without it, which is the ratio as
  // it was defined until 2026-12-06 (for comparison with earlier runs).
  if (const auto* reset = find(kRawResetXcr0Name, "cpu_ns_per_exit")) {
    std::fprintf(out, "figure: raw_pio_exit_reset_xcr0_ns %.0f ns\n", median(*reset));
    if (const auto* raw = find(kRawName, "cpu_ns_per_exit"))
      std::fprintf(out, "figure: boot_xcr0_exit_cost_ratio %.2f x\n", median(*raw) / median(*reset));
    if (const auto* apiary = find(kApiaryName, "cpu_ns_per_exit"))
      std::fprintf(out, "figure: exit_dispatch_ratio_vs_reset_xcr0 %.2f x\n", median(*apiary) / median(*reset));
  }
  // CPU time as well: a ~20 ns loop is the most exposed to preemption.
  if (const auto* user = find(kUserspaceName, "cpu_ns"))
    std::fprintf(out, "figure: apiary_userspace_dispatch_ns %.1f ns\n", median(*user));
  std::fflush(out);
}

// ----------------------------------------------------------------- main --

bool parse_flag(std::string_view arg, std::string_view name, long& out) {
  if (arg.substr(0, name.size()) != name) return false;
  const std::string value(arg.substr(name.size()));
  char* end = nullptr;
  errno = 0;
  out = std::strtol(value.c_str(), &end, 10);
  return !value.empty() && *end == '\0' && errno == 0 && out > 0;
}

// KVM usable here? Opening the device, the capability checks and creating
// a VM are all it takes to know; the reason is printed when not.
bool kvm_usable(std::string& reason) {
  try {
    vmm::kvm::System sys;
    vmm::kvm::Vm vm(sys);
    return true;
  } catch (const vmm::Error& e) {
    reason = e.what();
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  DisplayFlags display;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    for (auto [flag, value] : {std::pair{std::string_view("--benchmark_format="), &display.format},
                               std::pair{std::string_view("--benchmark_color="), &display.color},
                               std::pair{std::string_view("--benchmark_counters_tabular="), &display.tabular}}) {
      if (arg.substr(0, flag.size()) == flag) *value = std::string(arg.substr(flag.size()));
    }
    if (arg == "--benchmark_counters_tabular") display.tabular = "true";
  }
  benchmark::Initialize(&argc, argv);
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    long v = 0;
    const std::string_view arg = argv[i];
    if (parse_flag(arg, "--exits=", v)) {
      g_settings.exits = static_cast<uint64_t>(v);
    } else if (parse_flag(arg, "--rounds=", v)) {
      g_settings.rounds = static_cast<int>(v);
    } else if (parse_flag(arg, "--iterations=", v)) {
      g_settings.iterations = static_cast<int>(v);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  const std::string image_path = std::string(APIARY_GUEST_DIR) + "/pio_bench.elf";
  try {
    g_image = vmm::read_file(image_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_exit_dispatch: cannot read the guest %s: %s\n", image_path.c_str(), e.what());
    return 1;
  }

  // The KVM benchmarks, as alternating rounds. Without a usable /dev/kvm
  // they cannot run, which is a failure (make bench runs this program
  // through scripts/kvm-vm); BM_UserspaceDispatch needs no KVM and still runs.
  std::string reason;
  const bool kvm = kvm_usable(reason);
  if (!kvm) {
    std::fprintf(stderr, "bench_exit_dispatch: the raw loops and BM_ApiaryDispatch need KVM, which is not usable "
                 "here (%s); run through scripts/kvm-vm\n", reason.c_str());
  } else {
    std::fprintf(stderr, "bench_exit_dispatch: %llu noop exits per guest run, %d rounds x %d runs each, raw "
                 "(reset XCR0), raw and apiary alternating\n",
                 static_cast<unsigned long long>(g_settings.exits), g_settings.rounds, g_settings.iterations);
    for (int round = 1; round <= g_settings.rounds; ++round) {
      const std::string suffix = "/round:" + std::to_string(round);
      for (auto [name, fn] : {std::pair{kRawResetXcr0Name, &BM_RawKvmLoopResetXcr0},
                              std::pair{kRawName, &BM_RawKvmLoop}, std::pair{kApiaryName, &BM_ApiaryDispatch}}) {
        benchmark::RegisterBenchmark((name + suffix).c_str(), fn)
            ->Iterations(g_settings.iterations)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  benchmark::RegisterBenchmark(kUserspaceName, BM_UserspaceDispatch)->Unit(benchmark::kNanosecond);

  Samples samples;
  auto reporter = make_reporter(display, samples);
  benchmark::RunSpecifiedBenchmarks(reporter.get());
  benchmark::Shutdown();
  print_figures(samples, display.format == "json" ? stderr : stdout);
  return kvm ? 0 : 1;
}
