// Input before resources: devices::Machine parses and loads the kernel image
// and opens the disk files before it opens the KVM device, so bad input is
// named as such on any machine, with or without a usable /dev/kvm. Here the
// KVM device path does not exist, as on a machine without KVM: a good
// config fails on KVM (and only on KVM), a bad one on its own fault.
#define BOOST_TEST_MODULE machine_validation
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
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

// virtio-mmio slots go to block devices, then NICs, then rng (the order the
// InstanceSpec lists them in), and the slot limit counts all three.
namespace {
struct RecordingWire final : devices::NetBackend {
  std::vector<devices::NetPort*> connects;
  void connect(devices::NetPort* p) noexcept override { connects.push_back(p); }
  bool transmit(std::span<const uint8_t>) noexcept override { return true; }
};
}  // namespace

BOOST_AUTO_TEST_CASE(nics_take_the_virtio_slots_between_disks_and_rng) {
  const std::string disk = "/tmp/apiary-test-machine-nic-disk." + std::to_string(::getpid());
  { std::ofstream(disk) << std::string(4096, '\0'); }
  auto wire = std::make_shared<RecordingWire>();
  {
    auto c = simulated_config(false);
    c.disks.push_back({"d0", disk, false});
    c.nics.push_back({{0x02, 0, 0, 0, 0, 1}, wire});
    c.nics.push_back({{0x02, 0, 0, 0, 0, 2}, nullptr});  // link down, still a device
    c.rng = true;
    devices::Machine m(std::move(c));
    const auto& v = m.virtio();
    BOOST_REQUIRE(v.size() == 4u);
    const std::vector<std::string> kinds = {"virtio-blk", "virtio-net", "virtio-net", "virtio-rng"};
    const std::vector<std::string> names = {"virtio-blk-0", "virtio-net-0", "virtio-net-1", "virtio-rng"};
    for (size_t slot = 0; slot < v.size(); ++slot) {
      BOOST_TEST(v[slot]->kind() == kinds[slot]);
      BOOST_TEST(v[slot]->name() == names[slot]);
      BOOST_TEST(v[slot]->irq() == layout::kVirtioIrqs[slot]);
      BOOST_TEST(claimant(m, vmm::AddressSpace::mmio, layout::kVirtioMmioBase + slot * layout::kVirtioMmioStride) ==
                 names[slot]);
    }
    // The second NIC's MAC, through the bus as the guest reads it.
    uint64_t last = 0;
    BOOST_TEST(m.bus().read(vmm::AddressSpace::mmio,
                            layout::kVirtioMmioBase + 2 * layout::kVirtioMmioStride + devices::virtio_mmio::kConfig + 5,
                            1, last));
    BOOST_TEST(last == 2u);
    BOOST_REQUIRE(wire->connects.size() == 1u);
    BOOST_TEST(wire->connects[0] == dynamic_cast<devices::NetPort*>(&v[1]->device()));
  }
  // Tearing the machine down detaches the NIC from its backend.
  BOOST_REQUIRE(wire->connects.size() == 2u);
  BOOST_TEST(wire->connects[1] == nullptr);
  std::remove(disk.c_str());
}

BOOST_AUTO_TEST_CASE(the_virtio_slot_limit_counts_nics) {
  auto c = simulated_config(false);
  c.nics.resize(layout::kVirtioMmioSlots);
  std::string what;
  BOOST_TEST(!failure(c, what).has_value(), what);  // eight NICs fill the slots
  c.rng = true;
  BOOST_TEST((failure(c, what) == vmm::Errc::invalid_argument), what);
  BOOST_TEST(what.find("virtio") != std::string::npos, what);
}

// A machine keeps its boot image for reboots and fw_cfg serves it, but a
// 65 MB vmlinux is not copied for either: every copy of the configuration
// and the machine's own share one buffer (vmm-core/shared_bytes.hpp).
BOOST_AUTO_TEST_CASE(a_machine_shares_its_boot_image_with_its_config) {
  devices::MachineConfig c = no_kvm_config();
  c.backend = devices::VcpuBackendKind::simulated;
  c.initrd = std::vector<uint8_t>(5000, 0x42);
  const devices::MachineConfig kept = c;  // what the instance actor keeps
  devices::Machine m(kept);
  BOOST_TEST(m.config().kernel.shares_with(c.kernel));
  BOOST_TEST(m.config().initrd.shares_with(c.initrd));
  BOOST_TEST(m.config().kernel.size() == test::guest_image("hello.elf").size());
}
