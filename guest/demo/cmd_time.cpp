// The demo's `time` command: the CMOS RTC's date and time as ISO 8601 UTC
// (the VMM's RTC runs in UTC), e.g. "2026-11-22T21:40:05Z".
#include "guest/demo/commands.hpp"
#include "guest/lib/cmos.hpp"
#include "guest/lib/print.hpp"

namespace apiary::guestlib::demo {

void cmd_time(const CommandContext&) {
  cmos::DateTime t;
  if (!cmos::read_time(&t)) {
    puts("time: RTC not available");
    return;
  }
  char buf[24];
  cmos::format_iso(t, buf);
  puts(buf);
}

}  // namespace apiary::guestlib::demo
