// The node actor (see node_actor.hpp for the messages and why it exists).
//
// How an action completes: the node subscribes to each instance actor's
// state stream and keeps the latest (state, target) per instance. An action
// sends the instance its API call and registers a waiter: a predicate over
// the states that follow, a deadline (a delayed wait_dl message) and a
// callback. The first of "predicate satisfied", "predicate failed" (the
// instance went somewhere else, e.g. destroy while booting) and "deadline"
// resolves it, exactly once. Nothing waits forever.
//
// The instance actor publishes its states with anonymous messages, so each
// instance gets a tiny relay actor (linked to it) that tags every event with
// the instance id and its incarnation (a stopped instance is started again
// as a new VMM; late events of the old one are ignored). The node links to
// its instances: when the node ends, so do they.
#include "actors/node_actor.hpp"

#include <exception>
#include <memory>
#include <utility>

#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "proto/apiary/v1/instance.pb.h"
#include "vmm-core/boot.hpp"

namespace apiary::actors {
namespace {

// A waiter's verdict on one state event.
enum class Verdict { pending, done, failed };
using Check = std::function<Verdict(const std::string& state, const std::string& target)>;
using Done = std::function<void(const std::string& error)>;  // "" = success

struct Waiter {
  uint64_t no = 0;
  Check check;
  Done done;
};

struct NodeInstance {
  std::string spec_bytes;
  instance_actor handle;
  uint64_t incarnation = 0;
  std::string state = "start";
  std::string target;
  std::vector<Waiter> waiters;
};

struct NodeState {
  NodeConfig cfg;
  std::map<std::string, NodeInstance> instances;
  uint64_t next_waiter = 1;
  uint64_t next_incarnation = 1;
  bool draining = false;
  bool stopped = false;
  bool partitioned = false;
  static inline const char* name = "node";
};
using node_pointer = node_actor::stateful_pointer<NodeState>;

std::string power_state(const NodeInstance& ni) {
  if (ni.state == "halt" || ni.state == "destroy") return kPowerShutdown;
  if (ni.state == "quiesce" && ni.target == "quiesce") return kPowerPaused;
  return kPowerRunning;
}

bool is_down(const NodeInstance& ni) { return ni.state == "halt" || ni.state == "destroy"; }

InstanceConfig instance_config(const NodeConfig& node, const std::string& id, const v1::InstanceSpec& spec) {
  InstanceConfig c;
  c.name = id;
  auto& m = c.machine;
  m.vcpus = spec.board().vcpus();
  m.memory_mib = spec.board().memory_mib();
  m.cmdline = spec.boot().cmdline();
  if (spec.boot().has_embedded_guest()) {
    if (!node.embedded_guest)
      throw std::runtime_error("embedded guest '" + spec.boot().embedded_guest() + "' requested, but node " +
                               node.name + " has no embedded guests");
    m.kernel = node.embedded_guest(spec.boot().embedded_guest());
  } else if (spec.boot().has_kernel_path()) {
    m.kernel = vmm::read_file(spec.boot().kernel_path());
  } else {
    throw std::runtime_error("the spec names no kernel");
  }
  if (spec.boot().has_initrd_path()) m.initrd = vmm::read_file(spec.boot().initrd_path());
  for (const auto& b : spec.devices().block()) m.disks.push_back({b.id(), b.path(), b.read_only()});
  m.rng = spec.devices().rng().enabled();
  if (spec.devices().serial().history_bytes() > 0) m.console_history_bytes = spec.devices().serial().history_bytes();
  if (node.simulated) m.backend = devices::VcpuBackendKind::simulated;
  c.wait_for_console = spec.boot_conditions().wait_for_console();
  if (spec.boot_conditions().console_wait_timeout_ms() > 0)
    c.console_wait = std::chrono::milliseconds(spec.boot_conditions().console_wait_timeout_ms());
  c.phase_deadline = node.phase_deadline;
  return c;
}

// Forwards one instance's state events to its node, tagged.
caf::behavior relay_impl(caf::event_based_actor* self, instance_actor inst, node_actor node, std::string id,
                         uint64_t incarnation) {
  self->link_to(inst);
  return {
      [=](state_atom, const std::string& state, uint64_t, const std::string& target, const std::string&) {
        self->send(node, inst_ev_atom::value, id, incarnation, state, target);
      },
  };
}

void retire(node_pointer self, NodeInstance& ni) {
  if (!ni.handle) return;
  self->unlink_from(ni.handle);
  self->send_exit(ni.handle, caf::exit_reason::user_shutdown);
  ni.handle = nullptr;
}

// Spawns (or re-spawns: a new VMM from the same spec) the instance actor
// and subscribes to its states. Returns an error message, "" on success.
std::string spawn_vm(node_pointer self, const std::string& id, const std::string& spec_bytes) {
  auto& st = self->state;
  v1::InstanceSpec spec;
  if (!spec.ParseFromString(spec_bytes)) return "instance " + id + ": the spec does not parse";
  InstanceConfig config;
  try {
    config = instance_config(st.cfg, id, spec);
  } catch (const std::exception& e) {
    return "instance " + id + ": " + e.what();
  }
  NodeInstance& ni = st.instances[id];
  retire(self, ni);
  ni.spec_bytes = spec_bytes;
  ni.state = "start";
  ni.target.clear();
  ni.incarnation = st.next_incarnation++;
  ni.handle = spawn_instance(self->system(), std::move(config));
  self->link_to(ni.handle);
  auto relay = self->system().spawn(relay_impl, ni.handle, caf::actor_cast<node_actor>(self), id, ni.incarnation);
  self->request(ni.handle, st.cfg.phase_deadline, subscribe_atom::value, relay)
      .then([](ack_atom) {}, [](caf::error&) {});
  return {};
}

void add_waiter(node_pointer self, const std::string& id, Check check, std::chrono::milliseconds deadline,
                Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end()) {
    done("instance " + id + " is not on node " + self->state.cfg.name);
    return;
  }
  const uint64_t no = self->state.next_waiter++;
  it->second.waiters.push_back(Waiter{no, std::move(check), std::move(done)});
  self->delayed_send(self, deadline, wait_dl_atom::value, id, no);
}

// Resolves one waiter (if still pending) with `error` ("" = success).
void resolve(node_pointer self, const std::string& id, uint64_t no, const std::string& error) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end()) return;
  auto& ws = it->second.waiters;
  for (auto w = ws.begin(); w != ws.end(); ++w) {
    if (w->no != no) continue;
    Done done = std::move(w->done);
    ws.erase(w);
    done(error);
    return;
  }
}

// Sends an instance API call, then waits for `check`. A refused call
// resolves the wait with the instance's error.
template <class Atom>
void call_and_wait(node_pointer self, const std::string& id, Atom atom, Check check, std::chrono::milliseconds deadline,
                   Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end()) {
    done("instance " + id + " is not on node " + self->state.cfg.name);
    return;
  }
  const uint64_t no = self->state.next_waiter;  // the number add_waiter hands out
  add_waiter(self, id, std::move(check), deadline, std::move(done));
  self->request(it->second.handle, self->state.cfg.phase_deadline, atom)
      .then([](ack_atom) {}, [self, id, no](caf::error& e) { resolve(self, id, no, describe(e)); });
}

Check reach(std::string want, std::string want_target = {}) {
  return [want, want_target](const std::string& s, const std::string& t) {
    if (s == want && (want_target.empty() || t == want_target)) return Verdict::done;
    if (want != "destroy" && (s == "destroy" || s == "halt")) return Verdict::failed;
    return Verdict::pending;
  };
}

// Through Reboot and back to Run.
Check rebooted() {
  auto seen = std::make_shared<bool>(false);
  return [seen](const std::string& s, const std::string&) {
    if (s == "reboot") *seen = true;
    if (*seen && s == "run") return Verdict::done;
    if (s == "destroy") return Verdict::failed;
    return Verdict::pending;
  };
}

// Spawns from the spec and starts, then waits for Run.
void power_on(node_pointer self, const std::string& id, const std::string& spec_bytes, Done done) {
  if (auto err = spawn_vm(self, id, spec_bytes); !err.empty()) {
    done(err);
    return;
  }
  call_and_wait(self, id, start_atom::value, reach("run"), self->state.cfg.state_deadline, std::move(done));
}

void power_off(node_pointer self, const std::string& id, Done done) {
  auto it = self->state.instances.find(id);
  if (it == self->state.instances.end() || it->second.state == "destroy") {
    done({});
    return;
  }
  call_and_wait(self, id, poweroff_atom::value, reach("destroy"), self->state.cfg.state_deadline, std::move(done));
}

std::string power_of(node_pointer self, const std::string& id) {
  auto it = self->state.instances.find(id);
  return it == self->state.instances.end() ? std::string(kPowerDeleted) : power_state(it->second);
}

// The action table of nodeact.
void run_action(node_pointer self, const std::string& id, const std::string& action, const std::string& spec_bytes,
                std::function<void(const std::string& error)> done) {
  auto& st = self->state;
  auto it = st.instances.find(id);
  const bool known = it != st.instances.end();
  const std::string spec = known && spec_bytes.empty() ? it->second.spec_bytes : spec_bytes;
  const auto deadline = st.cfg.state_deadline;
  if (action == "poweroff") return power_off(self, id, std::move(done));
  if (action == "delete") {
    return power_off(self, id, [self, id, done](const std::string& err) {
      if (!err.empty()) return done(err);
      auto i = self->state.instances.find(id);
      if (i != self->state.instances.end()) {
        retire(self, i->second);
        self->state.instances.erase(i);
      }
      done({});
    });
  }
  if (action == "poweron" || (action == "hardreboot" && (!known || is_down(it->second)))) {
    if (known && !is_down(it->second) && action == "poweron") return done({});  // already running
    if (spec.empty()) return done("instance " + id + " is not on node " + st.cfg.name + " and no spec was given");
    return power_on(self, id, spec, std::move(done));
  }
  if (!known) return done("instance " + id + " is not on node " + st.cfg.name);
  if (action == "pause") return call_and_wait(self, id, pause_atom::value, reach("quiesce", "quiesce"), deadline, done);
  if (action == "unpause") return call_and_wait(self, id, resume_atom::value, reach("run"), deadline, done);
  if (action == "hardreboot") return call_and_wait(self, id, hard_reset_atom::value, rebooted(), deadline, done);
  if (action == "softreboot") {
    // Ctrl-Alt-Del; a guest that ignores it within the grace period is reset.
    return call_and_wait(self, id, soft_reset_atom::value, rebooted(), st.cfg.soft_reboot_grace,
                         [self, id, done, deadline](const std::string& err) {
                           if (err.empty()) return done({});
                           call_and_wait(self, id, hard_reset_atom::value, rebooted(), deadline, done);
                         });
  }
  done("unknown node action '" + action + "'");
}

void schedule_tick(node_pointer self) {
  self->delayed_send(self, self->state.cfg.checkin_interval, tick_atom::value);
}

void check_in(node_pointer self) {
  auto& st = self->state;
  if (!st.cfg.controller || st.partitioned || st.stopped) return;
  self->request(st.cfg.controller, st.cfg.checkin_interval, checkin_atom::value, st.cfg.name, st.cfg.vcpus,
                st.cfg.memory_mib, static_cast<uint32_t>(st.instances.size()), caf::actor_cast<caf::actor>(self))
      .then([](ack_atom) {}, [](caf::error&) {});
}

node_actor::behavior_type node_impl(node_pointer self, NodeConfig cfg) {
  self->state.cfg = std::move(cfg);
  // An instance actor that ends on its own is down; any other exit ends the node.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& [id, ni] : self->state.instances) {
      if (ni.handle && ni.handle.address() == msg.source) {
        ni.handle = nullptr;
        ni.state = "destroy";
        return;
      }
    }
    self->quit(msg.reason);
  });
  check_in(self);
  schedule_tick(self);
  return {
      [=](place_atom, const std::string& id, const std::string& spec_bytes) {
        auto rp = self->make_response_promise<std::string>();
        auto& st = self->state;
        if (st.partitioned) return rp;  // cut off: the caller's deadline answers
        if (st.draining || st.stopped) {
          rp.deliver(make_error(ActorErrc::wrong_state, "node " + st.cfg.name + " is draining: no new instances"));
          return rp;
        }
        if (st.instances.count(id)) {
          rp.deliver(make_error(ActorErrc::invalid_argument, "instance " + id + " is already on node " + st.cfg.name));
          return rp;
        }
        power_on(self, id, spec_bytes, [rp](const std::string& err) mutable {
          if (err.empty())
            rp.deliver(std::string(kPowerRunning));
          else
            rp.deliver(make_error(ActorErrc::init_failed, err));
        });
        return rp;
      },
      [=](node_act_atom, const std::string& id, const std::string& action, const std::string& spec_bytes) {
        auto rp = self->make_response_promise<std::string>();
        if (self->state.partitioned) return rp;
        run_action(self, id, action, spec_bytes, [self, rp, id](const std::string& err) mutable {
          if (err.empty())
            rp.deliver(power_of(self, id));
          else
            rp.deliver(make_error(ActorErrc::wrong_state, err));
        });
        return rp;
      },
      [=](power_list_atom) {
        auto rp = self->make_response_promise<std::map<std::string, std::string>>();
        if (self->state.partitioned) return rp;
        std::map<std::string, std::string> out;
        for (const auto& [id, ni] : self->state.instances) out[id] = power_state(ni);
        rp.deliver(std::move(out));
        return rp;
      },
      [=](capacity_atom) -> caf::result<uint32_t, uint64_t, uint32_t> {
        auto& st = self->state;
        return {st.cfg.vcpus, st.cfg.memory_mib, static_cast<uint32_t>(st.instances.size())};
      },
      [=](drain_atom) {
        auto rp = self->make_response_promise<ack_atom>();
        auto& st = self->state;
        if (st.partitioned) return rp;
        st.draining = true;
        std::vector<std::string> ids;
        for (const auto& [id, ni] : st.instances) ids.push_back(id);
        auto remaining = std::make_shared<size_t>(ids.size() + 1);
        auto failed = std::make_shared<std::string>();
        auto one_done = [self, rp, remaining, failed](const std::string& err) mutable {
          if (!err.empty()) *failed += (failed->empty() ? "" : "; ") + err;
          if (--*remaining > 0) return;
          self->state.stopped = true;
          if (failed->empty())
            rp.deliver(ack_atom::value);
          else
            rp.deliver(make_error(ActorErrc::ack_timeout, "drain of node " + self->state.cfg.name + ": " + *failed));
        };
        for (const auto& id : ids) power_off(self, id, one_done);
        one_done({});
        return rp;
      },
      [=](instance_of_atom, const std::string& id) -> caf::actor {
        auto it = self->state.instances.find(id);
        return it == self->state.instances.end() ? caf::actor{} : caf::actor_cast<caf::actor>(it->second.handle);
      },
      [=](partition_atom, bool cut) -> ack_atom {
        self->state.partitioned = cut;
        if (!cut) check_in(self);
        return ack_atom::value;
      },
      [=](tick_atom) {
        check_in(self);
        schedule_tick(self);
      },
      [=](wait_dl_atom, const std::string& id, uint64_t no) {
        resolve(self, id, no, "instance " + id + ": deadline passed waiting for its state");
      },
      [=](inst_ev_atom, const std::string& id, uint64_t incarnation, const std::string& state,
          const std::string& target) {
        auto& st = self->state;
        auto it = st.instances.find(id);
        if (it == st.instances.end() || it->second.incarnation != incarnation) return;  // replaced or forgotten
        it->second.state = state;
        it->second.target = target;
        std::vector<std::pair<uint64_t, Verdict>> settled;
        for (auto& w : it->second.waiters) {
          Verdict v = w.check(state, target);
          if (v != Verdict::pending) settled.emplace_back(w.no, v);
        }
        for (auto& [no, v] : settled)
          resolve(self, id, no,
                  v == Verdict::done ? std::string() : "instance " + id + " went to " + state + " instead");
      },
  };
}

}  // namespace

node_actor spawn_node(caf::actor_system& sys, NodeConfig config) { return sys.spawn(node_impl, std::move(config)); }

}  // namespace apiary::actors
