// The device FIFOs (devices/fifo.hpp): first in, first out; their bound
// holds against pushes and restores; and the lazy one costs no allocation
// until something is queued (why they replaced std::deque).
#define BOOST_TEST_MODULE fifo
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "devices/fifo.hpp"

// Every allocation of this test program is counted.
namespace {
std::atomic<size_t> g_allocations{0};
}
void* operator new(size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

using apiary::devices::InlineFifo;
using apiary::devices::LazyFifo;

template <class Fifo>
void check_order_and_bound(Fifo& f, size_t bound) {
  BOOST_TEST(f.empty());
  for (size_t i = 0; i < bound; ++i) f.push_back(static_cast<uint8_t>(i));
  BOOST_TEST(f.size() == bound);
  BOOST_CHECK_THROW(f.push_back(0xff), std::length_error);
  BOOST_TEST(f.size() == bound);  // the refused push changed nothing
  for (size_t i = 0; i < bound; ++i) {
    BOOST_TEST_REQUIRE(f.front() == static_cast<uint8_t>(i));
    f.pop_front();
  }
  BOOST_TEST(f.empty());
  // Wrapping around: push and pop interleaved keep the order.
  uint8_t next_in = 0, next_out = 0;
  for (int round = 0; round < 100; ++round) {
    while (f.size() < bound) f.push_back(next_in++);
    for (size_t k = 0; k < bound / 2 + 1; ++k) {
      BOOST_TEST_REQUIRE(f.front() == next_out++);
      f.pop_front();
    }
  }
  const std::string saved(f.begin(), f.end());
  BOOST_TEST(saved.size() == f.size());
  f.clear();
  BOOST_TEST(f.empty());
  // A restore: up to the bound is taken, beyond it is refused whole.
  const std::string too_long(bound + 1, 'x');
  f.assign(saved.begin(), saved.end());
  BOOST_CHECK_THROW(f.assign(too_long.begin(), too_long.end()), std::length_error);
  BOOST_TEST(std::string(f.begin(), f.end()) == saved);
  // A restored FIFO keeps its bound, not the restored length.
  while (f.size() < bound) f.push_back('y');
  BOOST_CHECK_THROW(f.push_back('z'), std::length_error);
}

BOOST_AUTO_TEST_CASE(inline_fifo_keeps_order_and_bound) {
  InlineFifo<uint8_t, 16> f;
  check_order_and_bound(f, 16);
}

BOOST_AUTO_TEST_CASE(lazy_fifo_keeps_order_and_bound) {
  LazyFifo<uint8_t> f(300);
  check_order_and_bound(f, 300);
}

BOOST_AUTO_TEST_CASE(an_empty_fifo_allocates_nothing) {
  const size_t before = g_allocations;
  {
    LazyFifo<uint8_t> lazy(64 * 1024);
    InlineFifo<uint8_t, 16> inline_fifo;
    inline_fifo.push_back(1);
    inline_fifo.pop_front();
    BOOST_TEST(lazy.empty());
    BOOST_TEST(lazy.capacity() == 64u * 1024);
  }
  BOOST_TEST(g_allocations.load() == before);
  LazyFifo<uint8_t> lazy(64 * 1024);
  lazy.push_back(7);
  BOOST_TEST(g_allocations.load() > before);  // memory comes with the first byte
  BOOST_TEST(lazy.front() == 7);
}

BOOST_AUTO_TEST_CASE(draining_a_lazy_fifo_allocates_nothing) {
  // Pops run on vCPU threads inside noexcept I/O handlers: they must not
  // allocate (nor free and allocate again as the queue empties and refills).
  LazyFifo<uint8_t> f(4096);
  for (int i = 0; i < 1000; ++i) f.push_back(static_cast<uint8_t>(i));
  const size_t before = g_allocations.load();
  for (int round = 0; round < 50; ++round) {
    while (!f.empty()) f.pop_front();
    for (int i = 0; i < 1000; ++i) f.push_back(static_cast<uint8_t>(i));  // within the capacity it has
  }
  BOOST_TEST(g_allocations.load() == before);
  BOOST_TEST(f.size() == 1000u);
}
