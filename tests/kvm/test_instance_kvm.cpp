// The instance runtime on KVM with in-tree test guests: reboots from triple
// faults and device resets, poweroff paths, pause/resume of a busy guest,
// destroy while paused, soft events the guest reacts to, SMP bring-up and a
// console-gated boot — each checked through what the guest prints and the
// lifecycle states the instance reports.
#define BOOST_TEST_MODULE instance_kvm
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <thread>

#include "tests/support/instance_driver.hpp"
#include "tests/support/lifecycle_walk.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace apiary::actors;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {
InstanceConfig kvm_config(const std::string& image, std::string cmdline = {}, uint32_t vcpus = 1) {
  InstanceConfig c;
  c.name = "kvm-" + image;
  c.machine.kernel = test::guest_image(image);
  c.machine.cmdline = std::move(cmdline);
  c.machine.memory_mib = 32;
  c.machine.vcpus = vcpus;
  c.phase_deadline = 10000ms;
  return c;
}

// The last "tick N" the spin guest printed.
long last_tick(const std::string& out) {
  long n = -1;
  static const std::regex re("tick ([0-9]+)");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it)
    n = std::stol((*it)[1]);
  return n;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(instance_on_kvm, *utf::precondition(test::kvm_available))

BOOST_AUTO_TEST_CASE(hello_runs_and_its_debug_exit_destroys_the_vm) {
  test::InstanceDriver d(kvm_config("hello.elf", "via-actors"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_state("destroy"));
  BOOST_TEST(d.output.find("Hello from the Apiary guest (pvh)") != std::string::npos);
  BOOST_TEST(d.exit_status() == 1);
  const std::vector<std::string> expect = {"initialize", "boot", "run", "quiesce", "halt", "destroy"};
  BOOST_TEST(d.states == expect, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(three_triple_faults_give_three_reboots_then_it_runs) {
  test::InstanceDriver d(kvm_config("triple.elf"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("survived 3 triple faults", 60s));
  BOOST_TEST(d.wait_state("destroy"));
  BOOST_TEST(d.count_state("reboot") == 3u);
  BOOST_TEST(d.exit_status() == 1);
}

BOOST_AUTO_TEST_CASE(forced_poweroff_during_boot) {
  InstanceConfig c = kvm_config("demo.elf");
  c.wait_for_console = true;  // holds the instance in Boot
  test::InstanceDriver d(std::move(c));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
  const std::vector<std::string> expect = {"initialize", "boot", "quiesce", "halt", "destroy"};
  BOOST_TEST(d.states == expect, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(forced_poweroff_during_run_of_a_busy_guest) {
  test::InstanceDriver d(kvm_config("spin.elf", {}, 2));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("tick 2"));
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy", 20s));
  BOOST_TEST(d.diagnostics().vcpus_size() == 2);
}

BOOST_AUTO_TEST_CASE(pause_a_busy_guest_then_resume_and_its_counter_continues) {
  test::InstanceDriver d(kvm_config("spin.elf"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("tick 3"));
  BOOST_TEST(d.call(pause_atom::value) == "");
  BOOST_TEST(d.wait_state("quiesce"));
  d.wait_until([] { return false; }, 300ms);  // let output in flight arrive
  const long at_pause = last_tick(d.output);
  d.wait_until([] { return false; }, 700ms);  // paused: no progress
  BOOST_TEST(last_tick(d.output) == at_pause);
  BOOST_TEST(d.call(resume_atom::value) == "");
  BOOST_TEST(d.wait_state("run"));
  BOOST_TEST(d.wait_output("tick " + std::to_string(at_pause + 2) + "\r\n"));
  // The counter continued rather than restarting: every tick appears once, in order.
  for (long i = 1; i <= at_pause + 2; ++i) {
    const std::string t = "tick " + std::to_string(i) + "\r\n";
    if (d.output.find(t) == std::string::npos) {
      std::string shown = d.output;
      for (auto& ch : shown) if (ch == '\r') ch = '|';
      BOOST_ERROR(t.substr(0, t.size() - 2) << " missing from: " << shown << " (paused at " << at_pause << ")");
    }
  }
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(destroy_while_paused) {
  test::InstanceDriver d(kvm_config("spin.elf"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("run"));
  BOOST_TEST(d.call(pause_atom::value) == "");
  BOOST_TEST(d.wait_state("quiesce"));
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
  BOOST_TEST(d.count_state("run") == 1u);
}

BOOST_AUTO_TEST_CASE(four_vcpu_smp_bring_up) {
  test::InstanceDriver d(kvm_config("smp.elf", {}, 4));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("all 4 CPUs online", 60s));
  for (int ap = 1; ap < 4; ++ap) BOOST_TEST(d.output.find("AP " + std::to_string(ap) + " online") != std::string::npos);
  BOOST_TEST(d.wait_state("destroy"));
  BOOST_TEST(d.exit_status() == 1);
}

BOOST_AUTO_TEST_CASE(boot_is_gated_on_console_attach) {
  InstanceConfig c = kvm_config("hello.elf");
  c.wait_for_console = true;
  test::InstanceDriver d(std::move(c));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.wait_until([] { return false; }, 500ms);
  BOOST_TEST(d.states.back() == "boot");  // still gated
  d.attach_console();
  BOOST_TEST(d.wait_state("destroy"));
  // Attached before the guest ran, so the whole output came live.
  BOOST_TEST(d.output.find("Hello from the Apiary guest") != std::string::npos);
}

// Boots the demo, waits for its prompt, types `line`.
void demo_command(test::InstanceDriver& d, const std::string& line) {
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("apiary> "));
  d.type(line + "\n");
}

BOOST_AUTO_TEST_CASE(i8042_reset_reboots) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  demo_command(d, "reboot");
  BOOST_TEST(d.wait_state("reboot"));
  BOOST_TEST(d.wait_state("run"));
  // The guest came back: a second banner.
  BOOST_TEST(d.wait_until([&] {
    const auto first = d.output.find("Apiary demo guest");
    return first != std::string::npos && d.output.find("Apiary demo guest", first + 1) != std::string::npos;
  }, 30s));
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(reset_control_register_reboots) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  demo_command(d, "reset");
  BOOST_TEST(d.wait_state("reboot"));
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(acpi_soft_off_destroys_the_vm) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  demo_command(d, "poweroff");
  BOOST_TEST(d.wait_state("destroy"));
  BOOST_TEST(d.count_state("reboot") == 0u);
  BOOST_TEST(d.diagnostics().reason().find("poweroff requested by acpi-pm") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(soft_reset_reaches_the_guest_which_reboots) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("apiary> "));
  BOOST_TEST(d.call(soft_reset_atom::value) == "");  // Ctrl-Alt-Del; the target is unchanged
  BOOST_TEST(d.wait_output("ctrl-alt-del: rebooting"));
  BOOST_TEST(d.wait_state("reboot"));  // the guest chose to reboot
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(soft_poweroff_reaches_the_guest_which_powers_off) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("apiary> "));
  BOOST_TEST(d.call(soft_off_atom::value) == "");  // ACPI power button
  BOOST_TEST(d.wait_output("power button: powering off"));
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(guest_triple_fault_command_reboots) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  demo_command(d, "crash");
  BOOST_TEST(d.wait_state("reboot"));
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(halt_collects_vcpu_and_device_diagnostics) {
  test::InstanceDriver d(kvm_config("demo.elf"));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("run"));
  BOOST_TEST(d.call(halt_atom::value) == "");
  BOOST_TEST(d.wait_state("halt"));
  auto diag = d.diagnostics();
  BOOST_TEST(diag.vcpus_size() == 1);
  BOOST_TEST(diag.devices_size() >= 4);
  BOOST_REQUIRE(diag.vcpus_size() == 1);
  BOOST_TEST(diag.vcpus(0).registers().count("rip") == 1u);
  BOOST_TEST(diag.vcpus(0).registers().at("cr0") != 0u);
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(emulation_failure_is_a_named_guest_fault_with_diagnostics) {
  // A flat multiboot image that jumps into the MMIO hole (the first virtio-mmio
  // slot, no device there): instructions cannot be fetched from MMIO, so every
  // KVM (VMX or SVM, native or nested) stops the vCPU with an emulation
  // failure, which the instance must name and halt on with diagnostics.
  const uint32_t target = static_cast<uint32_t>(layout::kVirtioMmioBase);
  std::vector<uint8_t> code = {0xb8};  // mov eax, imm32
  for (int i = 0; i < 4; ++i) code.push_back(static_cast<uint8_t>(target >> (8 * i)));
  code.insert(code.end(), {0xff, 0xe0});  // jmp eax
  InstanceConfig c = kvm_config("hello.mb");
  c.machine.kernel = test::multiboot_flat(code);
  test::InstanceDriver d(std::move(c));
  BOOST_TEST(d.call(start_atom::value) == "");
  BOOST_TEST(d.wait_state("halt", 30s));
  BOOST_TEST(d.count_state("reboot") == 0);
  auto diag = d.diagnostics();
  BOOST_TEST(diag.reason().find("guest_fault: vCPU 0: internal error (suberror 1: emulation failure)") == 0,
             "reason: " << diag.reason());
  BOOST_REQUIRE(diag.vcpus_size() == 1);
  BOOST_TEST(diag.vcpus(0).registers().at("rip") == target);
  BOOST_TEST(d.call(poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(table_walk_on_kvm_takes_every_transition_and_only_those) {
  std::set<test::Transition> observed;
  auto collect = [&](test::InstanceDriver& d) {
    auto t = test::transitions_of(d.states);
    observed.insert(t.begin(), t.end());
  };
  {  // start, pause, resume, forced reset, forced poweroff of a running guest
    test::InstanceDriver d(kvm_config("spin.elf"));
    BOOST_TEST(d.call(start_atom::value) == "");
    BOOST_TEST(d.wait_state("run"));
    BOOST_TEST(d.call(pause_atom::value) == "");
    BOOST_TEST(d.wait_state("quiesce"));
    BOOST_TEST(d.call(resume_atom::value) == "");
    BOOST_TEST(d.wait_state("run"));
    BOOST_TEST(d.call(hard_reset_atom::value) == "");
    BOOST_TEST(d.wait_state("reboot"));
    BOOST_TEST(d.wait_state("run"));
    BOOST_TEST(d.call(poweroff_atom::value) == "");
    BOOST_TEST(d.wait_state("destroy"));
    collect(d);
  }
  {  // boot -> quiesce
    InstanceConfig c = kvm_config("demo.elf");
    c.wait_for_console = true;
    test::InstanceDriver d(std::move(c));
    BOOST_TEST(d.call(start_atom::value) == "");
    BOOST_TEST(d.wait_state("boot"));
    BOOST_TEST(d.call(poweroff_atom::value) == "");
    BOOST_TEST(d.wait_state("destroy"));
    collect(d);
  }
  {  // start -> destroy
    test::InstanceDriver d(kvm_config("demo.elf"));
    BOOST_TEST(d.call(poweroff_atom::value) == "");
    BOOST_TEST(d.wait_state("destroy"));
    collect(d);
  }
  {  // initialize -> destroy: not a kernel
    InstanceConfig c = kvm_config("demo.elf");
    c.machine.kernel = {0x7f, 'E', 'L', 'F'};
    test::InstanceDriver d(std::move(c));
    BOOST_TEST(d.call(start_atom::value) == "");
    BOOST_TEST(d.wait_state("destroy"));
    BOOST_TEST(d.diagnostics().reason().find("init_failed: image_truncated") != std::string::npos);
    collect(d);
  }
  test::check_walk_covers_the_table(observed);
}

BOOST_AUTO_TEST_CASE(actor_system_shutdown_never_hangs_on_a_busy_guest) {
  // In a child, so a hang cannot take the test binary with it: run a
  // compute-bound 2-vCPU guest, then tear the actor system down without
  // powering the VM off. The vCPU actors must kick their threads out of
  // KVM_RUN and join them.
  std::vector<uint8_t> kernel = test::guest_image("spin.elf");
  const pid_t pid = ::fork();
  if (pid == 0) {
    {
      InstanceConfig c = kvm_config("spin.elf", {}, 2);
      c.machine.kernel = kernel;
      test::InstanceDriver d(std::move(c));
      d.call(start_atom::value);
      d.attach_console();
      if (!d.wait_output("tick 2", 30s)) ::_exit(3);
    }  // ~InstanceDriver: exit to the instance; ~actor_system: waits for every actor
    ::_exit(0);
  }
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + 60s;
  pid_t r = 0;
  while ((r = ::waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(20ms);
  if (r == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    BOOST_FAIL("the actor system did not shut down within 60 s");
  }
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
