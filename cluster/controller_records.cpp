// The controller's records and action log: ids, record transitions through
// the store (validated against the Shaken Fist table), action events, and
// how actions finish.
#include "cluster/controller_internal.hpp"

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

namespace apiary::actors::controller_detail {

std::string new_id(controller_pointer self, const char* prefix) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, static_cast<uint64_t>(self->state.rng()));
  return std::string(prefix) + buf;
}

caf::error store_failed(const StoreError& e) {
  return make_control_error(ControlErrc::internal, std::string("store: ") + control::to_string(e.code()) + ": " +
                                                       e.detail());
}

caf::error refusal_error(const control::Refusal& r) {
  return make_control_error(r.http_status == 501 ? ControlErrc::not_implemented : ControlErrc::conflict, r.message);
}

InstanceInfo to_info(const InstanceRecord& r) {
  return {r.id,
          r.name,
          r.node,
          control::to_string(r.sf_state),
          control::to_string(r.vm_state),
          control::to_string(r.task_state),
          r.created_at,
          r.updated_at,
          r.spec.SerializeAsString(),
          {},
          {},
          {},
          {},
          {}};
}

caf::expected<std::vector<InstanceInfo>> read_instances(control::StateStore& store, const ChangeFeed& feed) {
  std::vector<InstanceInfo> out;
  for (const auto& r : store.list_instances()) out.push_back(feed.with_live_state(to_info(r)));
  return out;
}

caf::expected<InstanceInfo> read_instance(control::StateStore& store, const ChangeFeed& feed, const std::string& id) {
  auto r = store.get_instance(id);
  if (!r) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
  return feed.with_live_state(to_info(*r));
}

caf::expected<std::vector<ActionInfo>> read_actions(control::StateStore& store, const std::string& id) {
  if (!store.get_instance(id)) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
  std::vector<ActionInfo> out;
  for (const auto& e : store.list_actions(id)) {
    ActionInfo ai{e.request_id, control::to_string(e.action), e.start, e.finish.value_or(-1),
                  control::to_string(e.result), {}};
    for (const auto& ev : e.events) ai.events.push_back({ev.name, ev.start, ev.finish.value_or(-1), ev.result, ev.detail});
    out.push_back(std::move(ai));
  }
  return out;
}

void note(controller_pointer self, std::string line) {
  auto& st = self->state;
  if (st.cfg.on_note) st.cfg.on_note(line);
  if (st.cluster_log.size() == kClusterLogLines) st.cluster_log.pop_front();
  st.cluster_log.push_back(std::move(line));
}

// Appends an event to an action; a failure to log is noted, never thrown.
void event(controller_pointer self, int64_t action_id, const std::string& name, const std::string& result,
           const std::string& detail, std::optional<control::UnixMillis> start) {
  auto& store = *self->state.store;
  try {
    const auto now = store.now();
    store.append_action_event(action_id, ActionEvent{name, start.value_or(now), now, result, detail});
  } catch (const StoreError& e) {
    note(self, "action " + std::to_string(action_id) + ": event " + name + " not logged: " + e.detail());
  }
}

// A validated sf_state change, logged as an event of the action.
void transition(controller_pointer self, const std::string& id, int64_t action_id, SfInstanceState to) {
  auto& store = *self->state.store;
  store.with_transaction([&] {
    const SfInstanceState from = store.record_transition(id, to);
    const auto now = store.now();
    store.append_action_event(action_id, ActionEvent{"sf_state", now, now, "success",
                                                     std::string(control::to_string(from)) + " -> " +
                                                         control::to_string(to)});
  });
}

// X -> X-error -> error, for a failure while the record is in `current`.
void fail_record(controller_pointer self, const std::string& id, int64_t action_id) {
  auto& store = *self->state.store;
  try {
    auto rec = store.get_instance(id);
    if (!rec) return;
    if (auto err = control::error_path(rec->sf_state)) transition(self, id, action_id, *err);
    rec = store.get_instance(id);
    if (rec && control::is_transitional_error(rec->sf_state)) transition(self, id, action_id, SfInstanceState::error);
  } catch (const StoreError& e) {
    note(self, "instance " + id + ": error path not recorded: " + e.detail());
  }
}

// Counts a finished action for /metrics (its duration on the store's clock).
void observe_finished(controller_pointer self, int64_t action_id) {
  auto& st = self->state;
  auto a = st.store->get_action_head(action_id);
  if (!a || !a->finish) return;
  const std::string name = control::to_string(a->action);
  st.action_latency->observe(name, std::chrono::milliseconds(std::max<int64_t>(0, *a->finish - a->start)));
  ++st.actions_finished[{name, control::to_string(a->result)}];
}

void finish(controller_pointer self, int64_t action_id, ActionResult result, std::optional<VmState> state) {
  try {
    if (self->state.store->finish_action(action_id, result, state)) observe_finished(self, action_id);
  } catch (const StoreError& e) {
    note(self, "action " + std::to_string(action_id) + " not finished: " + e.detail());
  }
}

}  // namespace apiary::actors::controller_detail
