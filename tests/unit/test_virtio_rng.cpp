// virtio-rng driven through virtio-mmio as a guest would: bytes arrive in
// the driver's writable buffers, differ between requests, are capped per
// chain, and notifications honour the driver's suppression settings;
// pause/resume defer and then serve requests; malformed queues end in
// NEEDS_RESET.
#define BOOST_TEST_MODULE virtio_rng
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "devices/virtio_mmio.hpp"
#include "devices/virtio_rng.hpp"
#include "vmm-core/guest_memory.hpp"

using namespace apiary::devices;
using apiary::vmm::GuestMemory;
namespace mmio = apiary::devices::virtio_mmio;

namespace {

constexpr uint64_t kRam = 1 << 20;
constexpr uint64_t kVersion1 = 1ull << virtio::kFeatureVersion1;
constexpr uint64_t kIndirect = 1ull << virtq::kFeatureIndirectDesc;
constexpr uint64_t kEventIdx = 1ull << virtq::kFeatureEventIdx;

struct FakeIrq final : IrqLine {
  std::atomic<bool> level{false};
  std::atomic<int> raises{0};
  void set_level(uint32_t, bool l) override {
    if (l && !level.load()) ++raises;
    level = l;
  }
};

struct RawDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

std::atomic_ref<uint16_t> guest_u16(GuestMemory& mem, uint64_t gpa) {
  return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem.host_range(gpa, 2)));
}

struct Guest {
  GuestMemory mem{kRam};
  FakeIrq irq;
  VirtioRng* rng = nullptr;
  std::unique_ptr<VirtioMmio> dev;
  uint16_t qsize = 8;
  uint64_t desc = 0x1000, avail = 0x2000, used = 0x3000;
  uint16_t avail_idx = 0;

  Guest() {
    auto r = std::make_unique<VirtioRng>();
    rng = r.get();
    dev = std::make_unique<VirtioMmio>("virtio-rng", mem, 6, irq, std::move(r));
    dev->start();
  }
  uint32_t rd(uint64_t off) { return static_cast<uint32_t>(dev->io_read(off, 4)); }
  void wr(uint64_t off, uint32_t v) { dev->io_write(off, 4, v); }
  uint32_t status() { return rd(mmio::kStatus); }
  void bring_up(uint64_t features = kVersion1) {
    wr(mmio::kStatus, 0);
    wr(mmio::kStatus, virtio::kStatusAcknowledge);
    wr(mmio::kStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver);
    wr(mmio::kDriverFeaturesSel, 0);
    wr(mmio::kDriverFeatures, static_cast<uint32_t>(features));
    wr(mmio::kDriverFeaturesSel, 1);
    wr(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    wr(mmio::kStatus, status() | virtio::kStatusFeaturesOk);
    BOOST_REQUIRE(status() & virtio::kStatusFeaturesOk);
    mem.fill(desc, 16 * qsize, 0);
    mem.fill(avail, 6 + 2 * qsize, 0);
    mem.fill(used, 6 + 8 * qsize, 0);
    avail_idx = 0;
    wr(mmio::kQueueSel, 0);
    wr(mmio::kQueueNum, qsize);
    wr(mmio::kQueueDescLow, static_cast<uint32_t>(desc));
    wr(mmio::kQueueDriverLow, static_cast<uint32_t>(avail));
    wr(mmio::kQueueDeviceLow, static_cast<uint32_t>(used));
    wr(mmio::kQueueReady, 1);
    wr(mmio::kStatus, status() | virtio::kStatusDriverOk);
    BOOST_REQUIRE(status() & virtio::kStatusDriverOk);
  }
  void set_desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    mem.write_obj(table + 16 * uint64_t{i}, RawDesc{addr, len, flags, next});
  }
  void offer(uint16_t head) {
    mem.write_obj<uint16_t>(avail + 4 + 2 * uint64_t{static_cast<uint16_t>(avail_idx % qsize)}, head);
    guest_u16(mem, avail + 2).store(++avail_idx, std::memory_order_release);
  }
  void kick() { wr(mmio::kQueueNotify, 0); }
  uint16_t used_idx() { return guest_u16(mem, used + 2).load(std::memory_order_acquire); }
  uint32_t used_len(uint16_t i) {
    return mem.read_obj<uint32_t>(used + 8 + 8 * uint64_t{static_cast<uint16_t>(i % qsize)});
  }
  // One writable buffer of `len` bytes at `gpa` (zeroed first) as chain `head`.
  void request(uint16_t head, uint64_t gpa, uint32_t len) {
    mem.fill(gpa, len, 0);
    set_desc(desc, head, gpa, len, virtq::kDescFWrite);
    offer(head);
  }
  std::vector<uint8_t> bytes(uint64_t gpa, size_t n) {
    std::vector<uint8_t> v(n);
    mem.read(gpa, v);
    return v;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(identity) {
  Guest g;
  BOOST_TEST(g.rd(mmio::kMagicValue) == mmio::kMagic);
  BOOST_TEST(g.rd(mmio::kVersion) == 2u);
  BOOST_TEST(g.rd(mmio::kDeviceId) == 4u);
  BOOST_TEST(g.rd(mmio::kQueueNumMax) == virtio_rng::kQueueSize);
  g.wr(mmio::kDeviceFeaturesSel, 1);
  BOOST_TEST((g.rd(mmio::kDeviceFeatures) & 1u) == 1u);  // VERSION_1
  BOOST_TEST(g.dev->io_read(mmio::kConfig, 4) == 0u);    // no config space
  BOOST_TEST(g.dev->export_state().kind() == "virtio-rng");
}

BOOST_AUTO_TEST_CASE(random_bytes_arrive_and_differ_between_requests) {
  Guest g;
  g.bring_up();
  g.request(0, 0x10000, 64);
  g.request(1, 0x11000, 64);
  g.kick();  // served inline on the notifying thread
  BOOST_REQUIRE(g.used_idx() == 2);
  BOOST_TEST(g.used_len(0) == 64u);
  BOOST_TEST(g.used_len(1) == 64u);
  const auto a = g.bytes(0x10000, 64), b = g.bytes(0x11000, 64);
  BOOST_TEST(std::any_of(a.begin(), a.end(), [](uint8_t x) { return x != 0; }));
  BOOST_TEST((a != b));
  BOOST_TEST(g.irq.level.load());
  BOOST_TEST(g.rd(mmio::kInterruptStatus) == virtio::kIntUsedBuffer);
  g.wr(mmio::kInterruptAck, virtio::kIntUsedBuffer);
  BOOST_TEST(!g.irq.level.load());
  BOOST_TEST(g.rng->counters().requests == 2u);
  BOOST_TEST(g.rng->counters().bytes == 128u);
}

BOOST_AUTO_TEST_CASE(each_chain_is_capped) {
  Guest g;
  g.bring_up(kVersion1 | kIndirect);
  // 3 x 32 KiB through an indirect table: only the first 64 KiB are filled.
  const uint64_t table = 0x8000, buf = 0x20000;
  for (uint16_t i = 0; i < 3; ++i)
    g.set_desc(table, i, buf + 0x8000ull * i, 0x8000,
               static_cast<uint16_t>(virtq::kDescFWrite | (i < 2 ? virtq::kDescFNext : 0)), i + 1);
  g.mem.fill(buf, 3 * 0x8000, 0);
  g.set_desc(g.desc, 0, table, 48, virtq::kDescFIndirect);
  g.offer(0);
  g.kick();
  BOOST_REQUIRE(g.used_idx() == 1);
  BOOST_TEST(g.used_len(0) == virtio_rng::kMaxBytesPerChain);
  const auto tail = g.bytes(buf + virtio_rng::kMaxBytesPerChain, 0x8000);
  BOOST_TEST(std::all_of(tail.begin(), tail.end(), [](uint8_t x) { return x == 0; }));
}

BOOST_AUTO_TEST_CASE(no_interrupt_flag_and_event_idx_suppress_interrupts) {
  Guest g;
  g.bring_up();
  guest_u16(g.mem, g.avail).store(virtq::kAvailFNoInterrupt);
  g.request(0, 0x10000, 16);
  g.kick();
  BOOST_TEST(g.used_idx() == 1);
  BOOST_TEST(!g.irq.level.load());

  g.bring_up(kVersion1 | kEventIdx);
  guest_u16(g.mem, g.avail + 4 + 2 * g.qsize).store(1);  // used_event: interrupt after the 2nd
  g.request(0, 0x10000, 16);
  g.kick();
  BOOST_TEST(g.used_idx() == 1);
  BOOST_TEST(!g.irq.level.load());
  g.request(1, 0x10000, 16);
  g.kick();
  BOOST_TEST(g.used_idx() == 2);
  BOOST_TEST(g.irq.level.load());
}

BOOST_AUTO_TEST_CASE(pause_defers_requests_until_resume) {
  Guest g;
  g.bring_up();
  g.dev->pause();
  g.request(0, 0x10000, 32);
  g.kick();
  BOOST_TEST(g.used_idx() == 0);
  g.dev->resume();
  BOOST_TEST(g.used_idx() == 1);
  BOOST_TEST(g.used_len(0) == 32u);
  g.dev->halt();
  g.request(1, 0x10000, 32);
  g.kick();
  BOOST_TEST(g.used_idx() == 1);
}

BOOST_AUTO_TEST_CASE(malformed_queue_sets_needs_reset) {
  Guest g;
  g.bring_up();
  g.set_desc(g.desc, 0, 0x10000, 16, virtq::kDescFNext | virtq::kDescFWrite, 0);  // self loop
  g.offer(0);
  g.kick();
  BOOST_TEST((g.status() & virtio::kStatusNeedsReset) != 0u);
  BOOST_TEST((g.rd(mmio::kInterruptStatus) & virtio::kIntConfigChange) != 0u);
  BOOST_TEST(g.used_idx() == 0);
  g.bring_up();
  g.request(0, 0x10000, 8);
  g.kick();
  BOOST_TEST(g.used_idx() == 1);
}
