// The three Shaken Fist-style machines walked exhaustively: every (from, to)
// pair is allowed exactly when an independent copy of the expected graph has
// it, nothing leaves deleted, every record can reach deleted, and the node
// check-in rule flips at its deadlines (not before, not after).
#define BOOST_TEST_MODULE shakenfist_states
#include <boost/test/unit_test.hpp>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cluster/shakenfist_states.hpp"

using namespace apiary::control;
using namespace std::chrono_literals;

namespace {

using Edges = std::set<std::pair<std::string, std::string>>;

// The expected graphs, by name (STATE-MODELS.md section 2, with the edges the
// seed leaves open resolved as described in shakenfist_states.hpp).
const Edges kInstanceEdges = {
    {"initial", "preflight"},         {"preflight", "creating"},      {"creating", "created"},
    {"created", "deleted"},           {"initial", "deleted"},         {"preflight", "deleted"},
    {"creating", "deleted"},          {"error", "deleted"},           {"initial", "initial-error"},
    {"preflight", "preflight-error"}, {"creating", "creating-error"}, {"created", "created-error"},
    {"initial-error", "error"},       {"preflight-error", "error"},   {"creating-error", "error"},
    {"created-error", "error"},
};
const Edges kNetworkEdges = {
    {"initial", "created"}, {"created", "delete_wait"}, {"delete_wait", "deleted"},
    {"initial", "deleted"}, {"created", "deleted"},     {"initial", "error"},
    {"created", "error"},   {"delete_wait", "error"},   {"error", "deleted"},
};
const Edges kNodeEdges = {
    {"created", "stopping"}, {"stopping", "stopped"}, {"stopping", "created"}, {"stopped", "created"},
    {"created", "missing"},  {"stopping", "missing"}, {"missing", "created"},  {"created", "error"},
    {"stopping", "error"},   {"missing", "error"},    {"error", "created"},    {"created", "deleted"},
    {"stopping", "deleted"}, {"stopped", "deleted"},  {"missing", "deleted"},  {"error", "deleted"},
};

template <typename S, size_t N>
void walk(Machine m, const std::array<S, N>& all, std::span<const Transition<S>> table, const Edges& expected,
          S entry) {
  BOOST_TEST_CONTEXT(to_string(m)) {
    Edges got;
    for (const auto& t : table) {
      BOOST_TEST(got.insert({to_string(t.from), to_string(t.to)}).second,
                 "duplicate " << to_string(t.from) << " -> " << to_string(t.to));
      BOOST_TEST(std::string(t.why).size() > 0);
    }
    BOOST_TEST((got == expected));
    size_t allowed = 0;
    for (S from : all)
      for (S to : all) {
        const bool want = expected.count({to_string(from), to_string(to)}) > 0;
        BOOST_TEST(transition_allowed(from, to) == want, to_string(from) << " -> " << to_string(to));
        BOOST_TEST(transition_allowed(m, to_string(from), to_string(to)) == want);
        if (from == to) BOOST_TEST(!transition_allowed(from, to));
        allowed += want ? 1 : 0;
      }
    BOOST_TEST(allowed == expected.size());
    // Nothing leaves deleted ("objects do not undelete").
    for (S to : all) BOOST_TEST(!transition_allowed(S::deleted, to), "deleted -> " << to_string(to));
    // Every state is reachable from the entry state, and every state can
    // reach deleted (every record can be cleaned up).
    auto reachable_from = [&](S start) {
      std::set<S> seen{start};
      std::vector<S> todo{start};
      while (!todo.empty()) {
        S s = todo.back();
        todo.pop_back();
        for (S to : all)
          if (transition_allowed(s, to) && seen.insert(to).second) todo.push_back(to);
      }
      return seen;
    };
    BOOST_TEST(reachable_from(entry).size() == N);
    for (S s : all) BOOST_TEST(reachable_from(s).count(S::deleted) == 1u, to_string(s) << " cannot reach deleted");
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(instance_machine) {
  walk(Machine::instance, kAllSfInstanceStates, sf_instance_transitions(), kInstanceEdges, kSfInstanceEntry);
  // Every live state has its X-error, which leads only to error.
  const std::map<SfInstanceState, SfInstanceState> paths = {
      {SfInstanceState::initial, SfInstanceState::initial_error},
      {SfInstanceState::preflight, SfInstanceState::preflight_error},
      {SfInstanceState::creating, SfInstanceState::creating_error},
      {SfInstanceState::created, SfInstanceState::created_error}};
  for (SfInstanceState s : kAllSfInstanceStates) {
    auto p = error_path(s);
    auto it = paths.find(s);
    BOOST_TEST(p.has_value() == (it != paths.end()), to_string(s));
    if (p) {
      BOOST_TEST((*p == it->second));
      BOOST_TEST(is_transitional_error(*p));
      BOOST_TEST(transition_allowed(s, *p));
      for (SfInstanceState to : kAllSfInstanceStates)
        BOOST_TEST(transition_allowed(*p, to) == (to == SfInstanceState::error));
    }
  }
  BOOST_TEST(!is_transitional_error(SfInstanceState::error));
  BOOST_TEST(std::string(to_string(SfInstanceState::created_error)) == "created-error");
  // Error instances stay until a user deletes them: error leads only to deleted.
  for (SfInstanceState to : kAllSfInstanceStates)
    BOOST_TEST(transition_allowed(SfInstanceState::error, to) == (to == SfInstanceState::deleted));
}

BOOST_AUTO_TEST_CASE(network_machine) {
  walk(Machine::network, kAllNetworkStates, network_transitions(), kNetworkEdges, kNetworkEntry);
  const std::set<NetworkState> dead = {NetworkState::deleted, NetworkState::delete_wait, NetworkState::error};
  for (NetworkState s : kAllNetworkStates) BOOST_TEST(is_dead(s) == (dead.count(s) > 0), to_string(s));
  // Error from any live state.
  for (NetworkState s : kAllNetworkStates)
    if (s != NetworkState::deleted && s != NetworkState::error) BOOST_TEST(transition_allowed(s, NetworkState::error));
}

BOOST_AUTO_TEST_CASE(node_machine) { walk(Machine::node, kAllNodeStates, node_transitions(), kNodeEdges, kNodeEntry); }

BOOST_AUTO_TEST_CASE(unknown_names_are_refused) {
  BOOST_TEST(!transition_allowed(Machine::instance, "initial", "running"));
  BOOST_TEST(!transition_allowed(Machine::network, "deleted", "created"));
  BOOST_TEST(!transition_allowed(Machine::node, "", "created"));
  BOOST_TEST(!transition_allowed(Machine::network, "delete-wait", "deleted"));  // it is delete_wait
  BOOST_TEST(transition_allowed(Machine::network, "delete_wait", "deleted"));
}

BOOST_AUTO_TEST_CASE(defaults_are_shaken_fists) {
  BOOST_TEST(Defaults::node_checkin_maximum.count() == 120);
  BOOST_TEST(Defaults::cleaner_delay.count() == 3600);
  BOOST_TEST(Defaults::node_error_factor == 10);
}

BOOST_AUTO_TEST_CASE(node_silence_rule_at_its_boundaries) {
  using D = NodeState;
  for (D s : {D::created, D::stopping}) {
    BOOST_TEST((node_state_after_silence(s, 0ms) == s));
    BOOST_TEST((node_state_after_silence(s, 120s) == s));  // exactly at the deadline: still within it
    BOOST_TEST((node_state_after_silence(s, 120001ms) == D::missing));
    BOOST_TEST((node_state_after_silence(s, 1200s) == D::missing));
    BOOST_TEST((node_state_after_silence(s, 1200001ms) == D::error));
    BOOST_TEST((node_state_after_silence(s, 100000s) == D::error));
  }
  BOOST_TEST((node_state_after_silence(D::missing, 5s) == D::missing));  // only a check-in revives it
  BOOST_TEST((node_state_after_silence(D::missing, 1200s) == D::missing));
  BOOST_TEST((node_state_after_silence(D::missing, 1200001ms) == D::error));
  // Custom deadline.
  BOOST_TEST((node_state_after_silence(D::created, 5s, 5s) == D::created));
  BOOST_TEST((node_state_after_silence(D::created, 5001ms, 5s) == D::missing));
  BOOST_TEST((node_state_after_silence(D::created, 50s, 5s) == D::missing));
  BOOST_TEST((node_state_after_silence(D::created, 50001ms, 5s) == D::error));
  // Nodes not expected to check in are left alone.
  for (D s : {D::stopped, D::error, D::deleted}) BOOST_TEST((node_state_after_silence(s, 1000000s) == s), to_string(s));
  // Whatever the rule does is a transition of the machine.
  for (D s : kAllNodeStates)
    for (auto silence : {0ms, 120000ms, 120001ms, 1200000ms, 1200001ms}) {
      D next = node_state_after_silence(s, silence);
      BOOST_TEST((next == s || transition_allowed(s, next)), to_string(s) << " -> " << to_string(next));
    }
}

BOOST_AUTO_TEST_CASE(node_checkin_rule) {
  using D = NodeState;
  BOOST_TEST((node_state_after_checkin(D::missing) == D::created));
  BOOST_TEST((node_state_after_checkin(D::error) == D::created));
  BOOST_TEST((node_state_after_checkin(D::stopped) == D::created));
  BOOST_TEST((node_state_after_checkin(D::created) == D::created));
  BOOST_TEST((node_state_after_checkin(D::stopping) == D::stopping));
  BOOST_TEST(!node_state_after_checkin(D::deleted).has_value());  // a deleted node never returns
  for (D s : kAllNodeStates)
    if (auto next = node_state_after_checkin(s)) BOOST_TEST((*next == s || transition_allowed(s, *next)));
}

BOOST_AUTO_TEST_CASE(names_round_trip) {
  for (auto s : kAllSfInstanceStates) BOOST_TEST((sf_instance_state_from_string(to_string(s)) == s));
  for (auto s : kAllNetworkStates) BOOST_TEST((network_state_from_string(to_string(s)) == s));
  for (auto s : kAllNodeStates) BOOST_TEST((node_state_from_string(to_string(s)) == s));
  BOOST_TEST(!sf_instance_state_from_string("initial_error").has_value());  // Shaken Fist uses a hyphen
  BOOST_TEST(!node_state_from_string("CREATED").has_value());
}
