// The switch of one network on one node (net/switch.hpp, net/mac_table.hpp):
// learning, ageing, flooding of unknown and group destinations, isolation of
// two switches, per-port bounded queues with drop counters, and guest ports
// that leave the switch when their NIC goes.
#define BOOST_TEST_MODULE net_switch
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "net/mac_table.hpp"
#include "net/switch.hpp"
#include "tests/support/net_frames.hpp"

using namespace apiary;
using namespace apiary::net;
using apiary::test::Capture;
using apiary::test::frame;
using apiary::test::mac;
using namespace std::chrono_literals;

namespace {

// A guest NIC as the switch sees it through make_guest_port.
struct FakeNic final : devices::NetPort {
  std::mutex m;
  std::vector<std::vector<uint8_t>> got;
  bool deliver(std::span<const uint8_t> f) noexcept override {
    std::lock_guard lk(m);
    got.emplace_back(f.begin(), f.end());
    return true;
  }
};

struct ThreePorts {
  Switch sw{{"net-a"}};
  std::shared_ptr<Capture> a = std::make_shared<Capture>(), b = std::make_shared<Capture>(),
                           c = std::make_shared<Capture>();
  PortId pa = sw.add_port("a", "guest", a), pb = sw.add_port("b", "guest", b), pc = sw.add_port("c", "guest", c);
  void settle() { BOOST_REQUIRE(sw.wait_idle(5s)); }
  PortStats port(PortId id) {
    for (auto& p : sw.stats().ports)
      if (p.id == id) return p;
    BOOST_FAIL("no such port");
    return {};
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(the_table_learns_moves_and_ages) {
  MacTable t(1000ms, 16);
  const auto t0 = Clock::now();
  t.learn(mac(1), 7, t0);
  BOOST_TEST(t.lookup(mac(1), t0 + 500ms).value() == 7u);
  t.learn(mac(1), 8, t0 + 600ms);  // the guest moved
  BOOST_TEST(t.moves() == 1u);
  BOOST_TEST(t.lookup(mac(1), t0 + 1500ms).value() == 8u);  // refreshed at 600 ms
  BOOST_TEST(!t.lookup(mac(1), t0 + 1700ms).has_value());   // aged out
  BOOST_TEST(t.size() == 0u);
  t.learn(kBroadcastMac, 1, t0);
  t.learn({0x01, 0, 0x5e, 0, 0, 1}, 1, t0);  // multicast
  BOOST_TEST(t.size() == 0u, "group addresses are never learned");
}

BOOST_AUTO_TEST_CASE(a_full_table_learns_nothing_new_and_says_so) {
  MacTable t(1000ms, 2);
  const auto t0 = Clock::now();
  t.learn(mac(1), 1, t0);
  t.learn(mac(2), 2, t0);
  t.learn(mac(3), 3, t0);
  BOOST_TEST(t.size() == 2u);
  BOOST_TEST(t.not_learned() == 1u);
  BOOST_TEST(!t.lookup(mac(3), t0).has_value());
  t.learn(mac(3), 3, t0 + 2s);  // the others have aged: room again
  BOOST_TEST(t.lookup(mac(3), t0 + 2s).value() == 3u);
  t.forget_port(3);
  BOOST_TEST(!t.lookup(mac(3), t0 + 2s).has_value());
}

BOOST_FIXTURE_TEST_CASE(unknown_and_broadcast_flood_known_unicast_goes_to_one_port, ThreePorts) {
  BOOST_TEST(sw.ingress(pa, frame(kBroadcastMac, mac(1))));
  settle();
  BOOST_TEST(a->count() == 0u, "never back out of the port it came in on");
  BOOST_TEST(b->count() == 1u);
  BOOST_TEST(c->count() == 1u);
  // mac(9) is unknown: flooded.
  sw.ingress(pb, frame(mac(9), mac(2)));
  settle();
  BOOST_TEST(a->count() == 1u);
  BOOST_TEST(c->count() == 2u);
  // mac(1) was learned on a, mac(2) on b: unicast goes to one port only.
  sw.ingress(pc, frame(mac(1), mac(3), 0x77));
  settle();
  BOOST_TEST(a->count() == 2u);
  BOOST_TEST(b->count() == 1u);
  BOOST_TEST(a->frames.back() == frame(mac(1), mac(3), 0x77));
  sw.ingress(pa, frame(mac(2), mac(1)));
  settle();
  BOOST_TEST(b->count() == 2u);
  BOOST_TEST(c->count() == 2u);
  auto s = sw.stats();
  BOOST_TEST(s.mac_entries == 3u);
  BOOST_TEST(s.flooded == 2u);
  BOOST_TEST(port(pa).rx_frames == 2u);
  BOOST_TEST(port(pa).tx_frames == 2u);
  BOOST_TEST(port(pb).tx_bytes == 128u);
}

BOOST_FIXTURE_TEST_CASE(a_frame_for_the_port_it_came_from_is_dropped, ThreePorts) {
  sw.ingress(pa, frame(kBroadcastMac, mac(1)));
  sw.ingress(pa, frame(kBroadcastMac, mac(5)));
  settle();
  sw.ingress(pa, frame(mac(5), mac(1)));
  settle();
  BOOST_TEST(b->count() == 2u);
  BOOST_TEST(sw.stats().hairpin_drops == 1u);
}

BOOST_AUTO_TEST_CASE(an_aged_destination_is_flooded_again) {
  Switch sw({"ageing", switch_defaults::kQueueFrames, 100ms});
  auto a = std::make_shared<Capture>(), b = std::make_shared<Capture>(), c = std::make_shared<Capture>();
  auto pa = sw.add_port("a", "guest", a), pb = sw.add_port("b", "guest", b);
  sw.add_port("c", "guest", c);
  sw.ingress(pa, frame(kBroadcastMac, mac(1)));
  BOOST_REQUIRE(sw.wait_idle(5s));
  sw.ingress(pb, frame(mac(1), mac(2)));
  BOOST_REQUIRE(sw.wait_idle(5s));
  BOOST_TEST(c->count() == 1u, "mac(1) known: only the broadcast reached c");
  std::this_thread::sleep_for(250ms);
  sw.ingress(pb, frame(mac(1), mac(2)));
  BOOST_REQUIRE(sw.wait_idle(5s));
  BOOST_TEST(c->count() == 2u, "mac(1) aged out: flooded");
}

BOOST_AUTO_TEST_CASE(two_switches_never_exchange_a_frame) {
  Switch red({"red"}), blue({"blue"});
  auto r1 = std::make_shared<Capture>(), r2 = std::make_shared<Capture>(), b1 = std::make_shared<Capture>();
  auto pr1 = red.add_port("r1", "guest", r1);
  red.add_port("r2", "guest", r2);
  auto pb1 = blue.add_port("b1", "guest", b1);
  for (int i = 0; i < 10; ++i) {
    red.ingress(pr1, frame(kBroadcastMac, mac(1)));
    blue.ingress(pb1, frame(kBroadcastMac, mac(1)));  // even the same MAC
  }
  BOOST_REQUIRE(red.wait_idle(5s));
  BOOST_REQUIRE(blue.wait_idle(5s));
  BOOST_TEST(r2->count() == 10u);
  BOOST_TEST(b1->count() == 0u);
}

BOOST_FIXTURE_TEST_CASE(runts_and_oversized_frames_are_dropped_and_counted, ThreePorts) {
  std::vector<uint8_t> runt(13, 0xff), big(layout::kNetMaxFrameBytes + 1, 0xff);
  BOOST_TEST(!sw.ingress(pa, runt));
  BOOST_TEST(!sw.ingress(pa, big));
  BOOST_TEST(sw.ingress(pa, frame(kBroadcastMac, mac(1), 0, layout::kNetMaxFrameBytes)));
  settle();
  BOOST_TEST(port(pa).rx_dropped_bad_frame == 2u);
  BOOST_TEST(b->count() == 1u);
  BOOST_TEST(!sw.ingress(999, frame(kBroadcastMac, mac(1))), "no such port");
}

BOOST_AUTO_TEST_CASE(a_flooding_port_fills_only_its_own_queue) {
  // A slow receiver holds the forwarding thread; the flooder's queue fills
  // and drops, the quiet port's frames still get through.
  Switch sw({"flood", 8});
  struct Slow final : PortSink {
    std::atomic<int> n{0};
    bool emit(std::span<const uint8_t>) noexcept override {
      std::this_thread::sleep_for(2ms);
      ++n;
      return true;
    }
  };
  auto slow = std::make_shared<Slow>();
  auto quiet_sink = std::make_shared<Capture>();
  auto flooder = sw.add_port("flooder", "guest", std::make_shared<Capture>());
  auto quiet = sw.add_port("quiet", "guest", quiet_sink);
  sw.add_port("slow", "guest", slow);
  int accepted = 0;
  for (int i = 0; i < 200; ++i) accepted += sw.ingress(flooder, frame(kBroadcastMac, mac(1)));
  for (int i = 0; i < 4; ++i) BOOST_TEST(sw.ingress(quiet, frame(kBroadcastMac, mac(2))));
  BOOST_REQUIRE(sw.wait_idle(10s));
  PortStats f{}, q{};
  for (auto& p : sw.stats().ports) {
    if (p.id == flooder) f = p;
    if (p.id == quiet) q = p;
  }
  BOOST_TEST(f.rx_dropped_queue_full == static_cast<uint64_t>(200 - accepted));
  BOOST_TEST(f.rx_dropped_queue_full > 100u);
  BOOST_TEST(q.rx_dropped_queue_full == 0u);
  BOOST_TEST(q.rx_frames == 4u);
}

BOOST_AUTO_TEST_CASE(a_refusing_sink_is_counted_against_its_port) {
  Switch sw({"refuse"});
  auto a = std::make_shared<Capture>(), b = std::make_shared<Capture>();
  auto pa = sw.add_port("a", "guest", a);
  auto pb = sw.add_port("b", "guest", b);
  b->refuse = true;
  sw.ingress(pa, frame(kBroadcastMac, mac(1)));
  BOOST_REQUIRE(sw.wait_idle(5s));
  for (auto& p : sw.stats().ports)
    if (p.id == pb) BOOST_TEST(p.tx_dropped == 1u);
}

BOOST_AUTO_TEST_CASE(a_guest_port_moves_frames_both_ways_and_leaves_with_its_nic) {
  auto sw = std::make_shared<Switch>(Switch::Config{"guests"});
  FakeNic nic1, nic2;
  auto port1 = make_guest_port(sw, "i-1/0");
  auto port2 = make_guest_port(sw, "i-2/0");
  port1->connect(&nic1);
  port2->connect(&nic2);
  BOOST_TEST(sw->port_count() == 2u);
  BOOST_TEST(port1->transmit(frame(kBroadcastMac, mac(1), 0x11)));
  BOOST_REQUIRE(sw->wait_idle(5s));
  BOOST_REQUIRE(nic2.got.size() == 1u);
  BOOST_TEST(nic2.got[0] == frame(kBroadcastMac, mac(1), 0x11));
  BOOST_TEST(nic1.got.empty());
  port2->connect(nullptr);  // the device halted
  port1->transmit(frame(mac(2), mac(1)));
  BOOST_REQUIRE(sw->wait_idle(5s));
  BOOST_TEST(nic2.got.size() == 1u, "nothing delivered after connect(nullptr)");
  port2.reset();  // the VM is gone
  BOOST_TEST(sw->port_count() == 1u);
  BOOST_TEST(sw->stats().mac_entries == 1u, "mac(2) never learned; mac(1) stays");
}

BOOST_AUTO_TEST_CASE(many_senders_lose_nothing_below_the_bound) {
  Switch sw({"busy", 4096});
  auto sink = std::make_shared<Capture>();
  sw.add_port("sink", "guest", sink);
  std::vector<PortId> senders;
  for (int i = 0; i < 4; ++i) senders.push_back(sw.add_port("s" + std::to_string(i), "guest", std::make_shared<Capture>()));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      for (int k = 0; k < 500; ++k) {
        while (!sw.ingress(senders[i], frame(kBroadcastMac, mac(static_cast<uint8_t>(10 + i))))) std::this_thread::yield();
      }
    });
  for (auto& t : threads) t.join();
  BOOST_REQUIRE(sw.wait_idle(10s));
  BOOST_TEST(sink->count() == 2000u);
}
