// Bounded FIFOs for device queues (UART, i8042, console history, POST log)
// that cost nothing while empty.
//
// Why not std::deque: libstdc++'s deque allocates its map and a 512-byte
// block when it is constructed, even if nothing is ever queued. A PC machine
// has seven such queues that stay empty for most guests' whole lives; they
// were 3.5 KiB of every instance, a tenth of a simulated one
// (docs/benchmarks.md, "Simulation").
//
// Both keep their bound: a push onto a full FIFO is the caller's bug (every
// device checks and counts the drop), so it throws rather than overwrite.
#pragma once

#include <boost/circular_buffer.hpp>
#include <boost/container/static_vector.hpp>

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <stdexcept>

namespace apiary::devices {

// Up to N elements stored inline: for hardware FIFOs of a few bytes, touched
// on guest I/O exits, where an allocation per byte is not welcome.
template <class T, size_t N>
class InlineFifo {
 public:
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  static constexpr size_t capacity() { return N; }
  const T& front() const { return items_.front(); }
  void push_back(const T& v) {
    if (items_.size() == N) throw std::length_error("FIFO full");
    items_.push_back(v);
  }
  void pop_front() { items_.erase(items_.begin()); }
  void clear() { items_.clear(); }
  template <class It>
  void assign(It first, It last) {
    if (static_cast<size_t>(std::distance(first, last)) > N) throw std::length_error("FIFO bound exceeded");
    items_.assign(first, last);
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  boost::container::static_vector<T, N> items_;
};

// Up to `bound` elements, in memory allocated as they arrive: for queues
// that may hold kilobytes but are usually empty. The buffer doubles (from
// 16) as the queue grows and is not given back as it drains, so popping
// never allocates nor frees (it runs on vCPU threads, in noexcept I/O
// handlers); clear() gives it back (a device reset).
template <class T>
class LazyFifo {
 public:
  explicit LazyFifo(size_t bound) : bound_(bound) {}
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  size_t capacity() const { return bound_; }
  const T& front() const { return items_.front(); }
  void push_back(const T& v) {
    if (items_.size() == bound_) throw std::length_error("FIFO full");
    if (items_.full()) items_.set_capacity(std::min(bound_, std::max<size_t>(16, items_.capacity() * 2)));
    items_.push_back(v);
  }
  void pop_front() { items_.pop_front(); }
  void clear() { items_.set_capacity(0); }
  template <class It>
  void assign(It first, It last) {
    const auto n = static_cast<size_t>(std::distance(first, last));
    if (n > bound_) throw std::length_error("FIFO bound exceeded");
    boost::circular_buffer<T> fresh(n);
    fresh.insert(fresh.end(), first, last);
    items_.swap(fresh);
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  size_t bound_;
  boost::circular_buffer<T> items_;  // capacity 0 (no allocation) until the first push
};

}  // namespace apiary::devices
