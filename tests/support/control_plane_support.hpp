// Shared by the control-plane suites: how an error answer reads in a test
// message — control-plane errors as "409: message", others as describe().
#pragma once

#include <caf/error.hpp>

#include <string>

#include "actors/control_types.hpp"
#include "actors/errors.hpp"

namespace apiary::test {

inline std::string show(const caf::error& e) {
  if (actors::http_status(e)) return std::to_string(actors::http_status(e)) + ": " + actors::message_of(e);
  if (!e) return "no error";
  return actors::describe(e);
}

}  // namespace apiary::test
