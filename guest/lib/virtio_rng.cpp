// virtio-rng requests; see virtio_rng.hpp.
#include "guest/lib/virtio_rng.hpp"

#include "guest/lib/string.hpp"

namespace apiary::guestlib::virtio_rng {

namespace {
constexpr int kMaxRequests = 16;

virtio::QueueMemory queue;
virtio::Device device;
uint8_t bounce[kMaxRequest];  // static: the device writes guest-physical memory
}  // namespace

virtio::Result init() {
  if (device.ready()) return virtio::Result::ok;
  return device.init(virtio::kDeviceRng, 0, &queue);
}

virtio::Result read(void* buf, size_t n) {
  if (n > kMaxRequest) n = kMaxRequest;
  virtio::Result r = init();
  if (r != virtio::Result::ok) return r;
  size_t got = 0;
  for (int i = 0; i < kMaxRequests && got < n; ++i) {
    uint32_t len = 0;
    virtio::Buffer b{bounce, static_cast<uint32_t>(n - got), true};
    r = device.transfer(&b, 1, &len);
    if (r != virtio::Result::ok) return r;
    if (len > n - got) len = static_cast<uint32_t>(n - got);
    memcpy(static_cast<uint8_t*>(buf) + got, bounce, len);
    got += len;
  }
  return got == n ? virtio::Result::ok : virtio::Result::timeout;
}

}  // namespace apiary::guestlib::virtio_rng
