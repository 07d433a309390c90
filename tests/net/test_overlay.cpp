// Guests on networks across node processes, as an operator deploys them: a
// controller and two nodes, each an `apiary` process in its own network
// namespace with its own address (the test makes them and removes them),
// the nodes joined by Apiary's VXLAN overlay (`apiary node --vtep`). Debian's
// Linux kernel with the busybox initramfs in every guest.
//
// What a tenant would check: the two guests of network "red" (one on each
// node) ping each other and copy a file over HTTP with the same checksum;
// network "blue" has the same address range: blue-1 (first node) reaches
// blue-2 (second node, which has red-2's address) across the same two
// nodes' tunnel, and the address resolves to blue-2's MAC, never red-2's;
// blue-1 reaches no red guest; `apiary ctl network show` lists the ports and the VTEPs;
// /metrics counts the frames; the first node (run with --taps) reaches
// red-1 through red's host tap once the test gives the tap red's first
// address, and the tap reaches no guest of blue; deleting "red" waits for
// its ports (delete_wait) and ends deleted once the last instance is gone.
//
// ctest runs each case in a nested-KVM VM of its own (tests/CMakeLists.txt,
// label net): network namespaces and VXLAN need root and Debian's kernel.
#define BOOST_TEST_MODULE overlay
#include <boost/test/results_collector.hpp>
#include <boost/test/unit_test.hpp>

#include <google/protobuf/util/json_util.h>

#include <regex>
#include <sstream>

#include "net/tap.hpp"
#include "proto/apiary/v1/api.pb.h"
#include "tests/support/chaos.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary::test;
using namespace apiary::test::chaos;
namespace utf = boost::unit_test;
namespace v1 = apiary::v1;

namespace {

constexpr int kApiPort = 8080;
constexpr int kNodePort = 4242;
const std::string kReady = "apiary-linux: ready kernel=";

template <class M>
bool parse(const std::string& json, M& m) {
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  return google::protobuf::util::JsonStringToMessage(json, &m, o).ok();
}

struct Deployment {
  std::string dir;
  std::unique_ptr<Topology> topo;
  std::unique_ptr<Service> controller;
  std::map<std::string, std::unique_ptr<Service>> nodes;
  std::string token;

  Deployment() {
    char tmpl[] = "/dev/shm/apiary-net-XXXXXX";
    if (::access("/dev/shm", W_OK) != 0) std::memcpy(tmpl, "/tmp/", 5);
    BOOST_REQUIRE(::mkdtemp(tmpl));
    dir = tmpl;
    topo = std::make_unique<Topology>(std::map<std::string, int>{{"ctl", 1}, {"n1", 11}, {"n2", 12}});
    const std::string ctl = topo->address("ctl");
    controller = std::make_unique<Service>(
        Topology::netns("ctl"),
        std::vector<std::string>{"controller", "--host", ctl, "--port", std::to_string(kApiPort), "--node-port",
                                 std::to_string(kNodePort), "--store", dir + "/store.sqlite", "--token-file",
                                 dir + "/token", "--insecure"},
        dir + "/controller.log");
    controller->start();
    for (const std::string n : {"n1", "n2"}) {
      std::vector<std::string> argv{"node",    "--controller", ctl + ":" + std::to_string(kNodePort),
                                    "--name",  n,              "--checkin-ms",
                                    "1000",    "--vcpus",      "8",
                                    "--memory", "2048",        "--vtep",
                                    topo->address(n), "--insecure"};
      if (n == "n1") argv.push_back("--taps");
      nodes[n] = std::make_unique<Service>(Topology::netns(n), argv, dir + "/" + n + ".log");
      nodes[n]->start();
    }
    token = read_token(dir + "/token", 30s);
    BOOST_REQUIRE_MESSAGE(!token.empty(), "no token: " << logs());
    bearer_token() = token;
    BOOST_REQUIRE_MESSAGE(eventually(
                              [&] {
                                v1::NodeList list;
                                auto a = get("/v1/nodes");
                                if (a.status != 200 || !parse(a.body, list)) return false;
                                int up = 0;
                                for (const auto& n : list.nodes()) up += n.state() == "created";
                                return up == 2;
                              },
                              90s),
                          "the nodes did not register: " << logs());
  }
  ~Deployment() {
    // A failed case (an exception included) shows what the processes said
    // before their logs go with the directory.
    if (!utf::results_collector.results(utf::framework::current_test_case().p_id).passed() ||
        std::uncaught_exceptions() > 0)
      BOOST_TEST_MESSAGE("logs at the end of a failed case:\n"
                         << sh("ps -eo pid,etimes,time,stat,args | grep [a]piary").out << logs());
    for (auto& [n, s] : nodes) s->kill(SIGTERM);
    controller->kill(SIGTERM);
    topo.reset();
    sh("rm -rf " + dir);
  }

  std::string logs() const {
    std::string out;
    for (const std::string f : {"controller", "n1", "n2"})
      out += "--- " + f + ":\n" + sh("tail -n 60 " + dir + "/" + f + ".log").out;
    return out;
  }
  std::string api() const { return topo->address("ctl") + ":" + std::to_string(kApiPort); }
  Answer get(const std::string& t, std::chrono::milliseconds d = 20s) {
    return request(topo->address("ctl"), kApiPort, http::verb::get, t, token, {}, d);
  }
  Answer post(const std::string& t, const std::string& body, std::chrono::milliseconds d = 20s) {
    return request(topo->address("ctl"), kApiPort, http::verb::post, t, token, body, d);
  }
  Answer del(const std::string& t, std::chrono::milliseconds d = 20s) {
    return request(topo->address("ctl"), kApiPort, http::verb::delete_, t, token, {}, d);
  }

  std::string network(const std::string& name, const std::string& cidr) {
    auto a = post("/v1/networks", R"({"name":")" + name + R"(","cidr":")" + cidr + R"("})");
    v1::Network n;
    BOOST_REQUIRE_MESSAGE(a.status == 201 || a.status == 200, a.status << " " << a.body);
    BOOST_REQUIRE(parse(a.body, n));
    BOOST_TEST(n.state() == "created");
    return n.id();
  }
  // A Linux instance with one NIC; returns its record once ACTIVE.
  v1::Instance linux_instance(const std::string& name, const std::string& net, const std::string& ipv4 = "") {
    const std::string body = R"({"spec":{"name":")" + name + R"(","board":{"vcpus":1,"memory_mib":128},)" +
                             R"("boot":{"kernel_path":")" + guest_path("linux-vmlinuz") + R"(","initrd_path":")" +
                             guest_path("linux-initramfs.cpio") + R"(","cmdline":"console=ttyS0"},)" +
                             R"("devices":{"nics":[{"network":")" + net + R"(")" +
                             (ipv4.empty() ? "" : R"(,"ipv4":")" + ipv4 + R"(")") + "}]}}}";
    auto a = post("/v1/instances", body);
    v1::Instance inst;
    BOOST_REQUIRE_MESSAGE(a.status == 202 && parse(a.body, inst), a.status << " " << a.body);
    // What the polling saw, each change with its time: the failure message.
    const auto t0 = std::chrono::steady_clock::now();
    std::string seen, trace;
    const bool active = eventually(
        [&] {
          auto g = get("/v1/instances/" + inst.id());
          const bool ok = g.status == 200 && parse(g.body, inst);
          const std::string now = std::to_string(g.status) + " " + (ok ? inst.vm_state() : "");
          if (now != seen) {
            seen = now;
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
            trace += std::to_string(ms.count()) + " ms: " + seen + "\n";
          }
          return ok && inst.vm_state() == "active";
        },
        180s);
    // Built only now: Boost's message operands are evaluated with the check.
    if (!active)
      BOOST_FAIL(name << " is not active; seen:\n"
                      << trace << "actions: " << get("/v1/instances/" + inst.id() + "/actions").body << "\n"
                      << sh("ps -eo pid,etimes,stat,args | grep [a]piary; dmesg | tail -25").out << logs());
    return inst;
  }
};

std::string run(ConsoleClient& c, const std::string& cmd, const std::string& tag, std::chrono::milliseconds d = 90s);

// A guest's shell: waits for the ready marker and the prompt, then keeps
// the kernel's messages off the console (the guests boot without `quiet`
// so that a boot that stops shows where).
std::unique_ptr<ConsoleClient> shell(Deployment& d, const v1::Instance& inst) {
  auto c = std::make_unique<ConsoleClient>(kApiPort, inst.id(), d.topo->address("ctl"));
  const bool ready = c->wait_for(kReady, 240s);
  // Built only now: Boost's message operands are evaluated with the check.
  if (!ready)
    BOOST_FAIL(inst.name() << ": no ready marker; console:\n"
                           << c->received << "\nrecord: " << d.get("/v1/instances/" + inst.id()).body
                           << "\nactions: " << d.get("/v1/instances/" + inst.id() + "/actions").body << "\n"
                           << sh("ps -eo pid,etimes,time,stat,args | grep [a]piary; dmesg | tail -25").out
                           << d.logs());
  c->send("\r");
  BOOST_REQUIRE_MESSAGE(c->wait_for("# ", 60s), inst.name() << ": no prompt:\n" << c->received);
  run(*c, "dmesg -n 1", "QUIET");
  return c;
}

// Runs `cmd` in the guest; the line it prints after it (marker-tagged).
std::string run(ConsoleClient& c, const std::string& cmd, const std::string& tag, std::chrono::milliseconds d) {
  const size_t from = c.received.size();
  // The terminal echoes the command line: the markers are spelled so that
  // only the shell's output contains them ("-""END" prints "-END").
  try {
    c.send(cmd + "; echo " + tag + "-\"\"END\r");
  } catch (const std::exception& e) {
    return std::string("(console lost: ") + e.what() + ")";
  }
  const std::string end = "\n" + tag + "-END";
  if (!c.wait_for(end, d, from)) return "(timed out) " + c.received.substr(from);
  return c.received.substr(from, c.received.find(end, from) - from);
}

bool pings(ConsoleClient& c, const std::string& addr, const std::string& tag) {
  const auto out = run(c, "ping -c 3 -W 3 " + addr + " >/dev/null 2>&1 && echo " + tag + "=y\"\"es || echo " + tag +
                              "=n\"\"o", tag);
  BOOST_TEST_MESSAGE(tag << ": " << out);
  return out.find(tag + "=yes") != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(overlay)

BOOST_AUTO_TEST_CASE(guests_on_two_nodes_share_a_network_and_nothing_else,
                     *utf::precondition(kvm_available) * utf::label("kvm")) {
  Deployment d;
  const std::string red = d.network("red", "10.10.0.0/24");
  const std::string blue = d.network("blue", "10.10.0.0/24");  // the same range: only L2 keeps them apart

  // The scheduler spreads by load: red-1 on n1, red-2 on n2, blue-1 on n1.
  auto r1 = d.linux_instance("red-1", "red");
  auto r2 = d.linux_instance("red-2", "red");
  auto b1 = d.linux_instance("blue-1", "blue", "10.10.0.9/24");
  auto b2 = d.linux_instance("blue-2", "blue", "10.10.0.3/24");  // red-2's address, on blue
  BOOST_TEST(r1.node() == "n1");
  BOOST_TEST(r2.node() == "n2");
  BOOST_TEST(b1.node() == "n1");
  BOOST_TEST(b2.node() == "n2");

  // The controller gave the NICs their addresses; the guests configured them.
  auto c1 = shell(d, r1);
  auto c2 = shell(d, r2);
  auto cb = shell(d, b1);
  BOOST_TEST(c1->received.find(" 10.10.0.2/24 mtu 1450") != std::string::npos, c1->received);
  BOOST_TEST(c2->received.find(" 10.10.0.3/24 mtu 1450") != std::string::npos, c2->received);
  BOOST_TEST(cb->received.find(" 10.10.0.9/24") != std::string::npos, cb->received);

  // Across the overlay, both ways.
  BOOST_TEST(pings(*c1, "10.10.0.3", "R1TOR2"));
  BOOST_TEST(pings(*c2, "10.10.0.2", "R2TOR1"));

  // A file, copied over HTTP from red-1 to red-2, arrives whole.
  const auto made = run(*c1,
                        "mkdir -p /srv && dd if=/dev/urandom of=/srv/blob bs=1k count=512 2>/dev/null && "
                        "md5sum /srv/blob && httpd -p 8000 -h /srv",
                        "SERVE");
  std::smatch m;
  BOOST_REQUIRE_MESSAGE(std::regex_search(made, m, std::regex("([0-9a-f]{32})  /srv/blob")), made);
  const std::string sum = m[1];
  const auto fetched = run(*c2, "wget -q -O /tmp/blob http://10.10.0.2:8000/blob && md5sum /tmp/blob", "FETCH", 180s);
  BOOST_TEST(fetched.find(sum + "  /tmp/blob") != std::string::npos, "red-1: " << sum << "; red-2: " << fetched);

  // blue-1 shares red-1's node and address range, and reaches no one.
  // blue-1 sends (it reaches blue-2 across the nodes); 10.10.0.3 is
  // blue-2 there, never red-2.
  auto cb2 = shell(d, b2);
  BOOST_TEST(pings(*cb, "10.10.0.3", "B1TOB2"));
  const std::string b2_mac = b2.spec().devices().nics(0).mac(), r2_mac = r2.spec().devices().nics(0).mac();
  const auto blue_neigh = run(*cb, "ip neigh show 10.10.0.3", "BNEIGH");
  BOOST_TEST(blue_neigh.find(b2_mac) != std::string::npos, "blue-1: " << blue_neigh << " (blue-2 is " << b2_mac << ")");
  BOOST_TEST(blue_neigh.find(r2_mac) == std::string::npos, "blue-1 resolved red-2: " << blue_neigh);
  BOOST_TEST(!pings(*cb, "10.10.0.2", "B1TOR1"));
  const auto neigh = run(*c1, "ip neigh", "NEIGH");
  BOOST_TEST(neigh.find("10.10.0.9") == std::string::npos, "red-1 heard of blue-1: " << neigh);

  // The host of n1 reaches red-1 through red's tap, given red's first
  // address (the controller leaves it for a gateway); blue-1, on the same
  // range and node, is not reached through it.
  v1::Network red_net;
  BOOST_REQUIRE(parse(d.get("/v1/networks/" + red).body, red_net));
  const std::string tap = apiary::net::tap_name(red_net.vni());
  const auto host = sh("ip netns exec " + Topology::netns("n1") + " sh -c 'ip addr add 10.10.0.1/24 dev " + tap +
                       " && ip -o link show dev " + tap + " && busybox ping -c 3 -W 3 10.10.0.2'");
  BOOST_TEST(host.exit_code == 0, "n1's host to red-1 through " << tap << ": " << host.out << host.err);
  BOOST_TEST(host.out.find("mtu 1450") != std::string::npos, host.out);
  BOOST_TEST(pings(*c1, "10.10.0.1", "R1TOHOST"));
  BOOST_TEST(!pings(*cb, "10.10.0.1", "B1TOHOST"));

  // What an operator sees.
  auto show = run_process({APIARY_BINARY, "ctl", "--api", d.api(), "--token-file", d.dir + "/token", "network",
                           "show", red},
                          "", 60s);
  BOOST_TEST_MESSAGE("ctl network show:\n" << show.out << show.err);
  BOOST_TEST(show.exit_code == 0);
  BOOST_TEST(show.out.find(r1.id()) != std::string::npos);
  BOOST_TEST(show.out.find("10.10.0.3/24") != std::string::npos);
  BOOST_TEST(show.out.find(d.topo->address("n1") + ":4789") != std::string::npos);
  BOOST_TEST(show.out.find(d.topo->address("n2") + ":4789") != std::string::npos);
  const auto metrics = d.get("/metrics").body;
  BOOST_TEST(metrics.find("apiary_net_port_frames_total{node=\"n2\",network=\"" + red + "\",port=\"" + r2.id() +
                          "/0\",kind=\"guest\",direction=\"rx\"}") != std::string::npos,
             metrics.substr(0, 4000));
  BOOST_TEST(metrics.find("apiary_net_port_frames_total{node=\"n1\",network=\"" + red + "\",port=\"" + tap +
                          "\",kind=\"tap\",direction=\"rx\"}") != std::string::npos);

  // On any failure so far: what the guests, the nodes and the data plane say.
  namespace ut = boost::unit_test;
  if (!ut::results_collector.results(ut::framework::current_test_case().p_id).passed()) {
    std::string net_lines;
    std::istringstream in(metrics);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("apiary_net_", 0) == 0) net_lines += line + "\n";
    // The guest's counters, and each virtio device's id and status (0x40:
    // the device asked for a reset, e.g. after a queue error).
    const std::string look =
        "cat /proc/net/dev; for v in /sys/bus/virtio/devices/*; do echo $v $(cat $v/device $v/status); done; ip neigh; "
        "ip -s link show eth0; grep -i virtio /proc/interrupts; dmesg | grep -iv 'audit' | tail -n 25";
    BOOST_TEST_MESSAGE("diagnostics:\nred-1: " << run(*c1, look, "DIAG1") << "\nred-2: " << run(*c2, look, "DIAG2")
                                              << "\nblue-1: " << run(*cb, look, "DIAG3") << "\nblue-2: "
                                              << run(*cb2, look, "DIAG4") << "\n" << net_lines << d.logs());
  }

  // Deleting red waits for its ports.
  auto a = d.del("/v1/networks/" + red);
  BOOST_TEST(a.body.find("\"delete_wait\"") != std::string::npos, a.status << " " << a.body);
  BOOST_TEST(d.del("/v1/instances/" + r1.id()).status / 100 == 2);
  BOOST_TEST(eventually([&] { return d.get("/v1/instances/" + r1.id()).body.find("\"deleted\"") != std::string::npos; },
                        120s));
  BOOST_TEST(d.get("/v1/networks/" + red).body.find("\"delete_wait\"") != std::string::npos);
  BOOST_TEST(d.del("/v1/instances/" + r2.id()).status / 100 == 2);
  BOOST_TEST(eventually([&] { return d.get("/v1/networks/" + red).body.find("\"deleted\"") != std::string::npos; },
                        120s),
             d.get("/v1/networks/" + red).body);
  // blue is untouched.
  BOOST_TEST(d.get("/v1/networks/" + blue).body.find("\"created\"") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
