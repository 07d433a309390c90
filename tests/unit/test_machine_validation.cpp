// Input before resources: devices::Machine parses and loads the kernel image
// and opens the disk files before it opens the KVM device, so bad input is
// named as such on any machine, with or without a usable /dev/kvm. Here the
// KVM device path does not exist, as on a machine without KVM: a good
// config fails on KVM (and only on KVM), a bad one on its own fault.
#define BOOST_TEST_MODULE machine_validation
#include <boost/test/unit_test.hpp>

#include <optional>
#include <string>
#include <vector>

#include "devices/machine.hpp"
#include "tests/support/test_support.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;

namespace {

devices::MachineConfig no_kvm_config() {
  devices::MachineConfig c;
  c.memory_mib = 16;
  c.kernel = test::guest_image("hello.elf");
  c.kvm_path = "/nonexistent/kvm";
  return c;
}

// The error the Machine's construction ends with (none: it was built).
std::optional<vmm::Errc> failure(devices::MachineConfig c, std::string& what) {
  try {
    devices::Machine m(std::move(c));
  } catch (const vmm::Error& e) {
    what = e.what();
    return e.code();
  }
  return std::nullopt;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_good_config_fails_only_on_the_missing_kvm_device) {
  std::string what;
  BOOST_TEST((failure(no_kvm_config(), what) == vmm::Errc::kvm_unavailable), what);
  BOOST_TEST(what.find("/nonexistent/kvm") != std::string::npos, what);
}

BOOST_AUTO_TEST_CASE(a_corrupt_image_is_named_before_kvm_is_opened) {
  auto c = no_kvm_config();
  c.kernel = std::vector<uint8_t>(4096, 0x5a);
  std::string what;
  const auto code = failure(std::move(c), what);
  BOOST_REQUIRE(code.has_value());
  BOOST_TEST((*code != vmm::Errc::kvm_unavailable), what);
  BOOST_TEST(what.find("kvm") == std::string::npos, what);
}

BOOST_AUTO_TEST_CASE(a_missing_disk_file_is_named_before_kvm_is_opened) {
  auto c = no_kvm_config();
  c.disks.push_back({"d0", "/nonexistent/disk.img", false});
  std::string what;
  BOOST_TEST((failure(std::move(c), what) == vmm::Errc::file_not_found), what);
}

BOOST_AUTO_TEST_CASE(bad_sizes_are_named_before_kvm_is_opened) {
  auto c = no_kvm_config();
  c.vcpus = 0;
  std::string what;
  BOOST_TEST((failure(c, what) == vmm::Errc::invalid_argument), what);
  c = no_kvm_config();
  c.vcpus = 65;
  BOOST_TEST((failure(c, what) == vmm::Errc::too_many_vcpus), what);
}

// The simulated backend assembles a whole Machine without KVM, so the board's
// bus can be inspected: QEMU's pc-testdev is there only when asked for, and
// the no-op benchmark port stays where it is either way.
namespace {
devices::MachineConfig simulated_config(bool pc_testdev) {
  auto c = no_kvm_config();
  c.backend = devices::VcpuBackendKind::simulated;
  c.pc_testdev = pc_testdev;
  return c;
}

std::string claimant(devices::Machine& m, vmm::AddressSpace space, uint64_t addr) {
  const auto* r = m.bus().find(space, addr);
  return r ? r->name : "";
}
}  // namespace

BOOST_AUTO_TEST_CASE(pc_testdev_is_absent_by_default) {
  BOOST_TEST(!devices::MachineConfig{}.pc_testdev);
  devices::Machine m(simulated_config(false));
  BOOST_TEST(m.pc_testdev() == nullptr);
  for (uint64_t port : {uint64_t{layout::kPcTestdevIoport}, uint64_t{layout::kPcTestdevIoportByte},
                        uint64_t{layout::kPcTestdevIrqLines},
                        uint64_t{layout::kPcTestdevIrqLines} + layout::kPcTestdevIrqLineCount - 1})
    BOOST_TEST(claimant(m, vmm::AddressSpace::pio, port).empty(), "port " << port);
  BOOST_TEST(claimant(m, vmm::AddressSpace::mmio, layout::kPcTestdevIomem).empty());
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kNoopPort) == "noop");
  for (auto* d : m.devices()) BOOST_TEST(std::string(d->kind()) != "pc-testdev");
}

BOOST_AUTO_TEST_CASE(pc_testdev_is_present_with_the_flag) {
  devices::Machine m(simulated_config(true));
  BOOST_REQUIRE(m.pc_testdev() != nullptr);
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kPcTestdevIoport) == "pc-testdev-ioport");
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kPcTestdevIoport + 3) == "pc-testdev-ioport");
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kPcTestdevIoportByte) == "pc-testdev-ioport-byte");
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kPcTestdevIrqLines) == "pc-testdev-irq");
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kPcTestdevIrqLines + layout::kPcTestdevIrqLineCount - 1) ==
             "pc-testdev-irq");
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kPcTestdevIrqLines + layout::kPcTestdevIrqLineCount).empty());
  BOOST_TEST(claimant(m, vmm::AddressSpace::mmio, layout::kPcTestdevIomem) == "pc-testdev-iomem");
  BOOST_TEST(claimant(m, vmm::AddressSpace::pio, layout::kNoopPort) == "noop");
  // Through the board's bus: the scratch register reads back.
  BOOST_TEST(m.bus().write(vmm::AddressSpace::pio, layout::kPcTestdevIoport, 4, 0x5a5aa5a5));
  uint64_t v = 0;
  BOOST_TEST(m.bus().read(vmm::AddressSpace::pio, layout::kPcTestdevIoport, 4, v));
  BOOST_TEST(v == 0x5a5aa5a5u);
  size_t found = 0;
  for (auto* d : m.devices()) found += std::string(d->kind()) == "pc-testdev";
  BOOST_TEST(found == 1u);
}
