#include "net/network_actor.hpp"

#include <system_error>

namespace apiary::net {

namespace {

struct NetworkActorState {
  NetworkActorConfig cfg;
  std::shared_ptr<Switch> sw;
  uint64_t bad_peers = 0;
  ~NetworkActorState() {
    // Leaving the overlay before the switch goes: no datagram is taken in
    // for a switch that is being torn down.
    if (cfg.tunnel && sw) cfg.tunnel->detach(cfg.vni, sw.get());
  }
  static inline const char* name = "network";
};
using network_pointer = network_actor::stateful_pointer<NetworkActorState>;

network_actor::behavior_type network_impl(network_pointer self, std::shared_ptr<Switch> sw, NetworkActorConfig cfg) {
  auto& st = self->state;
  st.sw = std::move(sw);
  st.cfg = std::move(cfg);
  return {
      [=](net_peers_atom, const std::vector<std::string>& peers) -> net_ack_atom {
        auto& st = self->state;
        std::vector<Endpoint> eps;
        for (const auto& p : peers) {
          if (auto e = parse_endpoint(p))
            eps.push_back(*e);
          else
            ++st.bad_peers;
        }
        if (st.cfg.tunnel) st.cfg.tunnel->set_peers(st.cfg.vni, eps);
        return net_ack_atom::value;
      },
      [=](net_stats_atom) -> SwitchStats {
        auto s = self->state.sw->stats();
        s.bad_peers = self->state.bad_peers;
        return s;
      },
  };
}

}  // namespace

uint32_t guest_ports(const SwitchStats& s) {
  uint32_t n = 0;
  for (const auto& p : s.ports) n += p.kind == "guest";
  return n;
}

SpawnedNetwork spawn_network(caf::actor_system& sys, NetworkActorConfig config) {
  auto sc = config.switch_config;
  if (sc.name.empty()) sc.name = config.network_id;
  auto sw = std::make_shared<Switch>(sc);
  std::shared_ptr<TapPort> tap;
  std::string problem;
  if (!config.tap.empty()) {
    try {
      tap = std::make_shared<TapPort>(sw, config.tap);
    } catch (const std::system_error& e) {
      problem = e.what();
    }
  }
  if (config.tunnel && !config.tunnel->attach(config.vni, sw))
    problem = "vxlan_vni_in_use: VNI " + std::to_string(config.vni) + " is already attached on this node's tunnel";
  // A function with arguments, never an argument-less lambda: CAF 0.17
  // dereferences a null argument tuple for the latter (UBSan aborts on it).
  auto actor = sys.spawn(network_impl, sw, std::move(config));
  return {actor, sw, std::move(tap), problem};
}

}  // namespace apiary::net
