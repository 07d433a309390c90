// The switch's forwarding database: which port a source MAC was last seen
// on, forgotten after an idle time (802.1D's ageing, 300 s by default).
//
// Why a separate class with the clock passed in: learning, ageing, moves
// and the size bound are the switch's whole policy, and tests walk them
// without threads or sleeps. The switch calls it from its one forwarding
// thread, so it has no lock of its own.
//
// Bounded: at most `capacity` entries. When full, an unknown source is not
// learned (its frames are still forwarded; answers to it are flooded) and
// counted, so a guest spraying random source MACs cannot grow memory or
// evict the others' entries.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <unordered_map>

#include "net/ethernet.hpp"

namespace apiary::net {

using PortId = uint32_t;
using Clock = std::chrono::steady_clock;

class MacTable {
 public:
  MacTable(std::chrono::milliseconds ageing, size_t capacity) : ageing_(ageing), capacity_(capacity) {}

  // `mac` was the source of a frame from `port` at `now`. Group addresses
  // are never learned.
  void learn(const Mac& mac, PortId port, Clock::time_point now);
  // The port `mac` was last seen on, unless that was longer ago than the
  // ageing time (the entry is then dropped).
  std::optional<PortId> lookup(const Mac& mac, Clock::time_point now);
  // Forgets every entry that points at `port` (it left the switch).
  void forget_port(PortId port);
  // Drops every aged entry; returns how many.
  size_t expire(Clock::time_point now);

  size_t size() const noexcept { return entries_.size(); }
  uint64_t moves() const noexcept { return moves_; }            // a MAC seen on another port than before
  uint64_t not_learned() const noexcept { return not_learned_; }  // table full

 private:
  struct Entry {
    PortId port;
    Clock::time_point seen;
  };
  std::chrono::milliseconds ageing_;
  size_t capacity_;
  std::unordered_map<Mac, Entry, MacHash> entries_;
  uint64_t moves_ = 0, not_learned_ = 0;
};

}  // namespace apiary::net
