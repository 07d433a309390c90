// virtio-blk requests; see virtio_blk.hpp.
#include "guest/lib/virtio_blk.hpp"

namespace apiary::guestlib::virtio_blk {

namespace {

virtio::QueueMemory queue;
virtio::Device device;
RequestHeader header;
uint8_t status_byte;

Outcome request(uint32_t type, uint64_t sector, void* data, uint32_t len, bool device_writes) {
  virtio::Result r = init();
  if (r != virtio::Result::ok) return {r, 0};
  header = {type, 0, sector};
  status_byte = 0xff;  // a device that "completes" without writing it shows up
  virtio::Buffer bufs[3];
  size_t n = 0;
  bufs[n++] = {&header, sizeof header, false};
  if (len) bufs[n++] = {data, len, device_writes};
  bufs[n++] = {&status_byte, 1, true};
  r = device.transfer(bufs, n, nullptr);
  return {r, *static_cast<volatile uint8_t*>(&status_byte)};
}

}  // namespace

const char* status_name(uint8_t status) {
  switch (status) {
    case kStatusOk: return "OK";
    case kStatusIoErr: return "IOERR";
    case kStatusUnsupp: return "UNSUPP";
    default: return "?";
  }
}

virtio::Result init() {
  if (device.ready()) return virtio::Result::ok;
  return device.init(virtio::kDeviceBlock, (1ull << kFeatureFlush) | (1ull << kFeatureReadOnly), &queue);
}

uint64_t capacity() { return device.ready() ? device.config64(kConfigCapacity) : 0; }
bool read_only() { return device.features() & (1ull << kFeatureReadOnly); }
bool has_flush() { return device.features() & (1ull << kFeatureFlush); }

Outcome read(uint64_t sector, void* buf) { return request(kTypeIn, sector, buf, kSectorSize, true); }
Outcome read_sectors(uint64_t sector, void* buf, uint32_t count) {
  return request(kTypeIn, sector, buf, count * kSectorSize, true);
}

Outcome write(uint64_t sector, const void* buf) {
  return request(kTypeOut, sector, const_cast<void*>(buf), kSectorSize, false);
}

Outcome flush() { return request(kTypeFlush, 0, nullptr, 0, false); }

Outcome get_id(char* id) { return request(kTypeGetId, 0, id, kIdBytes, true); }

}  // namespace apiary::guestlib::virtio_blk
