// libFuzzer target for the split-virtqueue parser: guest RAM holding the
// descriptor table, available and used rings exactly as the fuzzer wrote
// them, then as many pops (and used-ring pushes) as the driver's index
// allows. Input: 2 bytes queue size, 1 byte feature selector (INDIRECT_DESC,
// EVENT_IDX), then the first bytes of guest RAM (the rings sit at fixed
// addresses inside it). A broken chain must be refused with a QueueError,
// never read outside guest RAM or loop for ever.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "devices/virtqueue.hpp"
#include "vmm-core/guest_memory.hpp"

using namespace apiary;
using namespace apiary::devices;

namespace {
constexpr uint64_t kRam = 64 * 1024;
constexpr uint64_t kDesc = 0x0, kAvail = 0x400, kUsed = 0x800;  // small inputs reach the rings
constexpr uint64_t kIndirectDesc = 1ull << 28, kEventIdx = 1ull << 29;
constexpr int kMaxPops = 1024;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vmm::GuestMemory* mem = new vmm::GuestMemory(kRam);
  if (size < 3) return 0;
  const uint16_t qsize = static_cast<uint16_t>(data[0] | data[1] << 8);
  const uint64_t features = (data[2] & 1 ? kIndirectDesc : 0) | (data[2] & 2 ? kEventIdx : 0);
  data += 3;
  size -= 3;
  std::vector<uint8_t> ram(kRam, 0);
  std::memcpy(ram.data(), data, size < kRam ? size : kRam);
  mem->write(0, ram);

  Virtqueue q(*mem, 64);
  q.set_size(qsize);
  q.set_desc_addr(kDesc);
  q.set_driver_addr(kAvail);
  q.set_device_addr(kUsed);
  if (q.enable(features) != QueueError::none) return 0;
  for (int i = 0; i < kMaxPops; ++i) {
    VirtqPop r = q.pop();
    if (!r.chain) break;
    (void)q.push_used(*r.chain, static_cast<uint32_t>(i));
    (void)q.needs_notify();
  }
  return 0;
}
