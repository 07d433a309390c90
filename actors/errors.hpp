// Named failures of the actor layer, carried as caf::error with the
// "apiary" category so that a requester (and a remote one) can tell them
// apart and print them.
#pragma once

#include <caf/error.hpp>
#include <caf/make_message.hpp>

#include <cstdint>
#include <exception>
#include <string>

namespace apiary::actors {

enum class ActorErrc : uint8_t {
  transition_refused = 1,  // the state table has no such transition
  wrong_state,             // API call not allowed in the current state
  ack_timeout,             // a fan-out participant did not acknowledge in time
  init_failed,             // VMM resources could not be created
  not_writer,              // console input from a reader that does not hold the writer slot
  writer_taken,
  destroyed,               // the instance is gone
  invalid_argument,
  save_failed,             // a snapshot could not be written (the vmm::Errc is in the detail)
  migrate_failed,          // a live migration failed before commit; the source runs on (vmm::Errc in the detail)
  migrate_unknown,         // the destination was told to run but never said it does: the source stays paused
  crashed,                 // a handler threw: the actor stopped (what it threw in the detail)
  action_failed,           // a node's work on an instance failed (a state not reached in time, the VM halted)
};

const char* to_string(ActorErrc e) noexcept;
caf::error make_error(ActorErrc e, std::string detail);
// Renders an apiary error as "wrong_state: detail"; other errors via CAF.
std::string describe(const caf::error& e);
inline constexpr caf::atom_value kErrorCategory = caf::atom("apiary");
// An actor's exit reason for an exception one of its handlers threw
// (scheduled_actor::set_exception_handler): `crashed` with `who` and what
// it threw, instead of CAF's runtime_error that names nothing.
caf::error crash_reason(const std::string& who, const std::exception_ptr& thrown);

}  // namespace apiary::actors
