// Where a serial port's output goes: a bounded history (oldest bytes dropped
// first, drops counted) plus at most one live listener callback.
//
// The UART calls write() inline on the vCPU thread, so the listener must be
// cheap and must not block for long (the terminal writer does one write(2);
// the console actor posts a message per batch, not per byte).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "devices/fifo.hpp"

namespace apiary::devices {

class ConsoleBackend {
 public:
  using Listener = std::function<void(std::span<const uint8_t>)>;

  explicit ConsoleBackend(size_t history_bytes = 64 * 1024) : history_(history_bytes) {}

  void write(std::span<const uint8_t> bytes);
  void set_listener(Listener l);

  std::string history() const;
  // The history and the total byte count at the same instant: the history
  // holds bytes [total - history.size(), total).
  std::string history(uint64_t& total) const;
  uint64_t dropped() const;
  uint64_t total_bytes() const;
  size_t capacity() const noexcept { return history_.capacity(); }

 private:
  mutable std::mutex mutex_;
  LazyFifo<uint8_t> history_;
  uint64_t dropped_ = 0;
  uint64_t total_ = 0;
  Listener listener_;
};

}  // namespace apiary::devices
