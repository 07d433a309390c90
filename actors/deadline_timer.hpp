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
// owner's typed interface accepts it and asks fired(self, generation)
// first: a superseded timer (an earlier deadline replaced it) changes
// nothing, nor does the same message from any other sender (a node's
// interface is open to its controller, a remote peer).
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <utility>

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
  // A timer message from anyone but the owner itself (a forged one: the
  // interface that accepts it may be open to peers) is not the timer.
  template <class Self>
  std::optional<time_point> fired(Self* self, uint64_t generation) noexcept {
    if (self->current_sender() != self->ctrl()) return std::nullopt;
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

// The deadlines of many things (keys) of one actor under one DeadlineTimer,
// earliest first: what a node's state waits and the simulator's placements
// keep. add() files a deadline and gives back its entry, which the owner
// removes when the thing ends in time; when the timer message (TimerAtom,
// generation) arrives, fired() takes every entry due by the timer's time
// out, in deadline order (then in the order they were added), hands each
// key to the owner, and arms the timer for the earliest one left.
template <class Key, class TimerAtom>
class Deadlines {
 public:
  using time_point = DeadlineTimer::time_point;
  using entry = typename std::multimap<time_point, Key>::iterator;

  template <class Self>
  entry add(Self* self, time_point when, Key key) {
    // Deadlines mostly come in time order (one clock, a few fixed
    // durations): hinted at the end, filing one is constant time instead of
    // a descent of the tree (perf, 2026-12-06: 1.9 % of the 1,000 x 100
    // simulation, whose placer holds 100,000 of them). An earlier one is
    // filed after its equals either way, so the order is what emplace()
    // gives.
    auto e = entries_.emplace_hint(entries_.end(), when, std::move(key));
    timer_.arm(self, entries_.begin()->first, TimerAtom::value);
    return e;
  }

  // The thing of `e` ended before its deadline. Only for an entry that
  // fired() has not taken out.
  void remove(entry e) { entries_.erase(e); }

  // The timer message of `generation` arrived: `expire(key)` for every
  // deadline that was due by the time the timer was set for (its entry is
  // gone by then); nothing for a superseded or forged timer.
  template <class Self, class Expire>
  void fired(Self* self, uint64_t generation, Expire&& expire) {
    const auto due = timer_.fired(self, generation);
    if (!due) return;
    while (!entries_.empty() && entries_.begin()->first <= *due) {
      Key key = std::move(entries_.begin()->second);
      entries_.erase(entries_.begin());
      expire(key);
    }
    if (!entries_.empty()) timer_.arm(self, entries_.begin()->first, TimerAtom::value);
  }

 private:
  std::multimap<time_point, Key> entries_;
  DeadlineTimer timer_;
};

}  // namespace apiary::actors
