// blk_bench: reads the whole first virtio-blk disk, for the throughput
// benchmark (bench/bench_virtio_blk). `chunk=<KiB>` sets the request size
// (default 64, at most kMaxChunkKib). Progress code 0x10 marks the start of
// the reading and 0x11 its end, so the host times exactly the transfers;
// then one line "blk_bench: bytes=N requests=R sum=HEX" (sum: the XOR of
// every 64-bit word read, which the host checks against the file) and
// debug-exit 0, or debug-exit 1 with "blk_bench: <why>" on any failure.
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "guest/lib/string.hpp"
#include "guest/lib/virtio_blk.hpp"

namespace apiary::guestlib {

namespace {
constexpr uint64_t kMaxChunkKib = 256;
constexpr uint8_t kStartCode = 0x10, kEndCode = 0x11;
alignas(4096) uint8_t buffer[kMaxChunkKib * 1024];

[[noreturn]] void fail(const char* why) {
  printf("blk_bench: %s\n", why);
  debug_exit(1);
}
}  // namespace

int guest_main(const BootInfo& boot) {
  uint64_t chunk_kib = 64;
  if (const char* v = find_option(boot.cmdline, "chunk")) parse_u64(v, &chunk_kib);
  if (chunk_kib == 0 || chunk_kib > kMaxChunkKib) fail("chunk must be 1..256 KiB");
  if (virtio_blk::init() != virtio::Result::ok) fail("no usable virtio-blk device");
  const uint64_t sectors = virtio_blk::capacity();
  const uint64_t per_request = chunk_kib * 1024 / virtio_blk::kSectorSize;
  uint64_t sum = 0, requests = 0;
  progress(kStartCode);
  for (uint64_t s = 0; s < sectors; s += per_request) {
    const uint64_t n = sectors - s < per_request ? sectors - s : per_request;
    const virtio_blk::Outcome o = virtio_blk::read_sectors(s, buffer, static_cast<uint32_t>(n));
    if (!o.ok()) fail("read failed");
    ++requests;
    const uint64_t* words = reinterpret_cast<const uint64_t*>(buffer);
    for (uint64_t i = 0; i < n * virtio_blk::kSectorSize / 8; ++i) sum ^= words[i];
  }
  progress(kEndCode);
  printf("blk_bench: bytes=%llu requests=%llu sum=%llx\n", static_cast<unsigned long long>(sectors * 512),
         static_cast<unsigned long long>(requests), static_cast<unsigned long long>(sum));
  debug_exit(0);
}

}  // namespace apiary::guestlib
