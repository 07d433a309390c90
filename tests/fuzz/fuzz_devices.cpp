// libFuzzer targets for the devices' register files: a hostile guest's
// port and MMIO accesses, as any byte string. One executable per device
// (tests/fuzz/CMakeLists.txt defines APIARY_FUZZ_<DEVICE>); the input is a
// sequence of operations, each
//
//   byte 0   kind: bits 0-1 read / write / poke guest RAM / device lifecycle
//            bits 2-3 access size 1, 2, 4, 8; bits 4-7 which window
//   byte 1-2 offset in the window (little endian), or a RAM address / 8
//   byte 3.. the value (as many bytes as the size; 8 for a poke)
//
// "Poke" writes guest RAM, so virtio drivers' rings and descriptors are
// whatever the fuzzer made them; "lifecycle" pauses, resumes, resets or
// exports the device's state. What must hold: no crash, no sanitizer report,
// no exception out of an I/O handler (they are noexcept on the vCPU path).
//
// virtio-net also has a wire side: a lifecycle operation whose offset has
// bit 2 set instead delivers a frame of (offset >> 3) % 1500 bytes (runts,
// good frames and oversized ones), as the data plane would between the
// guest's accesses; its backend loops transmitted frames with the
// multicast bit set back into the device, the way a switch floods them.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "devices/acpi_pm.hpp"
#include "devices/cmos_rtc.hpp"
#include "devices/console_backend.hpp"
#include "devices/fw_cfg.hpp"
#include "devices/i8042.hpp"
#include "devices/pc_testdev.hpp"
#include "devices/pci_host.hpp"
#include "devices/uart16550.hpp"
#include "devices/virtio_blk.hpp"
#include "devices/virtio_mmio.hpp"
#include "devices/virtio_net.hpp"
#include "devices/virtio_rng.hpp"
#include "tests/fuzz/fuzz_sinks.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using namespace apiary::devices;

namespace {

using fuzz::NullEvents;
using fuzz::NullIrq;

// Guest RAM small enough to reset cheaply, big enough for rings and buffers.
constexpr uint64_t kRam = 1 << 20;
// Frame lengths a deliver operation picks from: 0 up to past the largest frame.
constexpr uint32_t kDeliverLengths = layout::kNetMaxFrameBytes + 32;

// virtio-net's wire: drops what the guest sends, except multicast frames,
// which it delivers straight back (from inside transmit, as a loopback
// switch port may).
struct LoopbackWire final : NetBackend {
  NetPort* port = nullptr;
  void connect(NetPort* p) noexcept override { port = p; }
  bool transmit(std::span<const uint8_t> frame) noexcept override {
    if (port && !frame.empty() && (frame[0] & 1)) port->deliver(frame);
    return true;
  }
};

struct Target {
  Device* device = nullptr;               // lifecycle operations
  std::vector<vmm::IoHandler*> windows;   // register windows, by index
  std::vector<uint64_t> window_sizes;     // offsets are taken modulo these
};

struct World {
  NullIrq irq;
  NullEvents events;
  ConsoleBackend console{4096};
  vmm::GuestMemory memory{kRam};
  std::unique_ptr<Device> owned;
  Target target;
  std::string disk;
  std::shared_ptr<LoopbackWire> wire;  // virtio-net only
  NetPort* port = nullptr;             // where deliver operations go

  World() {
#if defined(APIARY_FUZZ_UART)
    auto d = std::make_unique<Uart16550>("com1", layout::kCom1Irq, irq, console);
    target = {d.get(), {d.get()}, {layout::kCom1Size}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_I8042)
    auto d = std::make_unique<I8042>("i8042", irq, events);
    target = {d.get(), {&d->data_port(), &d->command_port()}, {1, 1}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_RTC)
    auto d = std::make_unique<CmosRtc>("rtc", kRam, 0);
    target = {d.get(), {d.get()}, {layout::kRtcPorts}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_ACPI_PM)
    auto d = std::make_unique<AcpiPm>("acpi-pm", irq, events);
    target = {d.get(), {&d->event_block(), &d->control_block()}, {layout::kAcpiPm1aEvtLen, layout::kAcpiPm1aCntLen}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_FW_CFG)
    static const std::vector<uint8_t> kernel(4096, 0x90), initrd(1024, 0x42);
    auto d = std::make_unique<FwCfg>("fw-cfg", memory, 2, kRam, kernel, initrd, "console=ttyS0");
    target = {d.get(), {d.get()}, {layout::kFwCfgPorts}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_PCI_HOST)
    auto d = std::make_unique<PciHostBridge>("pci-host");
    target = {d.get(), {&d->address_port(), &d->data_port()}, {4, layout::kPciConfigDataLen}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_PC_TESTDEV)
    auto d = std::make_unique<PcTestdev>("pc-testdev", irq);
    target = {d.get(),
              {d.get(), &d->byte_window(), &d->irq_lines(), &d->iomem()},
              {layout::kPcTestdevIoportLen, layout::kPcTestdevIoportLen, layout::kPcTestdevIrqLineCount,
               layout::kPcTestdevIomemLen}};
    owned = std::move(d);
#elif defined(APIARY_FUZZ_VIRTIO_BLK) || defined(APIARY_FUZZ_VIRTIO_RNG) || defined(APIARY_FUZZ_VIRTIO_NET)
    std::unique_ptr<VirtioDevice> model;
#if defined(APIARY_FUZZ_VIRTIO_NET)
    wire = std::make_shared<LoopbackWire>();
    auto nic = std::make_unique<VirtioNet>(VirtioNetConfig{{0x02, 0, 0, 0, 0, 1}, wire});
    port = nic.get();
    model = std::move(nic);
#elif defined(APIARY_FUZZ_VIRTIO_BLK)
    char path[] = "/tmp/apiary-fuzz-disk.XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0 || ::ftruncate(fd, 64 * 1024) != 0) std::abort();
    ::close(fd);
    disk = path;
    model = std::make_unique<VirtioBlk>(VirtioBlkConfig{disk, false, "fuzz"});
#else
    model = std::make_unique<VirtioRng>();
#endif
    auto d = std::make_unique<VirtioMmio>("virtio", memory, 5, irq, std::move(model));
    target = {d.get(), {d.get()}, {virtio_mmio::kRegionSize}};
    owned = std::move(d);
#else
#error "define one APIARY_FUZZ_<DEVICE>"
#endif
    owned->start();
  }
  ~World() {
    if (!disk.empty()) ::unlink(disk.c_str());
  }
};

uint64_t take(const uint8_t*& p, const uint8_t* end, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n && p < end; ++i) v |= static_cast<uint64_t>(*p++) << (8 * i);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World;  // one device for the process; reset per input
  Target& t = world->target;
  t.device->reset();
  t.device->resume();
  const uint8_t* p = data;
  const uint8_t* end = data + size;
  while (p < end) {
    const uint8_t op = *p++;
    const unsigned len = 1u << ((op >> 2) & 3);
    const size_t w = (op >> 4) % t.windows.size();
    const uint64_t offset = take(p, end, 2);
    switch (op & 3) {
      case 0:
        (void)t.windows[w]->io_read(offset % t.window_sizes[w], len);
        break;
      case 1:
        t.windows[w]->io_write(offset % t.window_sizes[w], len, take(p, end, len));
        break;
      case 2: {
        const uint64_t value = take(p, end, 8);
        world->memory.write((offset * 8) % kRam, {reinterpret_cast<const uint8_t*>(&value), 8});
        break;
      }
      default:
        if (world->port && (offset & 4)) {
          std::vector<uint8_t> frame((offset >> 3) % kDeliverLengths);
          for (size_t i = 0; i < frame.size(); ++i) frame[i] = static_cast<uint8_t>(offset + i);
          (void)world->port->deliver(frame);
          break;
        }
        switch (offset & 3) {
          case 0: t.device->pause(); break;
          case 1: t.device->resume(); break;
          case 2: t.device->reset(); break;
          default: (void)t.device->export_state(); break;
        }
    }
  }
  t.device->pause();  // waits for in-flight work (virtio-blk's worker) before the next input
  return 0;
}
