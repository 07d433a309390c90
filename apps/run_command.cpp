#include "apps/run_command.hpp"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include <caf/all.hpp>

#include "apps/actor_runtime.hpp"
#include "apps/terminal.hpp"
#include "devices/machine.hpp"
#include "devices/machine_migration.hpp"
#include "devices/machine_snapshot.hpp"
#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "proto/apiary/v1/diagnostics.pb.h"
#include "guest/embedded.hpp"
#include "proto/spec.hpp"
#include "vmm-core/error.hpp"

namespace apiary::apps {

namespace {

struct RunOptions {
  std::optional<std::string> spec_file, kernel, cmdline, initrd, guest;
  std::optional<uint32_t> vcpus;
  std::optional<uint64_t> memory_mib;
  std::optional<uint64_t> timeout_s;
  std::optional<std::string> save_file, restore_file;
  std::optional<double> save_after_s;
  // Live migration: listen for one (incoming), or migrate to (migrate_to).
  std::optional<std::pair<std::string, uint16_t>> incoming, migrate_to;
  std::optional<double> migrate_after_s;
  uint64_t migrate_kib_per_s = 0;
  std::vector<std::pair<std::string, bool>> disks;  // path, read-only
  bool rng = false;
  bool pc_testdev = false;
  bool quiet = false;
};

template <class T>
bool parse_number(const std::string& s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// "HOST:PORT" (the last colon splits, so "[::1]:7000" and "::1:7000" work).
std::optional<std::pair<std::string, uint16_t>> parse_endpoint(const std::string& v) {
  const size_t colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = v.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  uint32_t port = 0;
  if (!parse_number(v.substr(colon + 1), port) || port > 65535) return std::nullopt;
  return std::pair{host, static_cast<uint16_t>(port)};
}

bool parse_seconds(const std::string& v, std::optional<double>& out) {
  char* end = nullptr;
  const double s = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !(s >= 0) || s > 1e7) return false;
  out = s;
  return true;
}

// Returns an error message, or empty on success.
std::string parse_args(const std::vector<std::string>& args, RunOptions& o) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string& out) -> bool {
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    std::string v;
    if (a == "--quiet" || a == "-q") {
      o.quiet = true;
      continue;
    }
    if (a == "--rng") {
      o.rng = true;
      continue;
    }
    if (a == "--pc-testdev") {
      o.pc_testdev = true;
      continue;
    }
    if (a == "--disk") {
      if (!value(v)) return "--disk needs a value";
      const bool ro = v.size() > 3 && v.compare(v.size() - 3, 3, ":ro") == 0;
      o.disks.emplace_back(ro ? v.substr(0, v.size() - 3) : v, ro);
      continue;
    }
    if (a != "--spec" && a != "--kernel" && a != "--cmdline" && a != "--initrd" && a != "--guest" &&
        a != "--vcpus" && a != "--memory" && a != "--timeout" && a != "--save" && a != "--save-after" &&
        a != "--restore" && a != "--incoming" && a != "--migrate-to" && a != "--migrate-after" &&
        a != "--migrate-kib-per-s")
      return "unknown option: " + a;
    if (!value(v)) return a + " needs a value";
    if (a == "--incoming" || a == "--migrate-to") {
      auto e = parse_endpoint(v);
      if (!e || (a == "--migrate-to" && e->second == 0)) return a + ": not HOST:PORT: " + v;
      (a == "--incoming" ? o.incoming : o.migrate_to) = e;
      continue;
    }
    if (a == "--migrate-kib-per-s") {
      if (!parse_number(v, o.migrate_kib_per_s) || o.migrate_kib_per_s == 0 || o.migrate_kib_per_s > (1ull << 40))
        return "--migrate-kib-per-s: a number of KiB per second, 1 or more: " + v;
      continue;
    }
    if (a == "--migrate-after") {
      if (!parse_seconds(v, o.migrate_after_s)) return "--migrate-after: not a number of seconds: " + v;
      continue;
    }
    if (a == "--save") {
      o.save_file = v;
      continue;
    }
    if (a == "--restore") {
      o.restore_file = v;
      continue;
    }
    if (a == "--save-after") {
      if (!parse_seconds(v, o.save_after_s)) return "--save-after: not a number of seconds: " + v;
      continue;
    }
    if (a == "--spec") o.spec_file = v;
    else if (a == "--kernel") o.kernel = v;
    else if (a == "--cmdline") o.cmdline = v;
    else if (a == "--initrd") o.initrd = v;
    else if (a == "--guest") o.guest = v;
    else if (a == "--vcpus") {
      uint32_t n;
      if (!parse_number(v, n)) return "--vcpus: not a number: " + v;
      o.vcpus = n;
    } else if (a == "--memory") {
      uint64_t n;
      if (!parse_number(v, n)) return "--memory: not a number of MiB: " + v;
      o.memory_mib = n;
    } else if (a == "--timeout") {
      uint64_t n;
      if (!parse_number(v, n) || n == 0) return "--timeout: not a positive number of seconds: " + v;
      o.timeout_s = n;
    }
  }
  if (o.kernel && o.guest) return "--kernel and --guest are mutually exclusive";
  if (o.save_after_s && !o.save_file) return "--save-after needs --save FILE";
  if (o.restore_file && (o.spec_file || o.kernel || o.guest || o.cmdline || o.initrd || o.vcpus || o.memory_mib ||
                         !o.disks.empty() || o.rng || o.pc_testdev))
    return "--restore takes the whole machine from the snapshot: it cannot be combined with --spec, --kernel, "
           "--guest, --cmdline, --initrd, --vcpus, --memory, --disk, --rng or --pc-testdev";
  if (o.incoming && (o.restore_file || o.spec_file || o.kernel || o.guest || o.cmdline || o.initrd || o.vcpus ||
                     o.memory_mib || !o.disks.empty() || o.rng || o.pc_testdev))
    return "--incoming takes the whole machine from the migration source: it cannot be combined with --restore, "
           "--spec, --kernel, --guest, --cmdline, --initrd, --vcpus, --memory, --disk, --rng or --pc-testdev";
  if ((o.migrate_after_s || o.migrate_kib_per_s) && !o.migrate_to)
    return "--migrate-after and --migrate-kib-per-s need --migrate-to HOST:PORT";
  if (o.migrate_to && o.save_file) return "--migrate-to and --save are mutually exclusive";
  return {};
}

// Builds the spec: file (or defaults), then command-line overrides.
std::optional<v1::InstanceSpec> build_spec(const RunOptions& o) {
  v1::InstanceSpec spec;
  if (o.spec_file) {
    spec::ParseResult r = spec::load_file(*o.spec_file);
    if (!r.spec) {
      for (auto& p : r.problems) std::cerr << "apiary: " << *o.spec_file << ": " << spec::to_string(p) << "\n";
      return std::nullopt;
    }
    spec = *r.spec;
  }
  if (spec.name().empty()) spec.set_name("run");
  spec::apply_defaults(spec);
  if (o.vcpus) spec.mutable_board()->set_vcpus(*o.vcpus);
  if (o.memory_mib) spec.mutable_board()->set_memory_mib(*o.memory_mib);
  if (o.kernel) spec.mutable_boot()->set_kernel_path(*o.kernel);
  if (o.guest) spec.mutable_boot()->set_embedded_guest(*o.guest);
  if (o.cmdline) spec.mutable_boot()->set_cmdline(*o.cmdline);
  if (o.initrd) spec.mutable_boot()->set_initrd_path(*o.initrd);
  for (size_t i = 0; i < o.disks.size(); ++i) {
    auto* b = spec.mutable_devices()->add_block();
    b->set_id("disk" + std::to_string(spec.devices().block_size() - 1));
    b->set_path(o.disks[i].first);
    b->set_read_only(o.disks[i].second);
  }
  if (o.rng) spec.mutable_devices()->mutable_rng()->set_enabled(true);
  if (o.pc_testdev) spec.mutable_devices()->set_pc_testdev(true);
  auto problems = spec::validate(spec, spec::host_limits());
  if (!problems.empty()) {
    for (auto& p : problems) std::cerr << "apiary: invalid instance spec: " << spec::to_string(p) << "\n";
    return std::nullopt;
  }
  return spec;
}

devices::MachineConfig machine_config(const v1::InstanceSpec& spec) {
  if (spec.devices().nics_size() > 0)
    throw vmm::Error(vmm::Errc::invalid_argument,
                     "devices.nics: a NIC needs a network, and networks belong to the control plane: create the "
                     "instance with `apiary ctl instance create --network NET` against `apiary cluster` or a "
                     "controller and its nodes (docs/networking.md)");
  devices::MachineConfig c;
  c.vcpus = spec.board().vcpus();
  c.memory_mib = spec.board().memory_mib();
  c.cmdline = spec.boot().cmdline();
  if (spec.boot().has_embedded_guest()) {
    const guest::EmbeddedGuest* g = guest::find_embedded(spec.boot().embedded_guest());
    if (!g) throw vmm::Error(vmm::Errc::file_not_found, "no embedded guest named '" + spec.boot().embedded_guest() + "'");
    c.kernel.assign(g->image.begin(), g->image.end());
  } else {
    c.kernel = vmm::read_file(spec.boot().kernel_path());
  }
  if (spec.boot().has_initrd_path()) c.initrd = vmm::read_file(spec.boot().initrd_path());
  for (const auto& b : spec.devices().block()) c.disks.push_back({b.id(), b.path(), b.read_only()});
  c.rng = spec.devices().rng().enabled();
  c.pc_testdev = spec.devices().pc_testdev();
  if (spec.devices().serial().history_bytes() > 0) c.console_history_bytes = spec.devices().serial().history_bytes();
  return c;
}

int exit_code_for(vmm::Errc code) {
  switch (code) {
    case vmm::Errc::kvm_unavailable:
    case vmm::Errc::kvm_permission:
    case vmm::Errc::kvm_api_version:
    case vmm::Errc::kvm_capability:
      return kExitNoKvm;
    default:
      return kExitBadSpec;
  }
}

// SIGINT/SIGTERM stop the VM cleanly (terminal restored, threads joined):
// they are blocked in every thread and collected by this watcher.
class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
    thread_ = std::thread([this] {
      sigset_t set = signals();
      const timespec tick{0, 100 * 1000 * 1000};
      while (!done_) {
        if (int sig = sigtimedwait(&set, nullptr, &tick); sig > 0) on_signal_(sig);
      }
    });
  }
  ~SignalWatcher() {
    done_ = true;
    thread_.join();
  }
  static sigset_t signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);  // --save: save now
    sigaddset(&set, SIGUSR2);  // --migrate-to: migrate now
    return set;
  }

 private:
  std::function<void(int)> on_signal_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Runs the instance to its end with the console on this terminal; returns
// the process exit status.
int drive_instance(caf::actor_system& sys, const actors::instance_actor& inst, const v1::InstanceSpec& spec,
                   const RunOptions& opts, bool tty_in, const std::function<void(const std::string&)>& status) {
  using namespace actors;
  caf::scoped_actor self{sys};
  const auto reply_deadline = std::chrono::seconds(30);
  self->request(inst, reply_deadline, subscribe_atom::value, caf::actor_cast<caf::actor>(self))
      .receive([](ack_atom) {}, [](caf::error&) {});
  self->request(inst, reply_deadline, start_atom::value).receive([](ack_atom) {}, [](caf::error&) {});

  const auto deadline = std::chrono::steady_clock::now() +
                        (opts.timeout_s ? std::chrono::seconds(*opts.timeout_s) : std::chrono::hours(24 * 365));
  std::string state = "start", target, reason;
  console_actor console;
  std::unique_ptr<RawTerminal> raw;
  std::unique_ptr<InputPump> pump;
  bool timed_out = false, stopping = false;
  // --save: pause at the trigger (SIGUSR1 or --save-after), save, stop.
  enum class Save { idle, requested, pausing, done } save = Save::idle;
  std::atomic<bool> save_signal{false};
  bool saved = false;
  const auto save_at = opts.save_after_s ? std::optional(std::chrono::steady_clock::now() +
                                                         std::chrono::milliseconds(static_cast<int64_t>(
                                                             *opts.save_after_s * 1000)))
                                         : std::nullopt;
  // --migrate-to: at the trigger (SIGUSR2 or --migrate-after), migrate; the
  // VM then runs at the destination and this process ends.
  std::atomic<bool> migrate_signal{false};
  bool migrate_tried = false, migrated = false;
  const auto migrate_at =
      opts.migrate_after_s
          ? std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(*opts.migrate_after_s * 1000))
          : std::chrono::steady_clock::time_point::max();
  SignalWatcher watcher([&](int sig) {
    if (sig == SIGUSR1)
      save_signal = true;
    else if (sig == SIGUSR2)
      migrate_signal = true;
    else
      caf::anon_send(inst, poweroff_atom::value);
  });
  auto save_step = [&] {
    if (save == Save::idle && opts.save_file && !stopping &&
        (save_signal.exchange(false) || (save_at && std::chrono::steady_clock::now() >= *save_at)))
      save = Save::requested;
    if (save == Save::requested && state == "run" && target == "run") {
      status("pausing to save to " + *opts.save_file);
      save = Save::pausing;
      self->request(inst, reply_deadline, pause_atom::value)
          .receive([](ack_atom) {},
                   [&](caf::error& e) {
                     std::cerr << "apiary: cannot pause to save: " << actors::describe(e) << "; the VM continues\n";
                     save = Save::done;
                   });
    }
    if (save == Save::pausing && state == "quiesce" && target == "quiesce") {
      save = Save::done;
      self->request(inst, std::chrono::minutes(10), save_atom::value, *opts.save_file)
          .receive(
              [&](uint64_t bytes, uint64_t pages, uint64_t micros) {
                saved = true;
                status("saved to " + *opts.save_file + " (" + std::to_string(bytes >> 10) + " KiB, " +
                       std::to_string(pages) + " pages of RAM, " + std::to_string(micros / 1000) + " ms); stopping");
                stopping = true;
                caf::anon_send(inst, poweroff_atom::value);
              },
              [&](caf::error& e) {
                std::cerr << "apiary: save failed: " << actors::describe(e) << "; the VM continues\n";
                self->request(inst, reply_deadline, resume_atom::value).receive([](ack_atom) {}, [](caf::error&) {});
              });
    }
  };

  auto migrate_step = [&] {
    if (!opts.migrate_to || migrate_tried || stopping || state != "run" || target != "run") return;
    if (!migrate_signal.exchange(false) && std::chrono::steady_clock::now() < migrate_at) return;
    migrate_tried = true;
    const auto& [host, port] = *opts.migrate_to;
    const std::string dest = host + ":" + std::to_string(port);
    status("migrating to " + dest);
    // The migration is bounded by --timeout too: a stream that does not
    // converge or a destination that stalls must not hold the process.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const auto wait = opts.timeout_s ? std::max(left, std::chrono::milliseconds(1000))
                                     : std::chrono::milliseconds(std::chrono::minutes(30));
    self->request(inst, wait, migrate_atom::value, host, uint32_t{port})
        .receive(
            [&](const std::string& bytes) {
              v1::MigrationStats m;
              m.ParseFromString(bytes);
              char line[256];
              std::snprintf(line, sizeof line,
                            "apiary: migrated to %s: total %.1f ms, downtime %.1f ms, %u rounds, %llu pages, %.1f MiB%s%s\n",
                            dest.c_str(), m.total_ms(), m.downtime_ms(), m.rounds(),
                            static_cast<unsigned long long>(m.pages()), m.bytes() / 1048576.0,
                            m.disk_bytes() ? (", " + std::to_string(m.disk_bytes() >> 10) + " KiB of disk copied").c_str()
                                           : "",
                            m.converged() ? "" : " (did not converge: stopped after the round limit)");
              std::cerr << line << std::flush;
              migrated = stopping = true;
            },
            [&](caf::error& e) {
              if (e == caf::sec::request_timeout && opts.timeout_s) {
                // The main loop stops the VM next; the poweroff cancels the
                // migration unless its commit is already out (then the end
                // state's reason says where the guest went).
                std::cerr << "apiary: migration not done when --timeout passed; stopping the VM\n";
                return;
              }
              std::cerr << "apiary: migration failed: " << actors::describe(e)
                        << (e.code() == static_cast<uint8_t>(ActorErrc::migrate_unknown)
                                ? "; the VM stays paused here (it may run at the destination)\n"
                                : "; the VM continues\n");
            });
  };

  auto attach_console = [&] {
    self->request(inst, reply_deadline, console_atom::value)
        .receive([&](console_actor c) { console = c; }, [](caf::error&) {});
    if (!console) return;
    self->request(console, reply_deadline, attach_atom::value, caf::actor_cast<caf::actor>(self), true)
        .receive(
            [&](const std::string& history, bool) {
              [[maybe_unused]] auto n = ::write(STDOUT_FILENO, history.data(), history.size());
            },
            [](caf::error&) {});
    raw = std::make_unique<RawTerminal>(STDIN_FILENO);
    auto writer = caf::actor_cast<caf::actor>(self);
    pump = std::make_unique<InputPump>(
        STDIN_FILENO, raw->active(),
        [&sys, console, writer](std::span<const unsigned char> b) -> size_t {
          caf::scoped_actor sender{sys};
          size_t accepted = 0;
          sender->request(console, std::chrono::seconds(5), input_atom::value, writer,
                          std::string(reinterpret_cast<const char*>(b.data()), b.size()))
              .receive([&](uint64_t n) { accepted = n; }, [](caf::error&) {});
          return accepted;
        },
        [inst] { caf::anon_send(inst, poweroff_atom::value); });
  };

  while (state != "destroy" && !(state == "halt" && target == "halt")) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::milliseconds(0) && !stopping) {
      timed_out = stopping = true;
      status("timeout: stopping the VM");
      caf::anon_send(inst, poweroff_atom::value);
    }
    self->receive(
        [&](output_atom, const std::string& bytes) {
          [[maybe_unused]] auto n = ::write(STDOUT_FILENO, bytes.data(), bytes.size());
        },
        [&](state_atom, const std::string&, const std::string& s, uint64_t, const std::string& t, const std::string& why) {
          state = s;
          target = t;
          reason = why;
          if (s == "boot" && !console && opts.incoming) {
            status("migration source connected; the VM runs here once it commits");
            if (tty_in) status(std::string("console on COM1; press ") + kDetachKeyName + " to detach");
            attach_console();
          } else if (s == "boot" && !console) {
            status(std::string(opts.restore_file ? "restored '" : "booting '") + spec.name() + "' (" +
                   std::to_string(spec.board().vcpus()) + " vCPU, " + std::to_string(spec.board().memory_mib()) +
                   " MiB)" + (opts.restore_file ? " from " + *opts.restore_file : ""));
            if (tty_in) status(std::string("console on COM1; press ") + kDetachKeyName + " to detach");
            attach_console();
          } else if (s == "reboot") {
            status("guest reboot (" + why + ")");
          }
        },
        caf::after(std::chrono::milliseconds(200)) >> [] {});
    save_step();
    migrate_step();
  }
  pump.reset();
  raw.reset();

  int32_t exit_status = -1;
  self->request(inst, reply_deadline, exit_status_atom::value).receive([&](int32_t s) { exit_status = s; },
                                                                      [](caf::error&) {});
  std::string diag_bytes;
  self->request(inst, reply_deadline, diag_atom::value).receive([&](const std::string& d) { diag_bytes = d; },
                                                               [](caf::error&) {});
  v1::InstanceDiagnostics diag;
  diag.ParseFromString(diag_bytes);
  // A migration that committed while --timeout stopped the VM: the guest
  // runs at the destination, and this source ended as a migrated one.
  const std::string& end_reason = diag.reason().empty() ? reason : diag.reason();
  if (timed_out && opts.migrate_to && end_reason.rfind("migrated to ", 0) == 0) {
    std::cerr << "apiary: " << end_reason << " as --timeout passed\n";
    return kExitMigrated;
  }
  if (timed_out) return kExitTimeout;
  if (saved) return kExitSaved;
  if (migrated) return kExitMigrated;
  if (exit_status >= 0) {
    status("guest debug exit: status " + std::to_string(exit_status));
    return exit_status & 0xff;
  }
  const std::string& why = end_reason;
  if (why.rfind("init_failed", 0) == 0 || why.rfind("fault: init_failed", 0) == 0) {
    std::cerr << "apiary: cannot start the VM: " << why << "\n";
    for (auto c : {vmm::Errc::kvm_unavailable, vmm::Errc::kvm_permission, vmm::Errc::kvm_api_version,
                   vmm::Errc::kvm_capability})
      if (why.find(vmm::to_string(c)) != std::string::npos) return kExitNoKvm;
    return kExitBadSpec;
  }
  if (why.find("guest_fault") != std::string::npos) {
    std::cerr << "apiary: " << why << "\n";
    for (auto& v : diag.vcpus())
      std::cerr << "  vcpu " << v.id() << ": rip=" << std::hex << v.registers().at("rip") << std::dec
                << " mp_state=" << v.mp_state_name() << "\n";
    return kExitGuestFault;
  }
  if (why.find("poweroff requested") != std::string::npos) {
    status("guest powered off");
    return kExitPoweroff;
  }
  status("stopped (" + why + ")");
  return kExitStopped;
}

}  // namespace

void print_run_help() {
  std::string names;
  for (const auto& g : guest::embedded_guests()) names += (names.empty() ? "" : ", ") + std::string(g.name);
  std::cout <<
R"(Usage: apiary run [options]

Boots one VM with its serial console (COM1) on this terminal. Without
options it boots the embedded demo guest.

Options:
  --spec FILE       instance spec (JSON or protobuf text format, see docs/spec.md)
  --kernel FILE     kernel image: PVH ELF, multiboot v1 or Linux bzImage
  --guest NAME      an embedded guest image (see the list below)
  --cmdline S       kernel command line
  --initrd FILE     initrd / first boot module
  --disk FILE[:ro]  a virtio-blk disk backed by FILE (repeatable; :ro = read-only)
  --rng             a virtio-rng device
  --pc-testdev      QEMU's pc-testdev for test programs: scratch register at
                    port 0xe0, IRQ lines at 0x2000 + GSI, MMIO at 0xff000000
  --vcpus N         number of vCPUs (1..64)
  --memory MIB      guest RAM in MiB
  --timeout SEC     stop the VM after SEC seconds (exit status 124)
  --save FILE       on SIGUSR1 (or after --save-after), pause the VM, save its
                    whole state (vCPUs, devices, RAM) to FILE and stop (exit
                    status 12); if the save fails the VM resumes
  --save-after SEC  trigger --save after SEC seconds (fractions allowed)
  --restore FILE    continue a VM saved with --save, where it stopped (the
                    machine, kernel and disks are the snapshot's)
  --migrate-to HOST:PORT
                    on SIGUSR2 (or after --migrate-after), live-migrate the
                    running VM to `apiary run --incoming` there: pre-copy of
                    RAM while it runs, a short stop, then it runs there and
                    this process ends (exit status 13, with the total time
                    and downtime on stderr); on failure the VM continues here
  --migrate-after SEC
                    trigger --migrate-to after SEC seconds
  --migrate-kib-per-s N
                    send at most N KiB of RAM per second (default: no limit)
  --incoming HOST:PORT
                    wait on HOST:PORT (port 0: any; printed) for one VM
                    migrated with --migrate-to, and run it (the machine,
                    kernel and disks are the source's)
  -q, --quiet       no [apiary] status lines

On a terminal, keys go to the guest; press Ctrl-] to detach (stop the VM).
With stdin/stdout on pipes, input lines are passed to the guest as typed.

Exit status: the guest's debug-exit status ((v << 1) | 1) when it writes v
to port 0xf4; 0 on guest poweroff; 2 usage; 4 bad spec, image or snapshot;
6 no usable /dev/kvm; 8 guest fault (e.g. emulation failure); 10 detached;
12 saved (--save); 13 migrated (--migrate-to); 124 timeout.
A guest reset (i8042, 0xCF9, triple fault) reboots the VM.

Embedded guests: )" << names << "\n";
}

int run_command(const std::vector<std::string>& args) {
  for (auto& a : args) {
    if (a == "--help" || a == "-h") {
      print_run_help();
      return 0;
    }
  }
  RunOptions opts;
  if (std::string err = parse_args(args, opts); !err.empty()) {
    std::cerr << "apiary run: " << err << "\n(try apiary run --help)\n";
    return kExitUsage;
  }
  actors::InstanceConfig icfg;
  std::optional<v1::InstanceSpec> spec;
  if (opts.restore_file) {
    // The whole machine comes from the snapshot; the spec only names it.
    try {
      auto header = devices::snapshot::read_header(*opts.restore_file);
      icfg.machine = devices::snapshot::restore_config(header);
      spec.emplace();
      spec->set_name(header->state.instance().empty() ? "run" : header->state.instance());
      spec->mutable_board()->set_vcpus(icfg.machine.vcpus);
      spec->mutable_board()->set_memory_mib(icfg.machine.memory_mib);
    } catch (const vmm::Error& e) {
      std::cerr << "apiary: cannot restore: " << e.what() << "\n";
      return exit_code_for(e.code());
    }
  } else if (opts.incoming) {
    // The whole machine comes from the source: the spec only names it.
    spec.emplace();
    spec->set_name("migrated");
    auto in = std::make_shared<actors::IncomingMigration>();
    try {
      in->listener = std::make_shared<devices::migration::Listener>(opts.incoming->first, opts.incoming->second);
    } catch (const vmm::Error& e) {
      std::cerr << "apiary: cannot wait for a migration: " << e.what() << "\n";
      return kExitBadSpec;
    }
    // Wait for the source as long as --timeout allows (an hour without it).
    in->accept_deadline = std::chrono::seconds(opts.timeout_s.value_or(3600));
    if (!opts.quiet)
      std::cerr << "[apiary] waiting for a migration on " << opts.incoming->first << ":" << in->listener->port()
                << "\n" << std::flush;
    icfg.incoming = std::move(in);
  } else {
    spec = build_spec(opts);
    if (!spec) return kExitBadSpec;
  }

  // Before any thread exists, so every thread inherits the mask.
  const sigset_t stop_signals = SignalWatcher::signals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  icfg.name = spec->name();
  if (!opts.restore_file && !opts.incoming) {
    try {
      icfg.machine = machine_config(*spec);
    } catch (const vmm::Error& e) {
      std::cerr << "apiary: cannot start the VM: " << e.what() << "\n";
      return exit_code_for(e.code());
    }
  }
  icfg.migration_policy.max_bytes_per_second = opts.migrate_kib_per_s << 10;
  icfg.wait_for_console = spec->boot_conditions().wait_for_console();
  if (icfg.wait_for_console)
    icfg.console_wait = std::chrono::milliseconds(spec->boot_conditions().console_wait_timeout_ms());

  const bool tty_in = ::isatty(STDIN_FILENO);
  auto status = [&](const std::string& line) {
    if (!opts.quiet) std::cerr << "[apiary] " << line << (tty_in ? "\r\n" : "\n") << std::flush;
  };

  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  configure_scheduler(cfg);
  caf::actor_system sys{cfg};
  auto inst = actors::spawn_instance(sys, std::move(icfg));
  int code = drive_instance(sys, inst, *spec, opts, tty_in, status);
  caf::anon_send_exit(inst, caf::exit_reason::user_shutdown);
  return code;
}

}  // namespace apiary::apps
