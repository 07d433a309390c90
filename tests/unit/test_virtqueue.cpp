// The split virtqueue against a hostile driver: ring setup validation, chain
// walking (direct and indirect), the used ring and notification
// suppression; then, through the virtio-mmio transport, that every malformed
// queue ends in DEVICE_NEEDS_RESET plus a configuration interrupt — never a
// crash — and that a driver reset brings the device back.
#define BOOST_TEST_MODULE virtqueue
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <functional>
#include <ostream>
#include <random>
#include <vector>

#include "devices/virtio_mmio.hpp"
#include "devices/virtqueue.hpp"
#include "vmm-core/guest_memory.hpp"

namespace apiary::devices {
std::ostream& operator<<(std::ostream& os, QueueError e) { return os << to_string(e); }
}  // namespace apiary::devices

using namespace apiary::devices;
using apiary::vmm::GuestMemory;
using virtq::kDescFIndirect;
using virtq::kDescFNext;
using virtq::kDescFWrite;

namespace {

constexpr uint64_t kRam = 1 << 20;
constexpr uint64_t kIndirect = 1ull << virtq::kFeatureIndirectDesc;
constexpr uint64_t kEventIdx = 1ull << virtq::kFeatureEventIdx;
constexpr uint64_t kVersion1 = 1ull << virtio::kFeatureVersion1;

struct RawDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

std::atomic_ref<uint16_t> guest_u16(GuestMemory& mem, uint64_t gpa) {
  return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem.host_range(gpa, 2)));
}

// The driver's half of a split queue, laid out in guest RAM.
struct Rings {
  GuestMemory& mem;
  uint16_t size;
  uint64_t desc = 0x1000, avail = 0x3000, used = 0x4000;
  uint16_t avail_idx = 0;

  void clear() {
    mem.fill(desc, 16 * uint64_t{size}, 0);
    mem.fill(avail, 6 + 2 * uint64_t{size}, 0);
    mem.fill(used, 6 + 8 * uint64_t{size}, 0);
    avail_idx = 0;
  }
  void set_table_desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    mem.write_obj(table + 16 * uint64_t{i}, RawDesc{addr, len, flags, next});
  }
  void set_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    set_table_desc(desc, i, addr, len, flags, next);
  }
  void publish_idx(uint16_t idx) { guest_u16(mem, avail + 2).store(idx, std::memory_order_release); }
  void offer(uint16_t head) {
    mem.write_obj<uint16_t>(avail + 4 + 2 * uint64_t{static_cast<uint16_t>(avail_idx % size)}, head);
    publish_idx(++avail_idx);
  }
  uint16_t used_idx() { return guest_u16(mem, used + 2).load(std::memory_order_acquire); }
  uint32_t used_id(uint16_t i) {
    return mem.read_obj<uint32_t>(used + 4 + 8 * uint64_t{static_cast<uint16_t>(i % size)});
  }
  uint32_t used_len(uint16_t i) {
    return mem.read_obj<uint32_t>(used + 8 + 8 * uint64_t{static_cast<uint16_t>(i % size)});
  }
  void set_avail_flags(uint16_t f) { guest_u16(mem, avail).store(f, std::memory_order_release); }
  void set_used_event(uint16_t v) {
    guest_u16(mem, avail + 4 + 2 * uint64_t{size}).store(v, std::memory_order_release);
  }
  uint16_t avail_event() { return guest_u16(mem, used + 4 + 8 * uint64_t{size}).load(std::memory_order_acquire); }
};

// A queue wired to its rings and enabled.
struct Fixture {
  GuestMemory mem{kRam};
  Virtqueue q{mem, 16};
  Rings r{mem, 16};
  explicit Fixture(uint64_t features = kIndirect | kEventIdx) {
    r.clear();
    q.set_size(r.size);
    q.set_desc_addr(r.desc);
    q.set_driver_addr(r.avail);
    q.set_device_addr(r.used);
    BOOST_REQUIRE_EQUAL(q.enable(features), QueueError::none);
  }
};

QueueError pop_error(Virtqueue& q) {
  VirtqPop p = q.pop();
  BOOST_TEST(!p.chain.has_value());
  return p.error;
}

}  // namespace

// ---------------------------------------------------------- ring setup --

BOOST_AUTO_TEST_CASE(enable_validates_size_alignment_and_placement) {
  GuestMemory mem(kRam);
  struct Case {
    uint32_t size;
    uint64_t desc, avail, used;
    QueueError expect;
  };
  const Case cases[] = {
      {16, 0x1000, 0x3000, 0x4000, QueueError::none},
      {0, 0x1000, 0x3000, 0x4000, QueueError::bad_size},
      {3, 0x1000, 0x3000, 0x4000, QueueError::bad_size},
      {32, 0x1000, 0x3000, 0x4000, QueueError::bad_size},  // above the maximum of 16
      {0x10010, 0x1000, 0x3000, 0x4000, QueueError::bad_size},
      {16, 0x1008, 0x3000, 0x4000, QueueError::desc_table_misaligned},
      {16, 0x1000, 0x3001, 0x4000, QueueError::avail_ring_misaligned},
      {16, 0x1000, 0x3000, 0x4002, QueueError::used_ring_misaligned},
      {16, kRam - 16 * 8, 0x3000, 0x4000, QueueError::desc_table_out_of_range},
      {16, 0xd0000000, 0x3000, 0x4000, QueueError::desc_table_out_of_range},  // MMIO hole
      {16, 0xfffffffffffffff0ull, 0x3000, 0x4000, QueueError::desc_table_out_of_range},
      {16, 0x1000, kRam - 6 - 2 * 16 + 2, 0x4000, QueueError::avail_ring_out_of_range},
      {16, 0x1000, 0xfffffffffffffffeull, 0x4000, QueueError::avail_ring_out_of_range},
      {16, 0x1000, 0x3000, kRam - 6 - 8 * 16 + 2, QueueError::used_ring_out_of_range},
      {16, 0x1000, 0x3000, 0xfffffffffffffffcull, QueueError::used_ring_out_of_range},
      {16, 0x1000, kRam - 6 - 2 * 16, kRam - 136, QueueError::none},  // fits exactly / just
  };
  for (const Case& c : cases) {
    Virtqueue q(mem, 16);
    q.set_size(c.size);
    q.set_desc_addr(c.desc);
    q.set_driver_addr(c.avail);
    q.set_device_addr(c.used);
    BOOST_TEST_CONTEXT("size " << c.size << " desc " << std::hex << c.desc << " avail " << c.avail << " used "
                               << c.used) {
      BOOST_TEST(q.enable(0) == c.expect);
      BOOST_TEST(q.ready() == (c.expect == QueueError::none));
    }
  }
}

BOOST_AUTO_TEST_CASE(configuration_is_frozen_while_ready) {
  Fixture f;
  f.q.set_size(8);
  f.q.set_desc_addr(0x8000);
  BOOST_TEST(f.q.size() == 16u);
  BOOST_TEST(f.q.desc_addr() == 0x1000u);
  f.q.disable();
  f.q.set_size(8);
  BOOST_TEST(f.q.size() == 8u);
  f.q.reset();
  BOOST_TEST(f.q.size() == 16u);
  BOOST_TEST(f.q.desc_addr() == 0u);
  BOOST_TEST(!f.q.ready());
}

// ------------------------------------------------------------- popping --

BOOST_AUTO_TEST_CASE(empty_queue_pops_nothing) {
  Fixture f;
  VirtqPop p = f.q.pop();
  BOOST_TEST(!p);
  BOOST_TEST(p.error == QueueError::none);
  Virtqueue idle(f.mem, 16);  // not ready: nothing, no error
  BOOST_TEST(!idle.pop());
  BOOST_TEST(idle.pop().error == QueueError::none);
}

BOOST_AUTO_TEST_CASE(pops_a_readable_then_writable_chain) {
  Fixture f;
  f.r.set_desc(3, 0x10000, 16, kDescFNext, 7);
  f.r.set_desc(7, 0x10100, 512, kDescFNext | kDescFWrite, 1);
  f.r.set_desc(1, 0x10300, 1, kDescFWrite);
  f.r.offer(3);
  VirtqPop p = f.q.pop();
  BOOST_REQUIRE(p);
  const VirtqChain& c = *p.chain;
  BOOST_TEST(c.head == 3);
  BOOST_REQUIRE(c.buffers.size() == 3u);
  BOOST_TEST(c.buffers[0].gpa == 0x10000u);
  BOOST_TEST(!c.buffers[0].writable);
  BOOST_TEST(c.buffers[1].len == 512u);
  BOOST_TEST(c.buffers[1].writable);
  BOOST_TEST(c.readable_bytes == 16u);
  BOOST_TEST(c.writable_bytes == 513u);
  BOOST_TEST(!f.q.pop());  // only one was offered
  BOOST_TEST(f.q.popped() == 1u);

  // Scatter/gather helpers honour the direction and offsets.
  const uint8_t hdr[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  f.mem.write(0x10000, std::span<const uint8_t>(hdr, 16));
  uint8_t got[20] = {};
  BOOST_TEST(c.read(f.mem, 4, got) == 12u);
  BOOST_TEST(got[0] == 5);
  std::vector<uint8_t> big(600, 0xab);
  BOOST_TEST(c.write(f.mem, 0, big) == 513u);
  BOOST_TEST(f.mem.read_obj<uint8_t>(0x10300) == 0xab);
  BOOST_TEST(f.mem.read_obj<uint8_t>(0x10301) == 0);  // nothing past the chain
}

BOOST_AUTO_TEST_CASE(pops_an_indirect_chain) {
  Fixture f;
  const uint64_t table = 0x20000;
  f.r.set_table_desc(table, 0, 0x10000, 16, kDescFNext, 2);
  f.r.set_table_desc(table, 2, 0x10100, 4096, kDescFNext | kDescFWrite, 1);
  f.r.set_table_desc(table, 1, 0x12000, 1, kDescFWrite);
  f.r.set_desc(5, table, 3 * 16, kDescFIndirect | kDescFWrite);  // WRITE on the pointer is ignored
  f.r.offer(5);
  VirtqPop p = f.q.pop();
  BOOST_REQUIRE(p);
  BOOST_TEST(p.chain->head == 5);
  BOOST_TEST(p.chain->buffers.size() == 3u);
  BOOST_TEST(p.chain->readable_bytes == 16u);
  BOOST_TEST(p.chain->writable_bytes == 4097u);
  BOOST_TEST(f.q.push_used(*p.chain, 4097) == QueueError::none);
  BOOST_TEST(f.r.used_idx() == 1);
  BOOST_TEST(f.r.used_id(0) == 5u);
  BOOST_TEST(f.r.used_len(0) == 4097u);
}

BOOST_AUTO_TEST_CASE(avail_index_wraps_around_16_bits) {
  Fixture f;
  f.r.set_desc(0, 0x10000, 8, kDescFWrite);
  for (unsigned i = 0; i < 70000; ++i) {
    f.r.offer(0);
    VirtqPop p = f.q.pop();
    BOOST_REQUIRE(p);
    BOOST_REQUIRE(f.q.push_used(*p.chain, 8) == QueueError::none);
  }
  BOOST_TEST(f.r.used_idx() == static_cast<uint16_t>(70000));
  BOOST_TEST(f.q.error() == QueueError::none);
}

// Every malformed chain: a named error, sticky until reset.
BOOST_AUTO_TEST_CASE(malformed_chains_are_refused_by_name) {
  struct Case {
    const char* name;
    uint64_t features;
    std::function<void(Rings&)> build;
    QueueError expect;
  };
  const uint64_t T = 0x20000;  // an indirect table
  const std::vector<Case> cases = {
      {"avail idx jump", kIndirect, [](Rings& r) { r.publish_idx(17); }, QueueError::avail_idx_jump},
      {"avail idx backwards", kIndirect, [](Rings& r) { r.publish_idx(0xffff); }, QueueError::avail_idx_jump},
      {"head == size", kIndirect, [](Rings& r) { r.offer(16); }, QueueError::head_out_of_range},
      {"head 0xffff", kIndirect, [](Rings& r) { r.offer(0xffff); }, QueueError::head_out_of_range},
      {"next == size", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0x10000, 8, kDescFNext, 16);
         r.offer(0);
       },
       QueueError::next_out_of_range},
      {"self loop", kIndirect,
       [](Rings& r) {
         r.set_desc(4, 0x10000, 8, kDescFNext, 4);
         r.offer(4);
       },
       QueueError::chain_too_long},
      {"two-descriptor loop", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0x10000, 8, kDescFNext, 1);
         r.set_desc(1, 0x10000, 8, kDescFNext, 0);
         r.offer(0);
       },
       QueueError::chain_too_long},
      {"zero length", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0x10000, 0, 0);
         r.offer(0);
       },
       QueueError::zero_length},
      {"buffer past the end of RAM", kIndirect,
       [](Rings& r) {
         r.set_desc(0, kRam - 8, 16, 0);
         r.offer(0);
       },
       QueueError::buffer_out_of_range},
      {"buffer in the MMIO hole", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0xd0000000, 16, kDescFWrite);
         r.offer(0);
       },
       QueueError::buffer_out_of_range},
      {"buffer address wraps", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0xfffffffffffffff0ull, 0x20, kDescFWrite);
         r.offer(0);
       },
       QueueError::buffer_out_of_range},
      {"huge length", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0, 0xffffffffu, kDescFWrite);
         r.offer(0);
       },
       QueueError::buffer_out_of_range},
      {"readable after writable", kIndirect,
       [](Rings& r) {
         r.set_desc(0, 0x10000, 8, kDescFNext | kDescFWrite, 1);
         r.set_desc(1, 0x10100, 8, 0);
         r.offer(0);
       },
       QueueError::readable_after_writable},
      {"indirect not negotiated", 0,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, 0);
         r.set_desc(0, T, 16, kDescFIndirect);
         r.offer(0);
       },
       QueueError::indirect_not_negotiated},
      {"indirect with next", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, 0);
         r.set_desc(0, T, 16, kDescFIndirect | kDescFNext, 1);
         r.set_desc(1, 0x10000, 8, 0);
         r.offer(0);
       },
       QueueError::indirect_with_next},
      {"indirect not at the head", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, 0);
         r.set_desc(0, 0x10000, 8, kDescFNext, 1);
         r.set_desc(1, T, 16, kDescFIndirect);
         r.offer(0);
       },
       QueueError::indirect_not_head},
      {"indirect length 0", kIndirect,
       [T](Rings& r) {
         r.set_desc(0, T, 0, kDescFIndirect);
         r.offer(0);
       },
       QueueError::indirect_bad_size},
      {"indirect length not a multiple of 16", kIndirect,
       [T](Rings& r) {
         r.set_desc(0, T, 17, kDescFIndirect);
         r.offer(0);
       },
       QueueError::indirect_bad_size},
      {"indirect table too large", kIndirect,
       [T](Rings& r) {
         r.set_desc(0, T, 16 * (virtq::kMaxIndirectDescs + 1), kDescFIndirect);
         r.offer(0);
       },
       QueueError::indirect_bad_size},
      {"indirect table outside RAM", kIndirect,
       [](Rings& r) {
         r.set_desc(0, kRam - 16, 32, kDescFIndirect);
         r.offer(0);
       },
       QueueError::indirect_out_of_range},
      {"nested indirect", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, kDescFNext, 1);
         r.set_table_desc(T, 1, T, 32, kDescFIndirect);
         r.set_desc(0, T, 32, kDescFIndirect);
         r.offer(0);
       },
       QueueError::nested_indirect},
      {"loop inside an indirect table", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, kDescFNext, 1);
         r.set_table_desc(T, 1, 0x10000, 8, kDescFNext, 0);
         r.set_desc(0, T, 32, kDescFIndirect);
         r.offer(0);
       },
       QueueError::chain_too_long},
      {"next beyond an indirect table", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, kDescFNext, 2);  // table has 2 entries
         r.set_table_desc(T, 1, 0x10000, 8, 0);
         r.set_table_desc(T, 2, 0x10000, 8, 0);
         r.set_desc(0, T, 32, kDescFIndirect);
         r.offer(0);
       },
       QueueError::next_out_of_range},
      {"zero length inside an indirect table", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 0, 0);
         r.set_desc(0, T, 16, kDescFIndirect);
         r.offer(0);
       },
       QueueError::zero_length},
      {"readable after writable inside an indirect table", kIndirect,
       [T](Rings& r) {
         r.set_table_desc(T, 0, 0x10000, 8, kDescFNext | kDescFWrite, 1);
         r.set_table_desc(T, 1, 0x10000, 8, 0);
         r.set_desc(0, T, 32, kDescFIndirect);
         r.offer(0);
       },
       QueueError::readable_after_writable},
  };
  for (const Case& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      Fixture f(c.features);
      c.build(f.r);
      BOOST_TEST(pop_error(f.q) == c.expect);
      // Sticky: the queue stays broken even if the driver "fixes" things.
      f.r.clear();
      BOOST_TEST(pop_error(f.q) == c.expect);
      BOOST_TEST(f.q.error() == c.expect);
      BOOST_TEST(f.r.used_idx() == 0);  // nothing was completed
      // A reset and re-enable clears it.
      f.q.reset();
      f.q.set_desc_addr(f.r.desc);
      f.q.set_driver_addr(f.r.avail);
      f.q.set_device_addr(f.r.used);
      BOOST_TEST(f.q.enable(c.features) == QueueError::none);
      f.r.set_desc(0, 0x10000, 8, kDescFWrite);
      f.r.offer(0);
      BOOST_TEST(static_cast<bool>(f.q.pop()));
    }
  }
}

BOOST_AUTO_TEST_CASE(total_length_beyond_32_bits_is_refused) {
  // 65 buffers of 64 MiB each (all the same RAM) add up to more than 4 GiB.
  constexpr uint64_t ram = 64ull << 20;
  GuestMemory mem(ram);
  Virtqueue q(mem, 128);
  Rings r{mem, 128};
  r.clear();
  q.set_size(128);
  q.set_desc_addr(r.desc);
  q.set_driver_addr(r.avail);
  q.set_device_addr(r.used);
  BOOST_REQUIRE(q.enable(0) == QueueError::none);
  for (uint16_t i = 0; i < 65; ++i)
    r.set_desc(i, 0, static_cast<uint32_t>(ram), i < 64 ? kDescFNext | kDescFWrite : kDescFWrite, i + 1);
  r.offer(0);
  BOOST_TEST(pop_error(q) == QueueError::length_overflow);
}

BOOST_AUTO_TEST_CASE(a_head_still_in_flight_cannot_be_offered_again) {
  Fixture f;
  f.r.set_desc(2, 0x10000, 8, kDescFWrite);
  f.r.offer(2);
  BOOST_REQUIRE(f.q.pop());
  f.r.offer(2);  // the device still owns chain 2
  BOOST_TEST(pop_error(f.q) == QueueError::head_in_use);
}

BOOST_AUTO_TEST_CASE(the_guest_rewriting_descriptors_cannot_change_a_popped_chain) {
  Fixture f;
  f.r.set_desc(0, 0x10000, 64, kDescFWrite);
  f.r.offer(0);
  VirtqPop p = f.q.pop();
  BOOST_REQUIRE(p);
  f.r.set_desc(0, 0xd0000000, 0xffffffffu, kDescFWrite);  // too late
  BOOST_TEST(p.chain->buffers[0].gpa == 0x10000u);
  BOOST_TEST(p.chain->buffers[0].len == 64u);
}

// ---------------------------------------------------------- used ring --

BOOST_AUTO_TEST_CASE(push_used_refuses_heads_that_are_not_outstanding) {
  Fixture f;
  f.r.set_desc(1, 0x10000, 8, kDescFWrite);
  BOOST_TEST(f.q.push_used(1, 8) == QueueError::bad_used_head);  // never popped
  BOOST_TEST(f.q.push_used(16, 8) == QueueError::bad_used_head);
  f.r.offer(1);
  VirtqPop p = f.q.pop();
  BOOST_REQUIRE(p);
  BOOST_TEST(f.q.push_used(*p.chain, 100) == QueueError::none);  // clamped to 8
  BOOST_TEST(f.r.used_len(0) == 8u);
  BOOST_TEST(f.q.push_used(*p.chain, 8) == QueueError::bad_used_head);  // twice
  BOOST_TEST(f.r.used_idx() == 1);

  // A chain from before a disable/enable cycle is stale.
  f.r.offer(1);
  VirtqPop stale = f.q.pop();
  BOOST_REQUIRE(stale);
  f.q.disable();
  f.r.clear();
  BOOST_REQUIRE(f.q.enable(0) == QueueError::none);
  f.r.set_desc(1, 0x10000, 8, kDescFWrite);
  f.r.offer(1);
  VirtqPop fresh = f.q.pop();
  BOOST_REQUIRE(fresh);
  BOOST_TEST(f.q.push_used(*stale.chain, 8) == QueueError::bad_used_head);
  BOOST_TEST(f.q.push_used(*fresh.chain, 8) == QueueError::none);
}

BOOST_AUTO_TEST_CASE(no_interrupt_flag_suppresses_notifications) {
  Fixture f(0);
  f.r.set_desc(0, 0x10000, 8, kDescFWrite);
  BOOST_TEST(!f.q.needs_notify());  // nothing used yet
  f.r.offer(0);
  VirtqPop p = f.q.pop();
  f.q.push_used(*p.chain, 1);
  BOOST_TEST(f.q.needs_notify());
  BOOST_TEST(!f.q.needs_notify());  // nothing new since
  f.r.set_avail_flags(virtq::kAvailFNoInterrupt);
  f.r.offer(0);
  p = f.q.pop();
  f.q.push_used(*p.chain, 1);
  BOOST_TEST(!f.q.needs_notify());
}

BOOST_AUTO_TEST_CASE(event_idx_interrupts_only_when_used_event_is_crossed) {
  Fixture f(kEventIdx);
  f.r.set_desc(0, 0x10000, 8, kDescFWrite);
  auto complete_one = [&] {
    f.r.offer(0);
    VirtqPop p = f.q.pop();
    BOOST_REQUIRE(p);
    f.q.push_used(*p.chain, 1);
  };
  f.r.set_used_event(0);
  complete_one();  // used idx 0 -> 1 crosses used_event 0
  BOOST_TEST(f.q.needs_notify());
  f.r.set_used_event(4);
  complete_one();  // 1 -> 2
  BOOST_TEST(!f.q.needs_notify());
  complete_one();  // 2 -> 3
  complete_one();  // 3 -> 4
  BOOST_TEST(!f.q.needs_notify());
  complete_one();  // 4 -> 5 crosses 4
  BOOST_TEST(f.q.needs_notify());
  // The device asks to be notified when the driver passes what it consumed.
  BOOST_TEST(f.r.avail_event() == f.q.last_avail_idx());
  BOOST_TEST(f.r.avail_event() == 5);
}

// Random descriptor tables and rings: pop must never crash, and whatever it
// accepts must satisfy the invariants.
BOOST_AUTO_TEST_CASE(random_rings_never_crash) {
  GuestMemory mem(kRam);
  std::mt19937_64 rng(0x5eed);
  uint64_t accepted = 0, refused = 0;
  for (int round = 0; round < 3000; ++round) {
    Virtqueue q(mem, 16);
    Rings r{mem, 16};
    q.set_size(16);
    q.set_desc_addr(r.desc);
    q.set_driver_addr(r.avail);
    q.set_device_addr(r.used);
    BOOST_REQUIRE(q.enable(rng() & 1 ? kIndirect | kEventIdx : 0) == QueueError::none);
    r.clear();
    auto small_addr = [&] { return (rng() % (kRam + 0x2000)) & ~7ull; };
    for (uint16_t i = 0; i < 16; ++i) {
      const bool indirect = rng() % 8 == 0;
      r.set_desc(i, indirect ? 0x20000 + 0x100 * (rng() % 4) : small_addr(),
                 rng() % 16 == 0 ? static_cast<uint32_t>(rng()) : static_cast<uint32_t>(rng() % 0x2000),
                 static_cast<uint16_t>((rng() % 4) | (indirect ? kDescFIndirect : 0)),
                 static_cast<uint16_t>(rng() % 20));
    }
    for (uint16_t i = 0; i < 64; ++i)  // indirect tables
      r.set_table_desc(0x20000, i, small_addr(), static_cast<uint32_t>(rng() % 0x1000),
                       static_cast<uint16_t>(rng() % 8), static_cast<uint16_t>(rng() % 20));
    const unsigned offers = rng() % 24;
    for (unsigned i = 0; i < offers; ++i) r.offer(static_cast<uint16_t>(rng() % 18));
    for (;;) {
      VirtqPop p = q.pop();
      if (p.error != QueueError::none) {
        ++refused;
        break;
      }
      if (!p) break;
      ++accepted;
      bool seen_writable = false;
      uint64_t rd = 0, wr = 0;
      for (const VirtqBuffer& b : p.chain->buffers) {
        BOOST_REQUIRE(mem.host_range(b.gpa, b.len) != nullptr);
        BOOST_REQUIRE(b.len > 0);
        BOOST_REQUIRE(!(seen_writable && !b.writable));
        seen_writable |= b.writable;
        (b.writable ? wr : rd) += b.len;
      }
      BOOST_REQUIRE(p.chain->buffers.size() <= virtq::kMaxIndirectDescs);
      BOOST_REQUIRE(rd == p.chain->readable_bytes);
      BOOST_REQUIRE(wr == p.chain->writable_bytes);
      if (rng() & 1) BOOST_REQUIRE(q.push_used(*p.chain, p.chain->writable_bytes) == QueueError::none);
    }
  }
  BOOST_TEST_MESSAGE("random rings: " << accepted << " chains accepted, " << refused << " queues broken");
  BOOST_TEST(accepted > 0u);
  BOOST_TEST(refused > 0u);
}

// ------------------------------------------------- through the transport --

namespace {

namespace mmio = virtio_mmio;

struct FakeIrq final : IrqLine {
  std::atomic<bool> level{false};
  std::atomic<int> raises{0};
  void set_level(uint32_t, bool l) override {
    if (l && !level.load()) ++raises;
    level = l;
  }
};

// A device model that completes every chain at once (inline).
struct EchoDevice final : VirtioDevice {
  VirtioContext* ctx = nullptr;
  std::atomic<int> completed{0};
  const char* kind() const noexcept override { return "test-echo"; }
  uint32_t device_id() const noexcept override { return 0x7e; }
  uint64_t device_features() const noexcept override { return 0; }
  uint16_t num_queues() const noexcept override { return 1; }
  uint16_t queue_max_size(uint16_t) const noexcept override { return 16; }
  void attach(VirtioContext& c) override { ctx = &c; }
  void on_notify(uint16_t queue) noexcept override {
    Virtqueue& q = ctx->queue(queue);
    for (;;) {
      VirtqPop p = q.pop();
      if (p.error != QueueError::none) {
        ctx->queue_failed(queue, p.error);
        return;
      }
      if (!p) break;
      q.push_used(*p.chain, p.chain->writable_bytes);
      ++completed;
    }
    ctx->notify_used(queue);
  }
  void reset() noexcept override {}
};

struct Transport {
  GuestMemory mem{kRam};
  FakeIrq irq;
  EchoDevice* echo;
  std::unique_ptr<VirtioMmio> dev;
  Rings r{mem, 16};
  Transport() {
    auto d = std::make_unique<EchoDevice>();
    echo = d.get();
    dev = std::make_unique<VirtioMmio>("echo", mem, 7, irq, std::move(d));
    dev->start();
  }
  uint32_t rd(uint64_t off) { return static_cast<uint32_t>(dev->io_read(off, 4)); }
  void wr(uint64_t off, uint32_t v) { dev->io_write(off, 4, v); }
  // The driver's bring-up sequence (§3.1.1).
  void bring_up(uint64_t features = kVersion1 | kIndirect) {
    wr(mmio::kStatus, 0);
    wr(mmio::kStatus, virtio::kStatusAcknowledge);
    wr(mmio::kStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver);
    wr(mmio::kDriverFeaturesSel, 0);
    wr(mmio::kDriverFeatures, static_cast<uint32_t>(features));
    wr(mmio::kDriverFeaturesSel, 1);
    wr(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    wr(mmio::kStatus, rd(mmio::kStatus) | virtio::kStatusFeaturesOk);
    BOOST_REQUIRE(rd(mmio::kStatus) & virtio::kStatusFeaturesOk);
    r.clear();
    wr(mmio::kQueueSel, 0);
    wr(mmio::kQueueNum, r.size);
    wr(mmio::kQueueDescLow, static_cast<uint32_t>(r.desc));
    wr(mmio::kQueueDescHigh, static_cast<uint32_t>(r.desc >> 32));
    wr(mmio::kQueueDriverLow, static_cast<uint32_t>(r.avail));
    wr(mmio::kQueueDriverHigh, static_cast<uint32_t>(r.avail >> 32));
    wr(mmio::kQueueDeviceLow, static_cast<uint32_t>(r.used));
    wr(mmio::kQueueDeviceHigh, static_cast<uint32_t>(r.used >> 32));
    wr(mmio::kQueueReady, 1);
    BOOST_REQUIRE(rd(mmio::kQueueReady) == 1u);
    wr(mmio::kStatus, rd(mmio::kStatus) | virtio::kStatusDriverOk);
    BOOST_REQUIRE(rd(mmio::kStatus) & virtio::kStatusDriverOk);
  }
  uint64_t counter(const std::string& name) { return dev->export_state().counters().at(name); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(transport_completes_a_good_chain_and_interrupts) {
  Transport t;
  t.bring_up();
  t.r.set_desc(0, 0x10000, 32, kDescFWrite);
  t.r.offer(0);
  t.wr(mmio::kQueueNotify, 0);
  BOOST_TEST(t.r.used_idx() == 1);
  BOOST_TEST(t.r.used_len(0) == 32u);
  BOOST_TEST(t.rd(mmio::kInterruptStatus) == virtio::kIntUsedBuffer);
  BOOST_TEST(t.irq.level.load());
  t.wr(mmio::kInterruptAck, virtio::kIntUsedBuffer);
  BOOST_TEST(t.rd(mmio::kInterruptStatus) == 0u);
  BOOST_TEST(!t.irq.level.load());
}

BOOST_AUTO_TEST_CASE(every_malformed_queue_sets_needs_reset_with_a_config_interrupt) {
  struct Case {
    const char* name;
    std::function<void(Rings&)> build;
    QueueError expect;
  };
  const std::vector<Case> cases = {
      {"loop",
       [](Rings& r) {
         r.set_desc(0, 0x10000, 8, kDescFNext, 0);
         r.offer(0);
       },
       QueueError::chain_too_long},
      {"head >= size", [](Rings& r) { r.offer(16); }, QueueError::head_out_of_range},
      {"next out of range",
       [](Rings& r) {
         r.set_desc(0, 0x10000, 8, kDescFNext, 99);
         r.offer(0);
       },
       QueueError::next_out_of_range},
      {"buffer outside RAM",
       [](Rings& r) {
         r.set_desc(0, 0x7fff0000, 8, kDescFWrite);
         r.offer(0);
       },
       QueueError::buffer_out_of_range},
      {"huge length",
       [](Rings& r) {
         r.set_desc(0, 0x10000, 0xfffffff0u, kDescFWrite);
         r.offer(0);
       },
       QueueError::buffer_out_of_range},
      {"zero length",
       [](Rings& r) {
         r.set_desc(0, 0x10000, 0, kDescFWrite);
         r.offer(0);
       },
       QueueError::zero_length},
      {"avail idx jump", [](Rings& r) { r.publish_idx(1000); }, QueueError::avail_idx_jump},
      {"nested indirect",
       [](Rings& r) {
         r.set_table_desc(0x20000, 0, 0x20000, 16, kDescFIndirect);
         r.set_desc(0, 0x20000, 16, kDescFIndirect);
         r.offer(0);
       },
       QueueError::nested_indirect},
  };
  for (const Case& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      Transport t;
      t.bring_up();
      c.build(t.r);
      t.wr(mmio::kQueueNotify, 0);
      const uint32_t status = t.rd(mmio::kStatus);
      BOOST_TEST((status & virtio::kStatusNeedsReset) != 0u);
      BOOST_TEST((t.rd(mmio::kInterruptStatus) & virtio::kIntConfigChange) != 0u);
      BOOST_TEST(t.irq.level.load());
      BOOST_TEST(t.counter("last_queue_error") == static_cast<uint64_t>(c.expect));
      BOOST_TEST(t.r.used_idx() == 0);
      // Further notifies are ignored until the driver resets the device.
      t.wr(mmio::kQueueNotify, 0);
      BOOST_TEST(t.counter("ignored_notifies") == 1u);
      // The driver may still write Status (without clearing bits) in this state.
      t.wr(mmio::kStatus, status | virtio::kStatusFailed);
      BOOST_TEST((t.rd(mmio::kStatus) & virtio::kStatusFailed) != 0u);
      t.wr(mmio::kStatus, 0);
      BOOST_TEST(t.rd(mmio::kStatus) == 0u);
      BOOST_TEST(t.rd(mmio::kInterruptStatus) == 0u);
      BOOST_TEST(!t.irq.level.load());
      BOOST_TEST(t.rd(mmio::kQueueReady) == 0u);
      // ... and the device works again afterwards.
      t.bring_up();
      t.r.set_desc(0, 0x10000, 8, kDescFWrite);
      t.r.offer(0);
      t.wr(mmio::kQueueNotify, 0);
      BOOST_TEST(t.r.used_idx() == 1);
      BOOST_TEST((t.rd(mmio::kStatus) & virtio::kStatusNeedsReset) == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(rings_outside_ram_at_queue_ready_set_needs_reset) {
  Transport t;
  t.wr(mmio::kStatus, virtio::kStatusAcknowledge);
  t.wr(mmio::kStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver);
  t.wr(mmio::kDriverFeaturesSel, 1);
  t.wr(mmio::kDriverFeatures, 1);  // VERSION_1
  t.wr(mmio::kStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk);
  t.wr(mmio::kQueueSel, 0);
  t.wr(mmio::kQueueNum, 16);
  t.wr(mmio::kQueueDescLow, 0x1000);
  t.wr(mmio::kQueueDescHigh, 0x10);  // 64 GiB: no RAM there
  t.wr(mmio::kQueueDriverLow, 0x3000);
  t.wr(mmio::kQueueDeviceLow, 0x4000);
  t.wr(mmio::kQueueReady, 1);
  BOOST_TEST(t.rd(mmio::kQueueReady) == 0u);
  BOOST_TEST((t.rd(mmio::kStatus) & virtio::kStatusNeedsReset) != 0u);
  BOOST_TEST(t.counter("last_queue_error") == static_cast<uint64_t>(QueueError::desc_table_out_of_range));
  // Not DRIVER_OK yet: no configuration interrupt (§2.1.2).
  BOOST_TEST(!t.irq.level.load());
  // DRIVER_OK still latches, but notifies are ignored while NEEDS_RESET.
  t.wr(mmio::kStatus, t.rd(mmio::kStatus) | virtio::kStatusDriverOk);
  t.wr(mmio::kQueueNotify, 0);
  BOOST_TEST(t.echo->completed.load() == 0);
}

BOOST_AUTO_TEST_CASE(bad_queue_sizes_through_the_transport) {
  for (uint32_t n : {0u, 3u, 32u, 0x10000u}) {
    BOOST_TEST_CONTEXT("QueueNum " << n) {
      Transport t;
      t.wr(mmio::kStatus, virtio::kStatusAcknowledge);
      t.wr(mmio::kQueueSel, 0);
      BOOST_TEST(t.rd(mmio::kQueueNumMax) == 16u);
      t.wr(mmio::kQueueNum, n);
      t.wr(mmio::kQueueDescLow, 0x1000);
      t.wr(mmio::kQueueDriverLow, 0x3000);
      t.wr(mmio::kQueueDeviceLow, 0x4000);
      t.wr(mmio::kQueueReady, 1);
      BOOST_TEST(t.rd(mmio::kQueueReady) == 0u);
      BOOST_TEST(t.counter("last_queue_error") == static_cast<uint64_t>(QueueError::bad_size));
    }
  }
}
