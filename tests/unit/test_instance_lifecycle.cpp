// The lifecycle tables walked exhaustively: every (from, to) pair is either
// in the transition table or refused, and from every state the next-hop
// table reaches every valid target using only allowed transitions.
#define BOOST_TEST_MODULE instance_lifecycle
#include <boost/test/unit_test.hpp>
#include <set>

#include "actors/instance_lifecycle.hpp"

using namespace apiary::actors;
using S = InstanceState;

BOOST_AUTO_TEST_CASE(every_pair_is_allowed_or_refused_as_the_table_says) {
  std::set<std::pair<S, S>> allowed;
  for (auto& t : lifecycle_transitions()) {
    BOOST_TEST(allowed.insert({t.from, t.to}).second, "duplicate " << to_string(t.from) << "->" << to_string(t.to));
    BOOST_TEST(std::string(t.what).size() > 0);
  }
  // The seed's graph, written out independently of the table.
  const std::set<std::pair<S, S>> seed = {
      {S::start, S::initialize}, {S::start, S::destroy},   {S::initialize, S::boot}, {S::initialize, S::destroy},
      {S::boot, S::run},         {S::boot, S::quiesce},    {S::run, S::quiesce},     {S::quiesce, S::run},
      {S::quiesce, S::halt},     {S::halt, S::reboot},     {S::halt, S::destroy},    {S::reboot, S::boot}};
  BOOST_TEST((allowed == seed));
  size_t refused = 0;
  for (S from : kAllInstanceStates)
    for (S to : kAllInstanceStates) {
      const bool in_seed = seed.count({from, to}) > 0;
      BOOST_TEST(transition_allowed(from, to) == in_seed, to_string(from) << " -> " << to_string(to));
      refused += in_seed ? 0 : 1;
    }
  BOOST_TEST(refused == kInstanceStateCount * kInstanceStateCount - seed.size());
  // Destroy is terminal.
  for (S to : kAllInstanceStates) BOOST_TEST(!transition_allowed(S::destroy, to));
}

BOOST_AUTO_TEST_CASE(next_hop_reaches_every_target_through_allowed_transitions) {
  for (S from : kAllInstanceStates) {
    for (S target : kAllInstanceStates) {
      if (!valid_target(target)) {
        BOOST_TEST(!next_hop(from, target).has_value());
        continue;
      }
      S cur = from;
      S goal = target;
      std::string path = to_string(cur);
      for (int steps = 0; steps < 16; ++steps) {
        if (cur == S::reboot && goal == S::reboot) goal = S::run;  // as the driver does
        auto hop = next_hop(cur, goal);
        if (!hop) break;
        BOOST_TEST(transition_allowed(cur, *hop), path << " -> " << to_string(*hop));
        cur = *hop;
        path += std::string(" -> ") + to_string(cur);
      }
      BOOST_TEST_MESSAGE(to_string(from) << " towards " << to_string(target) << ": " << path);
      BOOST_TEST(!next_hop(cur, goal).has_value(), "no fixpoint: " << path);
      if (from == S::destroy) {
        BOOST_TEST((cur == S::destroy));
      } else if (from == S::halt && (target == S::run || target == S::quiesce)) {
        BOOST_TEST((cur == S::halt));  // only reboot or destroy leave Halt
      } else if (target == S::reboot) {
        BOOST_TEST((cur == S::run), path);  // a reboot ends running again
      } else {
        BOOST_TEST((cur == target), path);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(names_round_trip) {
  for (S s : kAllInstanceStates) BOOST_TEST((instance_state_from_string(to_string(s)) == s));
  BOOST_TEST(!instance_state_from_string("paused").has_value());
}
