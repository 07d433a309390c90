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

// The NICs of `r` on network `n` (matched by id; records from before NICs
// were rewritten to ids match by name).
std::vector<std::pair<int, const v1::Nic*>> nics_on(const InstanceRecord& r, const NetworkRecord& n) {
  std::vector<std::pair<int, const v1::Nic*>> out;
  for (int i = 0; i < r.spec.devices().nics_size(); ++i) {
    const auto& nic = r.spec.devices().nics(i);
    if (nic.network() == n.id || nic.network() == n.name) out.emplace_back(i, &nic);
  }
  return out;
}

NetworkInfo to_info(control::StateStore& store, const NetworkRecord& n,
                    const std::map<std::string, std::string>& vteps, const std::map<std::string, std::string>& errors) {
  NetworkInfo out{n.id, n.name, n.cidr, control::to_string(n.state), {}, net::vni_of(n.id), {}, {}, {}, {}};
  if (auto e = errors.find(n.id); e != errors.end() && n.state == NetworkState::error) out.error = e->second;
  for (const auto& a : store.attachments_of_network(n.id)) {
    out.instances.push_back(a.instance_id);
    auto r = store.get_instance(a.instance_id);
    if (!r) continue;
    for (const auto& [i, nic] : nics_on(*r, n))
      out.ports.push_back({r->id, static_cast<uint32_t>(i), nic->mac(), nic->ipv4(), r->node});
    if (!r->node.empty()) {
      auto v = vteps.find(r->node);
      out.vteps[r->node] = v == vteps.end() ? "" : v->second;
    }
  }
  return out;
}

std::optional<std::string> assign_nic_addresses(control::StateStore& store, v1::InstanceSpec& spec,
                                                const std::string& instance_id,
                                                const std::vector<NetworkRecord>& networks) {
  for (int i = 0; i < spec.devices().nics_size(); ++i) {
    auto* nic = spec.mutable_devices()->mutable_nics(i);
    const NetworkRecord& net = networks[static_cast<size_t>(i)];
    const std::string where = "devices.nics[" + std::to_string(i) + "]";
    nic->set_network(net.id);
    if (nic->mac().empty()) nic->set_mac(spec::format_mac(devices::default_mac(instance_id, static_cast<unsigned>(i))));
    if (net.cidr.empty()) {
      if (!nic->ipv4().empty()) return where + ".ipv4: network " + net.id + " has no CIDR to take an address from";
      continue;
    }
    const auto cidr = spec::parse_ipv4_prefix(net.cidr);
    if (!cidr || cidr->len > 30) return where + ".network: network " + net.id + " has no usable CIDR (" + net.cidr + ")";
    const uint32_t mask = cidr->len == 0 ? 0 : ~uint32_t{0} << (32 - cidr->len);
    const uint32_t base = cidr->addr & mask, broadcast = base | ~mask;
    // Addresses taken: every other NIC on this network, and this spec's
    // earlier NICs.
    std::set<uint32_t> taken;
    for (const auto& a : store.attachments_of_network(net.id)) {
      auto r = store.get_instance(a.instance_id);
      if (!r || r->id == instance_id) continue;
      for (const auto& [k, other] : nics_on(*r, net))
        if (auto p = spec::parse_ipv4_prefix(other->ipv4())) taken.insert(p->addr);
    }
    for (int k = 0; k < i; ++k)
      if (auto p = spec::parse_ipv4_prefix(spec.devices().nics(k).ipv4())) taken.insert(p->addr);
    if (!nic->ipv4().empty()) {
      const auto want = spec::parse_ipv4_prefix(nic->ipv4());
      if (!want) return where + ".ipv4: not an address with its prefix";
      if ((want->addr & mask) != base || want->len != cidr->len || want->addr == base || want->addr == broadcast)
        return where + ".ipv4: " + nic->ipv4() + " is not a host address of network " + net.id + " (" + net.cidr + ")";
      if (taken.count(want->addr)) return where + ".ipv4: " + nic->ipv4() + " is taken on network " + net.id;
      continue;
    }
    // The lowest free host address (the first one is left for a gateway).
    std::optional<uint32_t> pick;
    for (uint32_t a = base + 2; a < broadcast; ++a)
      if (!taken.count(a)) {
        pick = a;
        break;
      }
    if (!pick) return where + ".network: network " + net.id + " (" + net.cidr + ") has no free address";
    nic->set_ipv4(spec::to_string(spec::Ipv4Prefix{*pick, cidr->len}));
  }
  return std::nullopt;
}

std::map<std::string, std::vector<std::string>> node_networks(controller_pointer self, const std::string& node,
                                                             const std::string& vtep,
                                                             const std::map<std::string, std::string>& hosted) {
  auto& st = self->state;
  auto& store = *st.store;
  if (st.vteps[node] != vtep) note(self, "node " + node + ": VTEP " + (vtep.empty() ? "none (no overlay)" : vtep));
  st.vteps[node] = vtep;
  auto fail = [&](const NetworkRecord& n, const std::string& why) {
    if (n.state != NetworkState::created) return;
    store.record_transition(n.id, NetworkState::error);
    st.network_errors[n.id] = why;
    note(self, "network " + n.id + ": created -> error (" + why + ")");
  };
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [id, problem] : hosted) {
    auto& peers = out[id];
    auto n = store.get_network(id);
    // Even a deleted network is answered while a node still hosts its
    // ports (an error network is deleted with its instances running).
    if (!n) continue;
    // A problem on one node (its tap) marks the network error, but the
    // overlay keeps carrying its running guests: the peers are answered.
    if (!problem.empty()) fail(*n, "node " + node + ": " + problem);
    std::set<std::string> nodes;
    for (const auto& a : store.attachments_of_network(id)) {
      auto r = store.get_instance(a.instance_id);
      if (!r || r->node.empty() || r->node == node || r->sf_state == SfInstanceState::deleted) continue;
      nodes.insert(r->node);
    }
    for (const auto& other : nodes) {
      auto rec = store.get_node(other);
      auto v = st.vteps.find(other);
      if (!rec || rec->state != NodeState::created || v == st.vteps.end() || v->second.empty()) continue;
      peers.push_back(v->second);
    }
    if (vtep.empty() && !nodes.empty())
      fail(*n, "node " + node + " hosts a port of it without a VTEP, and it spans other nodes (start the node with --vtep)");
  }
  return out;
}

bool vni_taken(control::StateStore& store, const std::string& id) {
  const uint32_t vni = net::vni_of(id);
  for (const auto& n : store.list_networks())
    if (net::vni_of(n.id) == vni) return true;
  return false;
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
