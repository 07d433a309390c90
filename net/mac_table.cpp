#include "net/mac_table.hpp"

namespace apiary::net {

void MacTable::learn(const Mac& mac, PortId port, Clock::time_point now) {
  if (is_group(mac)) return;
  auto it = entries_.find(mac);
  if (it != entries_.end()) {
    if (it->second.port != port) ++moves_;
    it->second = {port, now};
    return;
  }
  if (entries_.size() >= capacity_ && expire(now) == 0) {
    ++not_learned_;
    return;
  }
  entries_.emplace(mac, Entry{port, now});
}

std::optional<PortId> MacTable::lookup(const Mac& mac, Clock::time_point now) {
  auto it = entries_.find(mac);
  if (it == entries_.end()) return std::nullopt;
  if (now - it->second.seen > ageing_) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.port;
}

void MacTable::forget_port(PortId port) {
  std::erase_if(entries_, [port](const auto& kv) { return kv.second.port == port; });
}

size_t MacTable::expire(Clock::time_point now) {
  return std::erase_if(entries_, [&](const auto& kv) { return now - kv.second.seen > ageing_; });
}

}  // namespace apiary::net
