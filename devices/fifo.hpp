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

#include <cstddef>
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

// Up to `bound` elements, in memory allocated as they arrive (and given back
// as they leave): for queues that may hold kilobytes but are usually empty.
template <class T>
class LazyFifo {
  using Buffer = boost::circular_buffer_space_optimized<T>;

 public:
  explicit LazyFifo(size_t bound) : bound_(bound), items_(typename Buffer::capacity_type(bound, 0)) {}
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  size_t capacity() const { return bound_; }
  const T& front() const { return items_.front(); }
  void push_back(const T& v) {
    if (items_.size() == bound_) throw std::length_error("FIFO full");
    items_.push_back(v);
  }
  void pop_front() { items_.pop_front(); }
  void clear() { items_.clear(); }
  template <class It>
  void assign(It first, It last) {
    if (static_cast<size_t>(std::distance(first, last)) > bound_) throw std::length_error("FIFO bound exceeded");
    items_.assign(typename Buffer::capacity_type(bound_, 0), first, last);
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  size_t bound_;
  Buffer items_;
};

}  // namespace apiary::devices
