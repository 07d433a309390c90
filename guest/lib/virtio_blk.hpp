// virtio-blk on top of the polled virtio-mmio core: 512-byte sector read,
// write, flush, and the device id string.
//
// Why: the demo's `disk` command shows the VMM's block device end to end
// (a host test writes through the guest and checks the backing file, or
// the reverse). Each request is one chain: a 16-byte header {le32 type,
// le32 reserved, le64 sector} the device reads, the data buffer (if any),
// and a one-byte status the device writes.
#pragma once

#include <stdint.h>

#include "guest/lib/virtio.hpp"

namespace apiary::guestlib::virtio_blk {

inline constexpr uint32_t kSectorSize = 512;
inline constexpr uint32_t kIdBytes = 20;  // GET_ID answer, NUL-padded, maybe not terminated
inline constexpr unsigned kFeatureReadOnly = 5, kFeatureFlush = 9;
inline constexpr uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8;
inline constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupp = 2;
inline constexpr uint32_t kConfigCapacity = 0;  // le64, in 512-byte sectors

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

// What a request came to: the transport's result, and when that is ok, the
// device's status byte.
struct Outcome {
  virtio::Result transport;
  uint8_t status;
  bool ok() const { return transport == virtio::Result::ok && status == kStatusOk; }
};
// "OK", "IOERR", "UNSUPP" or "?".
const char* status_name(uint8_t status);

// Finds and initializes the first virtio-blk device (once; again after a
// failure). Negotiates VERSION_1 and, when offered, FLUSH.
virtio::Result init();
uint64_t capacity();  // sectors; 0 before init
bool read_only();
bool has_flush();

Outcome read(uint64_t sector, void* buf);         // one sector
// `count` consecutive sectors in one request (buf holds count * 512 bytes).
Outcome read_sectors(uint64_t sector, void* buf, uint32_t count);
Outcome write(uint64_t sector, const void* buf);  // one sector
Outcome flush();
Outcome get_id(char* id);                         // kIdBytes bytes

}  // namespace apiary::guestlib::virtio_blk
