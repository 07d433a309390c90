// fw_cfg over ports and DMA; see fw_cfg.hpp.
#include "guest/lib/fw_cfg.hpp"

#include "guest/lib/io.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib::fw_cfg {

namespace {
// The device completes a DMA request during the port write that starts it,
// so the first poll normally sees it done; this only bounds a broken device
// (~1.5 s under the emulator).
constexpr uint32_t kDmaPolls = 100000;

uint32_t to_be32(uint32_t v) { return __builtin_bswap32(v); }
uint64_t to_be64(uint64_t v) { return __builtin_bswap64(v); }

// Static so its address is fixed and identity-mapped; 16-byte aligned so
// it never straddles a page.
alignas(16) FwCfgDmaAccess dma_access;
}  // namespace

void select(uint16_t key) { outw(layout::kFwCfgSelector, key); }
uint8_t read_byte() { return inb(layout::kFwCfgData); }

void read_bytes(void* dst, size_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  for (size_t i = 0; i < n; ++i) p[i] = read_byte();
}

uint32_t read_le32() {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(read_byte()) << (8 * i);
  return v;
}

uint16_t read_le16() {
  uint16_t lo = read_byte();
  return static_cast<uint16_t>(lo | (read_byte() << 8));
}

bool present() {
  char sig[4];
  select(kKeySignature);
  read_bytes(sig, sizeof sig);
  return sig[0] == 'Q' && sig[1] == 'E' && sig[2] == 'M' && sig[3] == 'U';
}

uint32_t features() {
  select(kKeyId);
  return read_le32();
}

bool dma_read(uint16_t key, void* dst, uint32_t n) {
  volatile FwCfgDmaAccess* a = &dma_access;
  a->control = to_be32((static_cast<uint32_t>(key) << 16) | kDmaSelect | kDmaRead);
  a->length = to_be32(n);
  a->address = to_be64(reinterpret_cast<uint64_t>(dst));
  memory_fence();
  uint64_t addr = reinterpret_cast<uint64_t>(&dma_access);
  outl(layout::kFwCfgDma, to_be32(static_cast<uint32_t>(addr >> 32)));
  outl(layout::kFwCfgDma + 4, to_be32(static_cast<uint32_t>(addr)));
  // The device clears control (all but the error bit) when done.
  for (uint32_t i = 0; i < kDmaPolls; ++i) {
    uint32_t control = to_be32(a->control);
    if (control & kDmaError) return false;
    if (control == 0) return true;
    cpu_relax();
  }
  return false;
}

}  // namespace apiary::guestlib::fw_cfg
