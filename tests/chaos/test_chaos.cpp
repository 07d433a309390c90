// The chaos suite: the control plane as deployed (a controller and three
// nodes, each an `apiary` process in a network namespace of its own, linked
// by mutual TLS, the nodes running real KVM VMs) under real faults, with
// Jepsen's structure:
//
//  * a nemesis that, one fault at a time, cuts a node off from the
//    controller (iptables), slows and drops its packets (tc netem), freezes
//    a process (SIGSTOP/SIGCONT), or kills one with SIGKILL and restarts it
//    (the controller on the same store);
//  * a workload of several clients creating instances with idempotency keys
//    (retrying until answered, and now and then sending an answered create
//    again, as a client that lost the answer would) and running actions on
//    them (pause, unpause, stop, start, reboot, delete);
//  * a checker that, once the faults are healed and the cluster has
//    settled, compares the history with what the controller's records say
//    and with what each node says it runs (its --status-file) and what the
//    kernel says it runs (the node process's KVM VM descriptors).
//
// The second case breaks a rule on purpose (the controller ignores
// idempotency keys) and requires the checker to notice: a checker that
// cannot fail proves nothing. Both print one summary line; docs/chaos.md
// has one run's.
//
// Everything is seeded (APIARY_CHAOS_SEED overrides), but processes and the
// network are real, so two runs with one seed inject the same faults at the
// same times, not the same interleavings.
#define BOOST_TEST_MODULE chaos
#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <condition_variable>
#include <cstring>
#include <random>
#include <set>
#include <sstream>

#include "proto/apiary/v1/api.pb.h"
#include "tests/support/chaos.hpp"
#include "tests/support/test_support.hpp"

namespace utf = boost::unit_test;
using namespace apiary::test;
using namespace apiary::test::chaos;
using namespace std::chrono_literals;
namespace v1 = apiary::v1;

namespace {

using Clock = std::chrono::steady_clock;

const std::vector<std::string> kNodes = {"n1", "n2", "n3"};
constexpr int kApiPort = 8080;
constexpr int kNodePort = 4242;

// True inside scripts/kvm-vm's VM (QEMU's software emulation), which has
// its status port.
bool in_emulated_vm() { return ::access("/dev/virtio-ports/apiary.status", F_OK) == 0; }

uint64_t seed_from_env(uint64_t fallback) {
  const char* s = std::getenv("APIARY_CHAOS_SEED");
  return s && *s ? std::strtoull(s, nullptr, 10) : fallback;
}

template <class M>
bool parse(const std::string& json, M& out) {
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  return google::protobuf::util::JsonStringToMessage(json, &out, o).ok();
}

// Sleeps `d` unless `stop` is set first.
class Stopper {
 public:
  void stop() {
    std::lock_guard<std::mutex> g(m_);
    stopped_ = true;
    cv_.notify_all();
  }
  bool stopped() {
    std::lock_guard<std::mutex> g(m_);
    return stopped_;
  }
  // False if stopped meanwhile.
  bool sleep(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> l(m_);
    return !cv_.wait_for(l, d, [&] { return stopped_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool stopped_ = false;
};

// --- the cluster -------------------------------------------------------------

struct Cluster {
  std::string dir;
  std::unique_ptr<Topology> net;
  std::unique_ptr<Service> controller;
  std::map<std::string, std::unique_ptr<Service>> nodes;
  std::string token;

  explicit Cluster(const std::vector<std::string>& controller_extra = {}) {
    // The store on tmpfs where there is one: the faults are process and
    // network faults, not power loss, and fsync over the VM's 9p share
    // costs more than the test can wait.
    char tmpl[] = "/dev/shm/apiary-chaos-XXXXXX";
    if (::access("/dev/shm", W_OK) != 0) std::memcpy(tmpl, "/tmp/", 5);
    BOOST_REQUIRE(::mkdtemp(tmpl));
    dir = tmpl;
    std::map<std::string, int> members = {{"ctl", 1}};
    for (size_t i = 0; i < kNodes.size(); ++i) members[kNodes[i]] = 11 + static_cast<int>(i);
    net = std::make_unique<Topology>(members);
    const std::string ctl = net->address("ctl");
    // Mutual TLS between the nodes and the controller, as deployed, where
    // the machine is fast enough: under the VM's software emulation the
    // handshakes (and the reconnects after every fault) took longer than the
    // heartbeat timeout, nodes connected and were dropped over and over, and
    // the cluster never settled (2026-12-03). There the link is plain text
    // (APIARY_CHAOS_TLS=1 forces TLS); tests/e2e/test_tls covers TLS itself.
    const char* force_tls = std::getenv("APIARY_CHAOS_TLS");
    const bool use_tls = (force_tls && *force_tls == '1') || !in_emulated_vm();
    const std::string pki = dir + "/pki";
    auto certs = run_process({APIARY_BINARY, "certs", "init", "--dir", pki}, "", 60s);
    BOOST_REQUIRE_MESSAGE(certs.exit_code == 0, certs.err);
    for (const std::string name : {"controller", "n1", "n2", "n3"}) {
      certs = run_process({APIARY_BINARY, "certs", "issue", name, "--dir", pki}, "", 60s);
      BOOST_REQUIRE_MESSAGE(certs.exit_code == 0, certs.err);
    }
    auto tls = [&](const std::string& name) {
      if (!use_tls) return std::vector<std::string>{"--insecure"};
      return std::vector<std::string>{"--ca", pki + "/ca.crt", "--cert", pki + "/" + name + ".crt", "--key",
                                      pki + "/" + name + ".key"};
    };
    std::vector<std::string> argv = {"controller", "--host", ctl, "--port", std::to_string(kApiPort),
                                     "--node-port", std::to_string(kNodePort), "--store", dir + "/store.sqlite",
                                     "--token-file", dir + "/token", "--checkin-max-ms", "10000"};
    argv.insert(argv.end(), controller_extra.begin(), controller_extra.end());
    for (auto& a : tls("controller")) argv.push_back(a);
    controller = std::make_unique<Service>(Topology::netns("ctl"), argv, dir + "/controller.log");
    controller->start();
    for (const auto& n : kNodes) {
      std::vector<std::string> node_argv = {"node", "--controller", ctl + ":" + std::to_string(kNodePort), "--name",
                                            n, "--checkin-ms", "1000", "--vcpus", "32", "--memory", "8192",
                                            "--status-file", status_file(n)};
      for (auto& a : tls(n)) node_argv.push_back(a);
      nodes[n] = std::make_unique<Service>(Topology::netns(n), node_argv, dir + "/" + n + ".log");
      nodes[n]->start();
    }
    token = read_token(dir + "/token", 30s);
    BOOST_REQUIRE_MESSAGE(!token.empty(), "the controller wrote no token: " << tail(controller->log()));
    if (auto seen = wait_nodes(90s); !seen.empty()) BOOST_FAIL("the nodes did not register:" << seen);
  }
  ~Cluster() {
    for (auto& [n, s] : nodes) s->kill(SIGKILL);
    controller->kill(SIGKILL);
    net.reset();
    sh("rm -rf " + dir);
  }

  std::string status_file(const std::string& node) const { return dir + "/" + node + ".status"; }

  Answer get(const std::string& target, std::chrono::milliseconds d = 5s) {
    return request(net->address("ctl"), kApiPort, http::verb::get, target, token, {}, d);
  }
  Answer post(const std::string& target, const std::string& body, std::chrono::milliseconds d = 5s) {
    return request(net->address("ctl"), kApiPort, http::verb::post, target, token, body, d);
  }

  // Every node registered ("created") and checked in within the last 3 s.
  // Empty when they are; otherwise what the last look saw.
  std::string wait_nodes(std::chrono::milliseconds d) {
    const auto end = Clock::now() + d;
    std::string seen = "no answer";
    while (Clock::now() < end) {
      v1::NodeList list;
      auto a = get("/v1/nodes");
      if (a.status == 200 && parse(a.body, list)) {
        size_t fresh = 0;
        seen.clear();
        for (const auto& n : list.nodes()) {
          fresh += n.state() == "created" && n.checkin_age_ms() < 3000;
          seen += " " + n.name() + "=" + n.state() + "/" + std::to_string(n.checkin_age_ms()) + "ms";
        }
        if (fresh == kNodes.size()) return {};
      } else {
        seen = "GET /v1/nodes: " + std::to_string(a.status) + " " + a.body.substr(0, 120);
      }
      std::this_thread::sleep_for(250ms);
    }
    return seen;
  }

  static std::string tail(const std::string& path) {
    return sh("tail -n 30 " + path).out;
  }
};

// --- the history ---------------------------------------------------------------

struct History {
  std::mutex m;
  std::map<std::string, std::string> created;  // idempotency key -> instance id (first answer)
  std::set<std::string> unanswered;             // keys never answered
  std::vector<std::string> problems;            // seen by the clients themselves
  struct Acked {
    std::string instance, request_id, action;
  };
  std::vector<Acked> actions;
  int create_retries = 0, resends = 0, refused = 0, indeterminate = 0;
  std::vector<std::string> faults;

  void problem(std::string p) {
    std::lock_guard<std::mutex> g(m);
    problems.push_back(std::move(p));
  }
};

// --- the nemesis ---------------------------------------------------------------

// One fault at a time, each healed before the next, for `duration`.
void nemesis(Cluster& c, History& h, uint64_t seed, std::chrono::seconds duration, Stopper& stop) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const auto t0 = Clock::now();
  auto log = [&](const std::string& what) {
    const auto s = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    std::lock_guard<std::mutex> g(h.m);
    h.faults.push_back(std::to_string(s / 1000.0).substr(0, 5) + "s " + what);
    BOOST_TEST_MESSAGE("nemesis: " << h.faults.back());
  };
  auto took = [&](Clock::time_point since) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
    if (ms > 3000) log("(healing took " + std::to_string(ms) + " ms)");
  };
  while (Clock::now() - t0 < duration && stop.sleep(std::chrono::milliseconds(pick(1000, 3000)))) {
    const std::string node = kNodes[static_cast<size_t>(pick(0, static_cast<int>(kNodes.size()) - 1))];
    const auto hold = std::chrono::milliseconds(pick(2000, 7000));
    switch (pick(0, 5)) {
      case 0:
        log("partition " + node + " from the controller for " + std::to_string(hold.count()) + " ms");
        c.net->partition(node, "ctl");
        stop.sleep(hold);
        {
          const auto t = Clock::now();
          c.net->heal(node);
          took(t);
        }
        break;
      case 1: {
        const int delay = pick(50, 300), loss = pick(5, 30);
        log("netem on " + node + ": delay " + std::to_string(delay) + " ms, loss " + std::to_string(loss) + "% for " +
            std::to_string(hold.count()) + " ms");
        c.net->degrade(node, delay, delay / 2, loss);
        stop.sleep(hold);
        {
          const auto t = Clock::now();
          c.net->heal(node);
          took(t);
        }
        break;
      }
      case 2:
        log("SIGSTOP " + node + " for " + std::to_string(hold.count()) + " ms");
        c.nodes[node]->kill(SIGSTOP);
        stop.sleep(hold);
        c.nodes[node]->kill(SIGCONT);
        break;
      case 3:
        log("SIGSTOP controller for " + std::to_string(hold.count() / 2) + " ms");
        c.controller->kill(SIGSTOP);
        stop.sleep(hold / 2);
        c.controller->kill(SIGCONT);
        break;
      case 4:
        log("SIGKILL " + node + ", restart after " + std::to_string(hold.count() / 2) + " ms");
        c.nodes[node]->kill(SIGKILL);
        stop.sleep(hold / 2);
        c.nodes[node]->start();
        break;
      case 5:
        log("SIGKILL controller, restart after " + std::to_string(hold.count() / 4) + " ms");
        c.controller->kill(SIGKILL);
        stop.sleep(hold / 4);
        c.controller->start();
        break;
    }
  }
}

// --- the workload --------------------------------------------------------------

std::string create_body(const std::string& key) {
  return R"({"request_id":")" + key + R"(","spec":{"name":")" + key +
         R"(","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"}}})";
}

// A client: creates with idempotency keys (retried until answered), then
// actions on its own instances, until `stop`.
void client(Cluster& c, History& h, int k, uint64_t seed, int max_instances, Stopper& stop) {
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(k));
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  std::vector<std::string> mine;
  int made = 0;
  while (stop.sleep(std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 1200)(rng)))) {
    if (made < max_instances && (mine.empty() || chance(0.35))) {
      const std::string key = "c" + std::to_string(k) + "-" + std::to_string(made++);
      std::string id;
      // Retried until answered: a client that gets no answer cannot know
      // whether the create was accepted; the key makes the retry safe.
      const auto end = Clock::now() + 120s;
      for (int attempt = 0; id.empty() && Clock::now() < end; ++attempt) {
        if (attempt) {
          std::lock_guard<std::mutex> g(h.m);
          ++h.create_retries;
        }
        auto a = c.post("/v1/instances", create_body(key));
        v1::Instance inst;
        if (a.status == 202 && parse(a.body, inst) && !inst.id().empty()) {
          id = inst.id();
        } else if (a.status >= 400 && a.status < 500) {
          h.problem("create " + key + " refused: " + std::to_string(a.status) + " " + a.body);
          break;
        } else {
          std::this_thread::sleep_for(1s);
        }
      }
      std::lock_guard<std::mutex> g(h.m);
      if (id.empty()) {
        h.unanswered.insert(key);
        continue;
      }
      h.created[key] = id;
      mine.push_back(id);
    } else if (!mine.empty()) {
      const size_t i = std::uniform_int_distribution<size_t>(0, mine.size() - 1)(rng);
      const std::string id = mine[i];
      if (chance(0.2)) {
        // The answer was "lost": the same create again must name the same instance.
        std::string key;
        {
          std::lock_guard<std::mutex> g(h.m);
          for (const auto& [k2, v] : h.created)
            if (v == id) key = k2;
          ++h.resends;
        }
        auto a = c.post("/v1/instances", create_body(key));
        v1::Instance inst;
        if (a.status == 202 && parse(a.body, inst) && inst.id() != id)
          h.problem("duplicate: create " + key + " answered " + id + " and then " + inst.id());
        continue;
      }
      static const std::vector<std::string> kActions = {
          R"({"action":"pause"})", R"({"action":"unpause"})", R"({"action":"stop"})",
          R"({"action":"start"})", R"({"action":"reboot","type":"SOFT"})", R"({"action":"reboot","type":"HARD"})",
          R"({"action":"delete"})"};
      const size_t which = chance(0.05) ? kActions.size() - 1
                                        : std::uniform_int_distribution<size_t>(0, kActions.size() - 2)(rng);
      auto a = c.post("/v1/instances/" + id + "/actions", kActions[which]);
      std::lock_guard<std::mutex> g(h.m);
      v1::ActionAccepted acc;
      if (a.status == 202 && parse(a.body, acc)) {
        h.actions.push_back({id, acc.request_id(), acc.action()});
        if (acc.action() == "delete") mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(i));
      } else if (a.status == 0 || a.status >= 500) {
        ++h.indeterminate;  // accepted or not: the checker allows both
      } else {
        ++h.refused;  // 409 in the wrong state, 503 while its node is away
      }
    }
  }
}

// --- the checker ---------------------------------------------------------------

struct Observed {
  bool listed = false;  // the records were read (a listing of instances and their logs)
  std::vector<v1::Instance> instances;
  std::map<std::string, v1::ActionLog> logs;
  std::map<std::string, std::map<std::string, std::string>> node_view;  // node -> id -> power
  std::map<std::string, int> kvm_vms;                                   // node -> VMs per the kernel
};

std::map<std::string, std::string> read_status(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  std::string id, power;
  while (in >> id >> power) out[id] = power;
  return out;
}

// What a successful action leaves the record's vm_state at ("" for none of
// those the workload and the controller's own repairs use).
std::string state_after(const std::string& action) {
  if (action == "create" || action == "unpause" || action == "start" || action == "reboot_soft" ||
      action == "reboot_hard" || action == "reboot")
    return "active";
  if (action == "pause") return "paused";
  if (action == "stop") return "stopped";
  if (action == "delete") return "deleted";
  return "";
}

std::vector<std::string> check(const History& h, const Observed& o) {
  std::vector<std::string> v = h.problems;
  // Never read: every answered create would look lost, which says nothing.
  if (!o.listed) return v;
  std::map<std::string, const v1::Instance*> by_id;
  std::map<std::string, int> by_name;
  for (const auto& i : o.instances) {
    by_id[i.id()] = &i;
    ++by_name[i.name()];
  }
  // No acknowledged create lost, none duplicated; unanswered ones at most once.
  for (const auto& [key, id] : h.created) {
    if (!by_id.count(id)) v.push_back("lost: create " + key + " was answered " + id + ", which does not exist");
    if (by_name[key] != 1) v.push_back("duplicate: " + std::to_string(by_name[key]) + " instances named " + key);
  }
  for (const auto& key : h.unanswered)
    if (by_name[key] > 1) v.push_back("duplicate: " + std::to_string(by_name[key]) + " instances named " + key);
  // Every acknowledged action in its log exactly once, and ended.
  for (const auto& a : h.actions) {
    auto log = o.logs.find(a.instance);
    int seen = 0;
    if (log != o.logs.end())
      for (const auto& r : log->second.actions())
        if (r.request_id() == a.request_id) {
          ++seen;
          if (r.finish() == 0) v.push_back("unended: " + a.action + " " + a.request_id + " of " + a.instance);
        }
    if (seen != 1)
      v.push_back((seen ? "duplicate: " : "lost: ") + a.action + " " + a.request_id + " of " + a.instance +
                  " is in its log " + std::to_string(seen) + " times");
  }
  // Every action ended, and the record's state is what its log explains.
  for (const auto& [id, log] : o.logs) {
    const auto* rec = by_id.count(id) ? by_id[id] : nullptr;
    if (!rec) continue;
    std::string expected, last_result;
    for (const auto& r : log.actions()) {
      if (r.result() == "running") v.push_back("unended: " + r.action() + " " + r.request_id() + " of " + id);
      if (r.result() == "success" && !state_after(r.action()).empty()) expected = state_after(r.action());
      last_result = r.result();
    }
    const bool explained_error = rec->vm_state() == "error" && last_result == "error";
    std::string story;  // the log in short, for the violation's text
    for (const auto& r : log.actions()) {
      story += " | " + r.action() + " " + r.result();
      if (r.events_size()) story += ": " + r.events(r.events_size() - 1);
    }
    if (!rec->task_state().empty() && rec->task_state() != "none")
      v.push_back("unsettled: " + id + " still has task_state " + rec->task_state());
    else if (rec->vm_state() != expected && !explained_error)
      v.push_back("unexplained: " + id + " is " + rec->vm_state() + " but its log's last successful action leaves it " +
                  (expected.empty() ? "nothing" : expected) + "; log" + story);
  }
  // The nodes' own view: no instance on two nodes; the records agree.
  std::map<std::string, std::vector<std::string>> live;  // id -> "node:power" where it runs or is paused
  for (const auto& [node, view] : o.node_view) {
    int vms = 0;
    for (const auto& [id, power] : view) {
      if (power == "shutdown") continue;
      ++vms;
      live[id].push_back(node + ":" + power);
    }
    auto k = o.kvm_vms.find(node);
    if (k != o.kvm_vms.end() && k->second != vms)
      v.push_back("disagree: node " + node + " says it runs " + std::to_string(vms) + " VMs, its process holds " +
                  std::to_string(k->second));
  }
  for (const auto& [id, where] : live) {
    if (where.size() > 1) {
      std::string w;
      for (const auto& x : where) w += " " + x;
      v.push_back("split brain: " + id + " runs on" + w);
    }
    const auto* rec = by_id.count(id) ? by_id[id] : nullptr;
    const std::string node = where.front().substr(0, where.front().find(':'));
    const std::string power = where.front().substr(where.front().find(':') + 1);
    if (!rec) {
      v.push_back("stray: " + id + " runs on " + node + " with no record");
    } else if (rec->node() != node || !((rec->vm_state() == "active" && power == "running") ||
                                         (rec->vm_state() == "paused" && power == "paused"))) {
      v.push_back("disagree: " + id + " is " + power + " on " + node + "; its record says " + rec->vm_state() +
                  " on " + rec->node());
    }
  }
  for (const auto& i : o.instances)
    if ((i.vm_state() == "active" || i.vm_state() == "paused") && !live.count(i.id()))
      v.push_back("disagree: " + i.id() + " is " + i.vm_state() + " on " + i.node() + " but no node runs it");
  return v;
}

struct RunSummary {
  std::vector<std::string> violations;
  std::string line;
  size_t faults = 0, creates = 0, actions = 0;
};

// Whether a run's violations are a failure to look into (the processes'
// stacks are taken, about 30 s per process under the VM's emulation) or
// what the case provokes on purpose (the store and logs are kept, no more).
enum class Violations { investigate, expected };

// The whole run: cluster, nemesis and clients for `duration`, heal, settle,
// observe, check.
RunSummary run(uint64_t seed, std::chrono::seconds duration, int clients, int per_client,
               const std::vector<std::string>& controller_extra = {},
               Violations violations = Violations::investigate) {
  Cluster c(controller_extra);
  History h;
  Stopper stop_faults, stop_clients;
  std::vector<std::thread> threads;
  for (int k = 0; k < clients; ++k)
    threads.emplace_back([&, k] { client(c, h, k, seed, per_client, stop_clients); });
  std::thread nem([&] {
    try {
      nemesis(c, h, seed, duration, stop_faults);
    } catch (const std::exception& e) {
      h.problem(std::string("nemesis: ") + e.what());
    }
  });
  nem.join();
  // Heal: every process running, the network whole.
  for (auto& [n, s] : c.nodes) {
    s->kill(SIGCONT);
    if (!s->running()) s->start();
    c.net->heal(n);
  }
  c.controller->kill(SIGCONT);
  if (!c.controller->running()) c.controller->start();
  stop_clients.stop();
  for (auto& t : threads) t.join();

  // Settle (bounded): nodes back, no task in flight, every action ended.
  Observed o;
  const auto end = Clock::now() + 240s;
  bool settled = false;
  std::string why;
  while (!settled && Clock::now() < end) {
    std::this_thread::sleep_for(1s);
    if (!c.controller->running()) c.controller->start();
    for (auto& [n, svc] : c.nodes)
      if (!svc->running()) svc->start();
    if (auto seen = c.wait_nodes(1s); !seen.empty()) {
      why = "the nodes are not all checked in:" + seen;
      continue;
    }
    v1::InstanceList list;
    auto a = c.get("/v1/instances", 20s);
    why = "GET /v1/instances: " + std::to_string(a.status) + " " + a.body.substr(0, 200);
    if (a.status != 200 || !parse(a.body, list)) continue;
    why = "an instance has a task in flight or an unended action";
    settled = true;
    o.listed = true;
    o.instances.assign(list.instances().begin(), list.instances().end());
    o.logs.clear();
    for (const auto& i : o.instances) {
      if (!i.task_state().empty() && i.task_state() != "none") settled = false;
      v1::ActionLog log;
      auto l = c.get("/v1/instances/" + i.id() + "/actions");
      if (l.status != 200 || !parse(l.body, log)) {
        settled = false;
        break;
      }
      for (const auto& r : log.actions()) settled = settled && r.finish() != 0;
      o.logs[i.id()] = log;
    }
  }
  // Two check-ins later every node has written what it runs now.
  std::this_thread::sleep_for(2500ms);
  for (const auto& n : kNodes) {
    o.node_view[n] = read_status(c.status_file(n));
    o.kvm_vms[n] = kvm_vms_of(c.nodes[n]->pid());
  }
  RunSummary s;
  s.violations = check(h, o);
  // No process ends by itself: the nemesis kills and restarts them, and a
  // node or controller that stops on its own is a failure of its own.
  auto ended = [&](const std::string& who, Service& svc) {
    svc.running();  // notices an end since the last look
    for (const auto& how : svc.ends_by_itself()) s.violations.push_back("crash: " + who + " ended by itself (" + how + ")");
  };
  ended("the controller", *c.controller);
  for (const auto& n : kNodes) ended("node " + n, *c.nodes[n]);
  s.faults = h.faults.size();
  s.creates = h.created.size();
  s.actions = h.actions.size();
  // First, so that a short excerpt of the output still says why.
  if (!settled) s.violations.insert(s.violations.begin(), "unsettled after 240 s: " + why);
  std::map<std::string, int> states;
  for (const auto& i : o.instances) ++states[i.vm_state()];
  std::ostringstream line;
  line << "chaos: seed " << seed << ", " << h.faults.size() << " faults in " << duration.count() << " s; creates "
       << h.created.size() << " answered (" << h.create_retries << " retries, " << h.resends
       << " resent), " << h.unanswered.size() << " unanswered; actions " << h.actions.size() << " accepted, "
       << h.refused << " refused, " << h.indeterminate << " unanswered; instances";
  for (const auto& [st, n] : states) line << " " << st << "=" << n;
  line << "; violations " << s.violations.size();
  s.line = line.str();
  std::cout << s.line << std::endl;
  // vCPU threads the reaper found still running 10 s after their actor
  // ended (actors/thread_reaper.hpp): not a violation (the VM's nested
  // emulation can hold a vCPU in the guest), but worth a line.
  const std::string late = sh("cat " + c.dir + "/n*.log | grep -c 'has not stopped' || true").out;
  if (!late.empty() && late[0] != '0')
    std::cout << "chaos: vCPU threads still running 10 s after their actor ended: " << late << std::flush;
  for (const auto& f : h.faults) BOOST_TEST_MESSAGE("fault: " << f);
  constexpr size_t kShown = 20;  // violations printed; the rest are counted (a long list hides the logs)
  for (size_t i = 0; i < s.violations.size() && i < kShown; ++i) BOOST_TEST_MESSAGE("violation: " << s.violations[i]);
  if (s.violations.size() > kShown) BOOST_TEST_MESSAGE("... and " << s.violations.size() - kShown << " more");
  if (!s.violations.empty()) {
    // The store and the processes' logs, kept for a look after the VM is gone
    // (the system temp directory is the host's: kvm-vm shares it), one
    // directory per case: the broken-rule case fails on purpose after this one.
    const std::string keep =
        "/tmp/apiary-chaos-last-" + std::string(boost::unit_test::framework::current_test_case().p_name);
    sh("rm -rf " + keep + " && cp -a " + c.dir + " " + keep);
    if (violations == Violations::expected) return s;
    // Every thread's stack in every process, for a process that is alive
    // but does nothing (gdb without debug info: names only, but about 30 s
    // a process under the VM's emulation); printed for the nodes that have
    // not checked in.
    v1::NodeList nodes;
    auto listed = c.get("/v1/nodes");
    if (listed.status == 200) parse(listed.body, nodes);
    auto stacks = [&](const std::string& who, pid_t pid, bool print) {
      if (pid <= 0) return;
      const std::string file = keep + "/" + who + ".stacks";
      sh("gdb --readnever -batch -p " + std::to_string(pid) + " -ex 'thread apply all bt 20' > " + file + " 2>&1",
         120s);
      if (print) std::cout << who << " stacks (" << file << "):\n" << sh("grep -E '^(Thread|#)' " + file).out << "\n";
    };
    stacks("controller", c.controller->pid(), false);
    for (const auto& n : kNodes) {
      bool fresh = false;
      for (const auto& seen : nodes.nodes())
        fresh = fresh || (seen.name() == n && seen.state() == "created" && seen.checkin_age_ms() < 3000);
      stacks(n, c.nodes[n]->pid(), !fresh);
    }
    // The logs' tails on stdout: the VM and its /dev/shm are gone afterwards.
    std::cout << "store and logs copied to " << keep << "\n"
              << "controller log:\n" << Cluster::tail(c.controller->log()) << "\n";
    for (const auto& n : kNodes) std::cout << n << " log:\n" << Cluster::tail(c.nodes[n]->log()) << "\n";
    std::cout << std::flush;
  }
  return s;
}

}  // namespace

// ctest: one VM per test case
BOOST_AUTO_TEST_SUITE(chaos)

BOOST_AUTO_TEST_CASE(faults_break_no_promise, *utf::precondition(kvm_available) * utf::label("kvm")) {
  auto s = run(seed_from_env(20261203), 90s, 3, 6);
  for (const auto& x : s.violations) BOOST_TEST(x.empty(), x);
  // Not vacuous: faults happened and the workload did something.
  BOOST_TEST(s.faults >= 8u, s.line);
  BOOST_TEST(s.creates >= 12u, s.line);
  BOOST_TEST(s.actions >= 20u, s.line);
}

BOOST_AUTO_TEST_CASE(a_broken_idempotency_rule_is_caught, *utf::precondition(kvm_available) * utf::label("kvm")) {
  auto s = run(seed_from_env(7), 30s, 3, 4, {"--test-break", "ignore-request-ids"}, Violations::expected);
  bool duplicate = false;
  for (const auto& x : s.violations) duplicate = duplicate || x.starts_with("duplicate:");
  BOOST_TEST(duplicate, "the checker did not notice creates that ignore their keys: " << s.line);
}

BOOST_AUTO_TEST_SUITE_END()
