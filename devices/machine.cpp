#include "devices/machine.hpp"

#include <fstream>
#include <mutex>
#include <sstream>

#include "devices/machine_snapshot.hpp"
#include "devices/virtio_blk.hpp"
#include "devices/virtio_net.hpp"
#include "devices/virtio_rng.hpp"
#include "vmm-core/acpi.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/sim_vcpu.hpp"
#include "vmm-core/x86_setup.hpp"

namespace apiary::devices {

using vmm::Errc;
using vmm::Error;

namespace {
// The virtio-mmio slots a config fills (disks, then NICs, then the RNG).
size_t virtio_slots(const MachineConfig& c) { return c.disks.size() + c.nics.size() + (c.rng ? 1 : 0); }
}  // namespace

uint64_t host_memory_mib() {
  // Read once: the host's RAM does not change under a running process, and a
  // node that builds thousands of machines should not parse /proc each time.
  static const uint64_t mib = [] {
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t kib = 0;
    while (in >> key) {
      if (key == "MemTotal:") {
        in >> kib;
        return kib / 1024;
      }
      in.ignore(256, '\n');
    }
    return layout::kMaxMemoryMib;
  }();
  return mib;
}

Machine::Machine(MachineConfig config) : config_(std::move(config)), console_(config_.console_history_bytes) {
  if (config_.vcpus == 0)
    throw Error(Errc::invalid_argument, "vcpus: must be at least 1");
  if (config_.vcpus > layout::kMaxVcpus)
    throw Error(Errc::too_many_vcpus, "vcpus: " + std::to_string(config_.vcpus) + " exceeds the limit of " +
                                          std::to_string(layout::kMaxVcpus));
  if (config_.memory_mib < layout::kMinMemoryMib)
    throw Error(Errc::invalid_argument, "memory: at least " + std::to_string(layout::kMinMemoryMib) + " MiB");
  const uint64_t host = host_memory_mib();
  if (config_.memory_mib > layout::kMaxMemoryMib || config_.memory_mib > host)
    throw Error(Errc::memory_too_large, "memory: " + std::to_string(config_.memory_mib) +
                                            " MiB exceeds what this host allows (" + std::to_string(host) +
                                            " MiB of RAM)");
  if (config_.kernel.empty()) throw Error(Errc::invalid_argument, "no kernel image");

  // A simulated machine's RAM is mapped only if something reads or writes
  // it (a snapshot, a device driven by a test): see GuestMemory::Backing.
  memory_ = std::make_unique<vmm::GuestMemory>(
      config_.memory_mib << 20, simulated() ? vmm::GuestMemory::Backing::on_first_use : vmm::GuestMemory::Backing::mapped);

  IrqLine& irq = *this;
  DeviceEvents& events = *this;
  com1_ = std::make_unique<Uart16550>("com1", layout::kCom1Irq, irq, console_);
  debug_exit_ = std::make_unique<DebugExit>("debug-exit", events);
  post_ = std::make_unique<PostPort>("post", events);
  noop_ = std::make_unique<NoopPort>("noop");
  using vmm::AddressSpace;
  bus_.add(AddressSpace::pio, layout::kCom1Base, layout::kCom1Size, com1_.get(), com1_->name());
  bus_.add(AddressSpace::pio, layout::kDebugExitPort, 1, debug_exit_.get(), debug_exit_->name());
  bus_.add(AddressSpace::pio, layout::kPostPort, 1, post_.get(), post_->name());
  bus_.add(AddressSpace::pio, layout::kNoopPort, 1, noop_.get(), noop_->name());

  i8042_ = std::make_unique<I8042>("i8042", irq, events);
  bus_.add(AddressSpace::pio, layout::kI8042Data, 1, &i8042_->data_port(), "i8042-data");
  bus_.add(AddressSpace::pio, layout::kI8042Command, 1, &i8042_->command_port(), "i8042-cmd");
  rtc_ = std::make_unique<CmosRtc>("rtc", memory_->low_end(), memory_->size() - memory_->low_end());
  bus_.add(AddressSpace::pio, layout::kRtcIndex, layout::kRtcPorts, rtc_.get(), rtc_->name());
  acpi_ = std::make_unique<AcpiPm>("acpi-pm", irq, events);
  bus_.add(AddressSpace::pio, layout::kAcpiPm1aEvt, layout::kAcpiPm1aEvtLen, &acpi_->event_block(), "acpi-pm1a-evt");
  bus_.add(AddressSpace::pio, layout::kAcpiPm1aCnt, layout::kAcpiPm1aCntLen, &acpi_->control_block(),
           "acpi-pm1a-cnt");
  reset_control_ = std::make_unique<ResetControl>("reset-control", events);
  bus_.add(AddressSpace::pio, layout::kResetControl, layout::kResetControlLen, reset_control_.get(),
           reset_control_->name());
  pci_host_ = std::make_unique<PciHostBridge>("pci-host");
  bus_.add(AddressSpace::pio, layout::kPciConfigAddress, layout::kPciConfigAddressLen, &pci_host_->address_port(),
           "pci-config-address");
  bus_.add(AddressSpace::pio, layout::kPciConfigData, layout::kPciConfigDataLen, &pci_host_->data_port(),
           "pci-config-data");
  fw_cfg_ = std::make_unique<FwCfg>("fw-cfg", *memory_, config_.vcpus, memory_->size(), config_.kernel,
                                    config_.initrd, config_.cmdline);
  bus_.add(AddressSpace::pio, layout::kFwCfgSelector, layout::kFwCfgPorts, fw_cfg_.get(), fw_cfg_->name());
  if (config_.pc_testdev) {
    pc_testdev_ = std::make_unique<PcTestdev>("pc-testdev", irq);
    bus_.add(AddressSpace::pio, layout::kPcTestdevIoport, layout::kPcTestdevIoportLen, pc_testdev_.get(),
             "pc-testdev-ioport");
    bus_.add(AddressSpace::pio, layout::kPcTestdevIoportByte, layout::kPcTestdevIoportLen,
             &pc_testdev_->byte_window(), "pc-testdev-ioport-byte");
    bus_.add(AddressSpace::pio, layout::kPcTestdevIrqLines, layout::kPcTestdevIrqLineCount,
             &pc_testdev_->irq_lines(), "pc-testdev-irq");
    bus_.add(AddressSpace::mmio, layout::kPcTestdevIomem, layout::kPcTestdevIomemLen, &pc_testdev_->iomem(),
             "pc-testdev-iomem");
  }

  const size_t virtio_count = virtio_slots(config_);
  if (virtio_count > layout::kVirtioMmioSlots)
    throw Error(Errc::invalid_argument, "at most " + std::to_string(layout::kVirtioMmioSlots) + " virtio devices");
  auto add_virtio = [&](std::string name, std::unique_ptr<VirtioDevice> model) {
    const size_t slot = virtio_.size();
    virtio_.push_back(std::make_unique<VirtioMmio>(std::move(name), *memory_, layout::kVirtioIrqs[slot], irq,
                                                   std::move(model)));
    bus_.add(AddressSpace::mmio, layout::kVirtioMmioBase + slot * layout::kVirtioMmioStride,
             virtio_mmio::kRegionSize, virtio_.back().get(), virtio_.back()->name());
  };
  for (size_t i = 0; i < config_.disks.size(); ++i) {
    const auto& d = config_.disks[i];
    add_virtio("virtio-blk-" + std::to_string(i),
               std::make_unique<VirtioBlk>(VirtioBlkConfig{d.path, d.read_only, d.id}));
  }
  for (size_t i = 0; i < config_.nics.size(); ++i) {
    const auto& n = config_.nics[i];
    add_virtio("virtio-net-" + std::to_string(i), std::make_unique<VirtioNet>(VirtioNetConfig{n.mac, n.backend}));
  }
  if (config_.rng) add_virtio("virtio-rng", std::make_unique<VirtioRng>());
  bus_.freeze();

  // Input first, resources after: the kernel image is parsed and loaded (and
  // the disk files were opened above) before /dev/kvm is touched, so a bad
  // image or a missing file gets its own named error on any machine,
  // including one without KVM.
  if (config_.restore && simulated())
    throw Error(Errc::snapshot_unsupported, "a simulated machine cannot be restored from a snapshot");
  // A restored machine's RAM comes from the snapshot; its boot plan is only
  // needed again for a reboot, which reloads the kernel (reload_kernel).
  if (!config_.restore) load_kernel();
  if (!simulated()) {
    kvm_ = std::make_unique<vmm::kvm::System>(config_.kvm_path);
    if (config_.vcpus > static_cast<uint32_t>(kvm_->max_vcpus()))
      throw Error(Errc::too_many_vcpus, "vcpus: KVM allows at most " + std::to_string(kvm_->max_vcpus()));
    vm_ = std::make_unique<vmm::kvm::Vm>(*kvm_);
    vm_->map_memory(*memory_);
  }
  for (uint32_t id = 0; id < config_.vcpus; ++id) {
    if (simulated()) {
      vcpus_.push_back(std::make_unique<vmm::SimVcpuBackend>(
          id, bus_, id < config_.sim_programs.size() ? config_.sim_programs[id] : std::vector<vmm::SimStep>{}));
    } else {
      vcpus_.push_back(std::make_unique<vmm::KvmVcpuBackend>(*vm_, id, config_.vcpus, bus_));
    }
    if (!config_.restore) vcpus_.back()->reset(id == 0 ? &plan_ : nullptr);
  }
  for (Device* d : devices()) d->start();
  if (config_.restore) {
    if (!config_.restore->incoming) snapshot::load_into(*this, *config_.restore);
    restored_ = true;
  }
}

Machine::~Machine() = default;

vmm::BootPlan write_boot_image(vmm::GuestMemory& memory, const MachineConfig& config) {
  const size_t slots = virtio_slots(config);
  vmm::acpi::Config acpi{config.vcpus, {}};
  for (size_t slot = 0; slot < slots; ++slot)
    acpi.virtio.push_back({layout::kVirtioMmioBase + slot * layout::kVirtioMmioStride, layout::kVirtioIrqs[slot]});
  vmm::BootInputs in{config.kernel, config.cmdline, config.initrd, layout::kAcpiTables};
  const vmm::BootPlan plan = vmm::load_kernel(memory, in);
  vmm::x86::write_boot_tables(memory, plan.mode);
  vmm::acpi::write(memory, acpi);
  return plan;
}

namespace {

// The simulated backend runs no guest code, so nothing ever reads what the
// loader writes into a simulated machine's RAM; but each page written costs
// a page fault and 4 KiB (about 5 pages, over 100 us here, per machine: most
// of what a node spends building a simulated instance). So a simulated
// machine's image goes through the same loader once per distinct boot input,
// into scratch RAM that is dropped again, and each machine keeps only the
// plan. A bad image is refused exactly as for KVM (never cached).
class SimulatedBootPlans {
 public:
  vmm::BootPlan get(const MachineConfig& c, uint64_t memory_bytes) {
    const size_t slots = virtio_slots(c);
    {
      std::lock_guard lock(mutex_);
      for (const auto& [k, plan] : plans_)
        if (k.memory_bytes == memory_bytes && k.vcpus == c.vcpus && k.virtio_slots == slots &&
            k.cmdline == c.cmdline && k.kernel == c.kernel && k.initrd == c.initrd)
          return plan;
    }
    vmm::GuestMemory scratch(memory_bytes);
    const vmm::BootPlan plan = write_boot_image(scratch, c);
    std::lock_guard lock(mutex_);
    if (plans_.size() >= kMaxPlans) plans_.erase(plans_.begin());
    plans_.push_back({Key{memory_bytes, c.vcpus, slots, c.cmdline, c.kernel, c.initrd}, plan});
    return plan;
  }

 private:
  static constexpr size_t kMaxPlans = 16;  // distinct images a simulated node boots at once
  struct Key {
    uint64_t memory_bytes;
    uint32_t vcpus;
    size_t virtio_slots;
    std::string cmdline;
    vmm::SharedBytes kernel, initrd;
  };
  std::mutex mutex_;
  std::vector<std::pair<Key, vmm::BootPlan>> plans_;
};

}  // namespace

void Machine::load_kernel() {
  if (simulated()) {
    static SimulatedBootPlans plans;
    plan_ = plans.get(config_, memory_->size());
    return;
  }
  plan_ = write_boot_image(*memory_, config_);
}

std::vector<Device*> Machine::devices() const {
  std::vector<Device*> all = {com1_.get(), i8042_.get(), rtc_.get(), acpi_.get(), reset_control_.get(), pci_host_.get(),
                              fw_cfg_.get(), debug_exit_.get(), post_.get(), noop_.get()};
  for (auto& v : virtio_) all.push_back(v.get());
  if (pc_testdev_) all.push_back(pc_testdev_.get());
  return all;
}

void Machine::set_event_handler(std::function<void(const MachineEvent&)> handler) {
  std::lock_guard lock(handler_mutex_);
  handler_ = std::move(handler);
}

void Machine::reload_kernel() {
  // Fresh RAM contents: a rebooted guest must not see its old memory.
  memory_->zero_all();
  load_kernel();
}

bool Machine::inject_ctrl_alt_del() { return i8042_->inject_ctrl_alt_del() > 0; }
bool Machine::press_power_button() { return acpi_->press_power_button(); }

void Machine::reset_for_reboot() {
  reload_kernel();
  for (Device* d : devices()) d->reset();
  for (auto& v : vcpus_) v->reset(v->id() == 0 ? &plan_ : nullptr);
}

void Machine::emit(const MachineEvent& e) {
  std::function<void(const MachineEvent&)> h;
  {
    std::lock_guard lock(handler_mutex_);
    h = handler_;
  }
  if (h) h(e);
}

void Machine::reset_requested(std::string_view device) { emit(EventResetRequest{std::string(device)}); }
void Machine::poweroff_requested(std::string_view device) { emit(EventPoweroffRequest{std::string(device)}); }
void Machine::debug_exit(std::string_view, int status) { emit(EventDebugExit{status}); }
void Machine::progress(std::string_view, uint8_t code) { emit(EventProgress{code}); }

void Machine::set_level(uint32_t gsi, bool level) {
  if (vm_) vm_->set_irq_line(gsi, level);
}

}  // namespace apiary::devices
