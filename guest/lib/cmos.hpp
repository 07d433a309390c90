// CMOS RAM and the MC146818 real-time clock behind ports 0x70/0x71.
//
// Why: the RTC is the guest's wall clock (the demo's `time`), and CMOS RAM
// survives a reboot like battery-backed memory while guest RAM does not,
// so guests count reboots in it (layout::kCmosBootCounter, used by the
// triple-fault test guest).
//
// Index writes keep bit 7 (NMI disable on real chipsets) clear. Time reads
// follow the usual recipe: wait (bounded) while register A's update-in-
// progress bit is set, read, and repeat until two reads agree; register B
// says whether values are BCD (bit 2 clear) and whether hours are 12-hour
// (bit 1 clear, PM in hour bit 7). The decoding is pure and host-testable.
#pragma once

#include <stdint.h>

namespace apiary::guestlib::cmos {

// MC146818 register indexes and bits.
inline constexpr uint8_t kRegSeconds = 0x00, kRegMinutes = 0x02, kRegHours = 0x04, kRegDay = 0x07,
                         kRegMonth = 0x08, kRegYear = 0x09, kRegA = 0x0a, kRegB = 0x0b, kRegD = 0x0d,
                         kRegCentury = 0x32;
inline constexpr uint8_t kRegAUip = 0x80;      // update in progress
inline constexpr uint8_t kRegB24Hour = 0x02;   // 1: 24-hour hours
inline constexpr uint8_t kRegBBinary = 0x04;   // 1: binary, 0: BCD
inline constexpr uint8_t kHourPm = 0x80;       // 12-hour mode: PM flag in the hours byte
inline constexpr uint8_t kNmiDisable = 0x80;   // index bit we never set

uint8_t read(uint8_t index);
void write(uint8_t index, uint8_t value);

struct DateTime {
  uint32_t year;  // full year, e.g. 2026
  uint8_t month, day, hour, minute, second;
};

// The raw register values of one read.
struct RtcRaw {
  uint8_t second, minute, hour, day, month, year, century, reg_b;
};

// BCD or binary, 12- or 24-hour, century register or 20xx: raw -> DateTime.
DateTime decode(const RtcRaw& raw);
// False when no RTC answers (register D reads all-ones) or the clock never
// settles; otherwise fills *out.
bool read_time(DateTime* out);
// "YYYY-MM-DDTHH:MM:SSZ" plus NUL into buf (at least 21 bytes).
void format_iso(const DateTime& t, char* buf);

}  // namespace apiary::guestlib::cmos
