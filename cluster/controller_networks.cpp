// Network records and their attachments, as the controller keeps them.
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

NetworkInfo to_info(control::StateStore& store, const NetworkRecord& n) {
  NetworkInfo out{n.id, n.name, n.cidr, control::to_string(n.state), {}};
  for (const auto& a : store.attachments_of_network(n.id)) out.instances.push_back(a.instance_id);
  return out;
}

// "a.b.c.d/n" with each octet 0..255 and n 0..32.
bool valid_cidr(const std::string& s) {
  unsigned a, b, c, d, n;
  char tail;
  if (std::sscanf(s.c_str(), "%3u.%3u.%3u.%3u/%2u%c", &a, &b, &c, &d, &n, &tail) != 5) return false;
  if (s.find_first_not_of("0123456789./") != std::string::npos) return false;
  return a <= 255 && b <= 255 && c <= 255 && d <= 255 && n <= 32;
}

// The network a NIC names: its id, or the name of exactly one live network.
// nullopt with `why` set when there is none (or it is dead, or ambiguous).
std::optional<NetworkRecord> resolve_network(control::StateStore& store, const std::string& ref, std::string& why) {
  if (auto n = store.get_network(ref)) {
    if (control::is_dead(n->state)) {
      why = "network " + ref + " is " + control::to_string(n->state);
      return std::nullopt;
    }
    return n;
  }
  std::vector<NetworkRecord> live;
  bool dead_match = false;
  for (auto& n : store.list_networks()) {
    if (n.name != ref) continue;
    if (control::is_dead(n.state))
      dead_match = true;
    else
      live.push_back(std::move(n));
  }
  if (live.size() == 1) return live.front();
  if (live.size() > 1)
    why = "network name '" + ref + "' is ambiguous (" + std::to_string(live.size()) + " live networks); use its id";
  else
    why = dead_match ? "network '" + ref + "' is being deleted or dead" : "network '" + ref + "' not found";
  return std::nullopt;
}

// Detaches a deleted instance from its networks; a network in delete_wait
// whose last instance this was becomes deleted. Runs in the caller's
// transaction.
void detach_instance(controller_pointer self, const std::string& id, int64_t action_id) {
  auto& store = *self->state.store;
  for (const auto& a : store.attachments_of_instance(id)) {
    store.detach(a.network_id, id);
    const auto now = store.now();
    store.append_action_event(action_id, ActionEvent{"network_detach", now, now, "success", "network " + a.network_id});
    auto net = store.get_network(a.network_id);
    if (net && net->state == NetworkState::delete_wait && store.attachments_of_network(a.network_id).empty()) {
      store.record_transition(a.network_id, NetworkState::deleted);
      note(self, "network " + a.network_id + ": delete_wait -> deleted (its last instance " + id + " was deleted)");
    }
  }
}

}  // namespace apiary::actors::controller_detail
