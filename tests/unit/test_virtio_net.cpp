// virtio-net driven through virtio-mmio as a guest driver would (the shared
// fake driver in tests/support/virtio_driver.hpp), with a capture backend on
// the wire side: frames cross byte-exact both ways with the 12-byte header
// handled, the configuration space says MAC, MTU and link, malformed chains
// are counted and never crash, receive queues up to its bound and drops
// beyond it, lifecycle (pause, reset, halt) does what virtio_net.hpp says,
// and a frame delivered from another thread while the guest posts buffers
// is never lost below the bound.
#define BOOST_TEST_MODULE virtio_net
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio_mmio.hpp"
#include "devices/virtio_net.hpp"
#include "tests/support/virtio_driver.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using namespace apiary::devices;
using namespace std::chrono_literals;
using apiary::test::VirtioDriver;
using apiary::vmm::GuestMemory;
using Buf = VirtioDriver::Buf;
namespace mmio = apiary::devices::virtio_mmio;
namespace net = apiary::devices::virtio_net;

namespace {

constexpr uint64_t kRam = 2 << 20;
constexpr uint64_t kVersion1 = virtio::feature_bit(virtio::kFeatureVersion1);
constexpr uint64_t kEventIdx = virtio::feature_bit(virtq::kFeatureEventIdx);
constexpr uint64_t kNetFeatures =
    virtio::feature_bit(net::kFMac) | virtio::feature_bit(net::kFMtu) | virtio::feature_bit(net::kFStatus);
constexpr uint16_t kRx = net::kRxQueue, kTx = net::kTxQueue;
constexpr uint64_t kRxRings = 0x1000, kTxRings = 0x4000;  // 256-entry rings take < 0x2000
constexpr uint64_t kTxBufs = 0x10000;
constexpr uint64_t kRxBufs = 0x40000;
constexpr uint32_t kRxBufBytes = net::kHdrBytes + 1518;  // what Linux posts without MRG_RXBUF
constexpr uint64_t kRxStride = 0x800;
constexpr std::array<uint8_t, 6> kMac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};

struct FakeIrq final : IrqLine {
  std::atomic<bool> level{false};
  std::atomic<int> raises{0};
  void set_level(uint32_t, bool l) override {
    if (l && !level.load()) ++raises;
    level = l;
  }
};

// The wire: records what the guest sent and every connect(); can refuse
// frames or loop them back into the device.
struct CaptureBackend final : NetBackend {
  std::mutex m;
  std::vector<std::vector<uint8_t>> sent;
  std::vector<NetPort*> connects;
  std::atomic<NetPort*> port{nullptr};
  std::atomic<bool> refuse{false}, loopback{false};

  void connect(NetPort* p) noexcept override {
    std::lock_guard lock(m);
    connects.push_back(p);
    port = p;
  }
  bool transmit(std::span<const uint8_t> frame) noexcept override {
    {
      std::lock_guard lock(m);
      sent.emplace_back(frame.begin(), frame.end());
    }
    if (loopback && port.load()) port.load()->deliver(frame);
    return !refuse;
  }
  std::vector<std::vector<uint8_t>> frames() {
    std::lock_guard lock(m);
    return sent;
  }
  std::vector<NetPort*> connect_log() {
    std::lock_guard lock(m);
    return connects;
  }
};

// An Ethernet frame of `len` bytes: our MAC as destination, then a counter
// pattern seeded by `seq` (seq also in bytes 14..17 for ordering checks).
std::vector<uint8_t> frame(size_t len, uint32_t seq = 0) {
  std::vector<uint8_t> f(len);
  for (size_t i = 0; i < len; ++i) f[i] = static_cast<uint8_t>(seq * 7 + i);
  std::memcpy(f.data(), kMac.data(), std::min<size_t>(6, len));
  if (len >= 18) std::memcpy(f.data() + 14, &seq, 4);
  return f;
}

uint32_t seq_of(const std::vector<uint8_t>& f) {
  uint32_t s = 0;
  std::memcpy(&s, f.data() + 14, 4);
  return s;
}

// A backend that runs a function per transmitted frame.
struct FnBackend final : NetBackend {
  std::function<void()> on_transmit;
  void connect(NetPort*) noexcept override {}
  bool transmit(std::span<const uint8_t>) noexcept override {
    on_transmit();
    return true;
  }
};

struct Nic {
  GuestMemory mem{kRam};
  FakeIrq irq;
  std::shared_ptr<CaptureBackend> backend;  // null unless a CaptureBackend
  VirtioNet* net = nullptr;
  std::unique_ptr<VirtioMmio> dev;
  std::unique_ptr<VirtioDriver> drv;

  explicit Nic(bool with_backend = true)
      : Nic(with_backend ? std::make_shared<CaptureBackend>() : std::shared_ptr<NetBackend>()) {}
  explicit Nic(std::shared_ptr<NetBackend> b) {
    backend = std::dynamic_pointer_cast<CaptureBackend>(b);
    auto n = std::make_unique<VirtioNet>(VirtioNetConfig{kMac, std::move(b)});
    net = n.get();
    dev = std::make_unique<VirtioMmio>("virtio-net-0", mem, 5, irq, std::move(n));
    dev->start();
    drv = std::make_unique<VirtioDriver>(mem, *dev);
  }
  // The whole driver bring-up, as Linux's virtio_net does it.
  void bring_up(uint64_t extra = 0, uint16_t rx_size = net::kQueueSize, uint16_t tx_size = net::kQueueSize) {
    BOOST_REQUIRE(drv->negotiate(kVersion1 | kNetFeatures | extra));
    BOOST_REQUIRE(drv->setup_queue(kRx, rx_size, kRxRings));
    BOOST_REQUIRE(drv->setup_queue(kTx, tx_size, kTxRings));
    BOOST_REQUIRE(drv->driver_ok());
  }
  // Writes header + frame into the tx area as two descriptors (header, data)
  // and offers it as chain `head`.
  void send(uint16_t head, const std::vector<uint8_t>& f, uint64_t at = kTxBufs) {
    std::vector<uint8_t> hdr(net::kHdrBytes, 0);
    mem.write(at, hdr);
    mem.write(at + 0x100, f);
    drv->post(kTx, head, {Buf{at, net::kHdrBytes, false}, Buf{at + 0x100, static_cast<uint32_t>(f.size()), false}});
  }
  // One writable rx buffer of `len` bytes (zeroed) as chain `head`.
  void post_rx(uint16_t head, uint32_t len = kRxBufBytes) {
    const uint64_t gpa = kRxBufs + kRxStride * (head % net::kQueueSize);
    mem.fill(gpa, len, 0);
    drv->post(kRx, head, {Buf{gpa, len, true}});
  }
  std::vector<uint8_t> rx_bytes(uint16_t head, size_t n) { return drv->bytes(kRxBufs + kRxStride * head, n); }
  bool needs_reset() { return drv->status() & virtio::kStatusNeedsReset; }
};

}  // namespace

BOOST_AUTO_TEST_CASE(identity_features_and_config_space) {
  Nic n;
  auto& d = *n.drv;
  BOOST_TEST(d.rd(mmio::kMagicValue) == mmio::kMagic);
  BOOST_TEST(d.rd(mmio::kDeviceId) == 1u);
  for (uint16_t q : {kRx, kTx}) {
    d.wr(mmio::kQueueSel, q);
    BOOST_TEST(d.rd(mmio::kQueueNumMax) == net::kQueueSize);
  }
  d.wr(mmio::kQueueSel, 2);  // no control queue
  BOOST_TEST(d.rd(mmio::kQueueNumMax) == 0u);
  const uint64_t f = d.device_features();
  BOOST_TEST((f & kNetFeatures) == kNetFeatures);
  BOOST_TEST((f & kVersion1) == kVersion1);
  // No offloads, no mergeable buffers, no control queue, no multiqueue.
  for (unsigned bit : {0u /*CSUM*/, 1u /*GUEST_CSUM*/, 7u /*GUEST_TSO4*/, 11u /*HOST_TSO4*/, 15u /*MRG_RXBUF*/,
                       17u /*CTRL_VQ*/, 22u /*MQ*/})
    BOOST_TEST((f & virtio::feature_bit(bit)) == 0u, "bit " << bit);

  BOOST_REQUIRE(d.negotiate(kVersion1 | kNetFeatures));
  for (unsigned i = 0; i < 6; ++i) BOOST_TEST(d.config(net::kCfgMac + i, 1) == kMac[i]);
  BOOST_TEST(d.config(net::kCfgStatus, 2) == net::kSLinkUp);
  BOOST_TEST(d.config(net::kCfgMaxVirtqueuePairs, 2) == 1u);
  BOOST_TEST(d.config(net::kCfgMtu, 2) == 1450u);
  BOOST_TEST(d.config(net::kCfgMtu, 2) == layout::kNetMtu);
  BOOST_TEST(d.config(net::kCfgSize, 1) == 0u);  // past the end: refused by the transport
  const auto s = n.dev->export_state();
  BOOST_TEST(s.kind() == "virtio-net");
  BOOST_TEST(s.registers().at("mac") == 0x021122334455ull);
  BOOST_TEST(s.registers().at("mtu") == 1450u);
}

BOOST_AUTO_TEST_CASE(without_a_backend_the_link_is_down_and_frames_are_dropped) {
  Nic n(false);
  n.bring_up();
  BOOST_TEST(n.drv->config(net::kCfgStatus, 2) == 0u);
  BOOST_TEST(!n.net->link_up());
  n.send(0, frame(60));
  n.drv->kick(kTx);
  BOOST_TEST(n.drv->used_idx(kTx) == 1);  // returned, not sent anywhere
  BOOST_TEST(n.net->counters().tx_dropped_link_down == 1u);
  BOOST_TEST(n.net->counters().tx_frames == 0u);
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.net->counters().rx_dropped_not_ready == 1u);
}

BOOST_AUTO_TEST_CASE(a_transmitted_frame_reaches_the_backend_byte_exact) {
  Nic n;
  n.bring_up();
  BOOST_TEST(n.backend->connect_log().size() == 1u);
  BOOST_TEST(n.backend->connect_log()[0] == static_cast<NetPort*>(n.net));
  const auto f1 = frame(60, 1), f2 = frame(layout::kNetMaxFrameBytes, 2);
  n.send(0, f1, kTxBufs);
  // The second as one descriptor holding header and frame together.
  std::vector<uint8_t> whole(net::kHdrBytes + f2.size(), 0xee);  // header content is ignored
  std::copy(f2.begin(), f2.end(), whole.begin() + net::kHdrBytes);
  n.mem.write(kTxBufs + 0x1000, whole);
  n.drv->post(kTx, 2, {Buf{kTxBufs + 0x1000, static_cast<uint32_t>(whole.size()), false}});
  n.drv->kick(kTx);
  const auto sent = n.backend->frames();
  BOOST_REQUIRE(sent.size() == 2u);
  BOOST_TEST(sent[0] == f1);
  BOOST_TEST(sent[1] == f2);
  BOOST_REQUIRE(n.drv->used_idx(kTx) == 2);
  BOOST_TEST(n.drv->used(kTx, 0).id == 0u);
  BOOST_TEST(n.drv->used(kTx, 0).len == 0u);
  BOOST_TEST(n.drv->used(kTx, 1).id == 2u);
  BOOST_TEST(n.irq.level.load());
  BOOST_TEST(n.drv->rd(mmio::kInterruptStatus) == virtio::kIntUsedBuffer);
  const auto c = n.net->counters();
  BOOST_TEST(c.tx_frames == 2u);
  BOOST_TEST(c.tx_bytes == f1.size() + f2.size());
  BOOST_TEST(c.tx_dropped() == 0u);
}

BOOST_AUTO_TEST_CASE(a_frame_the_backend_refuses_is_counted) {
  Nic n;
  n.bring_up();
  n.backend->refuse = true;
  n.send(0, frame(60));
  n.drv->kick(kTx);
  BOOST_TEST(n.backend->frames().size() == 1u);
  BOOST_TEST(n.net->counters().tx_dropped_backend == 1u);
  BOOST_TEST(n.net->counters().tx_frames == 0u);
  BOOST_TEST(n.drv->used_idx(kTx) == 1);
}

BOOST_AUTO_TEST_CASE(a_delivered_frame_lands_in_an_rx_buffer_with_its_header) {
  Nic n;
  n.bring_up();
  n.post_rx(0);
  const auto f = frame(60, 9);
  BOOST_TEST(n.net->deliver(f));
  BOOST_REQUIRE(n.drv->used_idx(kRx) == 1);
  BOOST_TEST(n.drv->used(kRx, 0).id == 0u);
  BOOST_TEST(n.drv->used(kRx, 0).len == net::kHdrBytes + f.size());
  const auto got = n.rx_bytes(0, net::kHdrBytes + f.size());
  const std::vector<uint8_t> hdr(got.begin(), got.begin() + net::kHdrBytes);
  const std::vector<uint8_t> want_hdr = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0};  // num_buffers = 1 (le16)
  BOOST_TEST(hdr == want_hdr);
  BOOST_TEST(std::vector<uint8_t>(got.begin() + net::kHdrBytes, got.end()) == f);
  BOOST_TEST(n.irq.level.load());
  // Header and frame scattered over two writable descriptors.
  n.mem.fill(0x100000, 0x1000, 0xaa);
  n.drv->post(kRx, 1, {Buf{0x100000, net::kHdrBytes, true}, Buf{0x100100, 1518, true}});
  const auto g = frame(200, 10);
  BOOST_TEST(n.net->deliver(g));
  BOOST_REQUIRE(n.drv->used_idx(kRx) == 2);
  BOOST_TEST(n.drv->used(kRx, 1).len == net::kHdrBytes + g.size());
  BOOST_TEST(n.drv->bytes(0x100000, net::kHdrBytes) == want_hdr);
  BOOST_TEST(n.drv->bytes(0x100100, g.size()) == g);
  BOOST_TEST(n.drv->bytes(0x100100 + g.size(), 1) == std::vector<uint8_t>{0xaa});  // nothing past the frame
  const auto c = n.net->counters();
  BOOST_TEST(c.rx_frames == 2u);
  BOOST_TEST(c.rx_bytes == f.size() + g.size());
  BOOST_TEST(c.rx_dropped() == 0u);
}

BOOST_AUTO_TEST_CASE(a_loopback_backend_can_deliver_from_inside_transmit) {
  Nic n;
  n.bring_up(kEventIdx);
  n.backend->loopback = true;
  n.post_rx(0);
  const auto f = frame(100, 3);
  n.send(0, f);
  n.drv->kick(kTx);  // transmit -> deliver on the same thread: must not deadlock
  BOOST_REQUIRE(n.drv->used_idx(kRx) == 1);
  BOOST_TEST(n.rx_bytes(0, net::kHdrBytes + f.size()).back() == f.back());
  BOOST_TEST(n.net->counters().rx_frames == 1u);
  BOOST_TEST(n.net->counters().tx_frames == 1u);
}

BOOST_AUTO_TEST_CASE(set_link_false_raises_a_config_interrupt_and_clears_the_status_bit) {
  Nic n;
  n.bring_up();
  const uint32_t gen = n.drv->rd(mmio::kConfigGeneration);
  BOOST_TEST(!n.irq.level.load());
  n.net->set_link(false);
  BOOST_TEST(n.drv->config(net::kCfgStatus, 2) == 0u);
  BOOST_TEST(n.drv->rd(mmio::kInterruptStatus) == virtio::kIntConfigChange);
  BOOST_TEST(n.irq.level.load());
  BOOST_TEST(n.drv->rd(mmio::kConfigGeneration) != gen);
  n.drv->wr(mmio::kInterruptAck, virtio::kIntConfigChange);
  BOOST_TEST(!n.irq.level.load());
  n.net->set_link(false);  // no change, no interrupt
  BOOST_TEST(n.drv->rd(mmio::kInterruptStatus) == 0u);
  // Both directions stop while the link is down.
  n.post_rx(0);
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.net->counters().rx_dropped_not_ready == 1u);
  n.send(0, frame(60));
  n.drv->kick(kTx);
  BOOST_TEST(n.net->counters().tx_dropped_link_down == 1u);
  BOOST_TEST(n.backend->frames().empty());
  n.net->set_link(true);
  BOOST_TEST(n.drv->config(net::kCfgStatus, 2) == net::kSLinkUp);
  BOOST_TEST((n.drv->rd(mmio::kInterruptStatus) & virtio::kIntConfigChange) != 0u);
  BOOST_TEST(n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used_idx(kRx) == 1);
}

BOOST_AUTO_TEST_CASE(malformed_transmit_chains_are_returned_unsent_and_counted) {
  Nic n;
  n.bring_up();
  n.mem.fill(kTxBufs, 0x4000, 0);
  // No header: 8 readable bytes.
  n.drv->post(kTx, 0, {Buf{kTxBufs, 8, false}});
  // A header and nothing else, and a header with a runt (13-byte) frame.
  n.drv->post(kTx, 1, {Buf{kTxBufs, net::kHdrBytes, false}});
  n.drv->post(kTx, 2, {Buf{kTxBufs, net::kHdrBytes + 13, false}});
  // One byte over the largest frame.
  n.drv->post(kTx, 3, {Buf{kTxBufs, net::kHdrBytes + layout::kNetMaxFrameBytes + 1, false}});
  // A writable descriptor in a transmit chain.
  n.drv->post(kTx, 4, {Buf{kTxBufs, net::kHdrBytes + 60, false}, Buf{kTxBufs + 0x1000, 64, true}});
  // And a good one after them all.
  const auto good = frame(64, 5);
  n.send(6, good, kTxBufs + 0x2000);
  n.drv->kick(kTx);
  BOOST_TEST(!n.needs_reset());
  BOOST_REQUIRE(n.drv->used_idx(kTx) == 6);
  for (uint16_t i = 0; i < 6; ++i) BOOST_TEST(n.drv->used(kTx, i).len == 0u);
  const auto sent = n.backend->frames();
  BOOST_REQUIRE(sent.size() == 1u);
  BOOST_TEST(sent[0] == good);
  const auto c = n.net->counters();
  BOOST_TEST(c.tx_dropped_malformed == 4u);
  BOOST_TEST(c.tx_dropped_oversized == 1u);
  BOOST_TEST(c.tx_frames == 1u);
  const auto s = n.dev->export_state();
  BOOST_TEST(s.counters().at("tx_dropped") == 5u);
}

BOOST_AUTO_TEST_CASE(a_buffer_outside_guest_memory_needs_reset_and_recovers_after_a_driver_reset) {
  Nic n;
  n.bring_up();
  n.drv->post(kTx, 0, {Buf{kRam - 8, 64, false}});  // runs off the end of RAM
  n.drv->kick(kTx);
  BOOST_TEST(n.needs_reset());
  BOOST_TEST((n.drv->rd(mmio::kInterruptStatus) & virtio::kIntConfigChange) != 0u);
  BOOST_TEST(n.backend->frames().empty());
  // The device is out of service until the driver resets it.
  n.post_rx(0);
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used_idx(kRx) == 0);
  n.send(1, frame(60));
  n.drv->kick(kTx);
  BOOST_TEST(n.backend->frames().empty());
  // Reset and bring up again: both directions work.
  n.bring_up();
  BOOST_TEST(!n.needs_reset());
  n.post_rx(0);
  BOOST_TEST(n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used_idx(kRx) == 1);
  n.send(0, frame(60, 1));
  n.drv->kick(kTx);
  BOOST_TEST(n.backend->frames().size() == 1u);
}

BOOST_AUTO_TEST_CASE(a_loop_in_a_transmit_chain_needs_reset) {
  Nic n;
  n.bring_up();
  n.drv->set_desc(kTx, 0, kTxBufs, 40, virtq::kDescFNext, 1);
  n.drv->set_desc(kTx, 1, kTxBufs, 40, virtq::kDescFNext, 0);  // back to 0
  n.drv->offer(kTx, 0);
  n.drv->kick(kTx);
  BOOST_TEST(n.needs_reset());
  BOOST_TEST(n.backend->frames().empty());
  BOOST_TEST(n.dev->export_state().counters().at("queue_errors") == 1u);
}

BOOST_AUTO_TEST_CASE(a_bad_rx_chain_drops_its_frame_and_returns_the_buffer_empty) {
  Nic n;
  n.bring_up();
  n.post_rx(0, net::kHdrBytes + 40);  // too small for a 60-byte frame
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_REQUIRE(n.drv->used_idx(kRx) == 1);
  BOOST_TEST(n.drv->used(kRx, 0).len == 0u);
  BOOST_TEST(n.rx_bytes(0, 4) == std::vector<uint8_t>(4, 0));  // nothing written
  // A readable descriptor in a receive chain.
  n.drv->post(kRx, 1, {Buf{0x100000, 64, false}, Buf{0x101000, kRxBufBytes, true}});
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used(kRx, 1).len == 0u);
  // Exactly big enough works; the device stays in service throughout.
  n.post_rx(3, net::kHdrBytes + 60);
  BOOST_TEST(n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used(kRx, 2).len == net::kHdrBytes + 60);
  BOOST_TEST(!n.needs_reset());
  const auto c = n.net->counters();
  BOOST_TEST(c.rx_dropped_bad_chain == 2u);
  BOOST_TEST(c.rx_frames == 1u);
}

BOOST_AUTO_TEST_CASE(runt_and_oversized_frames_are_refused_on_receive) {
  Nic n;
  n.bring_up();
  n.post_rx(0);
  BOOST_TEST(!n.net->deliver(frame(13)));
  BOOST_TEST(!n.net->deliver(frame(layout::kNetMaxFrameBytes + 1)));
  BOOST_TEST(!n.net->deliver({}));
  BOOST_TEST(n.net->counters().rx_dropped_bad_length == 3u);
  BOOST_TEST(n.drv->used_idx(kRx) == 0);
  BOOST_TEST(n.net->deliver(frame(layout::kNetMaxFrameBytes)));
  BOOST_TEST(n.drv->used(kRx, 0).len == net::kHdrBytes + layout::kNetMaxFrameBytes);
}

BOOST_AUTO_TEST_CASE(frames_before_driver_ok_are_dropped) {
  Nic n;
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_REQUIRE(n.drv->negotiate(kVersion1 | kNetFeatures));
  BOOST_REQUIRE(n.drv->setup_queue(kRx, 16, kRxRings));
  n.post_rx(0);
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.net->counters().rx_dropped_not_ready == 2u);
  BOOST_TEST(n.drv->used_idx(kRx) == 0);
}

// A notify before DRIVER_OK is ignored; with EVENT_IDX the driver does not
// write another until the device consumed what it offered. So the device
// looks at its queues once when the driver is ready, or the frame would
// wait forever (a dead transmit direction).
BOOST_AUTO_TEST_CASE(a_frame_offered_before_driver_ok_is_sent_once_the_driver_is_ready) {
  Nic n;
  BOOST_REQUIRE(n.drv->negotiate(kVersion1 | kNetFeatures | virtio::feature_bit(virtq::kFeatureEventIdx)));
  BOOST_REQUIRE(n.drv->setup_queue(kRx, net::kQueueSize, kRxRings));
  BOOST_REQUIRE(n.drv->setup_queue(kTx, net::kQueueSize, kTxRings));
  const auto f = frame(60, 7);
  n.send(0, f);
  n.drv->kick(kTx);  // too early: ignored
  BOOST_TEST(n.dev->export_state().counters().at("ignored_notifies") == 1u);
  BOOST_TEST(n.backend->frames().empty());
  BOOST_REQUIRE(n.drv->driver_ok());
  BOOST_REQUIRE(n.backend->frames().size() == 1u);  // no second kick
  BOOST_TEST(n.backend->frames()[0] == f);
  BOOST_TEST(n.drv->used_idx(kTx) == 1);
}

// A queue whose rings are not guest RAM fails to enable and sets
// NEEDS_RESET. DRIVER_OK written after that does not bring the device into
// service: the other queue stays untouched until the driver resets it.
BOOST_AUTO_TEST_CASE(a_queue_that_failed_to_enable_keeps_the_device_out_of_service_until_reset) {
  Nic n;
  BOOST_REQUIRE(n.drv->negotiate(kVersion1 | kNetFeatures));
  BOOST_REQUIRE(n.drv->setup_queue(kRx, net::kQueueSize, kRxRings));
  n.drv->wr(mmio::kQueueSel, kTx);
  n.drv->wr(mmio::kQueueNum, net::kQueueSize);
  n.drv->wr(mmio::kQueueDescLow, static_cast<uint32_t>(kRam + 0x1000));  // not guest RAM
  n.drv->wr(mmio::kQueueReady, 1);
  BOOST_TEST(n.drv->rd(mmio::kQueueReady) == 0u);
  BOOST_TEST(n.needs_reset());
  BOOST_TEST(!n.irq.level.load());  // not announced before DRIVER_OK
  n.drv->driver_ok();
  // Announced once the driver is listening (§2.1.2).
  BOOST_TEST((n.drv->rd(mmio::kInterruptStatus) & virtio::kIntConfigChange) != 0u);
  BOOST_TEST(n.irq.level.load());
  n.post_rx(0);
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used_idx(kRx) == 0);  // the rx ring was not written
  n.bring_up();                           // reset, and everything right this time
  BOOST_TEST(!n.needs_reset());
  n.post_rx(0);
  BOOST_TEST(n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used_idx(kRx) == 1);
}

BOOST_AUTO_TEST_CASE(without_rx_buffers_frames_queue_up_to_the_bound_then_drop) {
  Nic n;
  n.bring_up(kEventIdx);
  for (uint32_t i = 0; i < net::kRxPendingFrames; ++i) BOOST_REQUIRE(n.net->deliver(frame(60 + i % 100, i)));
  BOOST_TEST(n.net->counters().rx_pending == net::kRxPendingFrames);
  BOOST_TEST(!n.net->deliver(frame(60, 9999)));
  BOOST_TEST(n.net->counters().rx_dropped_no_buffer == 1u);
  BOOST_TEST(n.drv->used_idx(kRx) == 0);
  // The driver posts a ring's worth and notifies: all arrive, in order.
  for (uint16_t h = 0; h < net::kQueueSize; ++h) n.post_rx(h);
  n.drv->kick(kRx);
  BOOST_REQUIRE(n.drv->used_idx(kRx) == net::kRxPendingFrames);
  for (uint16_t i = 0; i < net::kRxPendingFrames; ++i) {
    const auto u = n.drv->used(kRx, i);
    BOOST_REQUIRE(u.id == i);
    BOOST_REQUIRE(u.len == net::kHdrBytes + 60 + i % 100);
    const auto got = n.rx_bytes(i, u.len);
    BOOST_REQUIRE(seq_of(std::vector<uint8_t>(got.begin() + net::kHdrBytes, got.end())) == i);
  }
  BOOST_TEST(n.net->counters().rx_pending == 0u);
  BOOST_TEST(n.net->counters().rx_frames == net::kRxPendingFrames);
}

BOOST_AUTO_TEST_CASE(reset_drops_pending_frames) {
  Nic n;
  n.bring_up();
  for (uint32_t i = 0; i < 5; ++i) BOOST_REQUIRE(n.net->deliver(frame(60, i)));
  BOOST_TEST(n.net->counters().rx_pending == 5u);
  n.drv->wr(mmio::kStatus, 0);  // the driver resets the device
  BOOST_TEST(n.net->counters().rx_pending == 0u);
  BOOST_TEST(n.net->counters().rx_dropped_not_ready == 5u);
  n.bring_up();
  n.post_rx(0);
  n.drv->kick(kRx);
  BOOST_TEST(n.drv->used_idx(kRx) == 0);  // nothing old arrives
  BOOST_TEST(n.net->deliver(frame(60, 42)));
  BOOST_REQUIRE(n.drv->used_idx(kRx) == 1);
  const auto got = n.rx_bytes(0, net::kHdrBytes + 60);
  BOOST_TEST(seq_of(std::vector<uint8_t>(got.begin() + net::kHdrBytes, got.end())) == 42u);
  // A lifecycle reset (reboot) does the same.
  BOOST_REQUIRE(n.net->deliver(frame(60, 43)));
  BOOST_TEST(n.net->counters().rx_pending == 1u);
  n.dev->reset();
  BOOST_TEST(n.net->counters().rx_pending == 0u);
  BOOST_TEST(!n.net->deliver(frame(60)));  // not DRIVER_OK any more
}

BOOST_AUTO_TEST_CASE(pause_parks_both_directions_and_resume_serves_them) {
  Nic n;
  n.bring_up();
  n.dev->pause();
  n.post_rx(0);
  BOOST_TEST(n.net->deliver(frame(60, 7)));  // waits in the pending queue
  n.drv->kick(kRx);
  n.send(0, frame(60, 8));
  n.drv->kick(kTx);
  BOOST_TEST(n.drv->used_idx(kRx) == 0);  // rings untouched while paused
  BOOST_TEST(n.drv->used_idx(kTx) == 0);
  BOOST_TEST(n.backend->frames().empty());
  BOOST_TEST(n.net->counters().rx_pending == 1u);
  n.dev->resume();
  BOOST_TEST(n.drv->used_idx(kRx) == 1);
  BOOST_TEST(n.drv->used_idx(kTx) == 1);
  BOOST_REQUIRE(n.backend->frames().size() == 1u);
  BOOST_TEST(seq_of(n.backend->frames()[0]) == 8u);
}

// A reboot, in the order the instance actor drives it: quiesce (pause),
// reset, then start for the new boot. The device must run again: a device
// left paused sends nothing and parks every frame for the guest.
BOOST_AUTO_TEST_CASE(after_a_reboot_the_device_runs_again) {
  Nic n;
  n.bring_up();
  n.dev->pause();
  n.dev->reset();
  n.dev->start();
  n.bring_up();  // the guest's driver after the reboot
  n.send(0, frame(60, 9));
  n.drv->kick(kTx);
  BOOST_TEST(n.drv->used_idx(kTx) == 1);
  BOOST_REQUIRE(n.backend->frames().size() == 1u);
  BOOST_TEST(seq_of(n.backend->frames()[0]) == 9u);
  n.post_rx(0);
  n.drv->kick(kRx);
  BOOST_TEST(n.net->deliver(frame(60, 10)));
  BOOST_TEST(n.drv->used_idx(kRx) == 1);  // placed, not parked
  BOOST_TEST(n.net->counters().rx_pending == 0u);
}

BOOST_AUTO_TEST_CASE(after_halt_deliver_is_refused_and_the_backend_is_detached) {
  Nic n;
  n.bring_up();
  n.post_rx(0);
  n.dev->halt();
  const auto log = n.backend->connect_log();
  BOOST_REQUIRE(log.size() == 2u);
  BOOST_TEST(log[0] == static_cast<NetPort*>(n.net));
  BOOST_TEST(log[1] == nullptr);
  BOOST_TEST(!n.net->deliver(frame(60)));
  BOOST_TEST(n.drv->used_idx(kRx) == 0);
  BOOST_TEST(n.drv->config(net::kCfgStatus, 2) == 0u);
  n.send(0, frame(60));
  n.drv->kick(kTx);
  BOOST_TEST(n.backend->frames().empty());
  // Destroying the device does not detach a second time.
  n.drv.reset();
  n.dev.reset();
  BOOST_TEST(n.backend->connect_log().size() == 2u);
}

BOOST_AUTO_TEST_CASE(destroying_an_unhalted_device_detaches_it) {
  auto backend = std::make_shared<CaptureBackend>();
  {
    GuestMemory mem(kRam);
    FakeIrq irq;
    VirtioMmio dev("n", mem, 5, irq, std::make_unique<VirtioNet>(VirtioNetConfig{kMac, backend}));
    BOOST_TEST(backend->port.load() != nullptr);
  }
  BOOST_TEST(backend->port.load() == nullptr);
  BOOST_TEST(backend->connect_log().size() == 2u);
}

BOOST_AUTO_TEST_CASE(delivery_from_another_thread_while_the_guest_posts_buffers_loses_nothing) {
  // A small ring the guest keeps refilling from its own thread while the
  // "data plane" thread delivers; the data plane never has more than the
  // bound outstanding, so every frame must arrive, in order.
  constexpr uint16_t kRing = 16;
  constexpr uint32_t kFrames = 3000;
  Nic n;
  n.bring_up(kEventIdx, kRing, kRing);
  for (uint16_t h = 0; h < kRing; ++h) n.post_rx(h);
  n.drv->kick(kRx);
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> delivered{0};
  std::thread plane([&] {
    NetPort* port = n.backend->port.load();
    for (uint32_t i = 0; i < kFrames && !stop; ++i) {
      while (n.net->counters().rx_pending >= net::kRxPendingFrames && !stop) std::this_thread::yield();
      if (port->deliver(frame(60 + i % 64, i))) ++delivered;
    }
  });
  std::vector<uint32_t> seqs;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  VirtioDriver::UsedElem u;
  while (seqs.size() < kFrames && std::chrono::steady_clock::now() < deadline) {
    bool any = false;
    while (n.drv->next_used(kRx, u)) {
      const auto got = n.rx_bytes(static_cast<uint16_t>(u.id), u.len);
      seqs.push_back(seq_of(std::vector<uint8_t>(got.begin() + net::kHdrBytes, got.end())));
      n.post_rx(static_cast<uint16_t>(u.id));
      any = true;
    }
    if (any) n.drv->kick(kRx);
    else std::this_thread::yield();
  }
  stop = true;
  plane.join();
  BOOST_TEST(delivered.load() == kFrames);
  BOOST_REQUIRE(seqs.size() == kFrames);
  bool in_order = true;
  for (uint32_t i = 0; i < kFrames; ++i) in_order = in_order && seqs[i] == i;
  BOOST_TEST(in_order);
  const auto c = n.net->counters();
  BOOST_TEST(c.rx_frames == kFrames);
  BOOST_TEST(c.rx_dropped() == 0u);
  BOOST_TEST(!n.needs_reset());
}

BOOST_AUTO_TEST_CASE(transmit_work_per_notify_is_bounded_and_the_rest_served_later) {
  // A guest that refills its transmit ring as fast as the device empties it
  // (the backend stands in for the driver on another vCPU, re-offering each
  // chain as soon as it was returned): one notify serves kTxChainsPerNotify
  // chains and returns; the next notify (on the receive queue here) serves
  // the rest.
  constexpr uint16_t kRing = 8;
  constexpr uint32_t kRefills = 300;
  auto backend = std::make_shared<FnBackend>();
  Nic n(backend);
  uint32_t transmitted = 0;
  const uint32_t chain_bytes = net::kHdrBytes + 60;
  backend->on_transmit = [&] {
    // Chain k uses head k % kRing; chain k - 1 is back on the used ring now.
    if (transmitted >= 1 && transmitted <= kRefills)
      n.drv->post(kTx, static_cast<uint16_t>((transmitted - 1) % kRing), {Buf{kTxBufs, chain_bytes, false}});
    ++transmitted;
  };
  n.bring_up(0, kRing, kRing);
  n.mem.write(kTxBufs + net::kHdrBytes, frame(60));
  for (uint16_t h = 0; h < kRing; ++h) n.drv->post(kTx, h, {Buf{kTxBufs, chain_bytes, false}});
  n.drv->kick(kTx);
  BOOST_TEST(transmitted == net::kTxChainsPerNotify);
  BOOST_TEST(n.net->counters().tx_budget_exhausted == 1u);
  BOOST_TEST(n.drv->used_idx(kTx) == net::kTxChainsPerNotify);
  n.drv->kick(kRx);
  BOOST_TEST(transmitted == kRing + kRefills);
  BOOST_TEST(n.net->counters().tx_frames == kRing + kRefills);
  BOOST_TEST(n.drv->used_idx(kTx) == kRing + kRefills);
  BOOST_TEST(!n.needs_reset());
}

BOOST_AUTO_TEST_CASE(default_macs_are_stable_local_unicast_and_distinct) {
  const auto a = default_mac("inst-1", 0);
  BOOST_TEST((a == default_mac("inst-1", 0)));
  BOOST_TEST(a[0] == 0x02);  // locally administered, unicast
  BOOST_TEST((a != default_mac("inst-1", 1)));
  BOOST_TEST((a != default_mac("inst-2", 0)));
  BOOST_TEST((default_mac("", 0) != std::array<uint8_t, 6>{0x02, 0, 0, 0, 0, 0}));
  std::set<std::array<uint8_t, 6>> seen;
  for (unsigned i = 0; i < 1000; ++i) seen.insert(default_mac("instance-" + std::to_string(i), i % 4));
  BOOST_TEST(seen.size() == 1000u);
  // Pinned: an instance's address must not change between releases.
  BOOST_TEST((default_mac("inst-1", 0) == std::array<uint8_t, 6>{0x02, 0x65, 0xb1, 0x66, 0x88, 0x7c}));
}
