// bench_instance: what the actor runtime costs around a VM, each against a
// floor measured in the same run.
//
//   fan-out   pause + resume of a running instance (request -> the state
//             stream says quiesce, request -> run) for 1..64 vCPUs and the
//             board's devices plus 0..8 virtio devices, against the raw
//             signal-and-join floor: the same Machine driven by plain
//             threads, paused by a flag, a kick per vCPU and a counter the
//             threads bump, then a direct pause() call per device; resumed
//             the other way round. Figure per size: apiary / raw (target
//             <= 2x).
//   cycles    create -> first COM1 byte -> destroy, repeated: an instance
//             actor booting guest/hello until its console shows output, then
//             powered off and gone; against a raw KVM loop (raw_kvm.hpp)
//             that creates the VM, runs it to the first byte written to
//             COM1's data register, and closes it. Figure: apiary cycles/s
//             over raw cycles/s (target >= 0.8x).
//             Beside it, the protocol's floor in bare CAF: the same
//             acknowledged fan-out (client -> instance -> each vCPU actor ->
//             its thread and back, then each device actor) between actors
//             that do nothing else, no VM behind them. Its ratio to the raw
//             floor is the best any implementation of the design
//             (ARCHITECTURE.md: quiesce is a message fan-out with
//             acknowledgements) can reach on this machine; Apiary's ratio
//             to it is Apiary's own overhead over that design.
//   caf rtt   one bare CAF request/reply on the same scheduler: the cost
//             of a single message hop, to read the fan-out figures by.
//   memory    VMM memory per idle instance: K instances whose single vCPU
//             sits in `cli; hlt`, the process RSS before and after, minus
//             the guest RAM those instances touched (the resident pages of
//             an identically loaded Machine, by mincore). Target <= 1 MiB.
//
// Every figure is printed as `figure: <name> <value> <unit>`; see
// docs/benchmarks.md. Needs a usable /dev/kvm (make bench runs it inside
// scripts/kvm-vm where there is none); without one it fails with the reason.
//
// Own flags (besides Google Benchmark's): --rounds=N (pause/resume pairs
// and create cycles per measurement, default 20), --idle=K (instances of
// the memory measurement, default 16), --max-vcpus=N (largest fan-out size,
// default 64).
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "apps/actor_runtime.hpp"
#include "bench/bench_support.hpp"
#include "bench/raw_kvm.hpp"
#include "devices/machine.hpp"
#include "vmm-core/multiboot_image.hpp"
#include "vmm-core/kvm.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/vcpu.hpp"

namespace {

using namespace apiary;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using bench::median;
using bench::parse_flag;

struct Settings {
  int rounds = 20;
  int idle = 16;
  uint32_t max_vcpus = 64;
};
Settings g;

constexpr uint64_t kMemoryMib = 64;
constexpr uint64_t kIdleMemoryMib = 64;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<uint8_t> guest(const std::string& file) { return vmm::read_file(std::string(APIARY_GUEST_DIR) + "/" + file); }

// cli; hlt; jmp back to the hlt: an idle vCPU that never exits to user space.
const std::vector<uint8_t> kIdleCode = {0xfa, 0xf4, 0xeb, 0xfd};

// Nothing waits forever: every measurement step says what it is doing, and
// a watchdog ends the process (status 3, naming the step) when one takes
// longer than kStepDeadline.
constexpr auto kStepDeadline = 180s;
std::mutex g_step_mu;
std::string g_step = "start";
Clock::time_point g_step_since = Clock::now();
void step(const std::string& what) {
  std::lock_guard lock(g_step_mu);
  g_step = what;
  g_step_since = Clock::now();
  std::fprintf(stderr, "bench_instance: %s\n", what.c_str());
}
void start_watchdog() {
  std::thread([] {
    for (;;) {
      std::this_thread::sleep_for(1s);
      std::lock_guard lock(g_step_mu);
      if (Clock::now() - g_step_since > kStepDeadline) {
        std::fprintf(stderr, "bench_instance: step_timeout: '%s' took more than %lld s\n", g_step.c_str(),
                     static_cast<long long>(kStepDeadline.count()));
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
  }).detach();
}

// Results, by figure name, gathered by the benchmark functions.
std::map<std::string, double> g_figures;
std::map<std::string, std::string> g_units;
void figure(const std::string& name, double value, const std::string& unit) {
  g_figures[name] = value;
  g_units[name] = unit;
}

// ------------------------------------------------------ instance driver --

// An instance actor on a threaded actor system, followed through its state
// stream and (optionally) its console.
struct Driven {
  caf::scoped_actor& self;
  actors::instance_actor inst;
  std::string last_state;
  std::string output;

  bool wait(const std::function<bool()>& pred, std::chrono::milliseconds deadline = 30s) {
    const auto end = Clock::now() + deadline;
    while (!pred()) {
      if (Clock::now() >= end) return false;
      self->receive(
          [&](actors::state_atom, const std::string&, const std::string& s, uint64_t, const std::string&, const std::string&) {
            last_state = s;
          },
          [&](actors::output_atom, const std::string& bytes) { output += bytes; },
          caf::after(50ms) >> [] {});
    }
    return true;
  }
  bool wait_state(const std::string& s) {
    return wait([&] { return last_state == s; });
  }
  // A request the instance must acknowledge within 10 s.
  template <class Atom>
  void call(Atom atom) {
    bool ok = false;
    std::string err;
    self->request(inst, 10s, atom).receive([&](actors::ack_atom) { ok = true; },
                                            [&](caf::error& e) { err = actors::describe(e); });
    if (!ok) throw std::runtime_error("instance refused " + caf::to_string(Atom::value) + ": " + err);
  }
};

actors::instance_actor spawn_subscribed(caf::actor_system& sys, caf::scoped_actor& self, actors::InstanceConfig c) {
  auto inst = actors::spawn_instance(sys, std::move(c));
  bool ok = false;
  self->request(inst, 10s, actors::subscribe_atom::value, caf::actor_cast<caf::actor>(self))
      .receive([&](actors::ack_atom) { ok = true; }, [](caf::error&) {});
  if (!ok) throw std::runtime_error("subscribe refused");
  return inst;
}

// The scheduler `apiary run` and the nodes use (apps/actor_runtime.hpp), so
// the figures are the product's and not those of CAF's default policy.
caf::actor_system_config& quiet(caf::actor_system_config& c) {
  c.set("logger.verbosity", caf::atom("quiet"));
  apps::configure_scheduler(c);
  return c;
}

// ------------------------------------------------------------- fan-out --

// The busy guest: guest/spin with a tick so rare it never prints.
devices::MachineConfig fan_out_machine(uint32_t vcpus, uint32_t disks, const std::string& disk_path) {
  devices::MachineConfig m;
  m.vcpus = vcpus;
  m.memory_mib = kMemoryMib;
  m.kernel = guest("spin.elf");
  m.cmdline = "iters=100000000000";
  for (uint32_t i = 0; i < disks; ++i) m.disks.push_back({"d" + std::to_string(i), disk_path, true});
  m.rng = disks > 0;
  return m;
}

// Seconds per pause+resume pair through the instance actor.
double apiary_fan_out(uint32_t vcpus, uint32_t disks, const std::string& disk_path) {
  caf::actor_system_config cfg;
  caf::actor_system sys{quiet(cfg)};
  caf::scoped_actor self{sys};
  actors::InstanceConfig c;
  c.name = "fanout";
  c.machine = fan_out_machine(vcpus, disks, disk_path);
  Driven d{self, spawn_subscribed(sys, self, c), "", ""};
  d.call(actors::start_atom::value);
  if (!d.wait_state("run")) throw std::runtime_error("fan-out instance never ran");
  std::vector<double> pairs;
  for (int i = 0; i < g.rounds; ++i) {
    const auto t0 = Clock::now();
    d.call(actors::pause_atom::value);
    if (!d.wait_state("quiesce")) throw std::runtime_error("pause never reached quiesce");
    d.call(actors::resume_atom::value);
    if (!d.wait_state("run")) throw std::runtime_error("resume never reached run");
    pairs.push_back(seconds_since(t0));
  }
  d.call(actors::poweroff_atom::value);
  d.wait_state("destroy");
  self->send_exit(d.inst, caf::exit_reason::user_shutdown);
  return median(pairs);
}

// The floor: the same Machine, one plain thread per vCPU looping on run(),
// a shared hold flag, kicks, and counters instead of messages.
// Seconds per pause+resume pair; `device_count` gets the board's device count.
double raw_fan_out(uint32_t vcpus, uint32_t disks, const std::string& disk_path, size_t& device_count) {
  devices::Machine m(fan_out_machine(vcpus, disks, disk_path));
  device_count = m.devices().size();
  std::atomic<bool> hold{false}, stop{false};
  std::atomic<uint32_t> parked{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> threads;
  for (auto& v : m.vcpus()) {
    threads.emplace_back([&, vcpu = v.get()] {
      vcpu->bind_thread();
      while (!stop) {
        if (hold) {
          std::unique_lock lock(mu);
          ++parked;
          cv.notify_all();
          cv.wait(lock, [&] { return !hold || stop; });
          --parked;
          cv.notify_all();
          continue;
        }
        vcpu->run();  // returns on a kick (ExitInterrupted) or an exit
      }
      vcpu->unbind_thread();
    });
  }
  std::this_thread::sleep_for(100ms);  // the guest is running (the Machine started its devices)
  std::vector<double> pairs;
  const auto devs = m.devices();
  for (int i = 0; i < g.rounds; ++i) {
    const auto t0 = Clock::now();
    hold = true;
    for (auto& v : m.vcpus()) v->kick();
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return parked == vcpus; });
    }
    for (devices::Device* dev : devs) dev->pause();
    for (devices::Device* dev : devs) dev->resume();
    {
      std::unique_lock lock(mu);
      hold = false;
      cv.notify_all();
      cv.wait(lock, [&] { return parked == 0; });
    }
    pairs.push_back(seconds_since(t0));
  }
  {
    std::unique_lock lock(mu);
    stop = true;
    hold = false;
    cv.notify_all();
  }
  for (auto& v : m.vcpus()) v->kick();
  for (auto& t : threads) t.join();
  return median(pairs);
}

// ------------------------------------------- the protocol's floor in CAF --

// Stands in for a vCPU thread: parked on its condition variable, it answers
// each command with a message to its actor, as actors/vcpu_actor.cpp's
// thread does (without a KVM_RUN to leave).
struct FloorThread {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<uint64_t> queue;
  bool stop = false;
  caf::actor owner;
  std::thread thread;

  void post(uint64_t seq) {
    std::lock_guard lock(mu);
    queue.push_back(seq);
    cv.notify_one();
  }
  void loop() {
    for (;;) {
      uint64_t seq = 0;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (stop) return;
        seq = queue.front();
        queue.pop_front();
      }
      caf::anon_send(owner, actors::thread_ack_atom::value, seq);
    }
  }
};

struct FloorVcpu {
  std::shared_ptr<FloorThread> thread;
  uint64_t next = 1;
  std::map<uint64_t, caf::response_promise> pending;
};

caf::behavior floor_vcpu(caf::stateful_actor<FloorVcpu>* self, std::shared_ptr<FloorThread> thread) {
  self->state.thread = thread;
  auto control = [self]() -> caf::result<actors::ack_atom> {
    auto rp = self->make_response_promise();
    const uint64_t seq = self->state.next++;
    self->state.pending.emplace(seq, rp);
    self->state.thread->post(seq);
    return rp;
  };
  return {
      [control](actors::hold_atom) { return control(); },
      [control](actors::release_atom) { return control(); },
      [self](actors::thread_ack_atom, uint64_t seq) {
        auto it = self->state.pending.find(seq);
        if (it == self->state.pending.end()) return;
        it->second.deliver(actors::ack_atom::value);
        self->state.pending.erase(it);
      },
  };
}

caf::behavior floor_device() {
  return {
      [](actors::pause_atom) { return actors::ack_atom::value; },
      [](actors::resume_atom) { return actors::ack_atom::value; },
  };
}

// Asks every actor of `to` in parallel, then runs `then` once all acked.
// No timeout per request: CAF 0.17 files each one with its clock thread (a
// wake-up per request), which Apiary's fan-outs avoid (actors/fan_out.hpp);
// a floor paying it was slower than Apiary in the nested VM.
template <class Atom>
void floor_fan(caf::event_based_actor* self, const std::vector<caf::actor>& to, Atom atom, std::function<void()> then) {
  if (to.empty()) return then();
  auto left = std::make_shared<size_t>(to.size());
  for (const auto& a : to)
    self->request(a, caf::infinite, atom).then([left, then](actors::ack_atom) {
      if (--*left == 0) then();
    });
}

// Pause: hold the vCPUs, then pause the devices; resume: the other way round.
caf::behavior floor_instance(caf::event_based_actor* self, std::vector<caf::actor> vcpus, std::vector<caf::actor> devs) {
  return {
      [=](actors::pause_atom) -> caf::result<actors::ack_atom> {
        auto rp = self->make_response_promise();
        floor_fan(self, vcpus, actors::hold_atom::value, [=]() mutable {
          floor_fan(self, devs, actors::pause_atom::value, [rp]() mutable { rp.deliver(actors::ack_atom::value); });
        });
        return rp;
      },
      [=](actors::resume_atom) -> caf::result<actors::ack_atom> {
        auto rp = self->make_response_promise();
        floor_fan(self, devs, actors::resume_atom::value, [=]() mutable {
          floor_fan(self, vcpus, actors::release_atom::value, [rp]() mutable { rp.deliver(actors::ack_atom::value); });
        });
        return rp;
      },
  };
}

// Seconds per pause+resume pair of the bare protocol with `vcpus` vCPU
// actors (each with its thread) and `devices` device actors.
double caf_protocol_fan_out(uint32_t vcpus, size_t devices) {
  caf::actor_system_config cfg;
  caf::actor_system sys{quiet(cfg)};
  caf::scoped_actor self{sys};
  std::vector<std::shared_ptr<FloorThread>> threads;
  std::vector<caf::actor> vcpu_actors, device_actors;
  for (uint32_t i = 0; i < vcpus; ++i) {
    auto t = std::make_shared<FloorThread>();
    t->owner = sys.spawn(floor_vcpu, t);
    t->thread = std::thread([t] { t->loop(); });
    vcpu_actors.push_back(t->owner);
    threads.push_back(t);
  }
  for (size_t i = 0; i < devices; ++i) device_actors.push_back(sys.spawn(floor_device));
  auto inst = sys.spawn(floor_instance, vcpu_actors, device_actors);
  auto call = [&](auto atom) {
    bool ok = false;
    self->request(inst, 10s, atom).receive([&](actors::ack_atom) { ok = true; }, [](caf::error&) {});
    if (!ok) throw std::runtime_error("the protocol floor's instance did not answer");
  };
  std::vector<double> pairs;
  for (int i = 0; i < g.rounds; ++i) {
    const auto t0 = Clock::now();
    call(actors::pause_atom::value);
    call(actors::resume_atom::value);
    pairs.push_back(seconds_since(t0));
  }
  for (auto& t : threads) {
    {
      std::lock_guard lock(t->mu);
      t->stop = true;
      t->cv.notify_one();
    }
    t->thread.join();
    self->send_exit(t->owner, caf::exit_reason::user_shutdown);
    t->owner = nullptr;
  }
  for (auto& d : device_actors) self->send_exit(d, caf::exit_reason::user_shutdown);
  self->send_exit(inst, caf::exit_reason::user_shutdown);
  return median(pairs);
}

void BM_FanOut(benchmark::State& state) {
  const auto vcpus = static_cast<uint32_t>(state.range(0));
  const auto disks = static_cast<uint32_t>(state.range(1));
  bench::TempDir dir("apiary-bench-fanout");
  const std::string disk = dir.path + "/disk.img";
  std::ofstream(disk) << std::string(1 << 20, '\0');
  try {
    for (auto _ : state) {
      size_t devices = 0;
      const std::string size = std::to_string(vcpus) + " vCPUs, " + std::to_string(disks) + " disks";
      step("fan-out " + size + ": raw floor");
      const double raw = raw_fan_out(vcpus, disks, disk, devices);
      step("fan-out " + size + ": the protocol in bare CAF");
      const double protocol = caf_protocol_fan_out(vcpus, devices);
      step("fan-out " + size + ": apiary");
      const double apiary = apiary_fan_out(vcpus, disks, disk);
      state.SetIterationTime(apiary);
      state.counters["raw_us"] = raw * 1e6;
      state.counters["apiary_us"] = apiary * 1e6;
      state.counters["ratio"] = apiary / raw;
      state.counters["devices"] = static_cast<double>(devices);
      const std::string tag = std::to_string(vcpus) + "v" + std::to_string(devices) + "d";
      figure("fanout_pause_resume_us_" + tag, apiary * 1e6, "us");
      figure("fanout_raw_floor_us_" + tag, raw * 1e6, "us");
      figure("fanout_ratio_" + tag, apiary / raw, "x");
      figure("fanout_caf_protocol_us_" + tag, protocol * 1e6, "us");
      figure("fanout_protocol_floor_ratio_" + tag, protocol / raw, "x");
      figure("fanout_over_protocol_" + tag, apiary / protocol, "x");
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// A bare CAF request/reply between a scoped actor and an event-based actor
// on the same scheduler: the cost of one message hop of the fan-outs above,
// measured in the same run (median over 200 round trips), in seconds.
double caf_round_trip() {
  caf::actor_system_config cfg;
  caf::actor_system sys{quiet(cfg)};
  caf::scoped_actor self{sys};
  auto echo = sys.spawn([]() -> caf::behavior { return {[](int x) { return x; }}; });
  std::vector<double> rtt;
  for (int i = 0; i < 200; ++i) {
    const auto t0 = Clock::now();
    self->request(echo, 10s, i).receive([](int) {}, [](caf::error&) {});
    rtt.push_back(seconds_since(t0));
  }
  self->send_exit(echo, caf::exit_reason::user_shutdown);
  return median(rtt);
}

void BM_CafRoundTrip(benchmark::State& state) {
  for (auto _ : state) {
    const double s = caf_round_trip();
    state.SetIterationTime(s);
    figure("caf_request_rtt_us", s * 1e6, "us");
  }
}

// -------------------------------------------------------------- cycles --

// One raw cycle: create the VM, run to the first byte on COM1's data
// register (DLAB clear), close everything.
void raw_cycle(const std::vector<uint8_t>& image) {
  bench::RawVm vm;
  bench::build_raw_vm(vm, image, "", kMemoryMib, bench::RawXcr0::boot);
  bool dlab = false;
  for (;;) {
    if (::ioctl(vm.vcpu, KVM_RUN, 0) != 0) bench::fail("KVM_RUN");
    const kvm_run& r = *vm.run;
    if (r.exit_reason != KVM_EXIT_IO) throw std::runtime_error("raw cycle: exit " + std::to_string(r.exit_reason));
    uint8_t* data = reinterpret_cast<uint8_t*>(vm.run) + r.io.data_offset;
    if (r.io.direction != KVM_EXIT_IO_OUT) {
      // The guest's UART driver waits for "transmitter empty" in the line
      // status register; every other read sees a floating bus.
      std::memset(data, r.io.port == layout::kCom1Base + 5 ? 0x60 : 0xff, r.io.size * r.io.count);
      continue;
    }
    const uint8_t value = *data;
    if (r.io.port == layout::kCom1Base + 3) dlab = value & 0x80;  // LCR
    if (r.io.port == layout::kCom1Base && !dlab) return;
    if (r.io.port == layout::kDebugExitPort) throw std::runtime_error("raw cycle: guest exited before output");
  }
}

void apiary_cycle(caf::actor_system& sys, caf::scoped_actor& self, const std::vector<uint8_t>& image) {
  actors::InstanceConfig c;
  c.name = "cycle";
  c.machine.memory_mib = kMemoryMib;
  c.machine.kernel = image;
  c.wait_for_console = true;  // boot is gated on the console, as `apiary run` does
  c.console_wait = 10s;
  Driven d{self, spawn_subscribed(sys, self, c), "", ""};
  d.call(actors::start_atom::value);
  if (!d.wait_state("boot")) throw std::runtime_error("cycle: never booted");
  actors::console_actor console;
  self->request(d.inst, 10s, actors::console_atom::value)
      .receive([&](actors::console_actor con) { console = con; }, [](caf::error&) {});
  if (!console) throw std::runtime_error("cycle: no console");
  self->request(console, 10s, actors::attach_atom::value, caf::actor_cast<caf::actor>(self), true)
      .receive([&](const std::string& history, bool) { d.output += history; }, [](caf::error&) {});
  if (!d.wait([&] { return !d.output.empty(); })) throw std::runtime_error("cycle: no console output");
  // The guest may already have ended itself (hello debug-exits at once).
  if (d.last_state != "destroy") {
    self->request(d.inst, 10s, actors::poweroff_atom::value).receive([](actors::ack_atom) {}, [](caf::error&) {});
    if (!d.wait_state("destroy")) throw std::runtime_error("cycle: never destroyed");
  }
  self->send_exit(d.inst, caf::exit_reason::user_shutdown);
  self->wait_for(d.inst);
}

void BM_Cycles(benchmark::State& state) {
  try {
    const auto image = guest("hello.elf");
    caf::actor_system_config cfg;
    caf::actor_system sys{quiet(cfg)};
    caf::scoped_actor self{sys};
    step("create/destroy cycles");
    raw_cycle(image);  // warm both paths (page cache, first-use costs)
    apiary_cycle(sys, self, image);
    for (auto _ : state) {
      // Alternating blocks of the two, so drift lands on both.
      double raw_s = 0, apiary_s = 0;
      for (int block = 0; block < 2; ++block) {
        auto t0 = Clock::now();
        for (int i = 0; i < g.rounds / 2; ++i) raw_cycle(image);
        raw_s += seconds_since(t0);
        t0 = Clock::now();
        for (int i = 0; i < g.rounds / 2; ++i) apiary_cycle(sys, self, image);
        apiary_s += seconds_since(t0);
      }
      const double n = 2.0 * (g.rounds / 2);
      state.SetIterationTime(apiary_s);
      state.counters["raw_per_s"] = n / raw_s;
      state.counters["apiary_per_s"] = n / apiary_s;
      state.counters["ratio"] = raw_s / apiary_s;
      figure("create_destroy_raw_per_s", n / raw_s, "cycles/s");
      figure("create_destroy_apiary_per_s", n / apiary_s, "cycles/s");
      figure("create_destroy_ratio", raw_s / apiary_s, "x");
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// -------------------------------------------------------------- memory --

// The process's resident memory in KiB (VmRSS).
uint64_t rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

// The guest RAM an idle instance has touched: the resident pages (mincore)
// of guest RAM of the same size into which the loader wrote exactly what the
// instance's did (devices::write_boot_image: kernel, boot tables, ACPI);
// `cli; hlt` touches nothing more. (The instances' own mappings cannot be
// told apart in smaps: the kernel merges adjacent anonymous mappings.)
double guest_ram_kib(const devices::MachineConfig& cfg) {
  vmm::GuestMemory memory(cfg.memory_mib << 20);
  devices::write_boot_image(memory, cfg);
  uint64_t pages = 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  for (const auto& r : memory.regions()) {
    std::vector<unsigned char> vec((r.size + page - 1) / page);
    if (::mincore(r.host, r.size, vec.data()) != 0) throw std::runtime_error("mincore failed");
    for (unsigned char v : vec) pages += v & 1;
  }
  return static_cast<double>(pages) * page / 1024.0;
}

void BM_IdleMemory(benchmark::State& state) {
  try {
    const auto image = vmm::multiboot_flat_image(kIdleCode);
    step("idle instance memory");
    for (auto _ : state) {
      caf::actor_system_config cfg;
      caf::actor_system sys{quiet(cfg)};
      caf::scoped_actor self{sys};
      // One instance first, so one-time costs (libraries, caches, the
      // scheduler's threads) are not charged to the K measured.
      std::vector<Driven> all;
      auto start_one = [&] {
        actors::InstanceConfig c;
        c.name = "idle" + std::to_string(all.size());
        c.machine.memory_mib = kIdleMemoryMib;
        c.machine.kernel = image;
        all.push_back(Driven{self, spawn_subscribed(sys, self, c), "", ""});
        all.back().call(actors::start_atom::value);
        if (!all.back().wait_state("run")) throw std::runtime_error("idle instance never ran");
      };
      start_one();
      std::this_thread::sleep_for(200ms);
      const uint64_t before = rss_kib();
      for (int i = 0; i < g.idle; ++i) start_one();
      std::this_thread::sleep_for(500ms);
      const uint64_t after = rss_kib();
      devices::MachineConfig probe;
      probe.memory_mib = kIdleMemoryMib;
      probe.kernel = image;
      const double total = static_cast<double>(after) - static_cast<double>(before);
      const double guest_ram = guest_ram_kib(probe) * g.idle;
      const double per = (total - guest_ram) / g.idle / 1024.0;
      state.SetIterationTime(1);
      state.counters["rss_delta_mib"] = total / 1024.0;
      state.counters["guest_ram_mib"] = guest_ram / 1024.0;
      state.counters["vmm_mib_per_instance"] = per;
      figure("idle_instance_vmm_rss_mib", per, "MiB");
      figure("idle_instance_guest_rss_mib", guest_ram / g.idle / 1024.0, "MiB");
      for (auto& d : all) {
        self->request(d.inst, 10s, actors::poweroff_atom::value).receive([](actors::ack_atom) {}, [](caf::error&) {});
        d.wait_state("destroy");
        self->send_exit(d.inst, caf::exit_reason::user_shutdown);
      }
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const bool flags_ok = bench::strip_own_flags(argc, argv, [](const std::string& arg) {
    long v = 0;
    if (parse_flag(arg, "--rounds=", v)) g.rounds = static_cast<int>(std::max(2L, v));
    else if (parse_flag(arg, "--idle=", v)) g.idle = static_cast<int>(v);
    else if (parse_flag(arg, "--max-vcpus=", v)) g.max_vcpus = static_cast<uint32_t>(std::min<long>(v, layout::kMaxVcpus));
    else return false;
    return true;
  });
  if (!flags_ok) return 2;
  if (const std::string why = vmm::kvm::why_unusable(); !why.empty()) {
    std::fprintf(stderr, "bench_instance: needs KVM (%s); run it through scripts/kvm-vm\n", why.c_str());
    return 1;
  }
  vmm::install_kick_handler();
  start_watchdog();

  for (uint32_t v : {1u, 4u, 16u, 64u}) {
    if (v > g.max_vcpus) continue;
    for (uint32_t disks : {0u, 7u})
      benchmark::RegisterBenchmark("BM_FanOut", BM_FanOut)
          ->Args({v, disks})
          ->ArgNames({"vcpus", "disks"})
          ->Iterations(1)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("BM_CafRoundTrip", BM_CafRoundTrip)->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_Cycles", BM_Cycles)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_IdleMemory", BM_IdleMemory)->Iterations(1)->UseManualTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  std::printf("\n");
  double worst_fan_out = 0;
  for (const auto& [name, value] : g_figures) {
    std::printf("figure: %s %.3g %s\n", name.c_str(), value, g_units[name].c_str());
    if (name.rfind("fanout_ratio_", 0) == 0) worst_fan_out = std::max(worst_fan_out, value);
  }
  if (worst_fan_out > 0) std::printf("figure: fanout_ratio_worst %.3g x\n", worst_fan_out);
  return g_figures.empty() ? 1 : 0;
}
