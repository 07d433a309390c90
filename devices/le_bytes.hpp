// Little-endian integers in byte streams: the snapshot file and the
// live-migration stream write their lengths, addresses and counts this way.
#pragma once

#include <cstdint>
#include <string>

namespace apiary::devices {

// Appends the low `n` bytes of `v`, least significant first.
inline void put_le(std::string& out, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
// Reads `n` bytes at `p` as a little-endian integer.
inline uint64_t get_le(const uint8_t* p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace apiary::devices
