// A request to N actors that completes when every one has acknowledged or
// its deadline has passed — CAF 0.17 has no fan_out_request. The callback
// gets the names of the participants that failed (timeout or error), in
// the order given, so the caller can name who did not answer.
//
// Deadlines without a clock entry per request, nor one per fan-out. CAF 0.17
// files a timeout with the actor clock for every request that carries one
// (waking the clock thread of a real process each time) and keeps it until
// it fires, answered or not, then delivers it as a message. Here the
// requests go out without a timeout; each fan-out records its own deadline,
// and the owner keeps at most one timer for all of them (a DeadlineTimer,
// deadline_timer.hpp): a delayed
// (fan_out_deadline_atom, generation) to itself, set for the earliest
// deadline of the fan-outs under way. A fan-out that starts while the timer
// would fire no later than its deadline files nothing; when the timer fires
// it fails, with request_timeout, whoever has not answered in each fan-out
// whose deadline has passed, and is set again for the earliest one left.
// Phases that follow each other within a deadline (a pause and its resume
// are four) share one timer, where each used to wake the clock thread and
// be delivered as a message, mostly for nothing. Every fan-out still fails
// at its own deadline, never earlier. The owner's typed interface must
// accept the timer message and hand it to expire(); one from another
// sender, or whose generation is not the timer's (a superseded timer), is
// ignored.
//
// The cost: CAF 0.17 cannot cancel a response handler, so the handler of a
// request that is never answered (a participant that swallows it: the
// ignore_pause / ignore_kicks fault hooks, a wedged vCPU thread) stays with
// the owner until the owner ends. A failed phase drives the instance to
// Destroy, so that is at most one phase's handlers per instance.
#pragma once

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/atoms.hpp"
#include "actors/deadline_timer.hpp"
#include "actors/errors.hpp"

namespace apiary::actors {

template <class Handle>
struct Participant {
  std::string name;
  Handle handle;
};

struct FanOutResult {
  std::vector<std::string> failed;  // "vcpu-1: request_timeout"
  bool ok() const noexcept { return failed.empty(); }
};

// The fan-outs under way in one actor (a member of its state; used only on
// the actor's own thread).
class FanOuts {
 public:
  FanOuts() = default;
  // Response handlers hold `this`: a FanOuts stays where it was built.
  FanOuts(const FanOuts&) = delete;
  FanOuts& operator=(const FanOuts&) = delete;

  // Sends msg... to every target; `done` runs once each has answered or
  // `deadline` has passed (never before start() returns when targets exist).
  template <class Self, class Handle, class... Ts>
  void start(Self* self, const std::vector<Participant<Handle>>& targets, std::chrono::milliseconds deadline,
             std::function<void(FanOutResult)> done, Ts... msg) {
    if (targets.empty()) {
      done({});
      return;
    }
    const uint64_t id = ++last_id_;
    auto p = std::make_shared<Pending>();
    p->names.reserve(targets.size());
    for (const auto& t : targets) p->names.push_back(t.name);
    p->outcomes.resize(targets.size());
    p->remaining = targets.size();
    p->deadline = self->clock().now() + deadline;
    p->done = std::move(done);
    pending_.emplace(id, p);
    for (size_t i = 0; i < targets.size(); ++i) {
      self->request(targets[i].handle, caf::infinite, msg...)
          .then([this, id, i](ack_atom) { answer(id, i, {}); },
                [this, id, i](caf::error& e) { answer(id, i, describe(e)); });
    }
    arm(self);
  }

  // The timer of generation `generation` fired: every fan-out whose
  // deadline had passed by the time the timer was set for fails whoever in
  // it has not answered with request_timeout (an answer queued behind the
  // timer message still counts for a later deadline); the timer is set
  // again for the earliest one left.
  // A superseded timer's message changes nothing.
  template <class Self>
  void expire(Self* self, uint64_t generation) {
    const auto due = timer_.fired(self, generation);
    if (!due) return;
    std::vector<std::shared_ptr<Pending>> expired;  // in the order they started: pending_ is ordered by id
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second->deadline <= *due) {
        expired.push_back(it->second);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    const std::string timeout = describe(caf::make_error(caf::sec::request_timeout));
    for (auto& p : expired) {
      for (auto& o : p->outcomes)
        if (!o) o = timeout;
      finish(*p);  // may start the next fan-out (which arms the timer)
    }
    arm(self);
  }

 private:
  struct Pending {
    std::vector<std::string> names;                   // participant i
    std::vector<std::optional<std::string>> outcomes;  // i's error, "" if it acknowledged, none while waiting
    size_t remaining = 0;
    caf::actor_clock::time_point deadline;
    std::function<void(FanOutResult)> done;
  };

  // Makes sure a timer fires no later than the earliest deadline under way:
  // a new one (a new generation) only if none is set or the set one is late.
  template <class Self>
  void arm(Self* self) {
    if (pending_.empty()) return;
    auto earliest = pending_.begin()->second->deadline;
    for (const auto& [id, p] : pending_) earliest = std::min(earliest, p->deadline);
    timer_.arm(self, earliest, fan_out_deadline_atom::value);
  }

  // An answer after the deadline (or for a finished fan-out) is dropped.
  void answer(uint64_t id, size_t i, std::string failure) {
    auto it = pending_.find(id);
    if (it == pending_.end() || it->second->outcomes[i]) return;
    auto& p = *it->second;
    p.outcomes[i] = std::move(failure);
    if (--p.remaining > 0) return;
    auto keep = it->second;
    pending_.erase(it);  // before done(): it may start the next fan-out
    finish(*keep);
  }

  static void finish(Pending& p) {
    FanOutResult r;
    for (size_t i = 0; i < p.outcomes.size(); ++i)
      if (!p.outcomes[i]->empty()) r.failed.push_back(p.names[i] + ": " + *p.outcomes[i]);
    p.done(std::move(r));
  }

  std::map<uint64_t, std::shared_ptr<Pending>> pending_;  // by id: the order they started
  uint64_t last_id_ = 0;
  DeadlineTimer timer_;  // for the earliest deadline under way
};

}  // namespace apiary::actors
