// QEMU-compatible fw_cfg: a key-value store the VMM exposes to the guest.
//
// Why: it is how a VMM hands firmware-ish facts (signature, CPU count,
// kernel command line, ...) to a guest without boot structures; the demo's
// `fwcfg` command reads it to show the device works end to end.
//
// Two access paths, both here: the legacy one (write a 16-bit key to the
// selector port 0x510, read bytes from data port 0x511) and DMA (a
// FWCfgDmaAccess descriptor, all fields big-endian, whose guest-physical
// address is written to 0x514 as two big-endian 32-bit halves; the write of
// the low half starts the transfer). The guest identity-maps its memory, so
// a static buffer's address is its guest-physical address.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace apiary::guestlib::fw_cfg {

// Well-known keys.
inline constexpr uint16_t kKeySignature = 0x00;    // "QEMU"
inline constexpr uint16_t kKeyId = 0x01;           // le32 feature bits
inline constexpr uint16_t kKeyNbCpus = 0x05;       // le16
inline constexpr uint16_t kKeyCmdlineSize = 0x14;  // le32, may count the NUL
inline constexpr uint16_t kKeyCmdlineData = 0x15;
inline constexpr uint32_t kIdTraditional = 1u << 0;
inline constexpr uint32_t kIdDma = 1u << 1;

// FWCfgDmaAccess.control bits.
inline constexpr uint32_t kDmaError = 0x01, kDmaRead = 0x02, kDmaSkip = 0x04, kDmaSelect = 0x08,
                          kDmaWrite = 0x10;

struct FwCfgDmaAccess {
  uint32_t control;  // big-endian; the selector goes in bits 31:16 with kDmaSelect
  uint32_t length;   // big-endian
  uint64_t address;  // big-endian
};
static_assert(sizeof(FwCfgDmaAccess) == 16);

void select(uint16_t key);
uint8_t read_byte();
// Reads n bytes of the selected item, continuing where the last read ended.
void read_bytes(void* dst, size_t n);
uint32_t read_le32();
uint16_t read_le16();

// True when the signature item reads "QEMU".
bool present();
uint32_t features();  // kKeyId
// DMA read of n bytes of item `key` into dst. False on a device-reported
// error or when the device never completes (bounded poll).
bool dma_read(uint16_t key, void* dst, uint32_t n);

}  // namespace apiary::guestlib::fw_cfg
