// The PC machine, assembled: guest RAM, the KVM VM (or nothing, for the
// simulated backend), the loaded kernel, the platform devices on the bus and
// one vCPU backend per vCPU — everything except the threads that run it.
//
// The Machine is the one place that knows the board (which device sits at
// which port, per layout.hpp). It is owned by whoever drives it: the
// MachineRunner (plain threads, used by tests and benchmarks) or the instance
// and vCPU actors. Device events are translated into MachineEvents and
// handed to the owner's handler; the Machine itself decides nothing.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "devices/acpi_pm.hpp"
#include "devices/cmos_rtc.hpp"
#include "devices/console_backend.hpp"
#include "devices/debug_exit.hpp"
#include "devices/device.hpp"
#include "devices/fw_cfg.hpp"
#include "devices/i8042.hpp"
#include "devices/net_backend.hpp"
#include "devices/pc_testdev.hpp"
#include "devices/noop_port.hpp"
#include "devices/post_port.hpp"
#include "devices/pci_host.hpp"
#include "devices/reset_control.hpp"
#include "devices/uart16550.hpp"
#include "devices/virtio_mmio.hpp"
#include "vmm-core/boot.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/kvm.hpp"
#include "vmm-core/shared_bytes.hpp"
#include "vmm-core/sim_vcpu.hpp"
#include "vmm-core/vcpu.hpp"

namespace apiary::devices {

namespace snapshot {
struct Header;
}

// simulated: no KVM and no guest code; the image is checked by the same
// loader (once per distinct boot input) but not written into the machine's
// RAM, which nothing would read (machine.cpp, SimulatedBootPlans).
enum class VcpuBackendKind { kvm, simulated };

struct MachineConfig {
  uint32_t vcpus = 1;
  uint64_t memory_mib = 64;
  // Shared, not copied, with every copy of the config (vmm-core/shared_bytes.hpp).
  vmm::SharedBytes kernel;
  std::string cmdline;
  vmm::SharedBytes initrd;
  size_t console_history_bytes = 64 * 1024;
  // virtio-mmio devices, in slot order: block devices first, then NICs,
  // then rng (as proto/apiary/v1/instance.proto lists them).
  struct Disk {
    std::string id;  // the GET_ID serial
    std::string path;
    bool read_only = false;
  };
  std::vector<Disk> disks;
  // One virtio-net device each (devices/virtio_net.hpp). The MAC is taken
  // as given (spec validation checks unicast / non-zero / unique;
  // default_mac() makes one); a null backend is a NIC whose link is down.
  struct Nic {
    std::array<uint8_t, 6> mac{};
    std::shared_ptr<NetBackend> backend;
  };
  std::vector<Nic> nics;
  bool rng = false;
  // QEMU's pc-testdev (devices/pc_testdev.hpp) at its ports, for test programs.
  bool pc_testdev = false;
  VcpuBackendKind backend = VcpuBackendKind::kvm;
  // Simulated backend only: the program each vCPU replays (index = vCPU id;
  // missing entries are idle vCPUs).
  std::vector<std::vector<vmm::SimStep>> sim_programs;
  std::string kvm_path = "/dev/kvm";
  // Set: the machine is built as this snapshot left it (memory, vCPUs,
  // in-kernel devices, device state) instead of loading the kernel. The
  // rest of the config must be the snapshot's (snapshot::restore_config).
  std::shared_ptr<const snapshot::Header> restore;
};

struct EventDebugExit { int status; };
struct EventResetRequest { std::string device; };
struct EventPoweroffRequest { std::string device; };
struct EventProgress { uint8_t code; };
using MachineEvent = std::variant<EventDebugExit, EventResetRequest, EventPoweroffRequest, EventProgress>;

// Host RAM in MiB (MemTotal), for the memory_too_large check.
uint64_t host_memory_mib();

// Writes what the loader puts into guest RAM for `config` (kernel, initrd,
// command line, boot tables, ACPI tables) into `memory`, and returns the
// entry plan: a KVM machine's RAM holds exactly this at its first
// instruction. (A simulated machine checks its image the same way but keeps
// only the plan; see VcpuBackendKind.)
vmm::BootPlan write_boot_image(vmm::GuestMemory& memory, const MachineConfig& config);

class Machine final : private DeviceEvents, private IrqLine {
 public:
  // Validates the config (too_many_vcpus, memory_too_large, invalid_argument),
  // builds memory, VM, devices and vCPUs, and loads the kernel (loader Errc).
  explicit Machine(MachineConfig config);
  ~Machine() override;

  const MachineConfig& config() const noexcept { return config_; }
  vmm::GuestMemory& memory() noexcept { return *memory_; }
  vmm::Bus& bus() noexcept { return bus_; }
  const vmm::BootPlan& boot_plan() const noexcept { return plan_; }
  ConsoleBackend& console() noexcept { return console_; }
  Uart16550& com1() noexcept { return *com1_; }
  PostPort& post() noexcept { return *post_; }
  NoopPort& noop() noexcept { return *noop_; }
  I8042& i8042() noexcept { return *i8042_; }
  CmosRtc& rtc() noexcept { return *rtc_; }
  AcpiPm& acpi() noexcept { return *acpi_; }
  FwCfg& fw_cfg() noexcept { return *fw_cfg_; }
  PcTestdev* pc_testdev() noexcept { return pc_testdev_.get(); }  // null unless configured
  // virtio-mmio devices by slot.
  const std::vector<std::unique_ptr<VirtioMmio>>& virtio() const noexcept { return virtio_; }
  const std::vector<std::unique_ptr<vmm::VcpuBackend>>& vcpus() const noexcept { return vcpus_; }
  // The KVM VM; null for a simulated machine.
  vmm::kvm::Vm* kvm_vm() noexcept { return vm_.get(); }
  // Restored from MachineConfig::restore rather than booted.
  bool restored() const noexcept { return restored_; }
  std::vector<Device*> devices() const;
  bool simulated() const noexcept { return config_.backend == VcpuBackendKind::simulated; }

  // Called on vCPU threads: keep it quick and thread-safe.
  void set_event_handler(std::function<void(const MachineEvent&)> handler);

  // Power-on state again: reload the kernel, reset every device and vCPU.
  // Only while no vCPU is running.
  void reset_for_reboot();
  // The memory part of a reboot: RAM cleared, kernel and boot tables
  // reloaded. Devices and vCPUs are reset by their owners (fan-outs).
  void reload_kernel();

  // Soft events for the guest to react to. inject_ctrl_alt_del: false when
  // the board lacks the device; press_power_button: false when the guest has
  // not armed the ACPI power button (no ACPI OS, or not that far in its boot).
  bool inject_ctrl_alt_del();
  bool press_power_button();

 private:
  void load_kernel();
  // DeviceEvents
  void reset_requested(std::string_view device) override;
  void poweroff_requested(std::string_view device) override;
  void debug_exit(std::string_view device, int status) override;
  void progress(std::string_view device, uint8_t code) override;
  // IrqLine
  void set_level(uint32_t gsi, bool level) override;
  void emit(const MachineEvent& e);

  MachineConfig config_;
  std::unique_ptr<vmm::GuestMemory> memory_;
  std::unique_ptr<vmm::kvm::System> kvm_;
  std::unique_ptr<vmm::kvm::Vm> vm_;
  vmm::Bus bus_;
  vmm::BootPlan plan_{};
  ConsoleBackend console_;
  std::unique_ptr<Uart16550> com1_;
  std::unique_ptr<DebugExit> debug_exit_;
  std::unique_ptr<PostPort> post_;
  std::unique_ptr<NoopPort> noop_;
  std::unique_ptr<I8042> i8042_;
  std::unique_ptr<CmosRtc> rtc_;
  std::unique_ptr<AcpiPm> acpi_;
  std::unique_ptr<ResetControl> reset_control_;
  std::unique_ptr<PciHostBridge> pci_host_;
  std::unique_ptr<FwCfg> fw_cfg_;
  std::unique_ptr<PcTestdev> pc_testdev_;
  std::vector<std::unique_ptr<VirtioMmio>> virtio_;
  std::vector<std::unique_ptr<vmm::VcpuBackend>> vcpus_;
  std::mutex handler_mutex_;
  std::function<void(const MachineEvent&)> handler_;
  bool restored_ = false;
};

}  // namespace apiary::devices
