#include "devices/console_backend.hpp"

namespace apiary::devices {

void ConsoleBackend::write(std::span<const uint8_t> bytes) {
  Listener l;
  {
    std::lock_guard lock(mutex_);
    total_ += bytes.size();
    for (uint8_t b : bytes) {
      if (history_.capacity() == 0) {
        ++dropped_;
        continue;
      }
      if (history_.size() == history_.capacity()) {
        history_.pop_front();
        ++dropped_;
      }
      history_.push_back(b);
    }
    l = listener_;
  }
  if (l) l(bytes);
}

void ConsoleBackend::set_listener(Listener l) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(l);
}

std::string ConsoleBackend::history() const {
  std::lock_guard lock(mutex_);
  return std::string(history_.begin(), history_.end());
}

std::string ConsoleBackend::history(uint64_t& total) const {
  std::lock_guard lock(mutex_);
  total = total_;
  return std::string(history_.begin(), history_.end());
}

uint64_t ConsoleBackend::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

uint64_t ConsoleBackend::total_bytes() const {
  std::lock_guard lock(mutex_);
  return total_;
}

}  // namespace apiary::devices
