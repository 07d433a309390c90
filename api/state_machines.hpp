// The control plane's three state models as graphs, for GET
// /v1/state-machines (the dashboard draws them): Nova's vm_states with the
// actions between them, Propolis' per-VM instance lifecycle, and Shaken
// Fist's instance, network and node records.
//
// Why built from the tables: the graphs a user sees are the same tables
// that refuse a transition (cluster/nova_states, cluster/shakenfist_states,
// actors/instance_lifecycle), so a drawing can never disagree with what the
// control plane does.
#pragma once

#include "proto/apiary/v1/api.pb.h"

namespace apiary::apps {

// Every machine, each with its states in table order and its transitions.
// Nova's graph has the edges the seed document draws (not the "+" states
// Nova's code also accepts), one per action and target, without the
// self-loops of actions that leave vm_state unchanged (snapshot, backup).
v1::StateMachines state_machines();

}  // namespace apiary::apps
