// The controller's live views (ChangeFeed in controller_internal.hpp): the
// watchers told of every committed change, the VMM states nodes report, and
// the states each record has been in while this controller ran.
#include "cluster/controller_internal.hpp"

#include "actors/instance_lifecycle.hpp"

namespace apiary::actors::controller_detail {

namespace {

// Appends `state` unless it is the last one already; keeps the newest kHistoryMax.
void note(std::vector<std::string>& history, const std::string& state) {
  if (state.empty() || (!history.empty() && history.back() == state)) return;
  history.push_back(state);
  if (history.size() > ChangeFeed::kHistoryMax)
    history.erase(history.begin(), history.end() - static_cast<std::ptrdiff_t>(ChangeFeed::kHistoryMax));
}

// Every record starts in its machine's entry state (the store refuses any
// other), so a history starts there even when this controller first saw
// the record later (a restart) or the entry state never committed alone
// (a create writes initial and preflight in one transaction).
std::vector<std::string>& started(std::vector<std::string>& history, const char* entry) {
  if (history.empty()) history.push_back(entry);
  return history;
}

// The history of `key`, ending with `current` (which the map may not have
// seen yet: a record this controller has not changed since it started).
std::vector<std::string> history_of(const std::map<std::string, std::vector<std::string>>& all, const std::string& key,
                                    const char* entry, const std::string& current) {
  auto it = all.find(key);
  std::vector<std::string> h = it == all.end() ? std::vector<std::string>{} : it->second;
  started(h, entry);
  note(h, current);
  return h;
}

}  // namespace

void ChangeFeed::committed(const control::StoreChanges& c) {
  std::unique_lock lock(mu);
  for (const auto& step : c.steps) {
    if (step.kind == 'i') {
      if (step.field == "gone") {  // deleted outright or purged: nothing left to show
        vm_history.erase(step.key);
        sf_history.erase(step.key);
        if (auto it = vmm.find(step.key); it != vmm.end()) {
          for (const auto& [node, report] : it->second) reported_by[node].erase(step.key);
          vmm.erase(it);
        }
      } else if (step.field == "vm_state") {
        note(started(vm_history[step.key], control::to_string(control::VmState::building)), step.state);
      } else {
        note(started(sf_history[step.key], control::to_string(control::kSfInstanceEntry)), step.state);
      }
    } else {
      auto& all = step.kind == 'n' ? network_history : node_history;
      if (step.field == "gone")
        all.erase(step.key);
      else
        note(started(all[step.key], step.kind == 'n' ? control::to_string(control::kNetworkEntry)
                                                     : control::to_string(control::kNodeEntry)),
             step.state);
    }
  }
  lock.unlock();
  tell(c.instances, c.networks, c.nodes);
}

bool ChangeFeed::report(const std::string& node, const std::string& id, const std::string& state,
                        const std::string& power) {
  std::unique_lock lock(mu);
  auto& cur = vmm[id][node];
  reported_by[node].insert(id);
  if (cur.state == state && cur.power == power) return false;
  cur.state = state;
  cur.power = power;
  note(started(cur.history, actors::to_string(actors::InstanceState::start)), state);
  return true;
}

std::vector<std::string> ChangeFeed::forget_node(const std::string& node) {
  std::unique_lock lock(mu);
  std::vector<std::string> ids;
  auto by = reported_by.find(node);
  if (by == reported_by.end()) return ids;
  for (const auto& id : by->second) {
    auto it = vmm.find(id);
    if (it == vmm.end() || it->second.erase(node) == 0) continue;
    ids.push_back(id);
    if (it->second.empty()) vmm.erase(it);
  }
  reported_by.erase(by);
  return ids;  // sorted: the set's order
}

void ChangeFeed::tell(const std::vector<std::string>& instances, const std::vector<std::string>& networks,
                      const std::vector<std::string>& nodes) const {
  if (instances.empty() && networks.empty() && nodes.empty()) return;
  for (const auto& w : watchers) caf::anon_send(w, changed_atom::value, instances, networks, nodes);
}

void ChangeFeed::drop_watcher(const caf::actor_addr& who) {
  std::erase_if(watchers, [&](const caf::actor& a) { return a.address() == who; });
}

InstanceInfo ChangeFeed::with_live_state(InstanceInfo info) const {
  std::shared_lock lock(mu);
  // Only the report of the node the record names counts (another is stale).
  if (auto it = vmm.find(info.id); it != vmm.end()) {
    if (auto r = it->second.find(info.node); r != it->second.end()) {
      info.lifecycle = r->second.state;
      info.power = r->second.power;
      info.lifecycle_history = r->second.history;
    }
  }
  info.vm_history = history_of(vm_history, info.id, control::to_string(control::VmState::building), info.vm_state);
  info.sf_history = history_of(sf_history, info.id, control::to_string(control::kSfInstanceEntry), info.sf_state);
  note(info.lifecycle_history, info.lifecycle);  // none without a report: the VMM's state is not known
  return info;
}

NodeInfo ChangeFeed::with_history(NodeInfo info) const {
  std::shared_lock lock(mu);
  info.history = history_of(node_history, info.name, control::to_string(control::kNodeEntry), info.state);
  return info;
}

NetworkInfo ChangeFeed::with_history(NetworkInfo info) const {
  std::shared_lock lock(mu);
  info.history = history_of(network_history, info.id, control::to_string(control::kNetworkEntry), info.state);
  return info;
}

}  // namespace apiary::actors::controller_detail
