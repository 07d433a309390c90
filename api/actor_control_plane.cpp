#include "api/actor_control_plane.hpp"

#include <atomic>
#include <mutex>

#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"

namespace apiary::apps {

namespace {
v1::ApiError from_caf(const caf::error& e) {
  if (e.category() == caf::atom("apiarycp")) return api_error(actors::http_status(e), actors::message_of(e));
  if (e == caf::sec::request_timeout) return api_error(504, "the control plane did not answer in time");
  return api_error(500, actors::describe(e));
}

v1::Instance to_proto(const actors::InstanceInfo& i) {
  v1::Instance out;
  out.set_id(i.id);
  out.set_name(i.name);
  out.set_node(i.node);
  out.set_record_state(i.sf_state);
  out.set_vm_state(i.vm_state);
  out.set_task_state(i.task_state == "none" ? "" : i.task_state);  // the API's "no task" is ""
  if (!i.spec_bytes.empty()) out.mutable_spec()->ParseFromString(i.spec_bytes);
  out.set_created_at(i.created_at);
  out.set_updated_at(i.updated_at);
  out.set_lifecycle_state(i.lifecycle);
  out.set_power_state(i.power);
  for (const auto& h : i.vm_history) out.add_vm_state_history(h);
  for (const auto& h : i.sf_history) out.add_record_state_history(h);
  for (const auto& h : i.lifecycle_history) out.add_lifecycle_history(h);
  return out;
}

v1::Node to_proto(const actors::NodeInfo& n) {
  v1::Node out;
  out.set_name(n.name);
  out.set_state(n.state);
  out.set_last_checkin(n.last_checkin);
  out.set_checkin_age_ms(n.checkin_age_ms);
  out.set_vcpus(n.vcpus);
  out.set_memory_mib(n.memory_mib);
  out.set_instances(n.instances);
  out.set_cannot_run(n.cannot_run);
  for (const auto& h : n.history) out.add_history(h);
  out.set_connected(n.connected);
  return out;
}

// Hands a console's output to the websocket until detach() clears `live`.
caf::behavior console_relay(caf::event_based_actor*, std::shared_ptr<std::atomic<bool>> live,
                            std::function<void(std::string)> on_output) {
  return {[live, on_output](actors::output_atom, const std::string& bytes) {
    if (*live) on_output(bytes);
  }};
}

// Hands the controller's change notices to the event stream until detach()
// clears `live`; when the controller goes down, says so once and ends. The
// mutex makes detach() wait for a call in progress, so nothing is called
// after it returns.
struct RelayState {
  std::mutex mu;
  bool live = true;
  std::function<void(const v1::Changes&)> on_change;
  std::function<void(const std::string&)> on_end;
};

caf::behavior change_relay(caf::event_based_actor* self, std::shared_ptr<RelayState> relay,
                           actors::controller_actor controller) {
  self->monitor(controller);
  self->set_down_handler([self, relay](caf::down_msg& m) {
    {
      std::lock_guard lock(relay->mu);
      if (relay->live) relay->on_end("the controller is gone (" + actors::describe(m.reason) + ")");
      relay->live = false;
    }
    self->quit();
  });
  return {[relay](actors::changed_atom, const std::vector<std::string>& instances,
                  const std::vector<std::string>& networks, const std::vector<std::string>& nodes) {
    v1::Changes c;
    for (const auto& i : instances) c.add_instances(i);
    for (const auto& n : networks) c.add_networks(n);
    for (const auto& n : nodes) c.add_nodes(n);
    std::lock_guard lock(relay->mu);
    if (relay->live) relay->on_change(c);
  }};
}

v1::Network to_proto(const actors::NetworkInfo& n) {
  v1::Network out;
  out.set_id(n.id);
  out.set_name(n.name);
  out.set_cidr(n.cidr);
  out.set_state(n.state);
  for (const auto& i : n.instances) out.add_instances(i);
  out.set_vni(n.vni);
  out.set_error(n.error);
  for (const auto& p : n.ports) {
    auto* port = out.add_ports();
    port->set_instance(p.instance);
    port->set_nic(p.nic);
    port->set_mac(p.mac);
    port->set_ipv4(p.ipv4);
    port->set_node(p.node);
  }
  for (const auto& [node, vtep] : n.vteps) (*out.mutable_vteps())[node] = vtep;
  for (const auto& h : n.history) out.add_history(h);
  return out;
}
}  // namespace

ActorControlPlane::ActorControlPlane(caf::actor_system& sys, actors::controller_actor controller,
                                     std::map<std::string, actors::node_actor> nodes,
                                     std::chrono::milliseconds deadline,
                                     std::shared_ptr<actors::ControllerReads> reads)
    : sys_(sys),
      controller_(std::move(controller)),
      nodes_(std::move(nodes)),
      deadline_(deadline),
      reads_(std::move(reads)) {}

Result<v1::Instance> ActorControlPlane::create(const v1::InstanceSpec& spec) {
  return create_with_request_id(spec, std::string());  // the controller's "" is "no key"
}

Result<v1::InstanceList> ActorControlPlane::list() {
  auto done = [](const std::vector<actors::InstanceInfo>& all) {
    v1::InstanceList l;
    for (auto& i : all) *l.add_instances() = to_proto(i);
    return l;
  };
  if (reads_) {
    auto all = reads_->list();
    if (!all) return from_caf(all.error());
    return done(*all);
  }
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::InstanceList>> out;
  self->request(controller_, deadline_, actors::list_atom::value)
      .receive([&](const std::vector<actors::InstanceInfo>& all) { out = done(all); },
               [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<WatchSubscription> ActorControlPlane::watch(std::function<void(const v1::Changes&)> on_change,
                                                  std::function<void(const std::string&)> on_end) {
  auto relay = std::make_shared<RelayState>();
  relay->on_change = std::move(on_change);
  relay->on_end = std::move(on_end);
  caf::actor actor = sys_.spawn(change_relay, relay, controller_);
  auto end = [relay, actor] {
    {
      std::lock_guard lock(relay->mu);
      relay->live = false;
    }
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  };
  caf::scoped_actor self{sys_};
  std::optional<Result<WatchSubscription>> out;
  self->request(controller_, deadline_, actors::watch_atom::value, actor)
      .receive([&](actors::ack_atom) { out = WatchSubscription{end}; },
               [&](caf::error& e) {
                 end();
                 out = from_caf(e);
               });
  return *out;
}

Result<v1::Instance> ActorControlPlane::get(const std::string& id) {
  if (reads_) {
    auto i = reads_->get(id);
    if (!i) return from_caf(i.error());
    return to_proto(*i);
  }
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::Instance>> out;
  self->request(controller_, deadline_, actors::get_atom::value, id)
      .receive([&](const actors::InstanceInfo& i) { out = to_proto(i); },
               [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::ActionAccepted> ActorControlPlane::act(const std::string& id, const v1::ActionRequest& request) {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::ActionAccepted>> out;
  const std::map<std::string, std::string> args(request.args().begin(), request.args().end());
  self->request(controller_, deadline_, actors::act_atom::value, id, request.action(), request.type(), args)
      .receive(
          [&](const std::string& request_id) {
            v1::ActionAccepted a;
            a.set_request_id(request_id);
            a.set_instance_id(id);
            a.set_action(request.action());
            out = std::move(a);
          },
          [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::Instance> ActorControlPlane::create_with_request_id(const v1::InstanceSpec& spec,
                                                              const std::string& request_id) {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::Instance>> out;
  self->request(controller_, deadline_, actors::create_atom::value, spec.SerializeAsString(), request_id)
      .receive([&](const std::string& id) { out = get(id); }, [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::NodeList> ActorControlPlane::list_nodes() {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::NodeList>> out;
  self->request(controller_, deadline_, actors::nodes_atom::value)
      .receive(
          [&](const std::vector<actors::NodeInfo>& all) {
            v1::NodeList l;
            for (auto& n : all) *l.add_nodes() = to_proto(n);
            out = std::move(l);
          },
          [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::Node> ActorControlPlane::stop_node(const std::string& name) {
  caf::scoped_actor self{sys_};
  std::optional<v1::ApiError> err;
  self->request(controller_, deadline_, actors::drain_atom::value, name)
      .receive([](actors::ack_atom) {}, [&](caf::error& e) { err = from_caf(e); });
  if (err) return *err;
  auto all = list_nodes();
  if (!all) return all.error();
  for (const auto& n : all.value().nodes())
    if (n.name() == name) return n;
  return api_error(404, "node " + name + " not found");
}

Result<std::string> ActorControlPlane::metrics() {
  caf::scoped_actor self{sys_};
  std::optional<Result<std::string>> out;
  self->request(controller_, deadline_, actors::metrics_atom::value)
      .receive([&](std::string& text) { out = std::move(text); }, [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::ActionLog> ActorControlPlane::actions(const std::string& id) {
  auto done = [](const std::vector<actors::ActionInfo>& all) {
    v1::ActionLog log;
    for (auto& a : all) {
      auto* r = log.add_actions();
      r->set_request_id(a.request_id);
      r->set_action(a.action);
      r->set_start(a.start);
      r->set_finish(a.finish);
      r->set_result(a.result);
      for (auto& ev : a.events)
        r->add_events(ev.name + (ev.result.empty() ? "" : " " + ev.result) + (ev.detail.empty() ? "" : ": " + ev.detail));
    }
    return log;
  };
  if (reads_) {
    auto all = reads_->actions(id);
    if (!all) return from_caf(all.error());
    return done(*all);
  }
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::ActionLog>> out;
  self->request(controller_, deadline_, actors::actions_atom::value, id)
      .receive([&](const std::vector<actors::ActionInfo>& all) { out = done(all); },
               [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::Network> ActorControlPlane::create_network(const v1::CreateNetworkRequest& request) {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::Network>> out;
  self->request(controller_, deadline_, actors::net_create_atom::value, request.name(), request.cidr())
      .receive([&](const std::string& id) { out = get_network(id); }, [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::NetworkList> ActorControlPlane::list_networks() {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::NetworkList>> out;
  self->request(controller_, deadline_, actors::net_list_atom::value)
      .receive(
          [&](const std::vector<actors::NetworkInfo>& all) {
            v1::NetworkList l;
            for (auto& n : all) *l.add_networks() = to_proto(n);
            out = std::move(l);
          },
          [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::Network> ActorControlPlane::get_network(const std::string& id) {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::Network>> out;
  self->request(controller_, deadline_, actors::net_get_atom::value, id)
      .receive([&](const actors::NetworkInfo& n) { out = to_proto(n); }, [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<v1::Network> ActorControlPlane::delete_network(const std::string& id) {
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::Network>> out;
  self->request(controller_, deadline_, actors::net_delete_atom::value, id)
      .receive([&](const actors::NetworkInfo& n) { out = to_proto(n); }, [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<actors::console_actor> ActorControlPlane::console_of(const std::string& id) {
  auto inst = get(id);
  if (!inst) return inst.error();
  caf::scoped_actor self{sys_};
  std::optional<v1::ApiError> err;
  actors::console_actor console;
  auto node = nodes_.find(inst.value().node());
  if (node == nodes_.end()) {
    // A node in another process: the controller asks it (over the middleman).
    self->request(controller_, deadline_, actors::console_of_atom::value, id)
        .receive([&](const caf::actor& c) { console = caf::actor_cast<actors::console_actor>(c); },
                 [&](caf::error& e) { err = from_caf(e); });
    if (err) return *err;
    if (!console) return api_error(409, "instance " + id + " has no console yet");
    return console;
  }
  caf::actor instance;
  self->request(node->second, deadline_, actors::instance_of_atom::value, id)
      .receive([&](caf::actor a) { instance = a; }, [&](caf::error& e) { err = from_caf(e); });
  if (err) return *err;
  if (!instance) return api_error(409, "instance " + id + " is not running");
  self->request(caf::actor_cast<actors::instance_actor>(instance), deadline_, actors::console_atom::value)
      .receive([&](actors::console_actor c) { console = c; }, [&](caf::error& e) { err = from_caf(e); });
  if (err) return *err;
  if (!console) return api_error(409, "instance " + id + " has no console yet");
  return console;
}

Result<v1::ConsoleHistory> ActorControlPlane::console_history(const std::string& id) {
  auto console = console_of(id);
  if (!console) return console.error();
  caf::scoped_actor self{sys_};
  std::optional<Result<v1::ConsoleHistory>> out;
  self->request(console.value(), deadline_, actors::history_atom::value)
      .receive(
          [&](const std::string& h) {
            v1::ConsoleHistory ch;
            ch.set_data(h);
            out = std::move(ch);
          },
          [&](caf::error& e) { out = from_caf(e); });
  return *out;
}

Result<ConsoleSubscription> ActorControlPlane::console_attach(const std::string& id,
                                                              std::function<void(std::string)> on_output) {
  auto console = console_of(id);
  if (!console) return console.error();
  // A relay actor is the console reader; after detach it drops what is still queued.
  auto live = std::make_shared<std::atomic<bool>>(true);
  // (The state goes in as spawn arguments: CAF 0.17 binds a null pointer to
  // a reference when an actor function takes no arguments, which UBSan flags.)
  auto relay = sys_.spawn(console_relay, live, on_output);
  caf::scoped_actor self{sys_};
  std::optional<Result<ConsoleSubscription>> out;
  auto con = console.value();
  self->request(con, deadline_, actors::attach_atom::value, relay, true)
      .receive(
          [&](const std::string& history, bool) {
            ConsoleSubscription sub;
            sub.history.set_data(history);
            auto& sys = sys_;
            auto deadline = deadline_;
            sub.input = [&sys, con, relay, deadline](std::string bytes) {
              caf::scoped_actor s{sys};
              s->request(con, deadline, actors::input_atom::value, relay, std::move(bytes))
                  .receive([](uint64_t) {}, [](caf::error&) {});
            };
            sub.detach = [&sys, con, relay, live] {
              *live = false;
              caf::anon_send(con, actors::detach_atom::value, relay);
              caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
            };
            out = std::move(sub);
          },
          [&](caf::error& e) {
            caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
            out = from_caf(e);
          });
  return *out;
}

}  // namespace apiary::apps
