// The create path: validation, the record, placement (filters and ranking,
// every rejection an event of the action) and the build on the chosen node.
#include "cluster/controller_internal.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

namespace apiary::actors::controller_detail {

Load load_of(controller_pointer self, const std::string& node) {
  auto& st = self->state;
  const control::NodeUsage u = st.store->node_usage(node);
  Load l{u.instances, u.vcpus, u.memory_mib};
  for (const auto& [id, memo] : st.resizes) {
    // Resized, not yet confirmed: either board may run, so hold the larger.
    auto r = st.store->get_instance(id);
    if (!r || r->node != node || !control::holds_resources(r->sf_state)) continue;
    const uint64_t old_v = memo.old_spec.board().vcpus(), old_m = memo.old_spec.board().memory_mib();
    if (old_v > r->spec.board().vcpus()) l.vcpus += old_v - r->spec.board().vcpus();
    if (old_m > r->spec.board().memory_mib()) l.memory_mib += old_m - r->spec.board().memory_mib();
  }
  return l;
}

// What the scheduler decided: a node, or none with every rejection's
// reason; `waiting_until` is set when a node that the store lists as up has
// not connected yet and may still (see ControllerConfig::placement_wait).
struct Placement {
  std::optional<std::string> node;
  std::string decision;              // the schedule event's detail
  std::vector<std::string> rejected;  // one reason per node
  std::vector<std::string> not_connected;
  std::optional<control::UnixMillis> waiting_until;
};

// Filters and ranks the nodes. Writes nothing: the caller logs the outcome.
// only: consider that node alone (an unshelve to a named host).
static Placement pick_node(controller_pointer self, const v1::InstanceSpec& spec, const std::string& only = {},
                           const std::string& exclude = {}) {
  auto& st = self->state;
  const uint64_t want_v = spec.board().vcpus();
  const uint64_t want_m = spec.board().memory_mib();
  const control::UnixMillis now = st.store->now();
  const int64_t wait_ms = st.cfg.placement_wait.count();
  struct Candidate {
    std::string name;
    Load load;
  };
  std::vector<Candidate> ok;
  Placement p;
  for (const auto& n : st.store->list_nodes()) {
    if (!only.empty() && n.name != only) continue;
    if (n.name == exclude) {
      p.rejected.push_back("node " + n.name + ": the instance is already there");
      continue;
    }
    if (n.state != NodeState::created) {
      p.rejected.push_back("node " + n.name + ": state " + control::to_string(n.state));
      continue;
    }
    if (!st.nodes.count(n.name)) {
      p.rejected.push_back("node " + n.name + ": no check-in since the controller started");
      p.not_connected.push_back(n.name);
      const control::UnixMillis until = std::max(st.started, n.last_checkin) + wait_ms;
      if (wait_ms > 0 && until > now) p.waiting_until = std::max(p.waiting_until.value_or(0), until);
      continue;
    }
    if (auto c = st.cannot_run.find(n.name); c != st.cannot_run.end() && !c->second.empty()) {
      p.rejected.push_back("node " + n.name + ": cannot run instances: " + c->second);
      continue;
    }
    const Load l = load_of(self, n.name);
    const auto cap_v = static_cast<uint64_t>(n.vcpus * st.cfg.cpu_allocation_ratio);
    const auto cap_m = static_cast<uint64_t>(static_cast<double>(n.memory_mib) * st.cfg.ram_allocation_ratio);
    if (l.vcpus + want_v > cap_v) {
      std::ostringstream o;
      o << "node " << n.name << ": not enough vCPUs: " << want_v << " requested, " << l.vcpus << " of " << cap_v
        << " in use (" << n.vcpus << " x cpu_allocation_ratio " << st.cfg.cpu_allocation_ratio << ")";
      p.rejected.push_back(o.str());
      continue;
    }
    if (l.memory_mib + want_m > cap_m) {
      std::ostringstream o;
      o << "node " << n.name << ": not enough memory: " << want_m << " MiB requested, " << l.memory_mib << " of "
        << cap_m << " MiB in use (" << n.memory_mib << " MiB x ram_allocation_ratio " << st.cfg.ram_allocation_ratio
        << ")";
      p.rejected.push_back(o.str());
      continue;
    }
    ok.push_back({n.name, l});
  }
  if (ok.empty()) {
    p.decision = "no valid host: " + std::to_string(p.rejected.size()) + " node(s) rejected, none left";
    return p;
  }
  p.waiting_until.reset();
  // Lowest load first: fewest instances, then fewest vCPUs in use, then name.
  std::sort(ok.begin(), ok.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.load.instances, a.load.vcpus, a.name) < std::tie(b.load.instances, b.load.vcpus, b.name);
  });
  const Candidate& c = ok.front();
  p.node = c.name;
  p.decision = "node " + c.name + " (" + std::to_string(c.load.instances) + " instances, " +
               std::to_string(c.load.vcpus) + " vCPUs in use; " + std::to_string(ok.size()) + " candidate(s))";
  return p;
}

std::optional<std::string> choose_node(controller_pointer self, const v1::InstanceSpec& spec, const std::string& only,
                                       std::string& decision, const std::string& exclude) {
  Placement p = pick_node(self, spec, only, exclude);
  decision = p.decision;
  if (!p.node && !only.empty() && p.rejected.empty()) decision = "no valid host: node " + only + " is not known";
  for (const auto& r : p.rejected) decision += "; " + r;
  return p.node;
}

static std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// preflight -> (scheduled) creating -> node starts it -> created / ACTIVE.
// `in_preflight`: the record is already there (a create the controller
// takes up again after a restart).
void build(controller_pointer self, const std::string& id, int64_t action_id, bool in_preflight) {
  auto& st = self->state;
  auto& store = *st.store;
  std::optional<InstanceRecord> rec;
  std::optional<std::string> node;
  bool waiting = false;
  // Preflight, the scheduler's events and the placement are one commit (one
  // fsync): nothing outside the store happens between them. While the
  // placement waits for nodes to connect, only its first attempt is logged.
  try {
    store.with_transaction([&] {
      if (!in_preflight) transition(self, id, action_id, SfInstanceState::preflight);
      rec = store.get_instance(id);
      Placement p = pick_node(self, rec->spec);
      if (!p.node && p.waiting_until) {
        waiting = true;
        if (!st.waiting_placements.insert(action_id).second) return;
        event(self, action_id, "schedule", "waiting",
              "no valid host yet; waiting up to " + std::to_string((*p.waiting_until - store.now() + 999) / 1000) +
                  " s for node(s) not connected since the controller started: " + joined(p.not_connected));
        return;
      }
      st.waiting_placements.erase(action_id);
      for (const auto& why : p.rejected) event(self, action_id, "filter", "rejected", why);
      event(self, action_id, "schedule", p.node ? "success" : "error", p.decision);
      node = p.node;
      if (!node) return;
      auto r = store.get_instance(id);
      r->node = *node;
      store.put_instance(*r);
      transition(self, id, action_id, SfInstanceState::creating);
    });
  } catch (const StoreError& e) {
    note(self, "instance " + id + ": create failed in the store: " + e.detail());
    st.waiting_placements.erase(action_id);
    waiting = false;
    node.reset();
  }
  if (waiting) {
    self->delayed_send(self, st.cfg.placement_retry, replace_atom::value, id, action_id);
    return;
  }
  if (!node) {
    fail_record(self, id, action_id);
    finish(self, action_id, ActionResult::error);
    return;
  }
  const auto start = store.now();
  std::string bytes;
  rec->spec.SerializeToString(&bytes);
  self->request(st.nodes.at(*node), st.cfg.action_deadline, place_atom::value, id, bytes)
      .then(
          [self, id, action_id, start, node](const std::string&) {
            // The spawn event, created and the finished action: one commit,
            // all or nothing (the store's throwing calls, no swallowed errors).
            auto& store = *self->state.store;
            try {
              bool finished = false;
              store.with_transaction([&] {
                store.append_action_event(
                    action_id, ActionEvent{"spawn", start, store.now(), "success", "running on node " + *node});
                transition(self, id, action_id, SfInstanceState::created);
                finished = store.finish_action(action_id, ActionResult::success, VmState::active);
              });
              if (finished) observe_finished(self, action_id);
            } catch (const StoreError& e) {
              // e.g. the node was declared in error meanwhile (all of it rolled back).
              event(self, action_id, "spawn", "success", "running on node " + *node, start);
              event(self, action_id, "sf_state", "error", e.detail());
              finish(self, action_id, ActionResult::error);
            }
          },
          [self, id, action_id, start, node](caf::error& e) {
            event(self, action_id, "spawn", "error", "node " + *node + ": " + describe(e), start);
            fail_record(self, id, action_id);
            finish(self, action_id, ActionResult::error);
          });
}


// The create API: validate, write the record (initial, building, action
// "create") and start building it. A non-empty `request_id` is the client's
// idempotency key: a create with a key already used answers the instance
// that key created (or 409 when another action used it).
caf::result<std::string> create_instance(controller_pointer self, const std::string& bytes,
                                         const std::string& request_id) {
  const bool use_key = !request_id.empty() && !self->state.cfg.test_ignore_request_ids;
  if (!request_id.empty()) {
    const bool valid = request_id.size() <= 64 && std::all_of(request_id.begin(), request_id.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
    if (!valid)
      return make_control_error(ControlErrc::bad_request,
                                "request_id '" + request_id.substr(0, 80) + "' must be 1..64 of [A-Za-z0-9._-]");
    try {
      if (auto prior = use_key ? self->state.store->find_action(request_id) : std::nullopt) {
        if (prior->action != Action::create)
          return make_control_error(ControlErrc::conflict, "request_id " + request_id + " was used by a '" +
                                                               control::to_string(prior->action) + "' action of " +
                                                               prior->instance_id);
        return prior->instance_id;
      }
    } catch (const StoreError& e) {
      return store_failed(e);
    }
  }
  v1::InstanceSpec spec;
  if (!spec.ParseFromString(bytes))
    return make_control_error(ControlErrc::bad_request, "the instance spec does not parse");
  spec::apply_defaults(spec);
  if (auto problems = spec::validate(spec, spec::Limits{}); !problems.empty()) {
    std::string msg = "invalid instance spec:";
    for (const auto& p : problems) msg += " " + spec::to_string(p) + ";";
    msg.pop_back();
    return make_control_error(ControlErrc::bad_request, msg);
  }
  auto& store = *self->state.store;
  std::vector<NetworkRecord> networks;  // in NIC order
  try {
    for (int i = 0; i < spec.devices().nics_size(); ++i) {
      std::string why;
      auto net = resolve_network(store, spec.devices().nics(i).network(), why);
      if (!net)
        return make_control_error(ControlErrc::bad_request,
                                  "invalid instance spec: devices.nics[" + std::to_string(i) + "].network: " + why);
      networks.push_back(*net);
    }
  } catch (const StoreError& e) {
    return store_failed(e);
  }
  InstanceRecord r;
  r.id = new_id(self, "i-");
  r.name = spec.name();
  r.spec = spec;
  try {
    if (auto why = assign_nic_addresses(store, r.spec, r.id, networks))
      return make_control_error(ControlErrc::bad_request, "invalid instance spec: " + *why);
  } catch (const StoreError& e) {
    return store_failed(e);
  }
  int64_t action_id = 0;
  try {
    store.with_transaction([&] {
      store.put_instance(r);
      for (const auto& net : networks) store.attach(net.id, r.id);
      action_id = store.begin_action(r.id, Action::create, use_key ? request_id : new_id(self, "req-"));
    });
  } catch (const StoreError& e) {
    return store_failed(e);
  }
  build(self, r.id, action_id);
  return r.id;
}

}  // namespace apiary::actors::controller_detail
