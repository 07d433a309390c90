#include "actors/instance_actor.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

#include "actors/device_actor.hpp"
#include "actors/errors.hpp"
#include "actors/fan_out.hpp"
#include "actors/vcpu_actor.hpp"
#include "devices/machine_snapshot.hpp"
#include "proto/apiary/v1/diagnostics.pb.h"
#include "proto/apiary/v1/snapshot.pb.h"

namespace apiary::actors {

namespace {

using S = InstanceState;
using ms = std::chrono::milliseconds;

// A live migration out, shared by the actor and its thread: the thread asks
// for the stop (migration "stop") and waits here until the actor has held
// the vCPUs and paused the devices, or gave up.
struct OutgoingJob {
  std::atomic<bool> cancelled{false};
  std::mutex mutex;
  std::condition_variable cv;
  enum class Stop { waiting, stopped, abandoned } stop = Stop::waiting;
  std::chrono::steady_clock::time_point stopped_at;
  void signal(Stop s, std::chrono::steady_clock::time_point at = {}) {
    std::lock_guard lock(mutex);
    if (stop != Stop::waiting) return;
    stop = s;
    stopped_at = at;
    cv.notify_all();
  }
};

struct Migration {
  std::shared_ptr<OutgoingJob> job;
  caf::typed_response_promise<std::string> reply;
  std::string destination;
  uint64_t token = 0;
  bool stopping = false;  // the actor is pausing the guest for stop-and-copy
  std::chrono::steady_clock::time_point stop_requested;
};

struct InstanceActorState {
  InstanceOptions cfg;
  // Until Initialize has built the machine from it; then freed.
  std::unique_ptr<devices::MachineConfig> machine_cfg;
  std::shared_ptr<devices::Machine> machine;
  InstanceState state = S::start;
  std::optional<InstanceState> target;
  uint64_t generation = 0;
  bool busy = false;           // a transition is under way
  bool conditions_met = false; // boot conditions
  bool awaiting_conditions = false;
  std::string reason;          // why the current target was set
  std::string fault;           // first named fault on the error path
  int32_t exit_status = -1;
  std::vector<Participant<vcpu_actor>> vcpus;
  // Device actors (instance_actor.hpp, "Device actors"): `devices` are the
  // spawned ones, in the machine's order; `direct` the devices the instance
  // still drives itself (none once `devices` has them all).
  std::vector<Participant<device_actor>> devices;
  std::vector<devices::Device*> direct;
  FanOuts fan_outs;  // the phases under way (one timer for their deadlines)
  console_actor console;
  std::vector<caf::actor> subscribers;
  std::vector<std::pair<uint64_t, caf::typed_response_promise<std::string, uint64_t>>> waiters;
  std::string diagnostics;
  // A save under way (its reply), if any: resume and teardown wait for it.
  // (Rare parts of the state are behind pointers: an instance actor and its
  // state fit jemalloc's 1,792-byte class instead of the 2,048-byte one,
  // 25 MiB over a 100,000-instance simulation.)
  std::unique_ptr<caf::typed_response_promise<uint64_t, uint64_t, uint64_t>> saving;
  // Threads that read or write snapshot files (a save; building a restored
  // machine), joined when the actor ends; each reports back with its token,
  // so only the thread the actor is waiting for is listened to.
  std::shared_ptr<std::vector<std::thread>> file_threads = std::make_shared<std::vector<std::thread>>();
  uint64_t file_token = 0;
  // Called when the actor ends, before the threads are joined: each cancels
  // a migration thread's waits.
  std::shared_ptr<std::vector<std::function<void()>>> cancels = std::make_shared<std::vector<std::function<void()>>>();
  // A restored machine being built off the actor's thread, and what the
  // Start -> Initialize transition does once it is there.
  std::shared_ptr<std::pair<std::shared_ptr<devices::Machine>, std::string>> built;
  std::function<void()> init_done;
  // A live migration out under way, and the destination side's state.
  std::unique_ptr<Migration> migration;
  uint64_t migration_token = 0;
  bool incoming_running_reported = false;
  bool migration_in_pending = false;  // a destination waits for the source's commit
  static inline const char* name = "instance";
};
using instance_pointer = instance_actor::stateful_pointer<InstanceActorState>;

void drive(instance_pointer self);

void on_migration_state(instance_pointer self, InstanceState next);

void set_state(instance_pointer self, InstanceState next) {
  auto& st = self->state;
  st.state = next;
  ++st.generation;
  on_migration_state(self, next);
  const std::string target = st.target ? to_string(*st.target) : "";
  // Sent as the instance actor (the sender tells one VMM from the next);
  // a typed actor may not send() to an untyped one in CAF 0.17.
  const auto me = caf::actor_cast<caf::actor>(self);
  for (auto& sub : st.subscribers)
    caf::send_as(me, sub, state_atom::value, st.cfg.name, std::string(to_string(next)), st.generation, target, st.reason);
  auto& w = st.waiters;
  for (auto it = w.begin(); it != w.end();) {
    if (st.generation > it->first) {
      it->second.deliver(std::string(to_string(next)), st.generation);
      it = w.erase(it);
    } else {
      ++it;
    }
  }
}

// Target precedence: Destroy is final; Halt is only replaced by Destroy.
void set_target(instance_pointer self, InstanceState t, std::string why) {
  auto& st = self->state;
  if (st.target == S::destroy) return;
  if (st.target == S::halt && t != S::destroy) return;
  if (st.migration && !(st.migration->stopping && t == S::quiesce)) {
    // Anything else the instance is asked to do (poweroff, halt, a guest
    // reset) ends the migration first; its thread reports the cancel.
    st.migration->job->cancelled = true;
    st.migration->job->signal(OutgoingJob::Stop::abandoned);
  }
  if (st.cfg.incoming && (t == S::destroy || t == S::halt)) st.cfg.incoming->cancelled = true;
  st.target = t;
  st.reason = std::move(why);
  if (st.awaiting_conditions && t != S::run) {
    // Boot was waiting for its conditions: stop waiting, go where asked.
    // (The pending condition timeout then finds nothing to time out.)
    st.awaiting_conditions = false;
    st.busy = false;
  }
  drive(self);
}

// The error path: remember the first fault, then tear down via Halt.
void fault(instance_pointer self, std::string what) {
  auto& st = self->state;
  if (st.fault.empty()) st.fault = what;
  set_target(self, S::destroy, "fault: " + what);
}

// The state stream's side of migrations: the source's guest is stopped
// (its thread may copy the rest); the destination's runs (the source is told).
void on_migration_state(instance_pointer self, InstanceState next) {
  auto& st = self->state;
  if (st.migration && st.migration->stopping && next != S::run) {
    if (next == S::quiesce && st.target == S::quiesce) {
      st.migration->job->signal(OutgoingJob::Stop::stopped, st.migration->stop_requested);
    } else {  // a fault on the way (an ack timeout): the machine is going away
      st.migration->job->cancelled = true;
      st.migration->job->signal(OutgoingJob::Stop::abandoned);
    }
  }
  if (next == S::run && st.cfg.incoming && st.cfg.incoming->stream && !st.incoming_running_reported) {
    st.incoming_running_reported = true;
    try {
      // Only a guest that really runs here: a resume fan-out that failed on
      // the way (its target is now destroy) must not let the source go.
      if (st.target == S::run && st.fault.empty())
        st.cfg.incoming->stream->report_running();  // one small frame on an idle socket
      else
        st.cfg.incoming->stream->report_failure("the destination could not resume the guest: " + st.fault);
    } catch (const std::exception&) {
      // The source then reports migrate_unknown and stays paused.
    }
    st.cfg.incoming->stream.reset();
  }
}

// Runs `phases` one after the other; each is a fan-out whose failure is a
// named fault. `then` runs after the last phase whatever happened (the error
// path still has to reach a state).
using Phase = std::function<void(std::function<void(FanOutResult)>)>;
void run_phases(instance_pointer self, std::vector<std::pair<std::string, Phase>> phases, size_t i,
                std::function<void()> then) {
  if (i == phases.size()) {
    then();
    return;
  }
  auto name = phases[i].first;
  auto phase = phases[i].second;
  const auto started = self->clock().now();
  phase([=](FanOutResult r) mutable {
    if (const auto& stats = self->state.cfg.fan_out_latency)
      stats->observe(name, std::chrono::duration_cast<std::chrono::microseconds>(self->clock().now() - started));
    if (!r.ok()) {
      std::string what = "ack_timeout in " + name + ":";
      for (auto& f : r.failed) what += " " + f + ";";
      auto& st = self->state;
      if (st.fault.empty()) st.fault = what;
      if (st.target != S::destroy) {
        st.target = S::destroy;
        st.reason = "fault: " + what;
      }
    }
    run_phases(self, std::move(phases), i + 1, std::move(then));
  });
}

Phase vcpu_phase(instance_pointer self, auto atom) {
  return [self, atom](std::function<void(FanOutResult)> done) {
    self->state.fan_outs.start(self, self->state.vcpus, self->state.cfg.phase_deadline, std::move(done), atom);
  };
}
// A device's name in phase failures, whether it has an actor or not.
std::string participant_name(const devices::Device& d) { return "device " + d.name(); }

Participant<device_actor> spawn_device_actor(instance_pointer self, devices::Device& d) {
  auto a = spawn_device(self->system(), self->state.machine, d);
  self->link_to(a);
  return {participant_name(d), a};
}

// Every device gets its actor (the first pause, resume, reset or device
// fault hook of the instance); the order stays the machine's.
void give_devices_actors(instance_pointer self) {
  auto& st = self->state;
  if (st.direct.empty()) return;
  std::vector<Participant<device_actor>> all;
  size_t spawned = 0;  // st.devices: the ones with an actor already, in machine order
  for (devices::Device* d : st.machine->devices()) {
    if (std::find(st.direct.begin(), st.direct.end(), d) != st.direct.end())
      all.push_back(spawn_device_actor(self, *d));
    else
      all.push_back(std::move(st.devices.at(spawned++)));
  }
  st.devices = std::move(all);
  st.direct.clear();
}

// A device phase sends (deviceop, op) to the device actors; only the five
// Lifecycle operations are ops. Start and halt run on the devices without an
// actor directly, on this thread: that is only ever before the first vCPU
// release (Boot -> Run, and Initialize -> Destroy: every other way to
// Destroy pauses first, which gives the devices actors), and such a device's
// calls only change its registers. Pause, resume and reset first give every
// device its actor. A direct call's failure is named like an actor's.
template <class Op>
Phase device_phase(instance_pointer self, Op atom) {
  static_assert(std::is_same_v<Op, start_atom> || std::is_same_v<Op, pause_atom> || std::is_same_v<Op, resume_atom> ||
                    std::is_same_v<Op, reset_atom> || std::is_same_v<Op, halt_atom>,
                "a device phase is one of start, pause, resume, reset, halt");
  return [self, atom](std::function<void(FanOutResult)> done) {
    auto& st = self->state;
    if constexpr (!std::is_same_v<Op, start_atom> && !std::is_same_v<Op, halt_atom>) give_devices_actors(self);
    std::vector<std::string> failed;
    for (devices::Device* d : st.direct)
      if (auto err = run_device_lifecycle(*d, atom)) failed.push_back(participant_name(*d) + ": " + describe(err));
    auto finish = [failed = std::move(failed), done = std::move(done)](FanOutResult r) mutable {
      failed.insert(failed.end(), r.failed.begin(), r.failed.end());
      r.failed = std::move(failed);
      done(std::move(r));
    };
    st.fan_outs.start(self, st.devices, st.cfg.phase_deadline, std::move(finish), device_op_atom::value,
                      static_cast<caf::atom_value>(atom));
  };
}

void collect_diagnostics(instance_pointer self, std::function<void()> then) {
  auto& st = self->state;
  auto diag = std::make_shared<v1::InstanceDiagnostics>();
  diag->set_instance(st.cfg.name);
  diag->set_reason(st.fault.empty() ? st.reason : st.fault);
  diag->set_generation(st.generation);
  for (devices::Device* d : st.direct) *diag->add_devices() = d->export_state();
  const size_t total = st.vcpus.size() + st.devices.size();
  if (total == 0) {
    st.diagnostics = diag->SerializeAsString();
    then();
    return;
  }
  auto remaining = std::make_shared<size_t>(total);
  auto finish = [self, diag, remaining, then] {
    if (--*remaining > 0) return;
    self->state.diagnostics = diag->SerializeAsString();
    then();
  };
  for (auto& v : st.vcpus) {
    self->request(v.handle, st.cfg.phase_deadline, dump_atom::value)
        .then(
            [diag, finish](const std::string& bytes) {
              diag->add_vcpus()->ParseFromString(bytes);
              finish();
            },
            [diag, finish, name = v.name](caf::error& e) {
              diag->add_missing(name + ": " + describe(e));
              finish();
            });
  }
  for (auto& d : st.devices) {
    self->request(d.handle, st.cfg.phase_deadline, dump_atom::value)
        .then(
            [diag, finish](const std::string& bytes) {
              diag->add_devices()->ParseFromString(bytes);
              finish();
            },
            [diag, finish, name = d.name](caf::error& e) {
              diag->add_missing(name + ": " + describe(e));
              finish();
            });
  }
}

// The child actors of a built machine (the rest of Start -> Initialize).
bool spawn_children(instance_pointer self) {
  auto& st = self->state;
  auto me = caf::actor_cast<caf::actor>(self);
  st.machine->set_event_handler([me](const devices::MachineEvent& ev) {
    // Called on a vCPU thread; one message per machine event (rare), never per I/O exit.
    if (auto* d = std::get_if<devices::EventDebugExit>(&ev))
      caf::anon_send(me, guest_event_atom::value, std::string("debug_exit"), static_cast<uint32_t>(d->status),
                     std::string("debug exit"));
    else if (auto* r = std::get_if<devices::EventResetRequest>(&ev))
      caf::anon_send(me, guest_event_atom::value, std::string("reset_request"), 0u, "reset requested by " + r->device);
    else if (auto* p = std::get_if<devices::EventPoweroffRequest>(&ev))
      caf::anon_send(me, guest_event_atom::value, std::string("poweroff_request"), 0u,
                     "poweroff requested by " + p->device);
  });
  auto& sys = self->system();
  for (uint32_t i = 0; i < st.machine->vcpus().size(); ++i) {
    auto v = spawn_vcpu(sys, st.machine, i, me);
    self->link_to(v);
    st.vcpus.push_back({"vcpu-" + std::to_string(i), v});
  }
  for (devices::Device* d : st.machine->devices()) {
    if (d->lifecycle_may_wait())
      st.devices.push_back(spawn_device_actor(self, *d));
    else
      st.direct.push_back(d);
  }
  st.console = spawn_console(sys, st.machine, me);
  self->link_to(st.console);
  // A restored guest is past its boot: its console said what it had to. A
  // migrating one runs once its state is in and the source commits.
  st.conditions_met = !st.cfg.wait_for_console || st.machine->restored();
  st.migration_in_pending = st.cfg.incoming != nullptr;
  return true;
}

// Creates the machine and the child actors (Start -> Initialize).
bool initialize(instance_pointer self) {
  auto& st = self->state;
  try {
    st.machine = std::make_shared<devices::Machine>(*st.machine_cfg);
    st.machine_cfg.reset();
  } catch (const std::exception& e) {
    if (st.fault.empty()) st.fault = std::string("init_failed: ") + e.what();
    return false;
  }
  return spawn_children(self);
}

void init_failed(instance_pointer self) {
  auto& st = self->state;
  st.target = S::destroy;
  st.reason = st.fault;
  v1::InstanceDiagnostics diag;  // nothing ran: the reason is all there is
  diag.set_instance(st.cfg.name);
  diag.set_reason(st.fault);
  diag.set_generation(st.generation);
  st.diagnostics = diag.SerializeAsString();
}

void destroy_children(instance_pointer self) {
  auto& st = self->state;
  for (auto& v : st.vcpus) {
    self->unlink_from(v.handle);
    self->send_exit(v.handle, caf::exit_reason::user_shutdown);
  }
  for (auto& d : st.devices) {
    self->unlink_from(d.handle);
    self->send_exit(d.handle, caf::exit_reason::user_shutdown);
  }
  if (st.console) {
    self->unlink_from(st.console);
    self->send_exit(st.console, caf::exit_reason::user_shutdown);
  }
  st.vcpus.clear();
  st.devices.clear();
  st.direct.clear();
  st.console = nullptr;
  st.machine.reset();  // freed once the last child has let go (threads joined)
}

// Takes the transition cur -> next, then calls done().
void transition(instance_pointer self, InstanceState next, std::function<void()> done) {
  auto& st = self->state;
  const InstanceState cur = st.state;
  if (cur == S::start && next == S::initialize && st.cfg.incoming) {
    // A migration's destination: accept the source, read what to build,
    // build it, all off the actor's thread (as a restore).
    st.built = std::make_shared<std::pair<std::shared_ptr<devices::Machine>, std::string>>();
    st.init_done = done;
    const uint64_t token = ++st.file_token;
    st.file_threads->emplace_back([me = caf::actor_cast<caf::actor>(self), slot = st.built, in = st.cfg.incoming,
                                   kvm_path = st.machine_cfg->kvm_path, nics = st.machine_cfg->nics, token] {
      try {
        in->stream = std::make_unique<devices::migration::Incoming>(
            in->listener->accept(in->accept_deadline, &in->cancelled), in->policy, &in->cancelled);
        in->listener.reset();  // one source per destination
        devices::MachineConfig cfg = in->stream->machine_config();
        cfg.kvm_path = kvm_path;
        // The NICs' backends are this host's ports (the owner made them for
        // the instance's spec); the source only knows their MACs.
        if (cfg.nics.size() != nics.size())
          throw vmm::Error(vmm::Errc::snapshot_board, "the source's machine has " + std::to_string(cfg.nics.size()) +
                                                          " NICs, this destination prepared " +
                                                          std::to_string(nics.size()));
        for (size_t i = 0; i < nics.size(); ++i) cfg.nics[i].backend = nics[i].backend;
        slot->first = std::make_shared<devices::Machine>(std::move(cfg));
      } catch (const std::exception& e) {
        if (in->stream) in->stream->report_failure(e.what());
        slot->second = std::string("init_failed: migration in: ") + e.what();
      }
      caf::anon_send(me, init_done_atom::value, token);
    });
    st.machine_cfg.reset();  // the source's is built instead
  } else if (cur == S::start && next == S::initialize && st.machine_cfg->restore) {
    // A restore reads (and checksums) the whole snapshot file: on a thread
    // of its own, never on a scheduler thread. init_done finishes this.
    st.built = std::make_shared<std::pair<std::shared_ptr<devices::Machine>, std::string>>();
    st.init_done = done;
    const uint64_t token = ++st.file_token;
    st.file_threads->emplace_back([me = caf::actor_cast<caf::actor>(self), slot = st.built, cfg = std::move(*st.machine_cfg), token] {
      try {
        slot->first = std::make_shared<devices::Machine>(cfg);
      } catch (const std::exception& e) {
        slot->second = std::string("init_failed: ") + e.what();
      }
      caf::anon_send(me, init_done_atom::value, token);
    });
    st.machine_cfg.reset();
  } else if (cur == S::start && next == S::initialize) {
    if (!initialize(self)) init_failed(self);
    done();
  } else if (cur == S::boot && next == S::run) {
    if (!st.conditions_met || st.migration_in_pending) {
      st.awaiting_conditions = true;  // cond_met (or its timeout) finishes this transition
      self->delayed_send(self, st.cfg.incoming ? st.cfg.incoming->total_deadline : st.cfg.console_wait,
                         cond_met_atom::value, std::string("timeout"));
      return;
    }
    run_phases(self, {{"device start", device_phase(self, start_atom::value)},
                      {"vcpu release", vcpu_phase(self, release_atom::value)}},
               0, done);
  } else if (cur == S::run && next == S::quiesce) {
    run_phases(self, {{"vcpu hold", vcpu_phase(self, hold_atom::value)},
                      {"device pause", device_phase(self, pause_atom::value)}},
               0, done);
  } else if (cur == S::boot && next == S::quiesce) {
    run_phases(self, {{"device pause", device_phase(self, pause_atom::value)}}, 0, done);
  } else if (cur == S::quiesce && next == S::run) {
    run_phases(self, {{"device resume", device_phase(self, resume_atom::value)},
                      {"vcpu release", vcpu_phase(self, release_atom::value)}},
               0, done);
  } else if (cur == S::quiesce && next == S::halt) {
    collect_diagnostics(self, done);
  } else if (cur == S::halt && next == S::reboot) {
    try {
      st.machine->reload_kernel();
    } catch (const std::exception& e) {
      fault(self, std::string("reboot: kernel reload failed: ") + e.what());
    }
    run_phases(self, {{"device reset", device_phase(self, reset_atom::value)},
                      {"vcpu reset", vcpu_phase(self, reset_atom::value)}},
               0, done);
  } else if (next == S::destroy) {
    if (st.machine) {
      run_phases(self, {{"vcpu exit", vcpu_phase(self, exit_atom::value)},
                        {"device halt", device_phase(self, halt_atom::value)}},
                 0, [self, done] {
                   destroy_children(self);
                   done();
                 });
    } else {
      done();
    }
  } else {
    done();  // initialize->boot, reboot->boot: bookkeeping only
  }
}

void drive(instance_pointer self) {
  auto& st = self->state;
  if (st.busy || !st.target || st.saving) return;
  // The stop-and-copy reads the stopped machine: nothing else may touch it
  // (a poweroff, halt or reset proceeds once the migration has ended).
  if (st.migration && st.migration->stopping && st.state == S::quiesce) return;
  if (st.state == S::reboot && st.target == S::reboot) st.target = S::run;  // reboot reached: run again
  auto hop = next_hop(st.state, *st.target);
  if (!hop) return;
  if (!transition_allowed(st.state, *hop)) {  // a table bug, never a guest's doing
    st.fault = std::string("transition_refused: ") + to_string(st.state) + " -> " + to_string(*hop);
    return;
  }
  st.busy = true;
  const InstanceState next = *hop;
  transition(self, next, [self, next] {
    self->state.busy = false;
    set_state(self, next);
    drive(self);
  });
}

caf::error refuse(instance_pointer self, const char* action) {
  auto& st = self->state;
  return make_error(ActorErrc::wrong_state, std::string("cannot ") + action + " instance '" + st.cfg.name +
                                                "' in state " + to_string(st.state) +
                                                (st.target ? std::string(" (target ") + to_string(*st.target) + ")" : "") +
                                                (st.migration ? " during a migration to " + st.migration->destination : ""));
}

instance_actor::behavior_type instance_impl(instance_pointer self, InstanceConfig cfg, caf::actor subscriber) {
  if (subscriber) self->state.subscribers.push_back(std::move(subscriber));
  self->state.machine_cfg = std::make_unique<devices::MachineConfig>(std::move(cfg.machine));
  self->state.cfg = std::move(static_cast<InstanceOptions&>(cfg));
  // Whatever ends the actor, its children go with it (links), and the
  // machine is freed by the last of them to let go. A snapshot file being
  // written or read is finished first (its thread is joined).
  self->attach_functor([threads = self->state.file_threads, cancels = self->state.cancels, in = self->state.cfg.incoming] {
    if (in) in->cancelled = true;  // a destination still waiting or receiving
    for (auto& c : *cancels) c();    // a migration out
    for (auto& t : *threads)
      if (t.joinable()) t.join();
  });
  return {
      [=](start_atom) -> caf::result<ack_atom> {
        if (self->state.state != S::start || self->state.target) return refuse(self, "start");
        set_target(self, S::run, "start requested");
        return ack_atom::value;
      },
      [=](pause_atom) -> caf::result<ack_atom> {
        auto& st = self->state;
        if ((st.state != S::run && st.state != S::boot) || st.target != S::run || st.migration ||
            st.migration_in_pending)
          return refuse(self, "pause");
        set_target(self, S::quiesce, "pause requested");
        return ack_atom::value;
      },
      [=](resume_atom) -> caf::result<ack_atom> {
        auto& st = self->state;
        if (st.target != S::quiesce || st.migration || st.migration_in_pending) return refuse(self, "resume");
        set_target(self, S::run, "resume requested");
        return ack_atom::value;
      },
      [=](halt_atom) -> caf::result<ack_atom> {
        if (self->state.state == S::destroy) return make_error(ActorErrc::destroyed, self->state.cfg.name);
        set_target(self, S::halt, "halt requested");
        return ack_atom::value;
      },
      [=](poweroff_atom) -> caf::result<ack_atom> {
        if (self->state.state == S::destroy) return make_error(ActorErrc::destroyed, self->state.cfg.name);
        set_target(self, S::destroy, "forced poweroff");
        return ack_atom::value;
      },
      [=](hard_reset_atom) -> caf::result<ack_atom> {
        auto& st = self->state;
        if (st.state == S::destroy || st.target == S::destroy || st.state == S::start || st.migration ||
            st.migration_in_pending || (st.cfg.incoming && !st.machine))
          return refuse(self, "reset");
        set_target(self, S::reboot, "forced reset");
        return ack_atom::value;
      },
      [=](soft_reset_atom) -> caf::result<ack_atom> {
        auto& st = self->state;
        if (st.state != S::run) return refuse(self, "soft-reset");
        if (!st.machine->inject_ctrl_alt_del())
          return make_error(ActorErrc::invalid_argument, "this machine has no keyboard controller");
        return ack_atom::value;
      },
      [=](soft_off_atom) -> caf::result<ack_atom> {
        auto& st = self->state;
        if (st.state != S::run) return refuse(self, "soft-poweroff");
        if (!st.machine->press_power_button())
          return make_error(ActorErrc::wrong_state, "the guest has not armed the ACPI power button");
        return ack_atom::value;
      },
      [=](get_state_atom) -> caf::result<std::string, uint64_t, std::string> {
        auto& st = self->state;
        return {std::string(to_string(st.state)), st.generation,
                st.target ? std::string(to_string(*st.target)) : std::string()};
      },
      [=](wait_state_atom, uint64_t after) -> caf::result<std::string, uint64_t> {
        auto& st = self->state;
        if (st.generation > after) return {std::string(to_string(st.state)), st.generation};
        auto rp = self->make_response_promise<std::string, uint64_t>();
        st.waiters.emplace_back(after, rp);
        return rp;
      },
      [=](subscribe_atom, caf::actor who) -> ack_atom {
        self->state.subscribers.push_back(who);
        return ack_atom::value;
      },
      [=](diag_atom) -> std::string { return self->state.diagnostics; },
      [=](console_atom) -> console_actor { return self->state.console; },
      [=](exit_status_atom) -> int32_t { return self->state.exit_status; },
      [=](save_atom, const std::string& path) -> caf::result<uint64_t, uint64_t, uint64_t> {
        auto& st = self->state;
        if (st.state != S::quiesce || st.target != S::quiesce || st.busy || st.saving || st.migration)
          return st.saving ? make_error(ActorErrc::wrong_state, "a save of '" + st.cfg.name + "' is under way")
                           : refuse(self, "save");
        if (path.empty()) return make_error(ActorErrc::invalid_argument, "save: no file name");
        if (st.machine->simulated())  // answered at once: no thread, so a simulation stays deterministic
          return make_error(ActorErrc::save_failed,
                            vmm::Error(vmm::Errc::snapshot_unsupported,
                                       "a simulated machine runs no guest and has no state to save")
                                .what());
        auto rp = self->make_response_promise<uint64_t, uint64_t, uint64_t>();
        st.saving = std::make_unique<caf::typed_response_promise<uint64_t, uint64_t, uint64_t>>(rp);
        // Off the actor's thread: writing guest RAM may take seconds, and a
        // scheduler thread must not. The machine cannot change meanwhile:
        // its vCPUs are held, its devices paused, and drive() waits.
        const uint64_t token = ++st.file_token;
        st.file_threads->emplace_back(
            [me = caf::actor_cast<caf::actor>(self), machine = st.machine, path, name = st.cfg.name, token] {
              try {
                auto stats = devices::snapshot::save(*machine, path, name);
                caf::anon_send(me, saved_atom::value, token, stats.file_bytes, stats.pages_written,
                               static_cast<uint64_t>(stats.seconds * 1e6), std::string());
              } catch (const std::exception& e) {
                caf::anon_send(me, saved_atom::value, token, uint64_t{0}, uint64_t{0}, uint64_t{0},
                               std::string(e.what()));
              }
            });
        return rp;
      },
      [=](saved_atom, uint64_t token, uint64_t bytes, uint64_t pages, uint64_t micros, const std::string& error) {
        auto& st = self->state;
        if (!st.saving || token != st.file_token) return;
        auto rp = *st.saving;
        st.saving.reset();
        if (error.empty())
          rp.deliver(bytes, pages, micros);
        else
          rp.deliver(make_error(ActorErrc::save_failed, error));
        drive(self);  // a target set meanwhile (resume, poweroff) proceeds now
      },
      [=](init_done_atom, uint64_t token) {
        auto& st = self->state;
        if (!st.init_done || token != st.file_token || !st.built) return;
        auto done = std::move(st.init_done);
        st.init_done = nullptr;
        auto built = std::move(st.built);
        st.machine = built->first;
        if (!st.machine) {
          if (st.fault.empty()) st.fault = built->second;
          init_failed(self);
        } else if (!spawn_children(self)) {
          init_failed(self);
        } else if (st.cfg.incoming) {
          // RAM and state from the source, into the machine whose vCPUs
          // are not yet released; "received" once the source committed.
          const uint64_t mt = ++st.migration_token;
          st.file_threads->emplace_back(
              [me = caf::actor_cast<caf::actor>(self), machine = st.machine, in = st.cfg.incoming, mt] {
                try {
                  in->stream->receive(*machine);
                  caf::anon_send(me, migration_atom::value, mt, std::string("received"), std::string());
                } catch (const std::exception& e) {
                  caf::anon_send(me, migration_atom::value, mt, std::string("in_failed"), std::string(e.what()));
                }
              });
        }
        done();
      },
      [=](migrate_atom, const std::string& host, uint32_t port) -> caf::result<std::string> {
        auto& st = self->state;
        if (st.migration) return make_error(ActorErrc::wrong_state, "a migration of '" + st.cfg.name + "' is under way");
        if (st.state != S::run || st.target != S::run || st.busy || st.saving) return refuse(self, "migrate");
        if (host.empty() || port == 0 || port > 65535)
          return make_error(ActorErrc::invalid_argument, "migrate: destination must be a host and a port 1-65535");
        if (st.machine->simulated())
          return make_error(ActorErrc::migrate_failed,
                            vmm::Error(vmm::Errc::snapshot_unsupported, "a simulated machine cannot be migrated").what());
        auto job = std::make_shared<OutgoingJob>();
        st.cancels->push_back([job] {
          job->cancelled = true;
          job->signal(OutgoingJob::Stop::abandoned);
        });
        const uint64_t token = ++st.migration_token;
        const std::string destination = host + ":" + std::to_string(port);
        auto rp = self->make_response_promise<std::string>();
        st.migration = std::make_unique<Migration>(Migration{job, rp, destination, token, false, {}});
        const auto stop_wait = 4 * st.cfg.phase_deadline + std::chrono::seconds(5);
        st.file_threads->emplace_back([me = caf::actor_cast<caf::actor>(self), machine = st.machine, job, host, port,
                                       name = st.cfg.name, policy = st.cfg.migration_policy, token, stop_wait,
                                       destination] {
          namespace mig = devices::migration;
          auto report = [&](const char* step, std::string detail) {
            caf::anon_send(me, migration_atom::value, token, std::string(step), std::move(detail));
          };
          std::unique_ptr<mig::Outgoing> out;
          try {
            out = std::make_unique<mig::Outgoing>(*machine, host, static_cast<uint16_t>(port), name, policy,
                                                  &job->cancelled);
            out->precopy();
            report("stop", "");
            std::unique_lock lock(job->mutex);
            job->cv.wait_for(lock, stop_wait, [&] { return job->stop != OutgoingJob::Stop::waiting; });
            if (job->stop != OutgoingJob::Stop::stopped)
              throw vmm::Error(vmm::Errc::migration_cancelled, "the source could not be stopped for stop-and-copy");
            const auto stopped_at = job->stopped_at;
            lock.unlock();
            out->stop_and_copy(stopped_at);
            out->commit();
            const mig::Stats& s = out->stats();
            v1::MigrationStats m;
            m.set_destination(destination);
            m.set_rounds(s.rounds);
            m.set_pages(s.pages);
            m.set_final_pages(s.final_pages);
            m.set_disk_bytes(s.disk_bytes);
            m.set_bytes(s.bytes);
            m.set_converged(s.converged);
            m.set_precopy_ms(s.precopy_ms);
            m.set_total_ms(s.total_ms);
            m.set_downtime_ms(s.downtime_ms);
            out.reset();
            report("done", m.SerializeAsString());
          } catch (const std::exception& e) {
            const bool committed = out && out->committed();
            out.reset();  // dirty logs off before the actor resumes the guest
            report(committed ? "unknown" : "failed", e.what());
          }
        });
        return rp;
      },
      [=](migration_atom, uint64_t token, const std::string& step, const std::string& detail) {
        auto& st = self->state;
        if (step == "received" || step == "in_failed") {  // the destination side
          if (token != st.migration_token || !st.cfg.incoming) return;
          if (step == "received") {
            self->send(self, cond_met_atom::value, std::string("migration"));
          } else {
            fault(self, "migration_in_failed: " + detail);
          }
          return;
        }
        if (!st.migration || token != st.migration->token) return;
        if (step == "stop") {
          if (st.state == S::run && st.target == S::run && !st.busy) {
            st.migration->stopping = true;
            st.migration->stop_requested = std::chrono::steady_clock::now();
            set_target(self, S::quiesce, "migration to " + st.migration->destination + ": stop-and-copy");
          } else {
            st.migration->job->signal(OutgoingJob::Stop::abandoned);
          }
          return;
        }
        Migration m = std::move(*st.migration);
        st.migration.reset();
        if (step == "done") {
          m.reply.deliver(detail);
          set_target(self, S::destroy, "migrated to " + m.destination);
        } else if (step == "unknown") {
          // Commit went out: the destination may run the guest. Never run it
          // here too: a reset or resume asked meanwhile is dropped.
          if (st.target != S::destroy && st.target != S::halt) st.target = S::quiesce;
          m.reply.deliver(make_error(ActorErrc::migrate_unknown, detail));
          drive(self);
        } else {
          m.reply.deliver(make_error(ActorErrc::migrate_failed, detail));
          if (m.stopping && st.target == S::quiesce) set_target(self, S::run, "migration failed; resumed: " + detail);
          else drive(self);  // a target set during the stop-and-copy proceeds now
        }
      },
      [=](fault_hook_atom, const std::string& hook, uint32_t index) -> caf::result<ack_atom> {
        auto& st = self->state;
        if ((hook == "ignore_kicks" || hook == "triple_fault") && index < st.vcpus.size()) {
          self->request(st.vcpus[index].handle, st.cfg.phase_deadline, fault_hook_atom::value, hook)
              .then([](ack_atom) {}, [](caf::error&) {});
          return ack_atom::value;
        }
        if (hook == "ignore_pause" && st.machine) give_devices_actors(self);
        if (hook == "ignore_pause" && index < st.devices.size()) {
          self->request(st.devices[index].handle, st.cfg.phase_deadline, fault_hook_atom::value, hook)
              .then([](ack_atom) {}, [](caf::error&) {});
          return ack_atom::value;
        }
        return make_error(ActorErrc::invalid_argument, "unknown fault hook or index: " + hook);
      },
      [=](guest_event_atom, const std::string& kind, uint32_t arg, const std::string& detail) {
        auto& st = self->state;
        if (st.state == S::destroy) return;
        if (kind == "triple_fault" || kind == "reset_request") {
          set_target(self, S::reboot, detail);
        } else if (kind == "poweroff_request") {
          set_target(self, S::destroy, detail);
        } else if (kind == "debug_exit") {
          st.exit_status = static_cast<int32_t>(arg);
          set_target(self, S::destroy, "guest debug exit, status " + std::to_string(arg));
        } else {  // guest_fault: stop and keep the diagnostics
          if (st.fault.empty()) st.fault = "guest_fault: " + detail;
          set_target(self, S::halt, "guest_fault: " + detail);
        }
      },
      [=](fan_out_deadline_atom, uint64_t generation) {
        self->state.fan_outs.expire(self, generation);
      },
      [=](cond_met_atom, const std::string& which) {
        auto& st = self->state;
        if (which == "console") st.conditions_met = true;
        if (which == "migration") st.migration_in_pending = false;
        if (!st.awaiting_conditions) return;
        const bool met = st.conditions_met && !st.migration_in_pending;
        if (!met && which != "timeout") return;  // the other condition is still due
        st.awaiting_conditions = false;
        if (!met) {
          // A boot condition timed out: nothing ran; take the error path.
          st.busy = false;
          fault(self, st.migration_in_pending
                          ? "migration in not complete within " +
                                std::to_string(st.cfg.incoming->total_deadline.count()) + " ms"
                          : "boot condition wait_for_console not met within " +
                                std::to_string(st.cfg.console_wait.count()) + " ms");
          return;
        }
        st.busy = false;
        drive(self);  // retries Boot -> Run, now with the condition met
      },
  };
}

}  // namespace

instance_actor spawn_instance(caf::actor_system& sys, InstanceConfig config) {
  return sys.spawn(instance_impl, std::move(config), caf::actor{});
}

instance_actor spawn_instance(caf::actor_system& sys, InstanceConfig config, caf::actor subscriber) {
  return sys.spawn(instance_impl, std::move(config), std::move(subscriber));
}

}  // namespace apiary::actors
