// The host tap port of a network's switch (net/tap.hpp), against the real
// kernel: the test process moves into a network namespace of its own
// (unshare, root: CI runs as root) so the devices it makes never touch the
// machine's interfaces and vanish with the process.
//
// What an operator would check: the device exists, is up with the overlay's
// MTU; the host answers a guest's ARP through it (the kernel's own reply
// crosses the switch to the guest's port); a name in use or malformed is
// refused by name and the existing device is left alone; a frame larger
// than a guest may receive, sent by a host that raised the MTU, is dropped
// and counted; the device goes when the port does.
#define BOOST_TEST_MODULE net_tap
#include <boost/test/unit_test.hpp>

#include <net/if.h>
#include <sched.h>

#include <algorithm>
#include <functional>
#include <thread>
#include <system_error>

#include "net/tap.hpp"
#include "tests/support/net_frames.hpp"
#include "tests/support/process.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using namespace apiary::net;
using apiary::test::Capture;
using apiary::test::mac;
using namespace std::chrono_literals;

namespace {

struct OwnNetworkNamespace {
  OwnNetworkNamespace() {
    if (::unshare(CLONE_NEWNET) != 0)
      throw std::system_error(errno, std::generic_category(), "unshare(CLONE_NEWNET) (the tap tests need root)");
  }
};
BOOST_TEST_GLOBAL_FIXTURE(OwnNetworkNamespace);

test::ProcessResult sh(const std::string& cmd) { return test::run_process({"/bin/sh", "-c", cmd}, "", 20s); }

// `ip -o link show` of the device (sysfs shows the namespace it was mounted
// in, not ours).
std::string link(const std::string& dev) { return sh("ip -o link show dev " + dev).out; }

bool exists(const std::string& dev) { return ::if_nametoindex(dev.c_str()) != 0; }

// The failure's name, from the message (e.g. "tap_name_in_use").
std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    const std::string m = e.what();
    return m.substr(0, m.find(':'));
  }
  return "(not refused)";
}

// An ARP request from `src` (10.99.0.2) for `target`.
std::vector<uint8_t> arp_request(const Mac& src, std::array<uint8_t, 4> target) {
  std::vector<uint8_t> f(60, 0);
  std::fill(f.begin(), f.begin() + 6, 0xff);
  std::copy(src.begin(), src.end(), f.begin() + 6);
  const uint8_t body[] = {0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1};
  std::copy(std::begin(body), std::end(body), f.begin() + 12);
  std::copy(src.begin(), src.end(), f.begin() + 22);
  const uint8_t spa[] = {10, 99, 0, 2};
  std::copy(std::begin(spa), std::end(spa), f.begin() + 28);
  std::copy(target.begin(), target.end(), f.begin() + 38);
  return f;
}

PortStats port_of(const Switch& sw, PortId id) {
  for (auto& p : sw.stats().ports)
    if (p.id == id) return p;
  BOOST_FAIL("no port " << id);
  return {};
}

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds d = 5s) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return f();
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_name_is_the_vni) {
  BOOST_TEST(tap_name(0xabc) == "apiary-000abc");
  BOOST_TEST(tap_name(0xffffff).size() < size_t{IFNAMSIZ});
}

BOOST_AUTO_TEST_CASE(the_host_answers_a_guest_through_the_tap) {
  auto sw = std::make_shared<Switch>(Switch::Config{"net-t"});
  auto guest = std::make_shared<Capture>();
  const PortId g = sw->add_port("guest", "guest", guest);
  {
    TapPort tap(sw, "aptest0");
    BOOST_TEST(exists("aptest0"));
    BOOST_TEST(link("aptest0").find(" mtu " + std::to_string(layout::kNetMtu) + " ") != std::string::npos,
               link("aptest0"));
    BOOST_TEST(link("aptest0").find(",UP") != std::string::npos, link("aptest0"));
    BOOST_TEST(port_of(*sw, tap.port()).kind == "tap");
    BOOST_TEST(port_of(*sw, tap.port()).name == "aptest0");
    // Apiary gave it no address; the operator does.
    BOOST_TEST(sh("ip -4 addr show dev aptest0").out.find("inet ") == std::string::npos);
    BOOST_REQUIRE(sh("ip addr add 10.99.0.1/24 dev aptest0").exit_code == 0);

    const Mac me = mac(2);
    BOOST_REQUIRE(sw->ingress(g, arp_request(me, {10, 99, 0, 1})));
    auto is_reply = [&](const std::vector<uint8_t>& f) {
      return f.size() >= 42 && std::equal(me.begin(), me.end(), f.begin()) && f[12] == 0x08 && f[13] == 0x06 &&
             f[21] == 2 && f[28] == 10 && f[29] == 99 && f[30] == 0 && f[31] == 1;
    };
    BOOST_TEST(eventually([&] {
      std::lock_guard lk(guest->m);
      return std::any_of(guest->frames.begin(), guest->frames.end(), is_reply);
    }));
    const auto tp = port_of(*sw, tap.port());
    BOOST_TEST(tp.tx_frames >= 1u);  // the request, to the host
    BOOST_TEST(tp.rx_frames >= 1u);  // the reply, from the host
    BOOST_TEST(tap.read_errors() == 0u);
  }
  // Gone with its port.
  BOOST_TEST(!exists("aptest0"));
  BOOST_TEST(sw->port_count() == 1u);
}

BOOST_AUTO_TEST_CASE(names_in_use_or_malformed_are_refused_and_nothing_is_touched) {
  auto sw = std::make_shared<Switch>(Switch::Config{"net-t"});
  TapPort first(sw, "aptest1");
  BOOST_TEST(refusal([&] { TapPort again(sw, "aptest1"); }) == "tap_name_in_use");
  BOOST_REQUIRE(sh("ip tuntap add dev aptest2 mode tap").exit_code == 0);
  // A persistent tap someone else made: TUNSETIFF would attach to it.
  BOOST_TEST(refusal([&] { TapPort other(sw, "aptest2"); }) == "tap_name_in_use");
  BOOST_TEST(refusal([&] { TapPort lo(sw, "lo"); }) == "tap_name_in_use");
  for (const std::string bad : {"", "sixteen-bytes-xx", "a/b", "a:b", "a b", "."})
    BOOST_TEST(refusal([&] { TapPort t(sw, bad); }) == "tap_bad_name", "'" << bad << "'");
  // The refusals left the devices and the switch as they were.
  BOOST_TEST(exists("aptest1"));
  BOOST_TEST(exists("aptest2"));
  BOOST_TEST(sw->port_count() == 1u);
  sh("ip link del aptest2");
}

BOOST_AUTO_TEST_CASE(oversized_frames_from_the_host_are_dropped_and_counted) {
  auto sw = std::make_shared<Switch>(Switch::Config{"net-t"});
  auto guest = std::make_shared<Capture>();
  sw->add_port("guest", "guest", guest);
  TapPort tap(sw, "aptest4");
  // The host raises the MTU beyond what a guest NIC takes, and sends one
  // big echo request to a neighbour it was told about (no ARP needed).
  BOOST_REQUIRE(sh("ip link set aptest4 mtu 9000 && ip addr add 10.98.0.1/24 dev aptest4 && "
                   "ip neigh add 10.98.0.2 lladdr 02:00:00:00:00:09 dev aptest4")
                    .exit_code == 0);
  sh("busybox ping -c 1 -W 1 -s 8000 10.98.0.2");
  BOOST_TEST(eventually([&] { return port_of(*sw, tap.port()).rx_dropped_bad_frame >= 1u; }));
  BOOST_REQUIRE(sw->wait_idle(5s));
  std::lock_guard lk(guest->m);
  for (const auto& f : guest->frames) BOOST_TEST(f.size() <= size_t{layout::kNetMaxFrameBytes});
  BOOST_TEST(tap.read_errors() == 0u);
}
