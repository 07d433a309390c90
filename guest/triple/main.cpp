// triple: proves a triple fault reboots the VM and that CMOS RAM survives
// the reboot while guest RAM does not. Each boot reads the boot counter in
// CMOS (layout::kCmosBootCounter), prints "boot N", and while N < 3 stores
// N + 1 and triple-faults; the fourth boot prints "survived 3 triple
// faults" and debug-exits 0. A fresh VM's CMOS reads 0 there, so one run
// prints boot 0..3. Exit 1 if the counter reads 0xff (no CMOS device).
#include "guest/lib/cmos.hpp"
#include "guest/lib/power.hpp"
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib {

namespace {
constexpr uint8_t kFaults = 3;
}

int guest_main(const BootInfo&) {
  uint8_t n = cmos::read(layout::kCmosBootCounter);
  if (n == 0xff) {
    puts("triple: CMOS not available (counter reads 0xff)");
    return 1;
  }
  printf("boot %u\n", n);
  if (n < kFaults) {
    cmos::write(layout::kCmosBootCounter, static_cast<uint8_t>(n + 1));
    triple_fault();
  }
  printf("survived %u triple faults\n", kFaults);
  return 0;
}

}  // namespace apiary::guestlib
