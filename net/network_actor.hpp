// The network actor: one per network on each node that hosts a port of it.
//
// Why an actor when frames never pass through it: the switch and the
// overlay (switch.hpp, vxlan.hpp) are a self-contained threaded data plane;
// what they need from the control plane is a lifetime and commands. The
// actor is that: it owns the network's switch on this node, joins it to the
// node's VXLAN tunnel under the network's VNI (and leaves it when the actor
// ends), takes the VTEP peer list the controller computes (through the node)
// and answers the network's counters. With a tap name, spawn_network also
// makes the network's host tap on this node (tap.hpp); the caller owns it
// (SpawnedNetwork::tap), so that the device is gone the moment the node
// drops the network, and a new network actor for the same network a moment
// later never finds the name still taken by the old one. Guest ports are made on its switch by
// the node when it builds an instance (make_guest_port, synchronously, so
// building a VM never waits for a message) and leave it when the VM goes.
//
// Messages:
//   netpeers, ["a.b.c.d:port", ...] -> ack. The other nodes' VTEPs for this
//        network; our own address and unparsable entries are ignored (the
//        latter counted in bad_peers).
//   netstats                       -> the switch's counters (per port
//        frames, bytes, drops; the MAC table; flooding) and bad_peers; the
//        node renders them as metrics
#pragma once

#include <caf/all.hpp>

#include <memory>
#include <string>
#include <vector>

#include "net/switch.hpp"
#include "net/tap.hpp"
#include "net/vxlan.hpp"

namespace apiary::net {

// Atoms of the network actor (CAF 0.17: at most 10 characters). net/ sits
// beside actors/, so they are defined here rather than in actors/atoms.hpp.
using net_peers_atom = caf::atom_constant<caf::atom("netpeers")>;
using net_stats_atom = caf::atom_constant<caf::atom("netstats")>;
using net_ack_atom = caf::atom_constant<caf::atom("ack")>;  // the same atom as actors::ack_atom

struct NetworkActorConfig {
  std::string network_id;
  std::string node;  // for metric labels
  uint32_t vni = 0;
  std::shared_ptr<VxlanTunnel> tunnel;  // null: this node has no overlay (local switching only)
  std::string tap;                      // the host tap to make ("" = none), e.g. tap_name(vni)
  Switch::Config switch_config;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, PortStats& x) {
  return f(caf::meta::type_name("PortStats"), x.id, x.name, x.kind, x.rx_frames, x.rx_bytes, x.tx_frames, x.tx_bytes,
           x.rx_dropped_queue_full, x.rx_dropped_bad_frame, x.tx_dropped);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SwitchStats& x) {
  return f(caf::meta::type_name("SwitchStats"), x.ports, x.mac_entries, x.mac_moves, x.mac_not_learned, x.flooded,
           x.hairpin_drops, x.bad_peers);
}

using network_actor = caf::typed_actor<caf::replies_to<net_peers_atom, std::vector<std::string>>::with<net_ack_atom>,
                                       caf::replies_to<net_stats_atom>::with<SwitchStats>>;

struct SpawnedNetwork {
  network_actor actor;
  std::shared_ptr<Switch> sw;  // for make_guest_port
  std::shared_ptr<TapPort> tap;  // null: none asked for, or it could not be made
  // Why the network is not whole on this node ("" = it is): the tap could
  // not be made (its tap_* failure). The switch works without it; the node
  // reports the problem and the controller marks the network error.
  std::string problem;
};

SpawnedNetwork spawn_network(caf::actor_system& sys, NetworkActorConfig config);

// Guest ports of a switch (the uplink and taps are not counted).
uint32_t guest_ports(const SwitchStats& s);

}  // namespace apiary::net
