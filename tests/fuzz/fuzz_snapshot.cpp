// libFuzzer target for snapshot files (devices/machine_snapshot.hpp) and the
// device states inside them: a snapshot is a file a user hands to
// `apiary run --restore` or a node finds in its save directory, so every
// byte of it is untrusted.
//
//   byte 0 even: the rest is a snapshot file: read_header, then read_memory
//                into 1 MiB of RAM when the header asks for exactly that
//                (a wrong size is refused before any memory is read).
//   byte 0 odd:  the rest is an apiary.v1.DeviceState, imported into a
//                fresh device picked by byte 0 >> 1 (its name and kind are
//                forced to the device's, so the fuzzer gets past that check).
// What must hold: no crash, no sanitizer report, no exception but vmm::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "devices/acpi_pm.hpp"
#include "devices/cmos_rtc.hpp"
#include "devices/console_backend.hpp"
#include "devices/fw_cfg.hpp"
#include "devices/i8042.hpp"
#include "devices/machine_snapshot.hpp"
#include "devices/pc_testdev.hpp"
#include "devices/pci_host.hpp"
#include "devices/post_port.hpp"
#include "devices/uart16550.hpp"
#include "devices/virtio_blk.hpp"
#include "devices/virtio_mmio.hpp"
#include "devices/virtio_rng.hpp"
#include "tests/fuzz/fuzz_sinks.hpp"
#include "vmm-core/error.hpp"

using namespace apiary;
using namespace apiary::devices;

namespace {

using fuzz::NullEvents;
using fuzz::NullIrq;
constexpr uint64_t kRam = 1 << 20;

void file_layer(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/apiary-fuzz-snapshot-" + std::to_string(::getpid());
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    auto h = snapshot::read_header(path);
    vmm::GuestMemory mem(kRam);
    snapshot::read_memory(*h, mem);
  } catch (const vmm::Error&) {
  }
}

void device_state(uint8_t which, const uint8_t* data, size_t size) {
  v1::DeviceState s;
  if (!s.ParseFromArray(data, static_cast<int>(size))) return;
  NullIrq irq;
  NullEvents events;
  ConsoleBackend console(256);
  vmm::GuestMemory memory(kRam);
  std::unique_ptr<Device> d;
  switch (which % 10) {
    case 0: d = std::make_unique<Uart16550>("com1", 4, irq, console); break;
    case 1: d = std::make_unique<I8042>("i8042", irq, events); break;
    case 2: d = std::make_unique<CmosRtc>("rtc", kRam, 0); break;
    case 3: d = std::make_unique<AcpiPm>("acpi-pm", irq, events); break;
    case 4: d = std::make_unique<FwCfg>("fw-cfg", memory, 1, kRam, std::vector<uint8_t>{1, 2, 3}, std::vector<uint8_t>{},
                                        "x"); break;
    case 5: d = std::make_unique<PciHostBridge>("pci-host"); break;
    case 6: d = std::make_unique<PcTestdev>("pc-testdev", irq); break;
    case 7: d = std::make_unique<PostPort>("post", events); break;
    case 8: d = std::make_unique<VirtioMmio>("virtio-rng", memory, 5, irq, std::make_unique<VirtioRng>()); break;
    default: {
      static const std::string disk = [] {
        std::string p = "/tmp/apiary-fuzz-snapshot-disk-" + std::to_string(::getpid());
        if (FILE* f = std::fopen(p.c_str(), "wb")) {
          std::fputs(std::string(4096, '\0').c_str(), f);
          std::fclose(f);
        }
        return p;
      }();
      d = std::make_unique<VirtioMmio>("virtio-blk", memory, 5, irq,
                                       std::make_unique<VirtioBlk>(VirtioBlkConfig{disk, false, "d0"}));
    }
  }
  s.set_device(d->name());
  s.set_kind(d->kind());
  d->start();
  try {
    d->import_state(s);
    d->export_state();
  } catch (const vmm::Error&) {
  }
  d->halt();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1)
    device_state(static_cast<uint8_t>(data[0] >> 1), data + 1, size - 1);
  else
    file_layer(data + 1, size - 1);
  return 0;
}
