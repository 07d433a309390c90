// guest_entry, debug exit and progress codes; see runtime.hpp.
#include "guest/lib/runtime.hpp"

#include "guest/lib/io.hpp"
#include "guest/lib/serial.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib {

void debug_exit(uint32_t value) {
  outl(layout::kDebugExitPort, value);
  halt_forever();  // only if the VMM has no debug-exit device
}

void progress(uint8_t code) { outb(layout::kPostPort, code); }

}  // namespace apiary::guestlib

extern "C" void guest_entry(uint32_t protocol, uint64_t boot_ptr) {
  using namespace apiary::guestlib;
  serial::init();
  BootInfo boot = parse_boot_info(protocol, boot_ptr);
  debug_exit(static_cast<uint32_t>(guest_main(boot)));
}
