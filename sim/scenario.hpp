// Loading and checking simulation scenarios (proto/apiary/v1/scenario.proto,
// protobuf text format).
//
// Why a checker on top of the parser: the parser catches misspelt fields, but
// not a fault that names a node group that does not exist or a run that
// never ends; those are ScenarioErrors with the field path, found before a
// single actor is spawned.
#pragma once

#include <stdexcept>
#include <string>

#include "proto/apiary/v1/scenario.pb.h"

namespace apiary::sim {

class ScenarioError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses text-format scenario text; `origin` names it in errors
// ("file.textproto:12:5: ..."). Throws ScenarioError.
v1::Scenario parse_scenario(const std::string& text, const std::string& origin);
// Reads and parses a file. Throws ScenarioError (also when it cannot be read).
v1::Scenario load_scenario(const std::string& path);
// Fills defaults in place (see scenario.proto) and checks the scenario.
// Throws ScenarioError naming the field.
void normalize(v1::Scenario& s);

}  // namespace apiary::sim
