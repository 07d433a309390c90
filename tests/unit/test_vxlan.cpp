// The VXLAN overlay (net/vxlan.hpp): the header against RFC 7348's layout,
// the parser's refusals, VNI derivation, and two tunnels on loopback carrying
// one network's frames between two switches, with MAC-to-VTEP learning,
// isolation by VNI and garbage from strangers dropped and counted.
#define BOOST_TEST_MODULE vxlan
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "net/vxlan.hpp"
#include "tests/support/net_frames.hpp"

using namespace apiary;
using namespace apiary::net;
using apiary::test::Capture;
using apiary::test::frame;
using apiary::test::mac;
using namespace std::chrono_literals;

namespace {

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (p()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return p();
}

Endpoint ep(const char* text) { return parse_endpoint(text).value(); }

// Sends raw bytes to `to` from a socket of its own (a stranger or a peer).
void send_raw(const std::vector<uint8_t>& bytes, const Endpoint& to, const char* from = nullptr) {
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (from) {
    auto f = ep(from);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = f.addr;
    sa.sin_port = htons(f.port);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = to.addr;
  sa.sin_port = htons(to.port);
  ::sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::close(fd);
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_header_is_rfc_7348s) {
  // RFC 7348 §5: flags (8 bits, I = bit 3 from the left: 0x08), 24 reserved
  // bits, the 24-bit VNI, 8 reserved bits; network byte order.
  auto h = vxlan_header(0x123456);
  const std::array<uint8_t, 8> want = {0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0};
  BOOST_TEST(h == want);
  BOOST_TEST(vxlan_header(vxlan::kMaxVni)[4] == 0xff);
}

BOOST_AUTO_TEST_CASE(the_parser_takes_valid_datagrams_and_names_the_rest) {
  auto f = frame(kBroadcastMac, mac(1));
  const auto h = vxlan_header(42);
  std::vector<uint8_t> d(h.begin(), h.end());
  d.insert(d.end(), f.begin(), f.end());
  auto ok = parse_vxlan(d);
  BOOST_REQUIRE(std::holds_alternative<VxlanFrame>(ok));
  BOOST_TEST(std::get<VxlanFrame>(ok).vni == 42u);
  BOOST_TEST(std::get<VxlanFrame>(ok).frame.size() == f.size());
  // Reserved bits are ignored on receipt (§5).
  auto reserved = d;
  reserved[0] |= 0xf7;
  reserved[1] = reserved[7] = 0xaa;
  BOOST_TEST(std::holds_alternative<VxlanFrame>(parse_vxlan(reserved)));
  auto no_i = d;
  no_i[0] = 0;
  BOOST_TEST(to_string(std::get<VxlanError>(parse_vxlan(no_i))) == std::string("no_vni_flag"));
  BOOST_TEST(to_string(std::get<VxlanError>(parse_vxlan(std::span(d).first(7)))) == std::string("too_short"));
  BOOST_TEST(to_string(std::get<VxlanError>(parse_vxlan(std::span(d).first(8 + 13)))) == std::string("bad_inner_frame"));
  std::vector<uint8_t> big(8 + layout::kNetMaxFrameBytes + 1, 0);
  big[0] = 0x08;
  BOOST_TEST(to_string(std::get<VxlanError>(parse_vxlan(big))) == std::string("bad_inner_frame"));
}

BOOST_AUTO_TEST_CASE(endpoints_parse_and_vnis_are_stable_and_in_range) {
  BOOST_TEST(to_string(ep("10.0.0.1:4790")) == "10.0.0.1:4790");
  BOOST_TEST(ep("10.0.0.1").port == layout::kVxlanUdpPort);
  for (const char* bad : {"", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "host:4789", "10.0.0.1:47a9", "::1"})
    BOOST_TEST(!parse_endpoint(bad).has_value(), bad);
  BOOST_TEST(vni_of("n-abc") == vni_of("n-abc"));
  BOOST_TEST(vni_of("n-abc") != vni_of("n-abd"));
  for (int i = 0; i < 1000; ++i) {
    auto v = vni_of("n-" + std::to_string(i));
    BOOST_TEST((v >= 1 && v < vxlan::kMaxVni));
  }
}

BOOST_AUTO_TEST_CASE(two_nodes_switch_one_network_over_the_tunnel) {
  const Endpoint e1 = ep("127.0.0.1:47891"), e2 = ep("127.0.0.1:47892");
  VxlanTunnel t1(e1), t2(e2);
  auto s1 = std::make_shared<Switch>(Switch::Config{"n1"}), s2 = std::make_shared<Switch>(Switch::Config{"n2"});
  auto g1 = std::make_shared<Capture>(), g2 = std::make_shared<Capture>(), g2b = std::make_shared<Capture>();
  auto p1 = s1->add_port("g1", "guest", g1);
  auto p2 = s2->add_port("g2", "guest", g2);
  s2->add_port("g2b", "guest", g2b);
  BOOST_TEST(t1.attach(100, s1));
  BOOST_TEST(!t1.attach(100, s1), "one switch per VNI");
  BOOST_TEST(t2.attach(100, s2));
  t1.set_peers(100, {e2, e1});  // our own address is ignored
  t2.set_peers(100, {e1});
  BOOST_TEST(t1.peers(100).size() == 1u);

  // A broadcast from g1 crosses to node 2 and floods both guests there.
  s1->ingress(p1, frame(kBroadcastMac, mac(1), 0x11));
  BOOST_TEST(eventually([&] { return g2->count() == 1 && g2b->count() == 1; }));
  BOOST_TEST(g2->frames[0] == frame(kBroadcastMac, mac(1), 0x11));
  // g2 answers mac(1): node 2 learned it behind its uplink, node 1 delivers it.
  s2->ingress(p2, frame(mac(1), mac(2), 0x22));
  BOOST_TEST(eventually([&] { return g1->count() == 1; }));
  BOOST_TEST(g1->frames[0] == frame(mac(1), mac(2), 0x22));
  BOOST_TEST(g2b->count() == 1u, "a known unicast is not flooded on node 2");
  BOOST_TEST(t1.stats().tx_datagrams == 1u);
  BOOST_TEST(t2.stats().rx_datagrams == 1u);
  BOOST_TEST(t1.stats().rx_datagrams == 1u);
}

BOOST_AUTO_TEST_CASE(networks_stay_apart_across_the_tunnel) {
  const Endpoint e1 = ep("127.0.0.1:47893"), e2 = ep("127.0.0.1:47894");
  VxlanTunnel t1(e1), t2(e2);
  auto red1 = std::make_shared<Switch>(Switch::Config{"red1"}), red2 = std::make_shared<Switch>(Switch::Config{"red2"}),
       blue2 = std::make_shared<Switch>(Switch::Config{"blue2"});
  auto r1 = std::make_shared<Capture>(), r2 = std::make_shared<Capture>(), b2 = std::make_shared<Capture>();
  auto pr1 = red1->add_port("r1", "guest", r1);
  red2->add_port("r2", "guest", r2);
  blue2->add_port("b2", "guest", b2);
  t1.attach(1, red1);
  t2.attach(1, red2);
  t2.attach(2, blue2);
  t1.set_peers(1, {e2});
  t2.set_peers(1, {e1});
  t2.set_peers(2, {e1});
  for (int i = 0; i < 5; ++i) red1->ingress(pr1, frame(kBroadcastMac, mac(1)));
  BOOST_TEST(eventually([&] { return r2->count() == 5; }));
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(b2->count() == 0u);
}

BOOST_AUTO_TEST_CASE(garbage_and_strangers_are_dropped_and_counted) {
  const Endpoint e1 = ep("127.0.0.1:47895"), e2 = ep("127.0.0.1:47896");
  VxlanTunnel t1(e1);
  auto sw = std::make_shared<Switch>(Switch::Config{"victim"});
  auto g = std::make_shared<Capture>();
  sw->add_port("g", "guest", g);
  t1.attach(7, sw);
  t1.set_peers(7, {e2});
  auto good = [](uint32_t vni) {
    auto h = vxlan_header(vni);
    std::vector<uint8_t> d(h.begin(), h.end());
    auto f = frame(kBroadcastMac, mac(9));
    d.insert(d.end(), f.begin(), f.end());
    return d;
  };
  send_raw({1, 2, 3}, e1, "127.0.0.1:47896");                              // too short
  send_raw(std::vector<uint8_t>(100, 0), e1, "127.0.0.1:47896");           // no I flag
  send_raw(std::vector<uint8_t>(8 + 5000, 0x08), e1, "127.0.0.1:47896");   // oversized
  send_raw(good(8), e1, "127.0.0.1:47896");                                // unknown VNI
  send_raw(good(7), e1, "127.0.0.1:47897");                                // not a peer
  BOOST_TEST(eventually([&] { return t1.stats().rx_datagrams == 5; }));
  auto s = t1.stats();
  BOOST_TEST(s.rx_garbage == 3u);
  BOOST_TEST(s.rx_unknown_vni == 1u);
  BOOST_TEST(s.rx_unknown_peer == 1u);
  BOOST_TEST(g->count() == 0u);
  send_raw(good(7), e1, "127.0.0.1:47896");  // the peer itself: delivered
  BOOST_TEST(eventually([&] { return g->count() == 1; }));
}

BOOST_AUTO_TEST_CASE(a_taken_address_is_a_named_bind_failure) {
  VxlanTunnel t1(ep("127.0.0.1:47898"));
  try {
    VxlanTunnel t2(ep("192.0.2.1:4789"));  // TEST-NET-1: not an address of this host
    BOOST_FAIL("bound an address this host does not have");
  } catch (const std::system_error& e) {
    BOOST_TEST(std::string(e.what()).find("bind_failed") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(detaching_stops_traffic_for_that_vni) {
  const Endpoint e1 = ep("127.0.0.1:47899"), e2 = ep("127.0.0.1:47900");
  VxlanTunnel t1(e1), t2(e2);
  auto s1 = std::make_shared<Switch>(Switch::Config{"d1"}), s2 = std::make_shared<Switch>(Switch::Config{"d2"});
  auto g2 = std::make_shared<Capture>();
  auto p1 = s1->add_port("g1", "guest", std::make_shared<Capture>());
  s2->add_port("g2", "guest", g2);
  t1.attach(3, s1);
  t2.attach(3, s2);
  t1.set_peers(3, {e2});
  t2.set_peers(3, {e1});
  BOOST_TEST(s1->port_count() == 2u);
  t2.detach(3);
  s1->ingress(p1, frame(kBroadcastMac, mac(1)));
  BOOST_TEST(eventually([&] { return t2.stats().rx_unknown_vni == 1; }));
  BOOST_TEST(g2->count() == 0u);
  t1.detach(3);
  BOOST_TEST(s1->port_count() == 1u);
}

// A network made again on a node while its old actor is still ending: the
// old switch's late detach must not take the new switch's uplink.
BOOST_AUTO_TEST_CASE(a_late_detach_by_the_old_switch_leaves_the_new_one_attached) {
  VxlanTunnel t(ep("127.0.0.1:47901"));
  auto old_sw = std::make_shared<Switch>(Switch::Config{"old"}), new_sw = std::make_shared<Switch>(Switch::Config{"new"});
  BOOST_TEST(t.attach(9, old_sw));
  BOOST_TEST(!t.attach(9, new_sw), "the VNI is taken while the old switch is attached");
  t.detach(9, old_sw.get());  // the node drops the network
  BOOST_TEST(old_sw->port_count() == 0u);
  BOOST_TEST(t.attach(9, new_sw));
  t.detach(9, old_sw.get());  // the old actor's state, destroyed late
  BOOST_TEST(new_sw->port_count() == 1u, "the new switch kept its uplink");
  t.detach(9, new_sw.get());
  BOOST_TEST(new_sw->port_count() == 0u);
}
