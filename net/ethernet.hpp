// Ethernet addresses and the two header fields the data plane reads.
//
// Why so little: the switch forwards on the destination MAC and learns the
// source MAC; it never looks deeper (no VLANs, no IP). Everything else in a
// frame is the guests' business.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "vmm-core/layout.hpp"

namespace apiary::net {

using Mac = std::array<uint8_t, 6>;

inline constexpr Mac kBroadcastMac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// The group bit: broadcast and multicast destinations are flooded.
inline bool is_group(const Mac& m) noexcept { return (m[0] & 0x01) != 0; }

// A frame the data plane accepts: a whole Ethernet header, at most
// layout::kNetMaxFrameBytes.
inline bool frame_size_ok(size_t bytes) noexcept {
  return bytes >= layout::kEthernetHeaderBytes && bytes <= layout::kNetMaxFrameBytes;
}

// Callers check frame_size_ok first.
inline Mac destination(std::span<const uint8_t> frame) noexcept {
  Mac m;
  for (size_t i = 0; i < 6; ++i) m[i] = frame[i];
  return m;
}
inline Mac source(std::span<const uint8_t> frame) noexcept {
  Mac m;
  for (size_t i = 0; i < 6; ++i) m[i] = frame[6 + i];
  return m;
}

inline std::string to_string(const Mac& m) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

struct MacHash {
  size_t operator()(const Mac& m) const noexcept {
    uint64_t v = 0;
    for (auto b : m) v = (v << 8) | b;
    return std::hash<uint64_t>{}(v);
  }
};

}  // namespace apiary::net
