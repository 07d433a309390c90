// The simulator's run loop, fault injection and store checks (see
// simulator.hpp for how a run goes and why).
//
// Who is who in a run:
//  * the controller, behind a proxy actor: nodes and the client talk to the
//    proxy, which forwards every message to the current controller (a
//    controller crash kills the actor; its restart is a new actor on the same
//    SQLite file, and the proxy then forwards to it). While the controller is
//    down the proxy answers request_receiver_down, as a refused connection.
//  * the nodes (the production node actor, simulated vCPU backend), each with
//    its own NodeConfig so that a crashed node restarts as it was;
//  * a client actor that sends the workload's API calls and fault hooks and
//    reports the answers back to the simulator;
//  * a reader connection to the store, for the checks.
// Everything runs on the caller's thread; the simulator reads the trace of
// every message just before it is delivered.
#include "sim/simulator.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include "actors/atoms.hpp"
#include "actors/deadline_timer.hpp"
#include "cluster/control_types.hpp"
#include "cluster/controller_actor.hpp"
#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "cluster/node_actor.hpp"
#include "cluster/state_store.hpp"
#include "proto/apiary/v1/instance.pb.h"
#include "sim/invariants.hpp"
#include "sim/scenario.hpp"
#include "sim/trace.hpp"

namespace apiary::sim {

const vmm::SharedBytes& tiny_guest_image() {
  // Multiboot v1 with the address fields (flag 16): a 32-byte header loaded
  // at 1 MiB, then one HLT. The simulated backend never executes it.
  static const vmm::SharedBytes image = [] {
    const uint32_t magic = 0x1BADB002, flags = 1u << 16, checksum = static_cast<uint32_t>(-(magic + flags));
    const uint32_t load = 0x100000;
    const uint32_t words[8] = {magic, flags, checksum, load, load, 0, 0, load + 32};
    std::vector<uint8_t> out(sizeof words + 1);
    std::memcpy(out.data(), words, sizeof words);
    out.back() = 0xf4;  // hlt
    return out;
  }();
  return image;
}

namespace {

using namespace std::chrono;
using namespace actors;
using control::NodeState;
using control::SfInstanceState;

// The store's clock: Unix milliseconds of simulated time 0 (2023-11-14).
constexpr int64_t kEpochMs = 1'700'000'000'000;

class Simulator;
caf::behavior client_impl(caf::event_based_actor* self, Simulator* sim);
caf::behavior proxy_impl(caf::event_based_actor* self, Simulator* sim);

// The proxy's timer for a slow check-in (SimLinks).
using sim_delay_atom = caf::atom_constant<caf::atom("simdelay")>;
// A placer's timer for its placements' deadlines.
using sim_place_dl_atom = caf::atom_constant<caf::atom("simplacedl")>;

struct SimNode {
  std::string name;
  NodeConfig cfg;
  node_actor handle;
  bool up = false;
  bool cut = false;
  bool held = false;  // message delay: its mailbox fills, it runs nothing
  bool link_up = true;  // it reaches the controller (SimLinks: not after a restart until it reconnects)
  bool slow = false;    // its check-ins are late (SimLinks)
  uint64_t checkin_due = 0;  // when its last delayed check-in reaches the controller (keeps them in order)
};

int count_threads() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

uint64_t peak_rss_kib() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss);
}

bool printable(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

class Simulator {
 public:
  Simulator(const v1::Scenario& s, const SimOptions& o)
      : sc_(s), opt_(o), sched_rng_(o.seed), draw_rng_(o.seed * 0x9E3779B97F4A7C15ull + 1), trace_(o.trace_path, o.keep_trace) {}

  ~Simulator() {
    if (sys_) abandon_system();
    reader_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  SimResult run();
  // Exit messages to every actor the simulator started, delivered in FIFO
  // order until nothing is left to run.
  void stop_actors();
  // run() threw before its own shutdown: stop the actors, then let go of the
  // actor system. CAF's destructor waits until no actor is left, and under
  // the test scheduler a leftover one never ends: then the system is leaked
  // on purpose, so that the error reaches the caller instead of a hang.
  void abandon_system() noexcept;
  // Lets go of the handles, then of the actor system: destroyed, or, with
  // actors left over (run() reports them as a leak), leaked on purpose.
  void drop_system(bool leftover);

  // --- called by the client actors ---
  caf::actor proxy() const { return proxy_; }
  node_actor node_handle(size_t i) const { return nodes_.at(i).handle; }
  bool node_up(size_t i) const { return nodes_.at(i).up; }
  void on_created(const std::string& name, const std::string& id) {
    if (auto it = ids_.find(name); it != ids_.end()) {
      if (it->second != id)
        violation(kCreateError, {id, it->second},
                  "create " + name + " acknowledged twice, as " + it->second + " and as " + id);
      return;
    }
    ids_[name] = id;
    names_[id] = name;
    acked_.push_back(id);
    ++counters_["sim.creates_acked"];
    timeline("workload", "create " + name + " acknowledged: " + id);
  }
  void on_create_failed(const std::string& name, const caf::error& e) {
    auto it = creates_.find(name);
    if (it != creates_.end() && it->second.retry_ms && it->second.tries < kMaxCreateTries) {
      ++counters_["sim.create_retries"];
      timeline("workload", "create " + name + " failed: " + show(e) + "; again in " +
                               std::to_string(it->second.retry_ms) + " ms");
      at(now_ms() + it->second.retry_ms, [this, name] { send_create(name); });
      return;
    }
    ++counters_["sim.creates_failed"];
    timeline("workload", "create " + name + " failed: " + show(e));
  }
  void on_accepted(const std::string& id, const std::string& action, const std::string& request) {
    ++counters_["sim.actions_accepted"];
    accepted_.push_back({id, request});
    timeline("workload", action + " " + label_of_instance(id) + " accepted: " + request);
  }
  void on_refused(const std::string& id, const std::string& action, const caf::error& e) {
    ++counters_["sim.actions_refused"];
    timeline("workload", action + " " + label_of_instance(id) + " refused: " + show(e));
  }
  void on_placed(bool ok) { ++counters_[ok ? "sim.preplaced" : "sim.preplace_failed"]; }

  // --- called by the proxy (SimLinks) ---
  const caf::actor& controller() const { return *ctl_target_; }
  // The node a message comes from, if a node sent it.
  std::optional<size_t> node_of_sender(const caf::strong_actor_ptr& sender) const {
    if (!sender) return std::nullopt;
    auto it = node_of_actor_.find(sender->id());
    if (it == node_of_actor_.end()) return std::nullopt;
    return it->second;
  }
  bool link_up(size_t node) const { return nodes_.at(node).link_up; }
  // How long a message of `node` to the controller is held: a slow node's
  // check-ins are late (never earlier than its previous one).
  uint64_t checkin_delay(size_t node, const caf::type_erased_tuple& m);

 private:
  // --- time ---
  caf::scheduler::test_coordinator& sched() { return *sched_; }
  int64_t clock_ns() { return duration_cast<nanoseconds>(sched().clock().current_time.time_since_epoch()).count(); }
  uint64_t now_ms() { return static_cast<uint64_t>((clock_ns() - base_ns_) / 1000000); }
  int64_t store_now() { return kEpochMs + clock_ns() / 1000000; }

  void at(uint64_t t_ms, std::function<void()> fn) { events_.emplace(std::make_pair(t_ms, event_seq_++), std::move(fn)); }

  // --- trace and report ---
  uint64_t line(const std::string& text) { return trace_.add(now_ms(), text); }
  void timeline(const std::string& kind, const std::string& detail) {
    const uint64_t pos = line(kind + ": " + detail);
    if (static_cast<size_t>(report_.timeline_size()) >= opt_.timeline_limit) {
      ++counters_["sim.timeline_dropped"];
      return;
    }
    auto* e = report_.add_timeline();
    e->set_time_ms(now_ms());
    e->set_trace_position(pos);
    e->set_kind(kind);
    e->set_detail(detail);
  }
  void violation(const std::string& invariant, std::vector<std::string> actors_involved, const std::string& detail) {
    const uint64_t pos = line("VIOLATION " + invariant + ": " + detail);
    ++counters_["sim.violations"];
    violated_.insert(invariant);  // every invariant, also past the report's cap
    if (report_.violations_size() >= 200) return;  // the count says how many there were
    auto* v = report_.add_violations();
    v->set_invariant(invariant);
    v->set_time_ms(now_ms());
    v->set_trace_position(pos);
    for (auto& a : actors_involved) v->add_actors(a);
    v->set_detail(detail);
  }
  static std::string show(const caf::error& e) {
    if (int s = http_status(e)) return std::to_string(s) + ": " + message_of(e);
    return describe(e);
  }
  std::string label_of_instance(const std::string& id) const {
    auto it = names_.find(id);
    return it == names_.end() ? id : it->second + " (" + id + ")";
  }
  std::string label(caf::actor_id id, const char* fallback) const {
    std::string out;
    append_label(out, id, fallback);
    return out;
  }
  // Appends: the trace describes every delivered message, so its text is
  // built in buffers that keep their capacity from one message to the next.
  void append_label(std::string& out, caf::actor_id id, const char* fallback) const {
    auto it = labels_.find(id);
    if (it != labels_.end()) {
      out += it->second;
      return;
    }
    out += fallback;
    out += '#';
    append_number(out, id);
  }
  static void append_number(std::string& out, uint64_t v) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }
  void summarize(const caf::type_erased_tuple& m, std::string& out);
  // One message as the trace shows it, read before the actor runs (it is
  // gone afterwards), with what the per-message invariants need.
  struct Seen {
    std::string text;
    bool inst_ev = false;
    std::string id, state;
    uint64_t inc = 0;
  };
  void describe_element(caf::scheduled_actor* a, const caf::mailbox_element& e, Seen& out);
  void step(caf::resumable* job);

  // --- setup ---
  void setup();
  void spawn_controller_actor();
  void spawn_node_actor(size_t i);
  void disk_fault(size_t i, bool on);
  std::string spec_bytes(const std::string& name, uint32_t vcpus, uint64_t memory_mib, const std::string& network);
  void preplace();
  void schedule_scenario();

  // --- the loop ---
  void drain();
  void fire_due_events();

  // --- faults ---
  std::vector<size_t> pick(const v1::SimTarget& t, const std::vector<std::string>& population);
  std::vector<size_t> pick_nodes(const v1::SimTarget& t);
  std::vector<std::string> pick_instances(const v1::SimTarget& t);
  void apply_fault(const v1::SimFault& f, size_t index);
  void crash_node(size_t i);
  void restart_node(size_t i);
  void cut_node(size_t i, bool cut);
  void crash_controller();
  void restart_controller();
  void reconnect(size_t i);
  void drop_in_flight(const caf::actor& from);
  void send_create(const std::string& name);
  void instance_hook(const std::string& id, const std::string& hook, uint32_t index);

  // --- checks ---
  void checkpoint(bool final_check);
  void checkpoint_reads(uint64_t now, int64_t snow, bool final_check);
  void check_acked();
  void check_creates();
  void finish_report(bool leaks_checked);
  void final_counts(control::StateStore& store, google::protobuf::Map<std::string, uint64_t>& c);
  void expectations(google::protobuf::Map<std::string, uint64_t>& c);

  const v1::Scenario& sc_;
  SimOptions opt_;
  std::mt19937_64 sched_rng_;  // which runnable actor goes next
  std::mt19937_64 draw_rng_;   // fault times and targets
  Trace trace_;
  v1::SimReport report_;
  std::set<std::string> violated_;  // names of the invariants violated, uncapped
  std::map<std::string, uint64_t> counters_;

  std::string dir_;
  std::string store_path_;
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  int64_t base_ns_ = 0;
  size_t baseline_actors_ = 0;

  std::shared_ptr<caf::actor> ctl_target_ = std::make_shared<caf::actor>();
  controller_actor ctl_;
  bool ctl_up_ = false;
  caf::actor proxy_;
  caf::actor client_;               // clients_[0]: the workload's actions and fault hooks
  std::vector<caf::actor> clients_;  // the creates' clients (SimInstanceGroup::clients)
  // preplaced_per_node: one client per node sends that node's place
  // requests. CAF 0.17 keeps an actor's pending requests in a flat map
  // (found and erased by a linear scan), so one client waiting for every
  // node's instances made each answer cost O(instances): 1,000,000 pending
  // requests in the 10,000 x 100 run, quadratic time.
  std::vector<caf::actor> placers_;
  struct Create {
    std::string bytes;
    std::string key;  // idempotency key ("" = none)
    size_t client = 0;
    uint64_t retry_ms = 0;
    uint32_t tries = 0;
  };
  static constexpr uint32_t kMaxCreateTries = 100;
  std::map<std::string, Create> creates_;  // by instance name
  std::vector<SimNode> nodes_;
  std::vector<std::string> node_names_;
  std::unordered_map<caf::actor_id, std::string> labels_;
  std::unordered_map<caf::actor_id, size_t> node_of_actor_;
  std::unique_ptr<control::StateStore> reader_;

  std::map<std::pair<uint64_t, uint64_t>, std::function<void()>> events_;
  uint64_t event_seq_ = 0;
  std::vector<std::pair<uint64_t, std::function<void()>>> step_events_;  // after N more steps
  size_t held_count_ = 0;  // nodes whose messages are being delayed
  bool runnable(caf::resumable* job) const;
  size_t runnable_jobs(std::vector<size_t>& out);
  void hold_node(size_t i, bool on);
  uint64_t events_delivered_ = 0;
  uint64_t steps_ = 0;  // counters' sim.steps
  // The messages a step describes before its round: kept from step to step
  // with their strings, so describing allocates nothing once they have grown.
  struct Heads {
    std::vector<Seen> seen;
    size_t count = 0;
  };
  Heads heads_[2];
  bool force_checkpoint_ = false;

  std::map<std::string, std::string> ids_;    // instance name -> id
  std::map<std::string, std::string> names_;  // id -> name
  std::vector<std::string> acked_;            // ids whose create was acknowledged
  struct Accepted {
    std::string id;
    std::string request;
  };
  std::vector<Accepted> accepted_;
  bool check_acked_ = false;  // after a controller restart

  std::unique_ptr<PlacementTracker> placement_;
  std::map<std::string, std::string> node_states_;      // from the store
  std::map<std::string, uint64_t> error_since_;         // node -> time first seen in error
  std::set<std::string> error_checked_;                 // nodes whose fan-out was verified this episode
  std::map<std::string, SfInstanceState> sf_states_;    // from the store
  std::set<int64_t> late_actions_;                      // reported already
  std::set<std::string> errored_creates_;               // create_error reported already
};

// --- the client -------------------------------------------------------------------

// A placer's placements under way, by number, with their deadlines under
// one timer (actors/deadline_timer.hpp): a node's answer to `place` comes
// once the instance runs, and a request timeout each would be a clock
// entry per preplaced instance, a million of them on the largest scenario.
struct Placements {
  using Due = Deadlines<uint64_t, sim_place_dl_atom>;  // by placement number
  Due deadlines;
  std::unordered_map<uint64_t, Due::entry> open;
  uint64_t last = 0;
  // Ends placement `no` before its deadline; false if it had already ended.
  bool close(uint64_t no) {
    auto it = open.find(no);
    if (it == open.end()) return false;
    deadlines.remove(it->second);
    open.erase(it);
    return true;
  }
};

caf::behavior client_impl(caf::event_based_actor* self, Simulator* sim) {
  const auto deadline = std::chrono::seconds(30);
  const auto place_deadline = std::chrono::seconds(3600);
  auto placements = std::make_shared<Placements>();
  return {
      [=](create_atom, const std::string& name, const std::string& bytes) {
        self->request(sim->proxy(), deadline, create_atom::value, bytes)
            .then([=](const std::string& id) { sim->on_created(name, id); },
                  [=](caf::error& e) { sim->on_create_failed(name, e); });
      },
      [=](create_atom, const std::string& name, const std::string& bytes, const std::string& key) {
        self->request(sim->proxy(), deadline, create_atom::value, bytes, key)
            .then([=](const std::string& id) { sim->on_created(name, id); },
                  [=](caf::error& e) { sim->on_create_failed(name, e); });
      },
      [=](act_atom, const std::string& id, const std::string& action, const std::string& type) {
        self->request(sim->proxy(), deadline, act_atom::value, id, action, type)
            .then([=](const std::string& req) { sim->on_accepted(id, action, req); },
                  [=](caf::error& e) { sim->on_refused(id, action, e); });
      },
      [=](place_atom, uint32_t node, const std::string& id, const std::string& bytes) {
        if (!sim->node_up(node)) return;
        auto& p = *placements;
        const uint64_t no = ++p.last;
        p.open.emplace(no, p.deadlines.add(self, self->clock().now() + place_deadline, no));
        self->request(sim->node_handle(node), caf::infinite, place_atom::value, id, bytes)
            .then(
                [=](const std::string&) {
                  if (placements->close(no)) sim->on_placed(true);
                },
                [=](caf::error&) {
                  if (placements->close(no)) sim->on_placed(false);
                });
      },
      [=](sim_place_dl_atom, uint64_t generation) {
        placements->deadlines.fired(self, generation, [=](uint64_t no) {
          placements->open.erase(no);
          sim->on_placed(false);
        });
      },
      [=](fault_hook_atom, uint32_t node, const std::string& id, const std::string& hook, uint32_t index) {
        if (!sim->node_up(node)) return;
        self->request(sim->node_handle(node), deadline, instance_of_atom::value, id)
            .then(
                [=](const caf::actor& inst) {
                  if (!inst) return;
                  self->request(caf::actor_cast<instance_actor>(inst), deadline, fault_hook_atom::value, hook, index)
                      .then([](ack_atom) {}, [](caf::error&) {});
                },
                [](caf::error&) {});
      },
  };
}

// --- the proxy --------------------------------------------------------------------
//
// Forwards everything to the current controller, as the relay of `apiary
// node` does across processes. A node whose link is down (it has not
// reconnected since the controller restarted) is refused, as the relay
// refuses while it has no controller; a slow node's check-ins wait first.
caf::behavior proxy_impl(caf::event_based_actor* self, Simulator* sim) {
  struct Held {
    caf::response_promise rp;
    caf::message msg;
    size_t node;
  };
  auto held = std::make_shared<std::map<uint64_t, Held>>();
  auto seq = std::make_shared<uint64_t>(0);
  self->set_default_handler([=](caf::scheduled_actor* s, caf::message_view& x) -> caf::result<caf::message> {
    const auto node = sim->node_of_sender(s->current_sender());
    if (!sim->controller() || (node && !sim->link_up(*node))) return caf::sec::request_receiver_down;
    auto rp = s->make_response_promise();
    if (const uint64_t delay = node ? sim->checkin_delay(*node, x.content()) : 0) {
      held->emplace(++*seq, Held{rp, x.move_content_to_message(), *node});
      self->delayed_send(self, std::chrono::milliseconds(delay), sim_delay_atom::value, *seq);
      return caf::delegated<caf::message>();
    }
    rp.delegate(sim->controller(), x.move_content_to_message());
    return caf::delegated<caf::message>();
  });
  return {
      [](tick_atom) {},
      [=](sim_delay_atom, uint64_t k) {
        auto it = held->find(k);
        if (it == held->end()) return;
        Held h = std::move(it->second);
        held->erase(it);
        // The controller crashed, or the link dropped, while it was on its way: lost.
        if (!sim->controller() || !sim->link_up(h.node)) return;
        h.rp.delegate(sim->controller(), std::move(h.msg));
      },
  };
}

uint64_t Simulator::checkin_delay(size_t node, const caf::type_erased_tuple& m) {
  auto& n = nodes_.at(node);
  if (!n.slow || m.size() == 0 || !m.match_element<caf::atom_value>(0) ||
      m.get_as<caf::atom_value>(0) != checkin_atom::value)
    return 0;
  const auto& l = sc_.links();
  const uint64_t now = now_ms();
  uint64_t due = now + l.slow_checkin_delay_ms() + (l.slow_checkin_jitter_ms() ? draw_rng_() % (l.slow_checkin_jitter_ms() + 1) : 0);
  due = std::max(due, n.checkin_due);
  n.checkin_due = due;
  ++counters_["sim.slow_checkins"];
  return due > now ? due - now : 0;
}

// --- trace lines --------------------------------------------------------------------

void Simulator::summarize(const caf::type_erased_tuple& m, std::string& out) {
  for (size_t i = 0; i < m.size(); ++i) {
    if (i) out += ' ';
    if (m.match_element<caf::atom_value>(i)) {
      out += caf::to_string(m.get_as<caf::atom_value>(i));
    } else if (m.match_element<std::string>(i)) {
      const auto& s = m.get_as<std::string>(i);
      if (s.size() <= 96 && printable(s)) {
        out += '"';
        out += s;
        out += '"';
      } else {
        out += '<';
        append_number(out, s.size());
        out += " bytes>";
      }
    } else if (m.match_element<uint64_t>(i)) {
      append_number(out, m.get_as<uint64_t>(i));
    } else if (m.match_element<uint32_t>(i)) {
      append_number(out, m.get_as<uint32_t>(i));
    } else if (m.match_element<int32_t>(i)) {
      out += std::to_string(m.get_as<int32_t>(i));
    } else if (m.match_element<int64_t>(i)) {
      out += std::to_string(m.get_as<int64_t>(i));
    } else if (m.match_element<bool>(i)) {
      out += m.get_as<bool>(i) ? "true" : "false";
    } else if (m.match_element<caf::error>(i)) {
      const auto& e = m.get_as<caf::error>(i);
      out += "error(" + show(e) + ")";
    } else if (m.match_element<caf::exit_msg>(i)) {
      out += "exit(" + caf::to_string(m.get_as<caf::exit_msg>(i).reason) + ")";
    } else if (m.match_element<caf::down_msg>(i)) {
      out += "down";
    } else if (m.match_element<caf::actor>(i)) {
      const auto& a = m.get_as<caf::actor>(i);
      if (a) {
        out += '@';
        append_label(out, a.id(), "actor");
      } else {
        out += "@none";
      }
    } else if (m.match_element<std::map<std::string, std::string>>(i)) {
      out += "{" + std::to_string(m.get_as<std::map<std::string, std::string>>(i).size()) + "}";
    } else {
      out += "_";
    }
  }
}

void Simulator::describe_element(caf::scheduled_actor* a, const caf::mailbox_element& e, Seen& out) {
  const caf::type_erased_tuple& m = e.content();
  out.text.clear();
  append_label(out.text, a->id(), a->name());
  out.text += " <- ";
  if (e.sender) {
    // The actor's name is needed only for a sender without a label.
    const caf::actor_id sid = e.sender->id();
    if (auto it = labels_.find(sid); it != labels_.end()) {
      out.text += it->second;
    } else {
      auto* s = dynamic_cast<caf::local_actor*>(caf::actor_cast<caf::abstract_actor*>(e.sender));
      append_label(out.text, sid, s ? s->name() : "actor");
    }
  } else {
    out.text += '-';
  }
  out.text += e.mid.is_response() ? " reply " : " ";
  summarize(m, out.text);
  out.inst_ev = false;
  // An instance's state event (to a node: the caller checks). The sender is
  // the VMM; its actor id tells one VMM of the instance from the next.
  if (e.sender && m.size() == 6 && m.match_element<caf::atom_value>(0) &&
      m.get_as<caf::atom_value>(0) == state_atom::value &&
      m.match_elements<caf::atom_value, std::string, std::string, uint64_t, std::string, std::string>()) {
    out.inst_ev = true;
    out.id = m.get_as<std::string>(1);
    out.inc = e.sender->id();
    out.state = m.get_as<std::string>(2);
  }
}

// Whether CAF will drop `e` unread when `a` takes it: a response nobody
// waits for any more (its request timed out, or the timeout of a request
// already answered). The pending handlers are a protected member of
// scheduled_actor; a pointer to member taken in a derived class reads them.
struct PendingResponses : caf::scheduled_actor {
  static bool droppable(caf::scheduled_actor* a, const caf::mailbox_element& e) {
    if (!e.mid.is_response()) return false;
    if (!(a->*(&PendingResponses::awaited_responses_)).empty()) return false;  // await: skipped, not dropped
    const auto& pending = a->*(&PendingResponses::multiplexed_responses_);
    return pending.find(e.mid) == pending.end();
  }
};

// CAF's test coordinator resumes an actor for one round of its mailbox: it
// takes messages from its queues (urgent first, then normal) until it has
// handled one, and responses nobody waits for any more are dropped on the
// way without counting. So the heads of both queues are read before the
// round -- every droppable response, and kHeads messages besides (one: a
// round handles one message; describing four cost a twentieth of the run, and
// should a round ever take more, the trace says how many) -- and the
// queue sizes after it say how many of them were delivered. (Reading only a
// fixed number of heads lost the messages behind a run of stale responses:
// a held node's state events went unobserved, and the lifecycle check saw
// run -> halt where the instance had passed through quiesce.)
void Simulator::step(caf::resumable* job) {
  auto* a = dynamic_cast<caf::scheduled_actor*>(job);
  if (!a) {
    line("job");
    sched().run_once();
    return;
  }
  auto& box = a->mailbox();
  box.fetch_more();
  auto& urgent = std::get<caf::scheduled_actor::urgent_queue_index>(box.queue().queues());
  auto& normal = std::get<caf::scheduled_actor::normal_queue_index>(box.queue().queues());
  constexpr size_t kHeads = 1;
  // heads_[0] urgent, heads_[1] normal; described in place (see Heads).
  auto collect = [&](auto& q, Heads& out) {
    // Only the heads: walking a long mailbox on every step would make the
    // run quadratic in mailbox length. Droppable responses do not count
    // towards kHeads: the round consumes all of them it meets.
    out.count = 0;
    const auto size = static_cast<size_t>(q.total_task_size());
    const caf::mailbox_element* e = size ? q.peek() : nullptr;
    for (size_t k = 0, kept = 0; e && k < size && kept < kHeads; ++k) {
      if (out.count == out.seen.size()) out.seen.emplace_back();
      describe_element(a, *e, out.seen[out.count++]);
      if (!PendingResponses::droppable(a, *e)) ++kept;
      e = static_cast<const caf::mailbox_element*>(e->next);
    }
    return size;
  };
  const size_t before_u = collect(urgent, heads_[0]);
  const size_t before_n = collect(normal, heads_[1]);
  auto who = [&] { return label(a->id(), a->name()); };
  // run_once() drops the scheduler's reference when the actor finishes; keep
  // one so the actor can still be asked about itself below.
  caf::strong_actor_ptr keep{a->ctrl()};
  sched().run_once();
  ++steps_;
  size_t used_u, used_n;
  if (a->getf(caf::abstract_actor::is_terminated_flag)) {
    // The rest of its mailbox was bounced: only the message it ended on counts.
    used_u = before_u ? 1 : 0;
    used_n = before_u ? 0 : std::min<size_t>(before_n, 1);
  } else {
    used_u = before_u - std::min(before_u, static_cast<size_t>(urgent.total_task_size()));
    used_n = before_n - std::min(before_n, static_cast<size_t>(normal.total_task_size()));
  }
  events_delivered_ += used_u + used_n;
  if (used_u + used_n == 0) {
    line(who() + " resumes");
    return;
  }
  auto deliver = [&](const Heads& heads, size_t used) {
    for (size_t k = 0; k < used && k < heads.count; ++k) {
      const Seen& s = heads.seen[k];
      line(s.text);
      if (!s.inst_ev) continue;
      auto n = node_of_actor_.find(a->id());
      if (n == node_of_actor_.end()) continue;
      if (s.state == "reboot") ++counters_["sim.instance_reboots"];
      ++counters_["sim.instance_state_events"];
      if (auto f = placement_->observe(n->second, node_names_[n->second], s.id, s.inc, s.state, node_names_))
        violation(f->invariant, f->actors, f->detail);
    }
    if (used > heads.count) line(who() + " (+" + std::to_string(used - heads.count) + " more)");
  };
  deliver(heads_[0], used_u);
  deliver(heads_[1], used_n);
}

// --- setup ----------------------------------------------------------------------------

void Simulator::spawn_controller_actor() {
  ControllerConfig c;
  const auto& cc = sc_.controller();
  c.store_path = store_path_;
  c.id_seed = opt_.seed * 2654435761ull + 17 + counters_["sim.controller_restarts"] * 7919;
  c.sweep_interval = milliseconds(cc.sweep_interval_ms());
  c.action_deadline = milliseconds(cc.action_deadline_ms());
  c.node_deadline = milliseconds(cc.node_deadline_ms());
  c.checkin_max = seconds(cc.checkin_max_s());
  c.cpu_allocation_ratio = cc.cpu_allocation_ratio();
  c.ram_allocation_ratio = cc.ram_allocation_ratio();
  c.clock_epoch_ms = kEpochMs;
  c.test_skip_error_fanout = sc_.broken().skip_error_fanout();
  if (sc_.broken().no_placement_wait()) c.placement_wait = milliseconds(0);
  ctl_ = spawn_controller(*sys_, c);
  *ctl_target_ = caf::actor_cast<caf::actor>(ctl_);
  labels_[ctl_.id()] = "controller";
  ctl_up_ = true;
}

void Simulator::spawn_node_actor(size_t i) {
  auto& n = nodes_[i];
  n.handle = spawn_node(*sys_, n.cfg);
  n.up = true;
  n.cut = false;
  n.link_up = ctl_up_;  // started while the controller is down: it connects when that is back
  labels_[n.handle.id()] = n.name;
  node_of_actor_[n.handle.id()] = i;
}

std::string Simulator::spec_bytes(const std::string& name, uint32_t vcpus, uint64_t memory_mib,
                                  const std::string& network) {
  v1::InstanceSpec s;
  s.set_name(name);
  s.mutable_board()->set_vcpus(vcpus);
  s.mutable_board()->set_memory_mib(memory_mib);
  s.mutable_boot()->set_embedded_guest("sim");
  if (!network.empty()) s.mutable_devices()->add_nics()->set_network(network);
  return s.SerializeAsString();
}

void Simulator::setup() {
  // The store lives in a private directory (tmpfs when there is one: the
  // store's fsyncs then cost nothing, and it still survives the controller).
  std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
  std::string templ = base + "/apiary-sim-XXXXXX";
  if (!::mkdtemp(templ.data())) throw std::runtime_error("cannot create a directory under " + base);
  dir_ = templ;
  store_path_ = dir_ + "/store.sqlite";

  cfg_.set("scheduler.policy", caf::atom("testing"));
  cfg_.set("logger.verbosity", caf::atom("quiet"));
  sys_ = std::make_unique<caf::actor_system>(cfg_);
  sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_->scheduler());
  base_ns_ = clock_ns();
  baseline_actors_ = sys_->registry().running();

  for (const auto& g : sc_.nodes()) {
    for (uint32_t k = 0; k < g.count(); ++k) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "%03u", k);
      SimNode n;
      n.name = g.prefix() + "-" + buf;
      n.cfg.name = n.name;
      n.cfg.vcpus = g.vcpus();
      n.cfg.memory_mib = g.memory_mib();
      n.cfg.checkin_interval = milliseconds(g.checkin_interval_ms());
      n.cfg.simulated = true;
      n.cfg.inline_file_jobs = true;  // disk copies ordered by the scheduler, not a thread
      n.cfg.embedded_guest = [](const std::string&) { return tiny_guest_image(); };
      n.cfg.phase_deadline = milliseconds(g.phase_deadline_ms());
      n.cfg.state_deadline = milliseconds(g.state_deadline_ms());
      n.cfg.soft_reboot_grace = milliseconds(std::min<uint64_t>(3000, g.state_deadline_ms()));
      node_names_.push_back(n.name);
      nodes_.push_back(std::move(n));
    }
  }
  placement_ = std::make_unique<PlacementTracker>(nodes_.size());
  if (sc_.preplaced_per_node()) {
    const auto t0 = steady_clock::now();
    preplace();
    if (std::getenv("APIARY_SIM_PHASES"))
      std::fprintf(stderr, "preplace: %.2f s\n", duration_cast<std::chrono::duration<double>>(steady_clock::now() - t0).count());
  }

  proxy_ = sys_->spawn(proxy_impl, this);
  labels_[proxy_.id()] = "proxy";
  for (auto& n : nodes_) n.cfg.controller = proxy_;
  spawn_controller_actor();
  {
    control::StoreOptions ro;
    ro.clock = [this] { return store_now(); };
    reader_ = std::make_unique<control::StateStore>(control::StateStore::open(store_path_, ro));
  }
  client_ = sys_->spawn(client_impl, this);
  labels_[client_.id()] = "client";
  clients_.push_back(client_);
  uint32_t max_clients = 1;
  for (const auto& g : sc_.instances()) max_clients = std::max(max_clients, g.clients());
  for (uint32_t k = 1; k < max_clients; ++k) {
    clients_.push_back(sys_->spawn(client_impl, this));
    labels_[clients_.back().id()] = "client-" + std::to_string(k);
  }
  if (sc_.links().has_slow_checkin_nodes())
    for (size_t i : pick_nodes(sc_.links().slow_checkin_nodes())) {
      nodes_[i].slow = true;
      line("node " + nodes_[i].name + ": slow check-ins");
    }
  for (size_t i = 0; i < nodes_.size(); ++i) spawn_node_actor(i);
  line("setup: " + std::to_string(nodes_.size()) + " nodes, seed " + std::to_string(opt_.seed));

  if (sc_.preplaced_per_node()) {
    // The nodes start the VMs the store already records (round robin).
    for (uint32_t i = 0; i < nodes_.size(); ++i) {
      placers_.push_back(sys_->spawn(client_impl, this));
      labels_[placers_.back().id()] = "placer-" + nodes_[i].name;
    }
    uint32_t k = 0;
    for (uint32_t j = 0; j < sc_.preplaced_per_node(); ++j)
      for (uint32_t i = 0; i < nodes_.size(); ++i, ++k) {
        char buf[24];
        std::snprintf(buf, sizeof buf, "p-%06u", k);
        const std::string id = std::string("i-") + buf;
        caf::anon_send(placers_[i], place_atom::value, i, id, spec_bytes(buf, 1, 4, ""));
      }
  }
  schedule_scenario();
}

// Writes the records of the preplaced instances (created, ACTIVE, with a
// finished create action) before the controller opens the store.
void Simulator::preplace() {
  control::StoreOptions o;
  o.clock = [this] { return store_now(); };
  auto store = control::StateStore::open(store_path_, o);
  uint32_t k = 0;
  // One transaction per node's worth of records: one for all of them makes
  // every nested savepoint slower as it grows (15 s instead of a few for
  // 100,000 records).
  for (uint32_t j = 0; j < sc_.preplaced_per_node(); ++j) store.with_transaction([&] {
      for (uint32_t i = 0; i < nodes_.size(); ++i, ++k) {
        char buf[24];
        std::snprintf(buf, sizeof buf, "p-%06u", k);
        control::InstanceRecord r;
        r.id = std::string("i-") + buf;
        r.name = buf;
        r.node = nodes_[i].name;
        r.spec.ParseFromString(spec_bytes(buf, 1, 4, ""));
        r.sf_state = SfInstanceState::created;
        r.vm_state = control::VmState::active;
        store.import_running_instance(r, std::string("req-") + buf);
        ids_[buf] = r.id;
        names_[r.id] = buf;
        acked_.push_back(r.id);
      }
    });
  counters_["sim.preplaced_records"] = k;
}

void Simulator::schedule_scenario() {
  for (const auto& net : sc_.networks()) {
    // Networks exist before the first create (no data plane: created at once).
    const std::string name = net.name(), cidr = net.cidr();
    at(0, [this, name, cidr] {
      caf::anon_send(proxy_, net_create_atom::value, name, cidr);
      timeline("workload", "network " + name + " " + cidr);
    });
  }
  for (const auto& g : sc_.instances()) {
    for (uint32_t k = 0; k < g.count(); ++k) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "%03u", k);
      const std::string name = g.prefix() + "-" + buf;
      Create c;
      c.bytes = spec_bytes(name, g.vcpus(), g.memory_mib(), g.network());
      c.client = k % g.clients();
      c.retry_ms = g.retry_ms();
      if (c.retry_ms) c.key = "create-" + name;
      creates_[name] = std::move(c);
      at(g.at_ms() + k * g.spacing_ms(), [this, name] { send_create(name); });
    }
  }
  for (const auto& a : sc_.workload()) {
    const uint64_t t = a.at_ms() + (a.window_ms() ? draw_rng_() % a.window_ms() : 0);
    at(t, [this, a] {
      for (const auto& id : pick_instances(a.instances()))
        caf::anon_send(client_, act_atom::value, id, a.action(), a.type());
    });
  }
  for (int i = 0; i < sc_.faults_size(); ++i) {
    const auto& f = sc_.faults(i);
    const uint64_t t = f.at_ms() + (f.window_ms() ? draw_rng_() % f.window_ms() : 0);
    at(t, [this, i] {
      const uint32_t within = sc_.faults(i).within_steps();
      const uint64_t steps = within > 1 ? draw_rng_() % within : 0;
      auto fire = [this, i] { apply_fault(sc_.faults(i), static_cast<size_t>(i)); };
      line("fault #" + std::to_string(i) + " due; strikes after " + std::to_string(steps) + " step(s)");
      if (steps == 0)
        fire();
      else
        step_events_.push_back({steps, fire});
    });
  }
}

void Simulator::send_create(const std::string& name) {
  auto& c = creates_.at(name);
  ++c.tries;
  const caf::actor& who = clients_.at(c.client);
  if (c.key.empty())
    caf::anon_send(who, create_atom::value, name, c.bytes);
  else
    caf::anon_send(who, create_atom::value, name, c.bytes, c.key);
}

// --- the loop -----------------------------------------------------------------------------

bool Simulator::runnable(caf::resumable* job) const {
  if (held_count_ == 0) return true;
  const auto* a = dynamic_cast<caf::abstract_actor*>(job);
  for (const auto& n : nodes_)
    if (n.held && n.up && a == caf::actor_cast<caf::abstract_actor*>(n.handle)) return false;
  return true;
}

size_t Simulator::runnable_jobs(std::vector<size_t>& out) {
  const auto& jobs = sched().jobs;
  for (size_t k = 0; k < jobs.size(); ++k)
    if (runnable(jobs[k])) out.push_back(k);
  return out.size();
}

void Simulator::hold_node(size_t i, bool on) {
  auto& n = nodes_[i];
  if (n.held == on) return;
  n.held = on;
  held_count_ += on ? 1 : static_cast<size_t>(-1);
  if (on) ++counters_["sim.message_delays"];
  timeline(on ? "fault" : "heal",
           "node " + n.name + (on ? ": messages to it are delayed" : ": delayed messages delivered in order"));
}

void Simulator::drain() {
  auto& jobs = sched().jobs;
  for (;;) {
    if (jobs.empty()) {
      if (step_events_.empty()) return;
      // Nothing left to interleave with: the step-delayed faults strike now.
      auto due = std::move(step_events_);
      step_events_.clear();
      for (auto& [steps, fn] : due) fn();
      continue;
    }
    size_t i = 0;
    if (held_count_ == 0) {
      const size_t n = jobs.size();
      i = n > 1 ? static_cast<size_t>(sched_rng_() % n) : 0;
    } else {
      // Delayed nodes keep their mailboxes (per-sender order intact) and
      // are simply not picked; with only them left, time has to move.
      std::vector<size_t> ok;
      if (runnable_jobs(ok) == 0) {
        if (step_events_.empty()) return;
        auto due = std::move(step_events_);
        step_events_.clear();
        for (auto& [steps, fn] : due) fn();
        continue;
      }
      i = ok[ok.size() > 1 ? static_cast<size_t>(sched_rng_() % ok.size()) : 0];
    }
    if (i) std::swap(jobs[0], jobs[i]);
    step(jobs.front());
    for (size_t k = 0; k < step_events_.size();) {
      if (--step_events_[k].first > 0) {
        ++k;
        continue;
      }
      auto fn = std::move(step_events_[k].second);
      step_events_.erase(step_events_.begin() + static_cast<long>(k));
      fn();
    }
  }
}

void Simulator::fire_due_events() {
  const uint64_t now = now_ms();
  while (!events_.empty() && events_.begin()->first.first <= now) {
    auto fn = std::move(events_.begin()->second);
    events_.erase(events_.begin());
    fn();
  }
}

SimResult Simulator::run() {
  const int threads_before = count_threads();
  const auto wall_start = steady_clock::now();
  setup();
  const auto setup_done = steady_clock::now();
  const uint64_t duration = sc_.duration_ms();
  uint64_t next_checkpoint = 0;
  for (;;) {
    drain();
    const uint64_t now = now_ms();
    if (force_checkpoint_ || now >= next_checkpoint) {
      checkpoint(false);
      force_checkpoint_ = false;
      next_checkpoint = now + opt_.checkpoint_ms;
      drain();
    }
    if (now >= duration) break;
    uint64_t next = std::min(duration, next_checkpoint);
    if (!events_.empty()) next = std::min(next, events_.begin()->first.first);
    const auto& schedule = sched().clock().schedule();
    if (!schedule.empty()) {
      const int64_t t = duration_cast<nanoseconds>(schedule.begin()->first.time_since_epoch()).count();
      const int64_t rel = t - base_ns_;
      const uint64_t due = rel <= 0 ? 0 : static_cast<uint64_t>((rel + 999999) / 1000000);
      next = std::min(next, due);
    }
    if (next > now) {
      sched().advance_time(nanoseconds(static_cast<int64_t>(next) * 1000000 + base_ns_ - clock_ns()));
    } else {
      // Fire only what is due now: trigger_timeouts() would fire every
      // pending timer and move the clock to the last one.
      sched().advance_time(caf::timespan{0});
      std::vector<size_t> ok;
      if (runnable_jobs(ok) == 0 && (events_.empty() || events_.begin()->first.first > now))
        sched().advance_time(milliseconds(1));  // never spin
    }
    fire_due_events();
  }
  line("end of scenario at " + std::to_string(now_ms()) + " ms");
  const auto loop_done = steady_clock::now();
  checkpoint(true);

  // Shutdown: every actor must go away, and with the system every thread.
  line("shutdown");
  stop_actors();
  const size_t left = sys_->registry().running();
  if (left > baseline_actors_)
    violation(kActorLeak, {}, std::to_string(left - baseline_actors_) + " actor(s) still running after shutdown");
  const auto wall = duration_cast<std::chrono::duration<double>>(steady_clock::now() - wall_start).count();
  report_.set_wall_seconds(wall);
  drop_system(left > baseline_actors_);  // a leak is reported, not waited for
  const int threads_after = count_threads();
  if (threads_after > threads_before)
    violation(kThreadLeak, {}, std::to_string(threads_after - threads_before) + " thread(s) left after shutdown");
  const auto shutdown_done = steady_clock::now();
  finish_report(true);
  if (std::getenv("APIARY_SIM_PHASES")) {
    auto secs = [](auto a, auto b) { return duration_cast<std::chrono::duration<double>>(b - a).count(); };
    std::fprintf(stderr, "phases: setup %.2f s, run %.2f s, shutdown %.2f s, report %.2f s\n",
                 secs(wall_start, setup_done), secs(setup_done, loop_done), secs(loop_done, shutdown_done),
                 secs(shutdown_done, steady_clock::now()));
  }
  SimResult out;
  out.report = std::move(report_);
  out.trace = trace_.lines();
  return out;
}

void Simulator::stop_actors() {
  for (auto& n : nodes_)
    if (n.up && n.handle) caf::anon_send_exit(n.handle, caf::exit_reason::user_shutdown);
  if (ctl_up_ && ctl_) caf::anon_send_exit(ctl_, caf::exit_reason::user_shutdown);
  if (proxy_) caf::anon_send_exit(proxy_, caf::exit_reason::user_shutdown);
  for (auto& c : clients_) caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  for (auto& c : placers_) caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  if (ctl_target_) *ctl_target_ = nullptr;
  // Not traced (it is the same for every run of a scenario and, at scale, a
  // million exit messages): FIFO order to quiescence. Timers of dead actors
  // may still be scheduled; they fall through.
  sched().run();
  sched().trigger_timeouts();
  sched().run();
}

void Simulator::drop_system(bool leftover) {
  ctl_ = nullptr;
  proxy_ = nullptr;
  client_ = nullptr;
  clients_.clear();
  placers_.clear();
  for (auto& n : nodes_) {
    n.handle = nullptr;
    n.cfg.controller = nullptr;
  }
  if (leftover)
    (void)sys_.release();  // CAF's destructor would wait for the leftover actors for ever
  else
    sys_.reset();
}

void Simulator::abandon_system() noexcept {
  try {
    stop_actors();
    const bool leftover = sys_->registry().running() > baseline_actors_;
    if (leftover) std::fprintf(stderr, "apiary simulate: actors left after a failed run; the actor system is abandoned\n");
    drop_system(leftover);
  } catch (...) {
    (void)sys_.release();
  }
}

// --- faults ---------------------------------------------------------------------------------

std::vector<size_t> Simulator::pick(const v1::SimTarget& t, const std::vector<std::string>& population) {
  std::vector<size_t> chosen;
  std::vector<bool> taken(population.size(), false);
  for (const auto& want : t.names()) {
    const bool prefix = !want.empty() && want.back() == '*';
    const std::string stem = prefix ? want.substr(0, want.size() - 1) : want;
    bool any = false;
    for (size_t i = 0; i < population.size(); ++i) {
      if (prefix ? population[i].rfind(stem, 0) == 0 : population[i] == want) {
        any = true;
        if (!taken[i]) {
          taken[i] = true;
          chosen.push_back(i);
        }
      }
    }
    if (!any) line("target '" + want + "' matches nothing");
  }
  std::vector<size_t> rest;
  for (size_t i = 0; i < population.size(); ++i)
    if (!taken[i]) rest.push_back(i);
  size_t more = t.count() + static_cast<size_t>(std::llround(t.fraction() * static_cast<double>(population.size())));
  more = std::min(more, rest.size());
  for (size_t k = 0; k < more; ++k) {  // partial Fisher-Yates, seeded
    const size_t j = k + static_cast<size_t>(draw_rng_() % (rest.size() - k));
    std::swap(rest[k], rest[j]);
    chosen.push_back(rest[k]);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::vector<size_t> Simulator::pick_nodes(const v1::SimTarget& t) { return pick(t, node_names_); }

std::vector<std::string> Simulator::pick_instances(const v1::SimTarget& t) {
  std::vector<std::string> names;  // known instances, by name
  for (const auto& [name, id] : ids_) names.push_back(name);
  std::vector<std::string> out;
  for (size_t i : pick(t, names)) out.push_back(ids_.at(names[i]));
  return out;
}

void Simulator::crash_node(size_t i) {
  auto& n = nodes_[i];
  if (!n.up) return;
  caf::anon_send_exit(n.handle, caf::exit_reason::kill);
  n.up = false;
  node_of_actor_.erase(n.handle.id());
  placement_->node_crashed(i);
  ++counters_["sim.node_crashes"];
  timeline("fault", "node " + n.name + " crashed (its VMs die with it)");
}

void Simulator::restart_node(size_t i) {
  if (nodes_[i].up) return;
  spawn_node_actor(i);
  ++counters_["sim.node_restarts"];
  timeline("restart", "node " + nodes_[i].name + " restarted (no VMs)");
}

void Simulator::cut_node(size_t i, bool cut) {
  auto& n = nodes_[i];
  if (!n.up || n.cut == cut) return;
  n.cut = cut;
  caf::anon_send(n.handle, partition_atom::value, cut);
  timeline(cut ? "fault" : "heal", "node " + n.name + (cut ? " cut off from the controller" : " reconnected"));
}

void Simulator::crash_controller() {
  if (!ctl_up_) return;
  auto old = caf::actor_cast<caf::actor>(ctl_);
  caf::anon_send_exit(ctl_, caf::exit_reason::kill);
  *ctl_target_ = nullptr;
  ctl_up_ = false;
  ++counters_["sim.controller_crashes"];
  timeline("fault", "controller crashed (the store survives)");
  // Every node loses its connection; what was on the wire is gone.
  for (auto& n : nodes_) n.link_up = false;
  if (sc_.links().lose_in_flight()) drop_in_flight(old);
}

void Simulator::restart_controller() {
  if (ctl_up_) return;
  ++counters_["sim.controller_restarts"];
  spawn_controller_actor();
  check_acked_ = true;
  timeline("restart", "controller restarted on the same store");
  // Each node finds it on its own retry, one draw per node.
  const auto& l = sc_.links();
  const uint64_t now = now_ms(), span = l.reconnect_max_ms() - l.reconnect_min_ms();
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const uint64_t d = l.reconnect_min_ms() + (span ? draw_rng_() % (span + 1) : 0);
    if (d == 0)
      reconnect(i);
    else
      at(now + d, [this, i] { reconnect(i); });
  }
}

void Simulator::reconnect(size_t i) {
  auto& n = nodes_[i];
  if (n.link_up || !ctl_up_) return;
  n.link_up = true;
  ++counters_["sim.node_reconnects"];
  if (n.up) line("node " + n.name + " reconnected to the controller");
}

// The messages the (now dead) controller sent that a node has not taken
// yet: taken out of the nodes' mailboxes, order of the rest unchanged.
void Simulator::drop_in_flight(const caf::actor& from) {
  const caf::actor_id ctl_id = from.id();
  for (auto& n : nodes_) {
    if (!n.up) continue;
    auto* a = dynamic_cast<caf::scheduled_actor*>(caf::actor_cast<caf::abstract_actor*>(n.handle));
    if (!a) continue;
    auto& box = a->mailbox();
    // A blocked mailbox is empty; fetching from it would unblock it without
    // scheduling the actor, and the node would never run again.
    if (box.closed() || box.blocked()) continue;
    box.fetch_more();
    size_t lost = 0;
    auto filter = [&](auto& q) {
      const auto size = static_cast<size_t>(q.total_task_size());
      for (size_t k = 0; k < size; ++k) {
        auto e = q.take_front();
        if (!e) break;
        if (e->sender && e->sender->id() == ctl_id)
          ++lost;  // freed here
        else
          q.push_back(std::move(e));
      }
    };
    filter(std::get<caf::scheduled_actor::urgent_queue_index>(box.queue().queues()));
    filter(std::get<caf::scheduled_actor::normal_queue_index>(box.queue().queues()));
    if (lost) {
      counters_["sim.messages_lost"] += lost;
      line("node " + n.name + ": " + std::to_string(lost) + " message(s) from the controller lost in flight");
    }
  }
}

void Simulator::instance_hook(const std::string& id, const std::string& hook, uint32_t index) {
  auto node = placement_->node_of(id);
  if (!node) {
    line("fault " + hook + " on " + label_of_instance(id) + " skipped: it runs nowhere");
    ++counters_["sim.faults_skipped"];
    return;
  }
  caf::anon_send(client_, fault_hook_atom::value, static_cast<uint32_t>(*node), id, hook, index);
  timeline("fault", hook + " " + std::to_string(index) + " on " + label_of_instance(id) + " (node " +
                        node_names_[*node] + ")");
}

void Simulator::apply_fault(const v1::SimFault& f, size_t index) {
  ++counters_["sim.faults"];
  force_checkpoint_ = true;
  const uint64_t now = now_ms();
  line("fault #" + std::to_string(index));
  switch (f.kind_case()) {
    case v1::SimFault::kNodeCrash:
      for (size_t i : pick_nodes(f.node_crash().nodes())) {
        crash_node(i);
        if (f.node_crash().restart_after_ms()) at(now + f.node_crash().restart_after_ms(), [this, i] { restart_node(i); });
      }
      break;
    case v1::SimFault::kPartition:
      for (size_t i : pick_nodes(f.partition().nodes())) {
        cut_node(i, true);
        if (f.partition().heal_after_ms()) at(now + f.partition().heal_after_ms(), [this, i] { cut_node(i, false); });
      }
      break;
    case v1::SimFault::kMissedCheckins:
      for (size_t i : pick_nodes(f.missed_checkins().nodes())) {
        cut_node(i, true);
        const uint64_t gap = f.missed_checkins().count() * static_cast<uint64_t>(nodes_[i].cfg.checkin_interval.count());
        at(now + gap, [this, i] { cut_node(i, false); });
      }
      break;
    case v1::SimFault::kControllerCrash:
      crash_controller();
      if (f.controller_crash().restart_after_ms())
        at(now + f.controller_crash().restart_after_ms(), [this] { restart_controller(); });
      break;
    case v1::SimFault::kStuckDevice:
      for (const auto& id : pick_instances(f.stuck_device().instances()))
        instance_hook(id, "ignore_pause", f.stuck_device().device());
      break;
    case v1::SimFault::kIgnoreKicks:
      for (const auto& id : pick_instances(f.ignore_kicks().instances()))
        instance_hook(id, "ignore_kicks", f.ignore_kicks().vcpu());
      break;
    case v1::SimFault::kTripleFault: {
      const auto& tf = f.triple_fault();
      const uint32_t repeat = std::max<uint32_t>(1, tf.repeat());
      for (const auto& id : pick_instances(tf.instances()))
        for (uint32_t r = 0; r < repeat; ++r) {
          auto fire = [this, id, v = tf.vcpu()] {
            ++counters_["sim.triple_faults"];
            instance_hook(id, "triple_fault", v);
          };
          if (r == 0)
            fire();
          else
            at(now + r * tf.interval_ms(), fire);
        }
      break;
    }
    case v1::SimFault::kMessageDelay: {
      const auto& md = f.message_delay();
      for (size_t i : pick_nodes(md.nodes())) {
        // The hold lasts delay_ms plus up to jitter_ms drawn from the seed.
        const uint64_t extra = md.jitter_ms() ? draw_rng_() % (md.jitter_ms() + 1) : 0;
        hold_node(i, true);
        at(now + md.delay_ms() + extra, [this, i] { hold_node(i, false); });
      }
      break;
    }
    case v1::SimFault::kDiskErrors:
      for (size_t i : pick_nodes(f.disk_errors().nodes())) {
        disk_fault(i, true);
        if (f.disk_errors().heal_after_ms())
          at(now + f.disk_errors().heal_after_ms(), [this, i] { disk_fault(i, false); });
      }
      break;
    case v1::SimFault::KIND_NOT_SET: break;
  }
}

void Simulator::disk_fault(size_t i, bool on) {
  auto& n = nodes_[i];
  if (!n.up) return;
  if (on) ++counters_["sim.disk_faults"];
  caf::anon_send(n.handle, disk_fault_atom::value, on);
  timeline(on ? "fault" : "heal", "node " + n.name + (on ? ": disk I/O errors" : ": disk healthy again"));
}

// --- checks ------------------------------------------------------------------------------------

void Simulator::check_acked() {
  for (const auto& id : acked_)
    if (!reader_->get_instance(id))
      violation(kAckedRecordLost, {"controller", id},
                "instance " + label_of_instance(id) + " was acknowledged but is not in the store");
  std::map<std::string, std::set<std::string>> requests;  // instance -> request ids in its log
  for (const auto& a : accepted_) {
    auto it = requests.find(a.id);
    if (it == requests.end()) {
      std::set<std::string> ids;
      for (const auto& e : reader_->list_actions(a.id)) ids.insert(e.request_id);
      it = requests.emplace(a.id, std::move(ids)).first;
    }
    if (!it->second.count(a.request))
      violation(kAckedRecordLost, {"controller", a.id},
                "action " + a.request + " on " + label_of_instance(a.id) + " was accepted but is not in the store");
  }
}

void Simulator::check_creates() {
  for (const auto& id : acked_) {
    if (errored_creates_.count(id)) continue;
    auto r = reader_->get_instance(id);
    if (!r || r->sf_state != SfInstanceState::error) continue;
    errored_creates_.insert(id);
    std::string why;
    for (const auto& a : reader_->list_actions(id))
      if (a.action == control::Action::create)
        for (const auto& e : a.events)
          if (e.result == "error") why = e.name + ": " + e.detail;
    violation(kCreateError, {"controller", id},
              "instance " + label_of_instance(id) + ": its create was acknowledged, and it ended in error" +
                  (why.empty() ? std::string() : " (" + why + ")"));
  }
}

void Simulator::checkpoint(bool final_check) {
  const uint64_t now = now_ms();
  const int64_t snow = store_now();
  // One read transaction for the whole checkpoint: every check sees the same
  // state of the store, and the reads do not take SQLite's file locks (a
  // few fcntl calls) once per record: those were a tenth of a run's time.
  try {
    reader_->read_snapshot([&] { checkpoint_reads(now, snow, final_check); });
  } catch (const control::StoreError& e) {
    line(std::string("checkpoint: store read failed: ") + e.what());
    ++counters_["sim.store_read_failures"];
  }
}

void Simulator::checkpoint_reads(uint64_t now, int64_t snow, bool final_check) {
  // Nodes: changes, the node machine, and the error fan-out rule.
  for (const auto& n : reader_->list_nodes()) {
    const std::string st = control::to_string(n.state);
    auto it = node_states_.find(n.name);
    if (it == node_states_.end() || it->second != st) {
      if (it != node_states_.end()) {
        auto from = control::node_state_from_string(it->second);
        if (from && !reachable(control::node_transitions(), *from, n.state))
          violation(kRecordTable, {n.name}, "node " + n.name + ": " + it->second + " -> " + st + " is not in the node table");
      }
      timeline("node_state", "node " + n.name + ": " + (it == node_states_.end() ? "(new)" : it->second) + " -> " + st);
      node_states_[n.name] = st;
    }
    if (n.state == NodeState::error) {
      error_since_.try_emplace(n.name, now);
    } else {
      error_since_.erase(n.name);
      error_checked_.erase(n.name);
    }
  }
  for (const auto& [name, since] : error_since_) {
    if (error_checked_.count(name) || now - since < sc_.invariants().error_fanout_ms()) continue;
    error_checked_.insert(name);
    std::vector<std::string> live;
    for (const auto& r : reader_->list_instances_on_node(name))
      if (r.sf_state == SfInstanceState::initial || r.sf_state == SfInstanceState::preflight ||
          r.sf_state == SfInstanceState::creating || r.sf_state == SfInstanceState::created)
        live.push_back(r.id);
    if (!live.empty()) {
      std::vector<std::string> who{name};
      for (size_t k = 0; k < live.size() && k < 5; ++k) who.push_back(live[k]);
      violation(kErrorFanout, who,
                "node " + name + " is in error since " + std::to_string(since) + " ms, but " +
                    std::to_string(live.size()) + " of its instances are not errored (first: " + live.front() + ")");
    }
  }
  // Instance records: the Shaken Fist machine (small runs only: this lists them all).
  if (acked_.size() <= 5000 || final_check) {
    const bool log = acked_.size() <= 2000;
    for (const auto& r : reader_->list_instances()) {
      auto it = sf_states_.find(r.id);
      if (it != sf_states_.end() && it->second == r.sf_state) continue;
      if (it != sf_states_.end() && !reachable(control::sf_instance_transitions(), it->second, r.sf_state))
        violation(kRecordTable, {r.id},
                  "instance " + label_of_instance(r.id) + ": sf_state " + control::to_string(it->second) + " -> " +
                      control::to_string(r.sf_state) + " is not in the instance table");
      if (log)
        timeline("instance_state", label_of_instance(r.id) + ": " +
                                       (it == sf_states_.end() ? std::string("(new)") : control::to_string(it->second)) +
                                       " -> " + control::to_string(r.sf_state) + ", vm_state " +
                                       control::to_string(r.vm_state) + (r.node.empty() ? "" : ", node " + r.node));
      sf_states_[r.id] = r.sf_state;
    }
  }
  // Accepted actions end within their deadline.
  const int64_t limit =
      static_cast<int64_t>(sc_.controller().action_deadline_ms() + sc_.invariants().action_grace_ms());
  for (const auto& a : reader_->list_running_actions()) {
    if (snow - a.start <= limit || late_actions_.count(a.id)) continue;
    late_actions_.insert(a.id);
    violation(kActionDeadline, {"controller", a.instance_id},
              "action " + std::string(control::to_string(a.action)) + " " + a.request_id + " on " +
                  label_of_instance(a.instance_id) + " still running " + std::to_string(snow - a.start) +
                  " ms after it was accepted (deadline " + std::to_string(limit) + " ms)");
  }
  if (sc_.invariants().creates_succeed()) check_creates();
  if ((check_acked_ && ctl_up_) || final_check) {
    check_acked();
    check_acked_ = false;
  }
}

void Simulator::finish_report(bool) {
  report_.set_scenario(sc_.name());
  report_.set_seed(opt_.seed);
  report_.set_events(events_delivered_);
  report_.set_simulated_ms(sc_.duration_ms());
  report_.set_trace_hash(trace_.hash_hex());
  report_.set_trace_lines(trace_.size());
  report_.set_peak_rss_kib(peak_rss_kib());
  if (report_.wall_seconds() > 0) report_.set_events_per_second(static_cast<double>(events_delivered_) / report_.wall_seconds());
  report_.set_replay("apiary simulate " + (opt_.scenario_path.empty() ? std::string("SCENARIO") : opt_.scenario_path) +
                     " --seed " + std::to_string(opt_.seed));
  auto& c = *report_.mutable_counters();
  for (const auto& [k, v] : counters_) c[k] = v;
  c["sim.events"] = events_delivered_;
  c["sim.steps"] = steps_;
  // Final state tables, from the store (reopened: the controller is gone).
  try {
    control::StoreOptions ro;
    ro.clock = [] { return kEpochMs; };
    auto store = control::StateStore::open(store_path_, ro);
    store.read_snapshot([&] { final_counts(store, c); });
  } catch (const control::StoreError& e) {
    report_.add_expectation_failures(std::string("the final store could not be read: ") + e.what());
  }
  expectations(c);
}

// The final state tables, from the store, into the report's counters.
void Simulator::final_counts(control::StateStore& store, google::protobuf::Map<std::string, uint64_t>& c) {
  const auto instances = store.list_instances();
  c["instances.total"] = instances.size();
  for (const auto& r : instances) {
    ++c[std::string("instances.sf_state.") + control::to_string(r.sf_state)];
    ++c[std::string("instances.vm_state.") + control::to_string(r.vm_state)];
    ++c[std::string("instances.task_state.") + control::to_string(r.task_state)];
  }
  if (instances.size() <= 20000)
    for (const auto& r : instances)
      for (const auto& a : store.list_actions(r.id)) {
        ++c[std::string("actions.result.") + control::to_string(a.result)];
        ++c[std::string("actions.") + control::to_string(a.action) + "." + control::to_string(a.result)];
      }
  for (const auto& n : store.list_nodes()) {
    ++c[std::string("nodes.state.") + control::to_string(n.state)];
    report_.add_nodes(n.name + " " + control::to_string(n.state) + " " + std::to_string(n.instances) + " instance(s)");
  }
}

void Simulator::expectations(google::protobuf::Map<std::string, uint64_t>& c) {
  const auto& ex = sc_.expect();
  std::set<std::string> expected(ex.violations().begin(), ex.violations().end());
  const std::set<std::string>& seen = violated_;
  for (const auto& v : seen)
    if (!expected.count(v)) report_.add_expectation_failures("unexpected violation of " + v);
  for (const auto& v : expected)
    if (!seen.count(v)) report_.add_expectation_failures("expected a violation of " + v + ", none was found");
  auto value = [&c](const std::string& k) -> uint64_t {
    auto it = c.find(k);
    return it == c.end() ? 0 : it->second;
  };
  for (const auto& [k, v] : ex.counters_at_least())
    if (value(k) < v)
      report_.add_expectation_failures(k + " = " + std::to_string(value(k)) + ", expected at least " + std::to_string(v));
  for (const auto& [k, v] : ex.counters_at_most())
    if (value(k) > v)
      report_.add_expectation_failures(k + " = " + std::to_string(value(k)) + ", expected at most " + std::to_string(v));
  report_.set_ok(report_.expectation_failures().empty());
}

}  // namespace

SimResult simulate(const v1::Scenario& scenario, const SimOptions& options) {
  Simulator sim(scenario, options);
  return sim.run();
}

}  // namespace apiary::sim
