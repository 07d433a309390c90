// FNV-1a, 32-bit: the checksum guests print for data they move (disk
// sectors), so a host-side test can compute the same number over the same
// bytes and compare. Chosen for being tiny and well known, not for strength.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace apiary::guestlib {

inline constexpr uint32_t kFnv1aOffset = 2166136261u;
inline constexpr uint32_t kFnv1aPrime = 16777619u;

// `seed` lets a caller checksum data in pieces: pass the previous result.
inline uint32_t fnv1a32(const void* data, size_t n, uint32_t seed = kFnv1aOffset) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t h = seed;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1aPrime;
  }
  return h;
}

}  // namespace apiary::guestlib
