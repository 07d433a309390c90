// Frames and port sinks for the data-plane tests (net/): a MAC from one
// byte, an Ethernet frame of a given size, and a sink that keeps what the
// switch hands it (or refuses, on demand).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "net/switch.hpp"

namespace apiary::test {

inline net::Mac mac(uint8_t last) { return {0x02, 0, 0, 0, 0, last}; }

// dst, src, EtherType IPv4, then `payload` bytes up to `size`.
inline std::vector<uint8_t> frame(const net::Mac& dst, const net::Mac& src, uint8_t payload = 0x42,
                                  size_t size = 64) {
  std::vector<uint8_t> f(size, payload);
  std::copy(dst.begin(), dst.end(), f.begin());
  std::copy(src.begin(), src.end(), f.begin() + 6);
  f[12] = 0x08;
  f[13] = 0x00;
  return f;
}

struct Capture final : net::PortSink {
  std::mutex m;
  std::vector<std::vector<uint8_t>> frames;
  std::atomic<bool> refuse{false};
  bool emit(std::span<const uint8_t> f) noexcept override {
    if (refuse) return false;
    std::lock_guard lk(m);
    frames.emplace_back(f.begin(), f.end());
    return true;
  }
  size_t count() {
    std::lock_guard lk(m);
    return frames.size();
  }
};

}  // namespace apiary::test
