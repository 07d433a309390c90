// pio_bench: measures what one port-I/O exit costs. Writes to
// layout::kNoopPort n times (n from `n=<count>` on the command line, default
// 100000) in a loop that is nothing but the OUT and a decrement-and-branch,
// so the run time is the exit dispatch cost times n. Then progress code 0x7f
// and debug-exit 0.
#include "guest/lib/runtime.hpp"
#include "guest/lib/string.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib {

namespace {
constexpr uint64_t kDefaultCount = 100000;
constexpr uint8_t kDoneCode = 0x7f;
}  // namespace

int guest_main(const BootInfo& boot) {
  uint64_t n = kDefaultCount;
  if (const char* v = find_option(boot.cmdline, "n")) parse_u64(v, &n);
  if (n) {
    asm volatile(
        "1: outb %%al, %%dx\n\t"
        "dec %%rcx\n\t"
        "jnz 1b"
        : "+c"(n)
        : "a"(0), "d"(layout::kNoopPort)
        : "memory");
  }
  progress(kDoneCode);
  debug_exit(0);
}

}  // namespace apiary::guestlib
