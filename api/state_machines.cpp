#include "api/state_machines.hpp"

#include "actors/instance_lifecycle.hpp"
#include "cluster/nova_states.hpp"
#include "cluster/shakenfist_states.hpp"

namespace apiary::apps {

namespace {

v1::StateMachine& add(v1::StateMachines& out, const char* name, const char* title, const char* object,
                      const char* field, const char* initial, const char* source) {
  auto& m = *out.add_machines();
  m.set_name(name);
  m.set_title(title);
  m.set_object(object);
  m.set_field(field);
  m.set_initial(initial);
  m.set_source(source);
  return m;
}

void edge(v1::StateMachine& m, const char* from, const char* to, const char* label) {
  auto& t = *m.add_transitions();
  t.set_from(from);
  t.set_to(to);
  t.set_label(label);
}

template <class States, class Transitions>
void shaken_fist(v1::StateMachine& m, const States& states, Transitions transitions) {
  for (auto s : states) m.add_states(control::to_string(s));
  for (const auto& t : transitions) edge(m, control::to_string(t.from), control::to_string(t.to), t.why);
}

}  // namespace

v1::StateMachines state_machines() {
  v1::StateMachines out;
  {
    auto& m = add(out, "nova", "Nova vm_state", "instance", "vm_state", control::to_string(control::VmState::building),
                  "seeds/nova-vm-states.rst");
    for (auto s : control::kAllVmStates) m.add_states(control::to_string(s));
    for (const auto& rule : control::action_rules()) {
      for (auto from : control::kAllVmStates) {
        if (!rule.allowed_seed.contains(from)) continue;
        const auto targets = control::success_states(rule.action, from);
        for (auto to : control::kAllVmStates)
          if (targets.contains(to) && to != from)
            edge(m, control::to_string(from), control::to_string(to), control::to_string(rule.action));
      }
    }
  }
  {
    auto& m = add(out, "propolis", "Propolis instance lifecycle (the VMM)", "instance", "lifecycle_state",
                  actors::to_string(actors::InstanceState::start), "seeds/propolis-instance-states.txt");
    for (auto s : actors::kAllInstanceStates) m.add_states(actors::to_string(s));
    for (const auto& t : actors::lifecycle_transitions())
      edge(m, actors::to_string(t.from), actors::to_string(t.to), t.what);
  }
  shaken_fist(add(out, "shakenfist_instance", "Shaken Fist instance record", "instance", "record_state",
                  control::to_string(control::kSfInstanceEntry), "seeds/shakenfist-state-machine.rst"),
              control::kAllSfInstanceStates, control::sf_instance_transitions());
  shaken_fist(add(out, "shakenfist_network", "Shaken Fist network record", "network", "state",
                  control::to_string(control::kNetworkEntry), "seeds/shakenfist-state-machine.rst"),
              control::kAllNetworkStates, control::network_transitions());
  shaken_fist(add(out, "shakenfist_node", "Shaken Fist node record", "node", "state",
                  control::to_string(control::kNodeEntry), "seeds/shakenfist-state-machine.rst"),
              control::kAllNodeStates, control::node_transitions());
  return out;
}

}  // namespace apiary::apps
