// The controller's live views (ChangeFeed in controller_internal.hpp): the
// watchers told of every committed change, the VMM states nodes report, and
// the states each record has been in while this controller ran.
#include "cluster/controller_internal.hpp"

namespace apiary::actors::controller_detail {

namespace {

// Appends `state` unless it is the last one already; keeps the newest kHistoryMax.
void note(std::vector<std::string>& history, const std::string& state) {
  if (state.empty() || (!history.empty() && history.back() == state)) return;
  history.push_back(state);
  if (history.size() > ChangeFeed::kHistoryMax)
    history.erase(history.begin(), history.end() - static_cast<std::ptrdiff_t>(ChangeFeed::kHistoryMax));
}

// The history of `key`, ending with `current` (which the map may not have
// seen yet: a record this controller has not changed since it started).
std::vector<std::string> history_of(const std::map<std::string, std::vector<std::string>>& all, const std::string& key,
                                    const std::string& current) {
  auto it = all.find(key);
  std::vector<std::string> h = it == all.end() ? std::vector<std::string>{} : it->second;
  note(h, current);
  return h;
}

}  // namespace

void ChangeFeed::committed(const control::StoreChanges& c) {
  if (store != nullptr) {
    for (const auto& id : c.instances) {
      auto r = store->get_instance(id);
      if (!r) {  // purged or deleted outright: nothing left to show
        vm_history.erase(id);
        sf_history.erase(id);
        lifecycle_history.erase(id);
        vmm.erase(id);
        continue;
      }
      note(vm_history[id], control::to_string(r->vm_state));
      note(sf_history[id], control::to_string(r->sf_state));
    }
    for (const auto& id : c.networks) {
      auto r = store->get_network(id);
      if (r)
        note(network_history[id], control::to_string(r->state));
      else
        network_history.erase(id);
    }
    for (const auto& name : c.nodes) {
      auto r = store->get_node(name);
      if (r)
        note(node_history[name], control::to_string(r->state));
      else
        node_history.erase(name);
    }
  }
  tell(c.instances, c.networks, c.nodes);
}

bool ChangeFeed::report(const std::string& node, const std::string& id, const std::string& state,
                        const std::string& power) {
  auto& cur = vmm[id];
  if (cur.node == node && cur.state == state && cur.power == power) return false;
  cur = {node, state, power};
  note(lifecycle_history[id], state);
  return true;
}

std::vector<std::string> ChangeFeed::forget_node(const std::string& node) {
  std::vector<std::string> ids;
  for (auto it = vmm.begin(); it != vmm.end();) {
    if (it->second.node == node) {
      ids.push_back(it->first);
      it = vmm.erase(it);
    } else {
      ++it;
    }
  }
  return ids;
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
  // A report from a node that does not hold the record (any more) is stale.
  if (auto it = vmm.find(info.id); it != vmm.end() && it->second.node == info.node) {
    info.lifecycle = it->second.state;
    info.power = it->second.power;
  }
  info.vm_history = history_of(vm_history, info.id, info.vm_state);
  info.sf_history = history_of(sf_history, info.id, info.sf_state);
  info.lifecycle_history = history_of(lifecycle_history, info.id, info.lifecycle);
  return info;
}

NodeInfo ChangeFeed::with_history(NodeInfo info) const {
  info.history = history_of(node_history, info.name, info.state);
  return info;
}

NetworkInfo ChangeFeed::with_history(NetworkInfo info) const {
  info.history = history_of(network_history, info.id, info.state);
  return info;
}

}  // namespace apiary::actors::controller_detail
