// virtio-rng (entropy device) on top of the polled virtio-mmio core.
//
// Why: the demo's `rng` command shows the VMM's rng device end to end. The
// device has no configuration and one queue; a request is a single
// device-writable buffer that it fills with up to that many random bytes.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "guest/lib/virtio.hpp"

namespace apiary::guestlib::virtio_rng {

virtio::Result init();
// Fills buf[0..n) (n <= kMaxRequest), asking again while the device returns
// fewer bytes (bounded number of requests). Result::timeout also covers a
// device that keeps returning nothing.
inline constexpr size_t kMaxRequest = 256;
virtio::Result read(void* buf, size_t n);

}  // namespace apiary::guestlib::virtio_rng
