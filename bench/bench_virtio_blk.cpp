// bench_virtio_blk: how fast a guest reads a disk through Apiary's
// virtio-blk, against the host reading the same file the same way.
//
//   BM_HostRead    pread() of the backing file in chunk-sized pieces into
//                  one buffer, XOR-folding every 64-bit word (the guest's
//                  work too), from the page cache.
//   BM_GuestRead   guest/blk_bench in a devices::Machine (the production
//                  board; virtio-mmio, the virtio-blk worker thread, the
//                  vCPU on this thread): one request per chunk, polled
//                  completion, the same XOR fold. Timed from the guest's
//                  progress code 0x10 (first request) to 0x11 (last
//                  completion), so boot and teardown are not counted. The
//                  guest's sum is checked against the file's.
//
// Figures: virtio_blk_guest_mib_s, virtio_blk_host_mib_s and
// virtio_blk_ratio (guest / host). Needs a usable /dev/kvm (make bench runs
// it inside scripts/kvm-vm where there is none).
//
// Own flags: --disk-mib=N (file size, default 64), --chunk-kib=N (request
// size, default 64), --runs=N (median over N runs of each, default 5).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bench/bench_support.hpp"
#include "devices/machine.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/kvm.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/vcpu.hpp"

namespace {

using namespace apiary;
using Clock = std::chrono::steady_clock;
using bench::median;
using bench::parse_flag;

struct Settings {
  uint64_t disk_mib = 64;
  uint64_t chunk_kib = 64;
  int runs = 5;
};
Settings g;
std::string g_disk;
uint64_t g_expected_sum = 0;
std::vector<uint8_t> g_image;
std::vector<double> g_host_s, g_guest_s;

constexpr uint8_t kStartCode = 0x10, kEndCode = 0x11;  // guest/blk_bench

// A file of pseudo-random words (xorshift64), and the XOR of all of them.
uint64_t make_disk(const std::string& path, uint64_t bytes) {
  std::vector<uint64_t> words(bytes / 8);
  uint64_t x = 0x9e3779b97f4a7c15ull, sum = 0;
  for (auto& w : words) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w = x;
    sum ^= x;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ::write(fd, words.data(), bytes) != static_cast<ssize_t>(bytes))
    throw std::runtime_error("cannot write " + path);
  ::close(fd);
  return sum;
}

double host_read() {
  const int fd = ::open(g_disk.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + g_disk);
  std::vector<uint8_t> buf(g.chunk_kib * 1024);
  uint64_t sum = 0;
  const auto t0 = Clock::now();
  for (off_t pos = 0;; pos += static_cast<off_t>(buf.size())) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), pos);
    if (n <= 0) break;
    const auto* w = reinterpret_cast<const uint64_t*>(buf.data());
    for (ssize_t i = 0; i < n / 8; ++i) sum ^= w[i];
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  benchmark::DoNotOptimize(sum);
  if (sum != g_expected_sum) throw std::runtime_error("host read: wrong sum");
  return s;
}

double guest_read() {
  devices::MachineConfig cfg;
  cfg.memory_mib = 64;
  cfg.kernel = g_image;
  cfg.cmdline = "chunk=" + std::to_string(g.chunk_kib);
  cfg.disks.push_back({"bench", g_disk, true});
  devices::Machine m(std::move(cfg));
  std::atomic<bool> done{false};
  std::atomic<int> status{-1};
  Clock::time_point start{}, end{};
  m.set_event_handler([&](const devices::MachineEvent& e) {
    if (auto* p = std::get_if<devices::EventProgress>(&e)) {
      if (p->code == kStartCode) start = Clock::now();
      if (p->code == kEndCode) end = Clock::now();
    } else if (auto* d = std::get_if<devices::EventDebugExit>(&e)) {
      status = d->status;
      done = true;
      m.vcpus().front()->kick();
    }
  });
  vmm::VcpuBackend& vcpu = *m.vcpus().front();
  vcpu.bind_thread();
  while (!done) {
    const vmm::Exit e = vcpu.run();
    if (!std::holds_alternative<vmm::ExitInterrupted>(e))
      throw std::runtime_error("guest stopped: " + vmm::describe(e));
  }
  vcpu.unbind_thread();
  m.set_event_handler(nullptr);
  const std::string out = m.console().history();
  char expect[64];
  std::snprintf(expect, sizeof expect, "sum=%llx", static_cast<unsigned long long>(g_expected_sum));
  if (status != layout::debug_exit_status(0) || out.find(expect) == std::string::npos)
    throw std::runtime_error("blk_bench failed (status " + std::to_string(status.load()) + "): " + out);
  return std::chrono::duration<double>(end - start).count();
}

void BM_HostRead(benchmark::State& state) {
  try {
    host_read();  // warm the page cache
    for (auto _ : state) {
      const double s = host_read();
      g_host_s.push_back(s);
      state.SetIterationTime(s);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (g.disk_mib << 20)));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void BM_GuestRead(benchmark::State& state) {
  try {
    for (auto _ : state) {
      const double s = guest_read();
      g_guest_s.push_back(s);
      state.SetIterationTime(s);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (g.disk_mib << 20)));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const bool flags_ok = bench::strip_own_flags(argc, argv, [](const std::string& arg) {
    long v = 0;
    if (parse_flag(arg, "--disk-mib=", v)) g.disk_mib = static_cast<uint64_t>(v);
    else if (parse_flag(arg, "--chunk-kib=", v)) g.chunk_kib = static_cast<uint64_t>(std::min(v, 256L));
    else if (parse_flag(arg, "--runs=", v)) g.runs = static_cast<int>(v);
    else return false;
    return true;
  });
  if (!flags_ok) return 2;
  if (const std::string why = vmm::kvm::why_unusable(); !why.empty()) {
    std::fprintf(stderr, "bench_virtio_blk: needs KVM (%s); run it through scripts/kvm-vm\n", why.c_str());
    return 1;
  }
  vmm::install_kick_handler();
  // On tmpfs where there is one: inside scripts/kvm-vm the temporary
  // directory is the host's over 9p, which would put 9p under both sides.
  if (::access("/dev/shm", W_OK) == 0) ::setenv("TMPDIR", "/dev/shm", 1);
  bench::TempDir dir("apiary-bench-blk");
  g_disk = dir.path + "/disk.img";
  try {
    g_image = vmm::read_file(std::string(APIARY_GUEST_DIR) + "/blk_bench.elf");
    g_expected_sum = make_disk(g_disk, g.disk_mib << 20);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_virtio_blk: %s\n", e.what());
    return 1;
  }
  benchmark::RegisterBenchmark("BM_HostRead", BM_HostRead)->Iterations(g.runs)->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_GuestRead", BM_GuestRead)->Iterations(g.runs)->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_host_s.empty() || g_guest_s.empty()) return 1;
  const double mib = static_cast<double>(g.disk_mib);
  const double host = mib / median(g_host_s), guest = mib / median(g_guest_s);
  std::printf("\nfigure: virtio_blk_host_mib_s %.0f MiB/s\n", host);
  std::printf("figure: virtio_blk_guest_mib_s %.0f MiB/s\n", guest);
  std::printf("figure: virtio_blk_ratio %.2f x\n", guest / host);
  return 0;
}
