// The simulator's invariants that need no store: the instance lifecycle
// table, one node per instance, and reachability through a record table.
//
// Why separate from the simulator: these are pure functions of what was
// observed, so they can be unit-tested with made-up observations (and a
// broken observation must fail them), without running any actor.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/instance_lifecycle.hpp"
#include "cluster/shakenfist_states.hpp"

namespace apiary::sim {

// Invariant names, as reported.
inline constexpr const char* kSinglePlacement = "single_placement";  // no instance runs on two nodes
inline constexpr const char* kErrorFanout = "error_fanout";          // instances of an Error node are errored in time
inline constexpr const char* kActionDeadline = "action_deadline";    // accepted actions end in time
inline constexpr const char* kAckedRecordLost = "acked_record_lost";  // acknowledged records survive a controller crash
inline constexpr const char* kCreateError = "create_error";          // acknowledged creates succeed (opt-in)
inline constexpr const char* kLifecycleTable = "lifecycle_table";    // instance actors take table transitions only
inline constexpr const char* kRecordTable = "record_table";          // records move along their state machines only
inline constexpr const char* kActorLeak = "actor_leak";              // every actor is gone at the end
inline constexpr const char* kThreadLeak = "thread_leak";            // and every thread

// Whether `to` can follow `from` through zero or more transitions of the
// table (observations at checkpoints may skip intermediate states).
template <class State>
bool reachable(std::span<const control::Transition<State>> table, State from, State to) {
  if (from == to) return true;
  std::set<State> seen{from};
  std::deque<State> queue{from};
  while (!queue.empty()) {
    const State s = queue.front();
    queue.pop_front();
    for (const auto& t : table) {
      if (t.from != s || seen.count(t.to)) continue;
      if (t.to == to) return true;
      seen.insert(t.to);
      queue.push_back(t.to);
    }
  }
  return false;
}

// Where each instance's VMs are, from the node actors' state streams.
// A VM "runs" in every state but halt and destroy.
class PlacementTracker {
 public:
  struct Finding {
    const char* invariant;
    std::string detail;
    std::vector<std::string> actors;
  };

  explicit PlacementTracker(size_t nodes) : on_node_(nodes) {}

  // One state event of instance `id` (incarnation `inc`) on node index `node`.
  std::optional<Finding> observe(size_t node, const std::string& node_name, const std::string& id, uint64_t inc,
                                 const std::string& state, const std::vector<std::string>& node_names) {
    std::optional<Finding> out;
    auto& here = on_node_.at(node);
    auto it = here.find(id);
    const auto next = actors::instance_state_from_string(state);
    if (!next) return Finding{kLifecycleTable, "instance " + id + " on " + node_name + ": unknown state " + state, {node_name, id}};
    if (it != here.end() && it->second.inc == inc && !actors::transition_allowed(it->second.state, *next))
      out = Finding{kLifecycleTable,
                    "instance " + id + " on " + node_name + ": " + actors::to_string(it->second.state) + " -> " +
                        state + " is not in the lifecycle table",
                    {node_name, id}};
    const bool runs = *next != actors::InstanceState::halt && *next != actors::InstanceState::destroy;
    here[id] = Entry{inc, *next, runs};
    auto& nodes = where_[id];
    nodes.erase(std::remove(nodes.begin(), nodes.end(), node), nodes.end());
    if (runs) {
      nodes.push_back(node);
      if (nodes.size() > 1 && !reported_.count(id) && !out) {
        reported_.insert(id);
        std::vector<std::string> actors_involved{id};
        std::string on;
        for (size_t n : nodes) {
          actors_involved.push_back(node_names.at(n));
          on += (on.empty() ? "" : ", ") + node_names.at(n);
        }
        out = Finding{kSinglePlacement, "instance " + id + " runs on " + std::to_string(nodes.size()) + " nodes: " + on,
                      actors_involved};
      }
    }
    if (nodes.empty()) where_.erase(id);
    return out;
  }

  // The node's VMs died with it.
  void node_crashed(size_t node) {
    for (auto& [id, e] : on_node_.at(node)) {
      auto w = where_.find(id);
      if (w == where_.end()) continue;
      auto& v = w->second;
      v.erase(std::remove(v.begin(), v.end(), node), v.end());
      if (v.empty()) where_.erase(w);
    }
    on_node_.at(node).clear();
  }

  // The node an instance runs on (the first, if several); nullopt if none.
  std::optional<size_t> node_of(const std::string& id) const {
    auto it = where_.find(id);
    if (it == where_.end() || it->second.empty()) return std::nullopt;
    return it->second.front();
  }
  size_t running() const { return where_.size(); }

 private:
  struct Entry {
    uint64_t inc = 0;
    actors::InstanceState state = actors::InstanceState::start;
    bool runs = false;
  };
  std::vector<std::unordered_map<std::string, Entry>> on_node_;
  std::unordered_map<std::string, std::vector<size_t>> where_;
  std::set<std::string> reported_;
};

}  // namespace apiary::sim
