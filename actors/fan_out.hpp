// A request to N actors that completes when every one has acknowledged or
// its deadline has passed — CAF 0.17 has no fan_out_request. The callback
// gets the names of the participants that failed (timeout or error), in
// the order given, so the caller can name who did not answer.
#pragma once

#include <caf/all.hpp>

#include <functional>
#include <memory>
#include <string>
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

template <class Self, class Handle, class... Ts>
void fan_out(Self* self, const std::vector<Participant<Handle>>& targets, std::chrono::milliseconds deadline,
             std::function<void(FanOutResult)> done, Ts... msg) {
  struct Pending {
    size_t remaining;
    std::vector<std::string> failed_by_index;
    std::function<void(FanOutResult)> done;
  };
  if (targets.empty()) {
    done({});
    return;
  }
  auto st = std::make_shared<Pending>(Pending{targets.size(), std::vector<std::string>(targets.size()), std::move(done)});
  auto finish_one = [st] {
    if (--st->remaining > 0) return;
    FanOutResult r;
    for (auto& f : st->failed_by_index)
      if (!f.empty()) r.failed.push_back(f);
    st->done(std::move(r));
  };
  for (size_t i = 0; i < targets.size(); ++i) {
    const std::string name = targets[i].name;
    self->request(targets[i].handle, deadline, msg...)
        .then([finish_one](ack_atom) { finish_one(); },
              [st, finish_one, i, name](caf::error& e) {
                st->failed_by_index[i] = name + ": " + describe(e);
                finish_one();
              });
  }
}

}  // namespace apiary::actors
