#include "actors/device_actor.hpp"

#include "actors/errors.hpp"

namespace apiary::actors {

namespace {

struct DeviceActorState {
  std::shared_ptr<devices::Machine> machine;
  devices::Device* device = nullptr;
  bool ignore_pause = false;
  std::vector<caf::typed_response_promise<ack_atom>> swallowed;  // kept so they never answer
  static inline const char* name = "device";
};
using device_pointer = device_actor::stateful_pointer<DeviceActorState>;

// The lifecycle operations a device actor accepts, by the atom that names each.
struct LifecycleOp {
  caf::atom_value op;
  const char* name;
  void (devices::Device::*call)();
};
constexpr LifecycleOp kLifecycleOps[] = {
    {start_atom{}, "start", &devices::Device::start},   {pause_atom{}, "pause", &devices::Device::pause},
    {resume_atom{}, "resume", &devices::Device::resume}, {reset_atom{}, "reset", &devices::Device::reset},
    {halt_atom{}, "halt", &devices::Device::halt},
};

device_actor::behavior_type device_impl(device_pointer self, std::shared_ptr<devices::Machine> machine,
                                        devices::Device* device) {
  self->state.machine = std::move(machine);
  self->state.device = device;
  return {
      [=](device_op_atom, caf::atom_value op) -> caf::result<ack_atom> {
        if (op == pause_atom::value && self->state.ignore_pause) {
          self->state.swallowed.push_back(self->make_response_promise<ack_atom>());
          return self->state.swallowed.back();
        }
        if (auto err = run_device_lifecycle(*self->state.device, op)) return err;
        return ack_atom::value;
      },
      [=](dump_atom) -> std::string { return self->state.device->export_state().SerializeAsString(); },
      [=](fault_hook_atom, const std::string& hook) -> caf::result<ack_atom> {
        if (hook == "ignore_pause") self->state.ignore_pause = true;
        else return make_error(ActorErrc::invalid_argument, "unknown fault hook " + hook);
        return ack_atom::value;
      },
  };
}

}  // namespace

caf::error run_device_lifecycle(devices::Device& d, caf::atom_value op) {
  for (const auto& l : kLifecycleOps) {
    if (l.op != op) continue;
    try {
      (d.*l.call)();
    } catch (const std::exception& e) {
      return make_error(ActorErrc::invalid_argument, d.name() + ": " + l.name + " failed: " + e.what());
    }
    return caf::none;
  }
  return make_error(ActorErrc::invalid_argument, d.name() + ": unknown lifecycle operation " + to_string(op));
}

device_actor spawn_device(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine, devices::Device& device) {
  return sys.spawn(device_impl, std::move(machine), &device);
}

}  // namespace apiary::actors
