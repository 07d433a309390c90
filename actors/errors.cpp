#include "actors/errors.hpp"

#include <caf/all.hpp>

namespace apiary::actors {

const char* to_string(ActorErrc e) noexcept {
  switch (e) {
    case ActorErrc::transition_refused: return "transition_refused";
    case ActorErrc::wrong_state: return "wrong_state";
    case ActorErrc::ack_timeout: return "ack_timeout";
    case ActorErrc::init_failed: return "init_failed";
    case ActorErrc::not_writer: return "not_writer";
    case ActorErrc::writer_taken: return "writer_taken";
    case ActorErrc::destroyed: return "destroyed";
    case ActorErrc::invalid_argument: return "invalid_argument";
    case ActorErrc::save_failed: return "save_failed";
    case ActorErrc::migrate_failed: return "migrate_failed";
    case ActorErrc::migrate_unknown: return "migrate_unknown";
    case ActorErrc::crashed: return "crashed";
    case ActorErrc::action_failed: return "action_failed";
  }
  return "unknown";
}

caf::error make_error(ActorErrc e, std::string detail) {
  return caf::error(static_cast<uint8_t>(e), kErrorCategory, caf::make_message(std::move(detail)));
}

caf::error crash_reason(const std::string& who, const std::exception_ptr& thrown) {
  std::string what = "an exception that is not a std::exception";
  try {
    if (thrown) std::rethrow_exception(thrown);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  return make_error(ActorErrc::crashed, who + ": a handler threw: " + what);
}

std::string describe(const caf::error& e) {
  if (e.category() == kErrorCategory) {
    std::string out = to_string(static_cast<ActorErrc>(e.code()));
    if (e.context().match_elements<std::string>()) out += ": " + e.context().get_as<std::string>(0);
    return out;
  }
  return caf::to_string(e);
}

}  // namespace apiary::actors
