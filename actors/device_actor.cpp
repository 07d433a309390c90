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

template <class F>
caf::result<ack_atom> lifecycle(device_pointer self, const char* what, F&& f) {
  try {
    f(*self->state.device);
  } catch (const std::exception& e) {
    return make_error(ActorErrc::invalid_argument, self->state.device->name() + ": " + what + " failed: " + e.what());
  }
  return ack_atom::value;
}

device_actor::behavior_type device_impl(device_pointer self, std::shared_ptr<devices::Machine> machine,
                                        devices::Device* device) {
  self->state.machine = std::move(machine);
  self->state.device = device;
  return {
      [=](start_atom) { return lifecycle(self, "start", [](devices::Device& d) { d.start(); }); },
      [=](pause_atom) -> caf::result<ack_atom> {
        if (self->state.ignore_pause) {
          self->state.swallowed.push_back(self->make_response_promise<ack_atom>());
          return self->state.swallowed.back();
        }
        return lifecycle(self, "pause", [](devices::Device& d) { d.pause(); });
      },
      [=](resume_atom) { return lifecycle(self, "resume", [](devices::Device& d) { d.resume(); }); },
      [=](reset_atom) { return lifecycle(self, "reset", [](devices::Device& d) { d.reset(); }); },
      [=](halt_atom) { return lifecycle(self, "halt", [](devices::Device& d) { d.halt(); }); },
      [=](dump_atom) -> std::string { return self->state.device->export_state().SerializeAsString(); },
      [=](fault_hook_atom, const std::string& hook) -> caf::result<ack_atom> {
        if (hook == "ignore_pause") self->state.ignore_pause = true;
        else return make_error(ActorErrc::invalid_argument, "unknown fault hook " + hook);
        return ack_atom::value;
      },
  };
}

}  // namespace

device_actor spawn_device(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine, devices::Device& device) {
  return sys.spawn(device_impl, std::move(machine), &device);
}

}  // namespace apiary::actors
