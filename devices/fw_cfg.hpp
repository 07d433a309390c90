// QEMU firmware configuration interface (fw_cfg), x86 port flavour:
// selector 0x510 (16-bit write), data 0x511 (8-bit reads), DMA 0x514.
//
// Why it exists: it is the de-facto way for firmware and guest tools to get
// blobs from the VMM (kernel, initrd, command line, named files such as ACPI
// tables or a guest agent's config) without inventing a new device: SeaBIOS,
// OVMF and Linux's qemu_fw_cfg driver all speak it.
//
// Model:
//  * Items are immutable byte blobs keyed by selector (bit 14, the write
//    flag, is ignored when selecting; writes are not supported). Selecting
//    rewinds the offset; data-port reads and DMA READ/SKIP advance it.
//    Reading a missing item or past an item's end yields 0.
//  * Data-port reads wider than a byte return consecutive bytes, first byte
//    in the low bits. Data-port writes are ignored.
//  * DMA: the 8-byte register holds the big-endian guest-physical address of
//    a FWCfgDmaAccess {be32 control, be32 length, be64 address}. Bytes are
//    stored as written (a guest writes cpu_to_be32 halves, high at +0, low
//    at +4); the write that stores the last byte (+7) starts the transfer and
//    clears the register. SELECT, then READ (zero-filled past the item's
//    end) or SKIP; WRITE is refused. The control word is written back as 0
//    on success or ERROR. Every guest range goes through
//    GuestMemory::host_range: a bad address or length sets ERROR (or, when
//    the descriptor itself is not in RAM, is only counted), never faults.
//    Reading the DMA register returns the signature "QEMU CFG".
//  * Files: add_file() before the guest runs; selectors from 0x0020 in the
//    order added; FW_CFG_FILE_DIR lists them (be32 count, then 64-byte
//    entries {be32 size, be16 select, be16 reserved, char name[56]}).
//
// Registration: bus.add(pio, layout::kFwCfgSelector, layout::kFwCfgPorts, &fw, "fw_cfg")
// (offset 0 selector, 1 data, 4-11 DMA address; 2-3 unused).
#pragma once

#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "devices/device.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/shared_bytes.hpp"

namespace apiary::devices {

namespace fw_cfg {
// Offsets from layout::kFwCfgSelector.
inline constexpr unsigned kSelectorOffset = 0, kDataOffset = 1, kDmaOffset = 4;
// Item selectors.
inline constexpr uint16_t kSignature = 0x0000, kId = 0x0001, kRamSize = 0x0003, kNbCpus = 0x0005,
                          kKernelSize = 0x0008, kInitrdSize = 0x000b, kKernelData = 0x0011,
                          kInitrdData = 0x0012, kCmdlineSize = 0x0014, kCmdlineData = 0x0015,
                          kFileDir = 0x0019, kFileFirst = 0x0020;
inline constexpr uint16_t kWriteChannel = 0x4000;
inline constexpr uint16_t kMaxFiles = 0x1000;
inline constexpr size_t kFileNameLen = 56;  // including the terminating NUL
inline constexpr size_t kFileEntrySize = 64;
// FW_CFG_ID feature bits.
inline constexpr uint32_t kIdTraditional = 1u << 0, kIdDma = 1u << 1;
// FWCfgDmaAccess.control bits.
inline constexpr uint32_t kDmaError = 1u << 0, kDmaRead = 1u << 1, kDmaSkip = 1u << 2, kDmaSelect = 1u << 3,
                          kDmaWrite = 1u << 4;
inline constexpr unsigned kDmaSelectShift = 16;
inline constexpr size_t kDmaAccessSize = 16;
inline constexpr uint64_t kDmaSignature = 0x51454d5520434647ull;  // "QEMU CFG", big-endian
}  // namespace fw_cfg

class FwCfg final : public Device {
 public:
  FwCfg(std::string name, vmm::GuestMemory& memory, uint32_t cpus, uint64_t ram_bytes,
        vmm::SharedBytes kernel, vmm::SharedBytes initrd, std::string_view cmdline);
  const char* kind() const noexcept override { return "fw_cfg"; }

  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  // Adds a named file and returns its selector. Throws vmm::Error
  // (invalid_argument) for an empty or too long name (55 bytes max), a
  // duplicate, or too many files.
  uint16_t add_file(std::string_view name, std::vector<uint8_t> bytes);

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:
  // With mutex_ held.
  const std::vector<uint8_t>* item(uint16_t key) const;
  void select(uint16_t selector);
  uint8_t read_data_byte();
  void dma(uint64_t gpa);
  uint32_t dma_transfer(uint32_t control, uint32_t length, uint64_t address);
  void rebuild_dir();
  void set_item(uint16_t key, std::vector<uint8_t> bytes);

  vmm::GuestMemory& memory_;
  mutable std::mutex mutex_;
  // By selector, sorted: about ten small items, so a flat vector (a map
  // node per item cost every machine half a kilobyte). set_item() keeps the order.
  std::vector<std::pair<uint16_t, std::vector<uint8_t>>> items_;
  vmm::SharedBytes kernel_, initrd_;  // kKernelData, kInitrdData: the machine's own, not copies
  std::vector<std::string> file_names_;  // index i -> selector kFileFirst + i
  uint16_t selector_ = fw_cfg::kSignature;
  uint64_t offset_ = 0;
  uint8_t dma_reg_[8] = {};
  uint64_t data_reads_ = 0, dma_ops_ = 0, dma_errors_ = 0, dma_bad_descriptor_ = 0, dma_bytes_ = 0,
           ignored_writes_ = 0;
};

}  // namespace apiary::devices
