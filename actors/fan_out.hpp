// A request to N actors that completes when every one has acknowledged or
// its deadline has passed — CAF 0.17 has no fan_out_request. The callback
// gets the names of the participants that failed (timeout or error), in
// the order given, so the caller can name who did not answer.
//
// One deadline per fan-out, not one per request. CAF 0.17 files a timeout
// with the actor clock for every request that carries one (waking the clock
// thread of a real process each time) and keeps it until it fires, answered
// or not, then delivers it as a message: a phase to an instance's ten
// devices filed ten, the largest single item of a simulated instance's
// memory after its actors. Here the requests go out without a timeout and
// the owner sends itself one delayed (fan_out_deadline_atom, id);
// FanOuts::expire fails whoever has not answered by then with
// request_timeout. The owner's typed interface must accept that message
// (from itself only) and hand it to expire().
//
// The cost: CAF 0.17 cannot cancel a response handler, so the handler of a
// request that is never answered (a participant that swallows it: the
// ignore_pause / ignore_kicks fault hooks, a wedged vCPU thread) stays with
// the owner until the owner ends. A failed phase drives the instance to
// Destroy, so that is at most one phase's handlers per instance.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/atoms.hpp"
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
    p->done = std::move(done);
    pending_.emplace(id, p);
    for (size_t i = 0; i < targets.size(); ++i) {
      self->request(targets[i].handle, caf::infinite, msg...)
          .then([this, id, i](ack_atom) { answer(id, i, {}); },
                [this, id, i](caf::error& e) { answer(id, i, describe(e)); });
    }
    self->delayed_send(self, deadline, fan_out_deadline_atom::value, id);
  }

  // Fan-out `id`'s deadline has passed: whoever has not answered failed
  // with request_timeout. Unknown ids (already complete) are ignored.
  void expire(uint64_t id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    auto p = it->second;
    pending_.erase(it);
    const std::string timeout = describe(caf::make_error(caf::sec::request_timeout));
    for (auto& o : p->outcomes)
      if (!o) o = timeout;
    finish(*p);
  }

 private:
  struct Pending {
    std::vector<std::string> names;                   // participant i
    std::vector<std::optional<std::string>> outcomes;  // i's error, "" if it acknowledged, none while waiting
    size_t remaining = 0;
    std::function<void(FanOutResult)> done;
  };

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

  std::unordered_map<uint64_t, std::shared_ptr<Pending>> pending_;
  uint64_t last_id_ = 0;
};

}  // namespace apiary::actors
