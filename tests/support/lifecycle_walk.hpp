// The lifecycle walk shared by the simulated and the KVM suites: a set of
// scenarios whose state streams, taken together, must take every transition
// of the table (actors/instance_lifecycle.cpp) and nothing else.
#pragma once

#include <boost/test/unit_test.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "actors/instance_lifecycle.hpp"

namespace apiary::test {

using Transition = std::pair<std::string, std::string>;

// The transitions in a state stream that started in Start.
inline std::set<Transition> transitions_of(const std::vector<std::string>& states) {
  std::set<Transition> out;
  std::string prev = "start";
  for (const auto& s : states) {
    out.insert({prev, s});
    prev = s;
  }
  return out;
}

// Every observed transition is in the table, and every table transition was observed.
inline void check_walk_covers_the_table(const std::set<Transition>& observed) {
  std::set<Transition> table;
  for (const auto& t : actors::lifecycle_transitions())
    table.insert({actors::to_string(t.from), actors::to_string(t.to)});
  for (const auto& t : observed) BOOST_TEST(table.count(t) == 1u, "not in the table: " << t.first << " -> " << t.second);
  for (const auto& t : table) BOOST_TEST(observed.count(t) == 1u, "never taken: " << t.first << " -> " << t.second);
}

}  // namespace apiary::test
