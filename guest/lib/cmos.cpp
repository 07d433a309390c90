// CMOS RAM and RTC access; see cmos.hpp.
#include "guest/lib/cmos.hpp"

#include "guest/lib/io.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib::cmos {

namespace {

constexpr uint32_t kUipPolls = 5000;  // ~50 ms of port exits; an update lasts < 2 ms
constexpr int kReadAttempts = 5;

uint8_t from_bcd(uint8_t v) { return static_cast<uint8_t>((v >> 4) * 10 + (v & 0x0f)); }

RtcRaw read_raw() {
  RtcRaw r;
  r.second = read(kRegSeconds);
  r.minute = read(kRegMinutes);
  r.hour = read(kRegHours);
  r.day = read(kRegDay);
  r.month = read(kRegMonth);
  r.year = read(kRegYear);
  r.century = read(kRegCentury);
  r.reg_b = read(kRegB);
  return r;
}

bool wait_not_updating() {
  for (uint32_t i = 0; i < kUipPolls; ++i)
    if (!(read(kRegA) & kRegAUip)) return true;
  return false;
}

bool same(const RtcRaw& a, const RtcRaw& b) {
  return a.second == b.second && a.minute == b.minute && a.hour == b.hour && a.day == b.day &&
         a.month == b.month && a.year == b.year && a.century == b.century && a.reg_b == b.reg_b;
}

void put2(char* p, uint32_t v) {
  p[0] = static_cast<char>('0' + v / 10 % 10);
  p[1] = static_cast<char>('0' + v % 10);
}

}  // namespace

uint8_t read(uint8_t index) {
  outb(layout::kRtcIndex, index & static_cast<uint8_t>(~kNmiDisable));
  return inb(layout::kRtcData);
}

void write(uint8_t index, uint8_t value) {
  outb(layout::kRtcIndex, index & static_cast<uint8_t>(~kNmiDisable));
  outb(layout::kRtcData, value);
}

DateTime decode(const RtcRaw& raw) {
  bool bcd = !(raw.reg_b & kRegBBinary);
  auto conv = [bcd](uint8_t v) { return bcd ? from_bcd(v) : v; };
  DateTime t;
  t.second = conv(raw.second);
  t.minute = conv(raw.minute);
  t.day = conv(raw.day);
  t.month = conv(raw.month);
  uint8_t hour = raw.hour;
  bool pm = false;
  if (!(raw.reg_b & kRegB24Hour)) {
    pm = hour & kHourPm;
    hour &= static_cast<uint8_t>(~kHourPm);
  }
  hour = conv(hour);
  if (!(raw.reg_b & kRegB24Hour)) {
    // 12-hour clock: 12 AM is 00, 12 PM is 12, 1-11 PM are 13-23.
    if (hour == 12) hour = 0;
    if (pm) hour = static_cast<uint8_t>(hour + 12);
  }
  t.hour = hour;
  uint32_t century = 20;
  if (raw.century != 0 && raw.century != 0xff) {
    uint8_t c = conv(raw.century);
    if (c >= 19 && c <= 99) century = c;
  }
  t.year = century * 100 + conv(raw.year);
  return t;
}

bool read_time(DateTime* out) {
  if (read(kRegD) == 0xff) return false;  // nothing at 0x70/0x71
  if (!wait_not_updating()) return false;
  RtcRaw prev = read_raw();
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    if (!wait_not_updating()) return false;
    RtcRaw cur = read_raw();
    if (same(prev, cur)) {
      *out = decode(cur);
      return true;
    }
    prev = cur;
  }
  return false;
}

void format_iso(const DateTime& t, char* buf) {
  uint32_t y = t.year;
  buf[0] = static_cast<char>('0' + y / 1000 % 10);
  buf[1] = static_cast<char>('0' + y / 100 % 10);
  put2(buf + 2, y % 100);
  buf[4] = '-';
  put2(buf + 5, t.month);
  buf[7] = '-';
  put2(buf + 8, t.day);
  buf[10] = 'T';
  put2(buf + 11, t.hour);
  buf[13] = ':';
  put2(buf + 14, t.minute);
  buf[16] = ':';
  put2(buf + 17, t.second);
  buf[19] = 'Z';
  buf[20] = '\0';
}

}  // namespace apiary::guestlib::cmos
