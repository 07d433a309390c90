#include "apps/run_command.hpp"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "apps/terminal.hpp"
#include "devices/machine.hpp"
#include "devices/machine_runner.hpp"
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
  bool quiet = false;
};

template <class T>
bool parse_number(const std::string& s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
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
    if (a != "--spec" && a != "--kernel" && a != "--cmdline" && a != "--initrd" && a != "--guest" &&
        a != "--vcpus" && a != "--memory" && a != "--timeout")
      return "unknown option: " + a;
    if (!value(v)) return a + " needs a value";
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
  auto problems = spec::validate(spec, spec::host_limits());
  if (!problems.empty()) {
    for (auto& p : problems) std::cerr << "apiary: invalid instance spec: " << spec::to_string(p) << "\n";
    return std::nullopt;
  }
  return spec;
}

devices::MachineConfig machine_config(const v1::InstanceSpec& spec) {
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
  if (spec.devices().serial().history_bytes() > 0) c.console_history_bytes = spec.devices().serial().history_bytes();
  return c;
}

int exit_code_for(const vmm::Error& e) {
  switch (e.code()) {
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
  explicit SignalWatcher(std::function<void()> on_signal) : on_signal_(std::move(on_signal)) {
    thread_ = std::thread([this] {
      sigset_t set = signals();
      const timespec tick{0, 100 * 1000 * 1000};
      while (!done_) {
        if (sigtimedwait(&set, nullptr, &tick) > 0) on_signal_();
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
    return set;
  }

 private:
  std::function<void()> on_signal_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

void print_run_help() {
  std::cout <<
R"(Usage: apiary run [options]

Boots one VM with its serial console (COM1) on this terminal. Without
options it boots the embedded demo guest.

Options:
  --spec FILE       instance spec (JSON or protobuf text format, see docs/spec.md)
  --kernel FILE     kernel image: PVH ELF, multiboot v1 or Linux bzImage
  --guest NAME      an embedded guest image (demo, hello)
  --cmdline S       kernel command line
  --initrd FILE     initrd / first boot module
  --vcpus N         number of vCPUs (1..64)
  --memory MIB      guest RAM in MiB
  --timeout SEC     stop the VM after SEC seconds (exit status 124)
  -q, --quiet       no [apiary] status lines

On a terminal, keys go to the guest; press Ctrl-] to detach (stop the VM).
With stdin/stdout on pipes, input lines are passed to the guest as typed.

Exit status: the guest's debug-exit status ((v << 1) | 1) when it writes v
to port 0xf4; 0 on guest poweroff; 2 usage; 4 bad spec or image; 6 no usable
/dev/kvm; 8 guest fault (e.g. emulation failure); 10 detached; 124 timeout.
A guest reset (i8042, 0xCF9, triple fault) reboots the VM.
)";
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
  auto spec = build_spec(opts);
  if (!spec) return kExitBadSpec;

  // Before any thread exists, so every thread inherits the mask.
  const sigset_t stop_signals = SignalWatcher::signals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::unique_ptr<devices::Machine> machine;
  try {
    machine = std::make_unique<devices::Machine>(machine_config(*spec));
  } catch (const vmm::Error& e) {
    std::cerr << "apiary: cannot start the VM: " << e.what() << "\n";
    return exit_code_for(e);
  }

  const bool tty_in = ::isatty(STDIN_FILENO);
  auto status = [&](const std::string& line) {
    if (!opts.quiet) std::cerr << "[apiary] " << line << (tty_in ? "\r\n" : "\n") << std::flush;
  };
  status("booting '" + spec->name() + "' (" + std::to_string(spec->board().vcpus()) + " vCPU, " +
         std::to_string(spec->board().memory_mib()) + " MiB, " + to_string(machine->boot_plan().protocol) +
         " boot)");
  if (tty_in) status(std::string("console on COM1; press ") + kDetachKeyName + " to detach");

  machine->console().set_listener([](std::span<const uint8_t> bytes) {
    [[maybe_unused]] auto n = ::write(STDOUT_FILENO, bytes.data(), bytes.size());
  });

  devices::MachineRunner runner(*machine);
  RawTerminal raw(STDIN_FILENO);
  SignalWatcher watcher([&] {
    status("signal received: stopping the VM");
    runner.stop();
  });

  std::optional<std::chrono::milliseconds> timeout;
  if (opts.timeout_s) timeout = std::chrono::milliseconds(*opts.timeout_s * 1000);
  const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(std::chrono::hours(24 * 365));

  devices::RunOutcome outcome;
  {
    InputPump pump(
        STDIN_FILENO, raw.active(),
        [&](std::span<const unsigned char> b) { return machine->com1().input(b); },
        [&] { runner.stop(); });
    for (;;) {
      std::optional<std::chrono::milliseconds> left;
      if (timeout)
        left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          deadline - std::chrono::steady_clock::now()));
      outcome = runner.run(left);
      using K = devices::RunOutcome::Kind;
      if (outcome.kind != K::reset && outcome.kind != K::triple_fault) break;
      status(outcome.detail + ": rebooting");
      machine->reset_for_reboot();
    }
  }
  using K = devices::RunOutcome::Kind;
  switch (outcome.kind) {
    case K::debug_exit:
      status("guest debug exit: status " + std::to_string(outcome.status));
      return outcome.status & 0xff;
    case K::poweroff:
    case K::halted:
      status("guest powered off");
      return kExitPoweroff;
    case K::guest_fault:
      std::cerr << "apiary: guest fault: " << outcome.detail << "\n";
      return kExitGuestFault;
    case K::timeout:
      status("timeout: " + outcome.detail);
      return kExitTimeout;
    default:
      status("stopped");
      return kExitStopped;
  }
}

}  // namespace apiary::apps
