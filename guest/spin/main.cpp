// spin: a guest that computes forever, for tests of pausing, stopping,
// snapshotting and timing a busy VM. It increments a 64-bit counter in
// memory and, every kIterationsPerTick increments, prints "tick <n>"
// (n = 1, 2, ...) on COM1: at the emulator's ~1M instructions/s that is a
// line every ~50-100 ms, so the output shows the VM making progress.
//
// Command line: ticks=<m> makes it debug-exit 0 after m ticks (default:
// never); iters=<k> overrides the iterations per tick.
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "guest/lib/string.hpp"

namespace apiary::guestlib {

namespace {
constexpr uint64_t kIterationsPerTick = 8000;

// In memory (not a register) on purpose: the loop is a load-add-store, the
// state a snapshot or migration must carry.
volatile uint64_t counter;
}  // namespace

int guest_main(const BootInfo& boot) {
  uint64_t ticks = 0;  // 0: forever
  uint64_t iters = kIterationsPerTick;
  if (const char* v = find_option(boot.cmdline, "ticks")) parse_u64(v, &ticks);
  if (const char* v = find_option(boot.cmdline, "iters")) {
    parse_u64(v, &iters);
    if (!iters) iters = kIterationsPerTick;
  }
  for (uint64_t tick = 1;; ++tick) {
    for (uint64_t i = 0; i < iters; ++i) counter = counter + 1;
    printf("tick %lu\n", tick);
    if (ticks && tick >= ticks) return 0;
  }
}

}  // namespace apiary::guestlib
