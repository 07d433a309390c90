// The controller actor (see controller_actor.hpp for the messages and why it
// is one actor).
//
// Rules this file keeps:
//  * Every change goes through the StateStore (which validates it against
//    the Shaken Fist and Nova tables) before anything is acknowledged or sent
//    to a node; a StoreError becomes a 500 answer, never a half-written
//    change.
//  * Every accepted action ends in finish_action: the node's reply, its error
//    or the request deadline (action_deadline) closes it.
//  * Record transitions and scheduling decisions are written into the
//    action's events, so the action log tells the whole story of a request.
#include "cluster/controller_actor.hpp"

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

#include "cluster/controller_internal.hpp"
#include "cluster/controller_reads.hpp"

namespace apiary::actors {

using namespace controller_detail;

namespace {

// A read's answer: its value or error, or the store's failure.
template <class F>
auto answer_read(F&& read) -> caf::result<typename decltype(read())::value_type> {
  try {
    return read();
  } catch (const StoreError& e) {
    return store_failed(e);
  }
}

// --- metrics ---------------------------------------------------------------------

// The controller's own families (records, nodes, actions); the nodes'
// fan-out samples are appended by the caller.
std::string render_metrics(controller_pointer self) {
  auto& st = self->state;
  std::ostringstream out;
  std::map<std::string, uint64_t> vm, record, task;
  for (const auto& r : st.store->list_instances()) {
    ++vm[control::to_string(r.vm_state)];
    ++record[control::to_string(r.sf_state)];
    if (r.task_state != TaskState::none) ++task[control::to_string(r.task_state)];
  }
  auto gauge = [&out](const std::string& name, const std::string& help, const std::string& label,
                      const std::map<std::string, uint64_t>& values) {
    out << metric_header(name, "gauge", help);
    for (const auto& [k, v] : values) out << name << "{" << label << "=\"" << escape_label(k) << "\"} " << v << "\n";
  };
  gauge("apiary_instances", "Instance records by Nova vm_state.", "vm_state", vm);
  gauge("apiary_instance_records", "Instance records by Shaken Fist record state.", "record_state", record);
  gauge("apiary_instance_tasks", "Instances with a task in flight, by Nova task_state.", "task_state", task);
  std::map<std::string, uint64_t> node_states;
  const auto nodes = st.store->list_nodes();
  for (const auto& n : nodes) ++node_states[control::to_string(n.state)];
  gauge("apiary_nodes", "Node records by state.", "state", node_states);
  out << metric_header("apiary_node_checkin_age_seconds", "gauge", "Time since the node's last check-in.");
  const auto now = st.store->now();
  for (const auto& n : nodes)
    out << "apiary_node_checkin_age_seconds{node=\"" << escape_label(n.name) << "\"} "
        << static_cast<double>(std::max<int64_t>(0, now - n.last_checkin)) / 1000.0 << "\n";
  out << metric_header("apiary_action_duration_seconds", "histogram",
                       "Time from accepting an action to its end, by Nova action (since the controller started).");
  out << st.action_latency->render("apiary_action_duration_seconds");
  out << metric_header("apiary_actions_finished_total", "counter",
                       "Actions finished since the controller started, by action and result.");
  for (const auto& [k, v] : st.actions_finished)
    out << "apiary_actions_finished_total{action=\"" << escape_label(k.first) << "\",result=\"" << escape_label(k.second)
        << "\"} " << v << "\n";
  return out.str();
}

}  // namespace

bool controller_detail::commit_writes(controller_pointer self) {
  auto& st = self->state;
  auto after = std::move(st.after_commit);
  st.after_commit.clear();
  try {
    st.store->commit_batch();
  } catch (const StoreError& e) {
    const caf::error err = store_failed(e);
    for (auto& f : after) f(&err);
    note(self, "store: " + e.detail() + "; the controller stops (" + std::to_string(after.size()) +
                   " answer(s) failed with it)");
    self->quit(err);
    return false;
  }
  for (auto& f : after) f(nullptr);
  return true;
}

namespace {

controller_actor::behavior_type controller_impl(controller_pointer self, ControllerConfig cfg,
                                                std::shared_ptr<control::StateStore> store,
                                                std::shared_ptr<ChangeFeed> feed,
                                                std::shared_ptr<std::function<void()>> batch_opened) {
  // The store opens a batch at the first write after a commit; the flush
  // goes behind whatever is in the mailbox by then, so everything already
  // asked joins the batch (controller_internal.hpp, durable()).
  *batch_opened = [self] { self->send(caf::actor_cast<controller_actor>(self), flush_atom::value); };
  // Told to stop (a shutdown; a kill is a crash and skips this): the open
  // batch is committed first, so its writes stay and its answers go out.
  self->set_exit_handler([self](caf::exit_msg& m) {
    if (commit_writes(self)) self->quit(m.reason);
  });
  // A handler that throws stops the controller with what it threw (the
  // process watching it exits, apps/actor_watch.hpp); the open batch is not
  // committed: the handler may have left it half done, and nothing in it
  // was acknowledged.
  self->set_exception_handler([self](caf::scheduled_actor*, std::exception_ptr& thrown) -> caf::error {
    auto why = crash_reason("controller", thrown);
    note(self, "stopping: " + describe(why));
    return why;
  });
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.store = std::move(store);
  st.feed = std::move(feed);
  st.rng.seed(st.cfg.id_seed ? st.cfg.id_seed : std::random_device{}());
  st.started = st.store->now();
  self->delayed_send(self, st.cfg.sweep_interval, sweep_atom::value);
  self->delayed_send(self, st.cfg.purge_interval, purge_atom::value);
  if (st.cfg.power_sync_interval.count() > 0)
    self->delayed_send(self, st.cfg.power_sync_interval, power_sync_atom::value);
  // A node actor that is gone (its process died, the connection dropped)
  // is not connected any more: actions on its instances answer 503 instead
  // of failing against a dead peer. Its record is left to the silence rule.
  self->set_down_handler([self](caf::down_msg& m) {
    self->state.feed->drop_watcher(m.source);
    auto& nodes = self->state.nodes;
    for (auto it = nodes.begin(); it != nodes.end(); ++it) {
      if (it->second.address() != m.source) continue;
      note(self, "node " + it->first + ": disconnected (" + describe(m.reason) + ")");
      // What it reported of its VMs is not known any more.
      self->state.feed->tell(self->state.feed->forget_node(it->first), {}, {});
      nodes.erase(it);
      return;
    }
  });
  // Actions a previous controller left running are settled once the nodes
  // had time to register again.
  try {
    for (const auto& e : st.store->list_running_actions()) st.inherited.insert(e.id);
  } catch (const StoreError& e) {
    note(self, std::string("recovery: cannot list running actions: ") + e.detail());
  }
  if (!st.inherited.empty()) self->delayed_send(self, st.cfg.recovery_grace, recover_atom::value);
  return {
      [=](create_atom, const std::string& bytes) -> caf::result<std::string> {
        return durable(self, [&]() -> caf::result<std::string> {
          return create_instance(self, bytes, std::string());
        }());
      },
      [=](create_atom, const std::string& bytes, const std::string& request_id) -> caf::result<std::string> {
        return durable(self, [&]() -> caf::result<std::string> {
          return create_instance(self, bytes, request_id);
        }());
      },
      [=](console_of_atom, const std::string& id) -> caf::result<caf::actor> {
        auto& st = self->state;
        std::optional<InstanceRecord> rec;
        try {
          rec = st.store->get_instance(id);
        } catch (const StoreError& e) {
          return store_failed(e);
        }
        if (!rec) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
        if (rec->node.empty() || !st.nodes.count(rec->node))
          return make_control_error(ControlErrc::unavailable, "instance " + id + " is not on a connected node");
        auto rp = self->make_response_promise<caf::actor>();
        self->request(st.nodes.at(rec->node), st.cfg.node_deadline, console_of_atom::value, id)
            .then([rp](const caf::actor& console) mutable { rp.deliver(console); },
                  [rp, id](caf::error& e) mutable {
                    if (e.category() == kErrorCategory)
                      rp.deliver(make_control_error(ControlErrc::conflict,
                                                    "instance " + id + " is not running: " + describe(e)));
                    else
                      rp.deliver(make_control_error(ControlErrc::unavailable,
                                                    "the node of instance " + id + " did not answer: " + describe(e)));
                  });
        return rp;
      },
      [=](metrics_atom) {
        auto rp = self->make_response_promise<std::string>();
        auto& st = self->state;
        // The controller's families now; the nodes' fan-out samples as they
        // answer (each within a short deadline: a silent node is "down").
        struct Scrape {
          std::string own;
          std::string samples;
          std::map<std::string, bool> up;
          size_t pending = 0;
          caf::typed_response_promise<std::string> rp;
          void one_done() {
            if (--pending > 0) return;
            std::string out = std::move(own);
            out += metric_header("apiary_node_scrape_up", "gauge", "1 if the node answered this scrape, else 0.");
            for (const auto& [n, ok] : up)
              out += "apiary_node_scrape_up{node=\"" + escape_label(n) + "\"} " + (ok ? "1" : "0") + "\n";
            out += group_families(samples, node_metric_families());
            rp.deliver(std::move(out));
          }
        };
        auto scrape = std::make_shared<Scrape>();
        scrape->rp = rp;
        try {
          scrape->own = render_metrics(self);
        } catch (const StoreError& e) {
          rp.deliver(store_failed(e));
          return rp;
        }
        scrape->pending = st.nodes.size() + 1;
        const auto deadline = std::min<std::chrono::milliseconds>(st.cfg.node_deadline, std::chrono::seconds(2));
        for (const auto& [name, h] : st.nodes) {
          self->request(h, deadline, metrics_atom::value)
              .then(
                  [scrape, name = name](const std::string& text) {
                    scrape->up[name] = true;
                    scrape->samples += text;
                    scrape->one_done();
                  },
                  [scrape, name = name](caf::error&) {
                    scrape->up[name] = false;
                    scrape->one_done();
                  });
        }
        scrape->one_done();  // the controller's own part
        return rp;
      },
      [=](recover_atom) { recover(self); },
      [=](flush_atom) { commit_writes(self); },
      [=](replace_atom, const std::string& id, int64_t action_id) {
        // Only a create still waiting in preflight is taken up again (a
        // delete meanwhile, or recovery, may have moved it on).
        try {
          auto rec = self->state.store->get_instance(id);
          auto a = self->state.store->get_action_head(action_id);
          if (rec && rec->sf_state == SfInstanceState::preflight && rec->node.empty() && a &&
              a->result == ActionResult::running)
            build(self, id, action_id, true);
        } catch (const StoreError& e) {
          note(self, "instance " + id + ": placement retry failed in the store: " + e.detail());
        }
      },
      [=](watch_atom, const caf::actor& watcher) -> ack_atom {
        if (watcher) {
          self->monitor(watcher);
          self->state.feed->watchers.push_back(watcher);
        }
        return ack_atom::value;
      },
      [=](lifecycle_atom, const std::string& node, const std::string& id, const std::string& state,
          const std::string& power) {
        // Kept as reported; shown only while the record names that node
        // (ChangeFeed::with_live_state), so no store read per report.
        auto& st = self->state;
        if (st.feed->report(node, id, state, power)) st.feed->tell({id}, {}, {});
        if ((state == "halt" || state == "destroy") && st.cfg.lifecycle_sync_delay.count() > 0 &&
            st.power_sync_pending.insert(node).second)
          self->delayed_send(self, st.cfg.lifecycle_sync_delay, power_sync_atom::value, node);
      },
      [=](power_sync_atom) {
        auto& st = self->state;
        for (const auto& [name, handle] : st.nodes)
          if (node_reachable(self, name)) reconcile(self, name, true);
        self->delayed_send(self, st.cfg.power_sync_interval, power_sync_atom::value);
      },
      [=](power_sync_atom, const std::string& node) {
        self->state.power_sync_pending.erase(node);
        if (node_reachable(self, node)) reconcile(self, node, true);
      },
      [=](list_atom) -> caf::result<std::vector<InstanceInfo>> {
        return durable(self, answer_read([&] { return read_instances(*self->state.store, *self->state.feed); }));
      },
      [=](get_atom, const std::string& id) -> caf::result<InstanceInfo> {
        return durable(self, answer_read([&] { return read_instance(*self->state.store, *self->state.feed, id); }));
      },
      [=](act_atom, const std::string& id, const std::string& name, const std::string& type)
          -> caf::result<std::string> { return durable(self, act(self, id, name, type, {})); },
      [=](act_atom, const std::string& id, const std::string& name, const std::string& type, const Args& args)
          -> caf::result<std::string> { return durable(self, act(self, id, name, type, args)); },
      [=](actions_atom, const std::string& id) -> caf::result<std::vector<ActionInfo>> {
        return durable(self, answer_read([&] { return read_actions(*self->state.store, id); }));
      },
      [=](nodes_atom) -> caf::result<std::vector<NodeInfo>> {
        return durable(self, [&]() -> caf::result<std::vector<NodeInfo>> {
          try {
            std::vector<NodeInfo> out;
            for (const auto& n : self->state.store->list_nodes())
              out.push_back(self->state.feed->with_history(
                  NodeInfo{n.name, control::to_string(n.state), n.last_checkin, n.vcpus, n.memory_mib, n.instances,
                           std::max<int64_t>(0, self->state.store->now() - n.last_checkin),
                           self->state.cannot_run.count(n.name) ? self->state.cannot_run.at(n.name) : "",
                           {}, self->state.nodes.count(n.name) > 0}));
            return out;
          } catch (const StoreError& e) {
            return store_failed(e);
          }
        }());
      },
      [=](drain_atom, const std::string& node) -> caf::result<ack_atom> {
        return durable(self, [&]() -> caf::result<ack_atom> {
          auto& st = self->state;
          try {
            auto rec = st.store->get_node(node);
            if (!rec || !st.nodes.count(node))
              return make_control_error(ControlErrc::not_found, "node " + node + " not found");
            st.store->record_transition(node, NodeState::stopping);
          } catch (const StoreError& e) {
            if (e.code() == control::StoreErrc::transition_refused)
              return make_control_error(ControlErrc::conflict, e.detail());
            return store_failed(e);
          }
          self->request(st.nodes.at(node), st.cfg.action_deadline, drain_atom::value)
              .then([self, node](ack_atom) { drained(self, node); },
                    [self, node](caf::error& e) { note(self, "drain of node " + node + " failed: " + describe(e)); });
          return ack_atom::value;
        }());
      },
      [=](cluster_log_atom) -> caf::result<std::vector<std::string>> {
        const auto& log = self->state.cluster_log;
        return durable(self, caf::result<std::vector<std::string>>(std::vector<std::string>(log.begin(), log.end())));
      },
      [=](net_create_atom, const std::string& name, const std::string& cidr) -> caf::result<std::string> {
        return durable(self, [&]() -> caf::result<std::string> {
          if (name.empty()) return make_control_error(ControlErrc::bad_request, "a network needs a name");
          if (!cidr.empty() && !spec::parse_ipv4_prefix(cidr))
            return make_control_error(ControlErrc::bad_request, "cidr '" + cidr + "' is not of the form a.b.c.d/n");
          auto& store = *self->state.store;
          NetworkRecord n;
          n.name = name;
          n.cidr = cidr;
          try {
            // The VNI derives from the id: draw ids until no live network has it.
            do n.id = new_id(self, "net-");
            while (vni_taken(store, n.id));
            // Nothing to set up centrally: each node builds its switch and
            // joins the overlay when its first port of the network appears
            // (net/network_actor.hpp), so initial -> created at once.
            store.with_transaction([&] {
              store.put_network(n);
              store.record_transition(n.id, NetworkState::created);
            });
          } catch (const StoreError& e) {
            return store_failed(e);
          }
          return n.id;
        }());
      },
      [=](net_list_atom) -> caf::result<std::vector<NetworkInfo>> {
        return durable(self, [&]() -> caf::result<std::vector<NetworkInfo>> {
          try {
            auto& store = *self->state.store;
            std::vector<NetworkInfo> out;
            for (const auto& n : store.list_networks())
              out.push_back(self->state.feed->with_history(
                  to_info(store, n, self->state.vteps, self->state.network_errors)));
            return out;
          } catch (const StoreError& e) {
            return store_failed(e);
          }
        }());
      },
      [=](net_get_atom, const std::string& id) -> caf::result<NetworkInfo> {
        return durable(self, [&]() -> caf::result<NetworkInfo> {
          try {
            auto& store = *self->state.store;
            auto n = store.get_network(id);
            if (!n) return make_control_error(ControlErrc::not_found, "network " + id + " not found");
            return self->state.feed->with_history(to_info(store, *n, self->state.vteps, self->state.network_errors));
          } catch (const StoreError& e) {
            return store_failed(e);
          }
        }());
      },
      [=](net_delete_atom, const std::string& id) -> caf::result<NetworkInfo> {
        return durable(self, [&]() -> caf::result<NetworkInfo> {
          try {
            auto& store = *self->state.store;
            auto n = store.get_network(id);
            if (!n) return make_control_error(ControlErrc::not_found, "network " + id + " not found");
            if (n->state == NetworkState::deleted)
              return make_control_error(ControlErrc::conflict, "network " + id + " is already deleted");
            if (n->state != NetworkState::delete_wait) {
              const bool attached = !store.attachments_of_network(id).empty();
              // An error network is deleted whatever is attached (its
              // attachments go when the record is purged).
              const NetworkState to =
                  attached && n->state != NetworkState::error ? NetworkState::delete_wait : NetworkState::deleted;
              store.record_transition(id, to);
              note(self, "network " + id + ": " + control::to_string(n->state) + " -> " + control::to_string(to));
              n = store.get_network(id);
            }
            return self->state.feed->with_history(to_info(store, *n, self->state.vteps, self->state.network_errors));
          } catch (const StoreError& e) {
            if (e.code() == control::StoreErrc::transition_refused)
              return make_control_error(ControlErrc::conflict, e.detail());
            return store_failed(e);
          }
        }());
      },
      [=](purge_atom) {
        auto& st = self->state;
        try {
          const auto c = st.store->purge_deleted_after(st.cfg.cleaner_delay);
          if (c.instances || c.networks)
            note(self, "purge: " + std::to_string(c.instances) + " instance(s), " + std::to_string(c.networks) +
                           " network(s) deleted more than " + std::to_string(st.cfg.cleaner_delay.count()) + " s ago");
        } catch (const StoreError& e) {
          note(self, std::string("purge failed: ") + e.detail());
        }
        self->delayed_send(self, st.cfg.purge_interval, purge_atom::value);
      },
      [=](node_net_atom, const std::string& node, const std::string& vtep,
          const std::map<std::string, std::string>& hosted) -> caf::result<std::map<std::string, std::vector<std::string>>> {
        return durable(self, [&]() -> caf::result<std::map<std::string, std::vector<std::string>>> {
          try {
            return node_networks(self, node, vtep, hosted);
          } catch (const StoreError& e) {
            return store_failed(e);
          }
        }());
      },
      [=](checkin_atom, const std::string& name, uint32_t vcpus, uint64_t memory_mib, uint32_t instances,
          const caf::actor& node, const std::string& cannot_run) -> caf::result<ack_atom> {
        return durable(self, [&]() -> caf::result<ack_atom> {
          auto& st = self->state;
          if (cannot_run != st.cannot_run[name]) {
            note(self, "node " + name + (cannot_run.empty() ? ": can run instances again"
                                                            : ": cannot run instances: " + cannot_run));
            st.cannot_run[name] = cannot_run;
          }
          std::optional<NodeState> before;
          try {
            if (auto prev = st.store->get_node(name)) before = prev->state;
            st.store->node_checkin(name, vcpus, memory_mib, instances);
          } catch (const StoreError& e) {
            if (e.code() == control::StoreErrc::transition_refused)
              return make_control_error(ControlErrc::conflict, e.detail());
            return store_failed(e);
          }
          auto handle = caf::actor_cast<node_actor>(node);
          auto known = st.nodes.find(name);
          // A node process that restarted (a new actor), or the first check-in
          // since this controller started: what it runs may differ from the
          // records.
          const bool new_incarnation = known == st.nodes.end() || known->second != handle;
          st.nodes[name] = handle;
          if (new_incarnation) self->monitor(handle);  // a dead node is not "connected" (503), see the down handler
          if (before && (*before == NodeState::missing || *before == NodeState::error)) {
            note(self, "node " + name + ": returned from " + control::to_string(*before) + ", reconciling");
            reconcile(self, name);
          } else if (before && new_incarnation) {
            note(self, "node " + name + ": registered (again), reconciling");
            reconcile(self, name);
          }
          return ack_atom::value;
        }());
      },
      [=](sweep_atom) {
        auto& st = self->state;
        try {
          for (const auto& c : st.store->sweep_silent_nodes(st.cfg.checkin_max)) {
            note(self, "node " + c.name + ": " + control::to_string(c.from) + " -> " + control::to_string(c.to));
            if (c.to == NodeState::error) st.feed->tell(st.feed->forget_node(c.name), {}, {});
            for (const auto& id : c.instances_errored) {
              auto rec = st.store->get_instance(id);
              if (rec && control::is_transitional_error(rec->sf_state))
                st.store->record_transition(id, SfInstanceState::error);
              note(self, "instance " + id + ": error (node " + c.name + " in error)");
            }
          }
        } catch (const StoreError& e) {
          note(self, std::string("sweep failed: ") + e.detail());
        }
        self->delayed_send(self, st.cfg.sweep_interval, sweep_atom::value);
      },
  };
}

}  // namespace

controller_actor spawn_controller(caf::actor_system& sys, ControllerConfig config) {
  return spawn_controller_with_reads(sys, std::move(config)).actor;
}

SpawnedController spawn_controller_with_reads(caf::actor_system& sys, ControllerConfig config) {
  // The store's clock is the actor system's clock (simulated time under the
  // test coordinator), anchored to the Unix epoch once.
  using namespace std::chrono;
  const auto anchor = config.clock_epoch_ms
                          ? *config.clock_epoch_ms
                          : duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() -
                                duration_cast<milliseconds>(sys.clock().now().time_since_epoch()).count();
  control::StoreOptions options;
  options.test_skip_error_fanout = config.test_skip_error_fanout;
  caf::actor_system* s = &sys;
  options.clock = [s, anchor] {
    return anchor + duration_cast<milliseconds>(s->clock().now().time_since_epoch()).count();
  };
  // Every committed change goes to the live views; the hook runs inside the
  // controller's handlers (the store's only writer).
  auto feed = std::make_shared<ChangeFeed>();
  options.on_commit = [feed](const control::StoreChanges& c) { feed->committed(c); };
  auto batch_opened = std::make_shared<std::function<void()>>();
  if (config.group_commit)
    options.on_batch_open = [batch_opened] {
      if (*batch_opened) (*batch_opened)();
    };
  options.vfs = config.store_vfs;
  auto store = std::make_shared<control::StateStore>(control::StateStore::open(config.store_path, options));
  SpawnedController out;
  if (config.store_path != ":memory:" && !config.store_path.empty())
    out.reads = std::make_shared<ControllerReads>(config.store_path, feed);
  out.actor = sys.spawn(controller_impl, std::move(config), std::move(store), std::move(feed), std::move(batch_opened));
  return out;
}

}  // namespace apiary::actors
