// What the `apiary` processes that run real actors (controller, node,
// cluster, run) share: how they configure CAF's scheduler, and the boot
// images a node gives the instances it builds. The simulator does not come
// here: it runs on CAF's deterministic test scheduler.
//
// Why work sharing and not CAF's default (work stealing): a work-stealing
// worker with nothing to do polls, first spinning, then in 50 us sleeps for
// hundreds of rounds, then in 10 ms sleeps. Under a steady trickle of
// messages (a control plane taking creates, nodes checking in) the workers
// never reach the long sleeps, and on these machines every short sleep is a
// timer interrupt and two context switches in a paravirtualized kernel.
// Measured on the 2-core build machine, 2026-12-05 (docs/benchmarks.md,
// "Control-plane load"): bench_api_load's 200 creates took 0.58 s of the
// controller's CPU and 0.47 s of the nodes' with work stealing, 0.37 s and
// 0.27 s with work sharing, and instances reached ACTIVE at 318/s against
// 474/s; an idle controller used 1.2 % of a core against 0.1 %. Work
// sharing's workers block on a condition variable and are woken per job.
// KVM_RUN and the port and MMIO emulation run on each vCPU's own thread,
// not on a scheduler worker, so guest execution is not affected either way;
// the vCPU actors themselves (their lifecycle acks) are scheduled as all
// others.
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>

#include <map>
#include <mutex>
#include <string>

#include "guest/embedded.hpp"
#include "vmm-core/shared_bytes.hpp"

namespace apiary::apps {

inline void configure_scheduler(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("sharing"));
}

// The embedded guest `name` as one buffer that every instance booting it
// shares (empty if there is no such guest). Why: a node copied the image
// for every instance it built, a copy per create on the control plane's
// path (NodeConfig::embedded_guest).
inline vmm::SharedBytes embedded_guest_image(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, vmm::SharedBytes, std::less<>> images;
  std::lock_guard lock(mutex);
  auto it = images.find(name);
  if (it != images.end()) return it->second;
  const auto* g = guest::find_embedded(name);
  if (!g) return {};
  return images.emplace(name, vmm::SharedBytes(std::vector<uint8_t>(g->image.begin(), g->image.end()))).first->second;
}

}  // namespace apiary::apps
