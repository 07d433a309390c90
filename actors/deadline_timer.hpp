// One timer for an actor's many deadlines.
//
// CAF 0.17 files every delayed message, and every request that carries a
// timeout, with the actor clock, and does not take a request's timeout
// back when the answer arrives (nor can a delayed message be): a deadline
// that is met still fires later, as a message nobody needs (in a real
// process each filing also wakes the clock thread). An actor that keeps
// deadlines for many things at once (the fan-outs of an instance, the state
// waits of a node) therefore keeps them itself, ordered, and holds at most
// one timer message for all of them: set for the earliest deadline, set
// anew only when an earlier one appears, and when it fires the actor
// handles whatever is due and arms it for the earliest one left. Met
// deadlines cost nothing more; a timer that finds nothing due is the one
// message left over.
//
// The timer message is the owner's own (msg..., generation) to itself; the
// owner's typed interface accepts it and asks fired(generation) first: a
// superseded timer (an earlier deadline replaced it) changes nothing.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <optional>

namespace apiary::actors {

class DeadlineTimer {
 public:
  using time_point = caf::actor_clock::time_point;

  // Makes sure a timer message fires no later than `earliest`: a new one (a
  // new generation) only if none is set or the set one fires later.
  template <class Self, class... Ts>
  void arm(Self* self, time_point earliest, Ts... msg) {
    if (armed_ && *armed_ <= earliest) return;
    armed_ = earliest;
    ++generation_;
    const auto now = self->clock().now();
    self->delayed_send(self, earliest > now ? earliest - now : caf::actor_clock::duration_type{0}, msg...,
                       generation_);
  }

  // The timer message of `generation` arrived: if it is the one set last,
  // the time it was set for (it is then no longer set); none for a
  // superseded timer. The owner ends what was due by then, not by now, and
  // arms again for the rest: a message that arrived after the timer's (an
  // answer in time, held up behind it in the mailbox) is still handled
  // before a deadline after the timer's time is taken as passed, since the
  // next timer message queues behind it.
  std::optional<time_point> fired(uint64_t generation) noexcept {
    if (!armed_ || generation != generation_) return std::nullopt;
    auto due = armed_;
    armed_.reset();
    return due;
  }

  bool armed() const noexcept { return armed_.has_value(); }

 private:
  std::optional<time_point> armed_;  // when the timer set last fires, while it is set
  uint64_t generation_ = 0;         // of the timer set last
};

}  // namespace apiary::actors
