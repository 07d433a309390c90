// hello: the smallest useful guest. Boots by any protocol, says which one
// and what command line it got, marks its progress on the POST port, and
// ends the VM with debug-exit 0. Tests use it to check each boot path end to
// end: banner text, cmdline delivery, progress codes 1-2-3, exit status.
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"

namespace apiary::guestlib {

int guest_main(const BootInfo& boot) {
  progress(0x01);  // reached guest_main: entry stub, long mode, COM1 init, boot info
  printf("Hello from the Apiary guest (%s)\n", boot.protocol_name);
  progress(0x02);  // banner out
  printf("cmdline: %s\n", boot.cmdline);
  progress(0x03);  // command line out; exiting next
  debug_exit(0);
}

}  // namespace apiary::guestlib
