// MC146818 RTC + CMOS RAM: time from the host clock plus a guest offset,
// BCD/binary and 12/24-hour encoding, the SET freeze/commit protocol and the
// memory-size bytes. See cmos_rtc.hpp for the model.
#include "devices/cmos_rtc.hpp"

#include <algorithm>
#include <chrono>

#include "vmm-core/layout.hpp"

namespace apiary::devices {

using namespace cmos;

static_assert(layout::kRtcData - layout::kRtcIndex == kDataOffset && layout::kRtcPorts == 2);

namespace {
inline constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;
inline constexpr uint64_t k64KiB = 64 * kKiB;
inline constexpr uint64_t kIsaLimit = 16 * kMiB;  // the 0x34/0x35 field counts from here
}  // namespace

CmosRtc::CmosRtc(std::string name, uint64_t ram_below_4g, uint64_t ram_above_4g, Clock clock)
    : Device(std::move(name)),
      ram_below_4g_(std::min<uint64_t>(ram_below_4g, layout::kMmioHoleEnd)),
      ram_above_4g_(ram_above_4g),
      clock_(std::move(clock)) {
  std::lock_guard lock(mutex_);
  cmos_[kRegA] = kAPowerOn;
  cmos_[kRegB] = kBPowerOn;
  cmos_[kRegD] = kDVrt;
  write_memory_fields();
  last_c_read_ = guest_time(now());
}

void CmosRtc::reset() {
  std::lock_guard lock(mutex_);
  const Now n = now();
  // A guest that rebooted half-way through setting the clock: keep what it
  // wrote rather than leave the clock frozen.
  if (cmos_[kRegB] & kBSet) commit(n);
  index_ = 0;
  nmi_disabled_ = false;
  cmos_[kRegA] = kAPowerOn;
  cmos_[kRegB] = kBPowerOn;
  cmos_[kRegC] = 0;
  cmos_[kRegD] = kDVrt;
  write_memory_fields();
  last_c_read_ = guest_time(n);
}

void CmosRtc::write_memory_fields() {
  auto put16 = [this](uint8_t lo, uint8_t hi, uint64_t v) {
    cmos_[lo] = static_cast<uint8_t>(v);
    cmos_[hi] = static_cast<uint8_t>(v >> 8);
  };
  const uint64_t base_kib = std::min<uint64_t>(layout::kCmosBaseMemoryKib, ram_below_4g_ / kKiB);
  const uint64_t ext_kib =
      ram_below_4g_ > layout::kHighMemory ? (ram_below_4g_ - layout::kHighMemory) / kKiB : 0;
  const uint64_t above_16m = ram_below_4g_ > kIsaLimit ? (ram_below_4g_ - kIsaLimit) / k64KiB : 0;
  const uint64_t above_4g = std::min<uint64_t>(ram_above_4g_ / k64KiB, 0xffffff);
  put16(kBaseMemLo, kBaseMemHi, base_kib);
  put16(kExtMemLo, kExtMemHi, std::min<uint64_t>(ext_kib, 0xffff));
  put16(kExtMem2Lo, kExtMem2Hi, std::min<uint64_t>(ext_kib, 0xffff));
  put16(kMem16MLo, kMem16MHi, std::min<uint64_t>(above_16m, 0xffff));
  cmos_[kMem4G0] = static_cast<uint8_t>(above_4g);
  cmos_[kMem4G1] = static_cast<uint8_t>(above_4g >> 8);
  cmos_[kMem4G2] = static_cast<uint8_t>(above_4g >> 16);
  unsigned sum = 0;
  for (unsigned i = kChecksumFirst; i <= kChecksumLast; ++i) sum += cmos_[i];
  put16(kChecksumLo, kChecksumHi, sum);
}

bool CmosRtc::update_in_progress_at(uint32_t micros_into_second) noexcept {
  return micros_into_second >= 1'000'000u - kUipWindowUs && micros_into_second < 1'000'000u;
}

CmosRtc::Now CmosRtc::now() const {
  if (clock_) return {clock_(), 0, false};
  using namespace std::chrono;
  const int64_t us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  int64_t secs = us / 1'000'000, rem = us % 1'000'000;
  if (rem < 0) {
    rem += 1'000'000;
    --secs;
  }
  return {static_cast<std::time_t>(secs), static_cast<uint32_t>(rem), true};
}

std::tm CmosRtc::guest_tm(const Now& n) const {
  const std::time_t t = guest_time(n);
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) tm = std::tm{};  // unrepresentable: read as zeros, never fault
  return tm;
}

uint8_t CmosRtc::encode(unsigned v) const noexcept {
  if (binary()) return static_cast<uint8_t>(std::min(v, 0xffu));
  v %= 100;
  return static_cast<uint8_t>(((v / 10) << 4) | (v % 10));
}

unsigned CmosRtc::decode(uint8_t b) const noexcept {
  // Invalid BCD digits decode to out-of-range numbers, which timegm later
  // normalises: a hostile value moves the clock, it cannot break it.
  return binary() ? b : (b >> 4) * 10u + (b & 0x0fu);
}

uint8_t CmosRtc::encode_hour(unsigned h) const noexcept {
  if (hours24()) return encode(h);
  const unsigned h12 = h % 12 == 0 ? 12 : h % 12;
  return static_cast<uint8_t>(encode(h12) | (h >= 12 ? kHourPm : 0));
}

unsigned CmosRtc::decode_hour(uint8_t b) const noexcept {
  if (hours24()) return decode(b);
  return decode(b & static_cast<uint8_t>(~kHourPm)) % 12 + ((b & kHourPm) ? 12 : 0);
}

uint8_t CmosRtc::clock_reg(unsigned reg, const std::tm& tm) const noexcept {
  const long long year = static_cast<long long>(tm.tm_year) + 1900;
  switch (reg) {
    case kSeconds: return encode(static_cast<unsigned>(tm.tm_sec));
    case kMinutes: return encode(static_cast<unsigned>(tm.tm_min));
    case kHours: return encode_hour(static_cast<unsigned>(tm.tm_hour));
    case kDayOfWeek: return encode(static_cast<unsigned>(tm.tm_wday) + 1);  // Sunday = 1
    case kDayOfMonth: return encode(static_cast<unsigned>(tm.tm_mday));
    case kMonth: return encode(static_cast<unsigned>(tm.tm_mon) + 1);
    case kYear: return encode(static_cast<unsigned>(((year % 100) + 100) % 100));
    case kCentury: return encode(static_cast<unsigned>(std::clamp(year / 100, 0ll, 255ll)));
  }
  return cmos_[reg];
}

namespace {
constexpr bool is_clock_reg(unsigned reg) {
  return reg == kSeconds || reg == kMinutes || reg == kHours || reg == kDayOfWeek || reg == kDayOfMonth ||
         reg == kMonth || reg == kYear || reg == kCentury;
}
}  // namespace

void CmosRtc::freeze(const Now& n) {
  const std::tm tm = guest_tm(n);
  for (unsigned reg : {kSeconds, kMinutes, kHours, kDayOfWeek, kDayOfMonth, kMonth, kYear, kCentury})
    cmos_[reg] = clock_reg(reg, tm);
}

void CmosRtc::set_time(const Now& n, std::tm tm) {
  tm.tm_isdst = 0;
  const std::time_t t = timegm(&tm);
  offset_ = static_cast<int64_t>(t) - static_cast<int64_t>(n.host);
  last_c_read_ = t;  // a new time is not an update cycle
  ++clock_sets_;
}

void CmosRtc::commit(const Now& n) {
  std::tm tm{};
  tm.tm_sec = static_cast<int>(decode(cmos_[kSeconds]));
  tm.tm_min = static_cast<int>(decode(cmos_[kMinutes]));
  tm.tm_hour = static_cast<int>(decode_hour(cmos_[kHours]));
  tm.tm_mday = static_cast<int>(decode(cmos_[kDayOfMonth]));
  tm.tm_mon = static_cast<int>(decode(cmos_[kMonth])) - 1;
  tm.tm_year = static_cast<int>(decode(cmos_[kCentury]) * 100 + decode(cmos_[kYear])) - 1900;
  set_time(n, tm);
}

uint8_t CmosRtc::read_reg(unsigned reg) {
  const bool set = cmos_[kRegB] & kBSet;
  if (is_clock_reg(reg)) {
    if (set) return cmos_[reg];  // frozen while the guest sets the clock
    return clock_reg(reg, guest_tm(now()));
  }
  switch (reg) {
    case kRegA: {
      uint8_t a = cmos_[kRegA] & kAWritable;
      if (!set) {
        const Now n = now();
        if (n.has_phase && update_in_progress_at(n.micros)) a |= kAUip;
      }
      return a;
    }
    case kRegC: {
      uint8_t c = 0;
      if (!set) {
        const Now n = now();
        const std::time_t t = guest_time(n);
        if (t != last_c_read_) {
          c |= kCUf;
          const std::tm tm = guest_tm(n);
          auto match = [&](unsigned alarm, unsigned reg) {
            return cmos_[alarm] >= kAlarmDontCare || cmos_[alarm] == clock_reg(reg, tm);
          };
          if (match(kSecondsAlarm, kSeconds) && match(kMinutesAlarm, kMinutes) && match(kHoursAlarm, kHours))
            c |= kCAf;
        }
        last_c_read_ = t;
      }
      if (c & cmos_[kRegB] & (kBPie | kBAie | kBUie)) c |= kCIrqf;
      return c;
    }
    case kRegD:
      return kDVrt;
  }
  return cmos_[reg];
}

void CmosRtc::write_reg(unsigned reg, uint8_t v) {
  const bool set = cmos_[kRegB] & kBSet;
  if (is_clock_reg(reg)) {
    if (set) {
      cmos_[reg] = v;
      return;
    }
    const Now n = now();
    std::tm tm = guest_tm(n);
    const int year = tm.tm_year + 1900;
    switch (reg) {
      case kSeconds: tm.tm_sec = static_cast<int>(decode(v)); break;
      case kMinutes: tm.tm_min = static_cast<int>(decode(v)); break;
      case kHours: tm.tm_hour = static_cast<int>(decode_hour(v)); break;
      case kDayOfMonth: tm.tm_mday = static_cast<int>(decode(v)); break;
      case kMonth: tm.tm_mon = static_cast<int>(decode(v)) - 1; break;
      case kYear: tm.tm_year = (year / 100) * 100 + static_cast<int>(decode(v)) - 1900; break;
      case kCentury: tm.tm_year = static_cast<int>(decode(v)) * 100 + year % 100 - 1900; break;
      default: return;  // day of week follows the date
    }
    set_time(n, tm);
    return;
  }
  switch (reg) {
    case kRegA:
      cmos_[kRegA] = v & kAWritable;  // UIP is read-only
      return;
    case kRegB: {
      uint8_t b = v;
      if (b & kBSet) b &= static_cast<uint8_t>(~kBUie);  // SET clears UIE, as on the part
      // The frozen registers were written in the mode in force while SET
      // was 1; a new DM/24h mode in this same write applies from now on.
      if (set && !(b & kBSet)) commit(now());
      cmos_[kRegB] = b;
      if (!set && (b & kBSet)) freeze(now());  // encoded in the new mode
      return;
    }
    case kRegC:
    case kRegD:
      return;  // read-only
  }
  cmos_[reg] = v;  // plain CMOS RAM (including the alarm registers)
}

uint64_t CmosRtc::io_read(uint64_t offset, unsigned size) {
  std::lock_guard lock(mutex_);
  uint64_t v = 0;
  for (unsigned i = 0; i < size && i < 8; ++i) {
    const uint64_t port = offset + i;
    uint8_t b = 0xff;
    if (port == kIndexOffset) {
      b = static_cast<uint8_t>(index_ | (nmi_disabled_ ? kNmiDisable : 0));
    } else if (port == kDataOffset) {
      ++reads_;
      b = read_reg(index_);
    }
    v |= static_cast<uint64_t>(b) << (8 * i);
  }
  return v;
}

void CmosRtc::io_write(uint64_t offset, unsigned size, uint64_t value) {
  std::lock_guard lock(mutex_);
  for (unsigned i = 0; i < size && i < 8; ++i) {
    const uint64_t port = offset + i;
    const auto b = static_cast<uint8_t>(value >> (8 * i));
    if (port == kIndexOffset) {
      index_ = b & kIndexMask;
      nmi_disabled_ = b & kNmiDisable;
    } else if (port == kDataOffset) {
      ++writes_;
      write_reg(index_, b);
    }
  }
}

v1::DeviceState CmosRtc::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  const Now n = now();
  const std::tm tm = guest_tm(n);
  const bool set = cmos_[kRegB] & kBSet;
  auto& r = *s.mutable_registers();
  r["index"] = index_;
  r["nmi_disabled"] = nmi_disabled_;
  r["reg_a"] = cmos_[kRegA];
  r["reg_b"] = cmos_[kRegB];
  r["reg_d"] = kDVrt;
  auto clock = [&](unsigned reg) { return set ? cmos_[reg] : clock_reg(reg, tm); };
  r["seconds"] = clock(kSeconds);
  r["minutes"] = clock(kMinutes);
  r["hours"] = clock(kHours);
  r["day_of_week"] = clock(kDayOfWeek);
  r["day_of_month"] = clock(kDayOfMonth);
  r["month"] = clock(kMonth);
  r["year"] = clock(kYear);
  r["century"] = clock(kCentury);
  // Two's complement: the guest clock may be behind the host's.
  r["clock_offset_seconds"] = static_cast<uint64_t>(offset_);
  auto& c = *s.mutable_counters();
  c["reads"] = reads_;
  c["writes"] = writes_;
  c["clock_sets"] = clock_sets_;
  // The whole CMOS RAM, for restore: 128 bytes, index = CMOS address.
  s.set_opaque(std::string(reinterpret_cast<const char*>(cmos_), sizeof cmos_));
  return s;
}

void CmosRtc::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  if (r.opaque().size() != sizeof cmos_)
    r.fail("CMOS RAM has " + std::to_string(r.opaque().size()) + " bytes, expected " + std::to_string(sizeof cmos_));
  std::lock_guard lock(mutex_);
  std::memcpy(cmos_, r.opaque().data(), sizeof cmos_);
  index_ = static_cast<uint8_t>(r.reg("index", kSize - 1));
  nmi_disabled_ = r.flag("nmi_disabled");
  // The guest's clock keeps its offset from the host's wall clock: time
  // passed while the VM was saved passes for the guest too, as on a PC
  // whose RTC runs on its battery.
  offset_ = static_cast<int64_t>(r.reg("clock_offset_seconds"));
  last_c_read_ = 0;
}

}  // namespace apiary::devices
