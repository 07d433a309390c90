// MC146818 CMOS RTC (devices/cmos_rtc.cpp), no KVM needed.
//
// The clock is injected, so every time register is checked against a fixed
// instant (2024-02-29 13:45:07 UTC, a Thursday, in a leap year) in BCD and
// binary and in 12- and 24-hour mode; setting the clock, registers A-D, the
// NMI mask, the memory-size bytes for 64 MiB and 5 GiB, and random port
// traffic of every size are covered too.
#define BOOST_TEST_MODULE cmos_rtc
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <ctime>
#include <random>
#include <string>

#include "devices/cmos_rtc.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/layout.hpp"

namespace layout = apiary::layout;
namespace vmm = apiary::vmm;
using namespace apiary::devices;
using namespace apiary::devices::cmos;

namespace {

constexpr std::time_t kThu20240229_134507 = 1709214307;  // 2024-02-29 13:45:07 UTC
constexpr std::time_t kThu20240229_000500 = 1709165100;  // 00:05:00
constexpr std::time_t kThu20240229_120059 = 1709208059;  // 12:00:59
constexpr std::time_t kFri19991231_235959 = 946684799;
constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

struct Fixture {
  std::time_t now = kThu20240229_134507;
  CmosRtc rtc{"rtc", 64 * kMiB, 0, [this] { return now; }};
  vmm::Bus bus;
  Fixture() {
    bus.add(vmm::AddressSpace::pio, layout::kRtcIndex, layout::kRtcPorts, &rtc, "rtc");
    bus.freeze();
  }
  uint8_t read(uint8_t index) {
    bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 1, index);
    uint64_t v = 0;
    bus.read(vmm::AddressSpace::pio, layout::kRtcData, 1, v);
    return static_cast<uint8_t>(v);
  }
  void write(uint8_t index, uint8_t value) {
    bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 1, index);
    bus.write(vmm::AddressSpace::pio, layout::kRtcData, 1, value);
  }
  struct Clock {
    uint8_t sec, min, hour, dow, day, mon, year, century;
  };
  Clock clock() {
    return {read(kSeconds), read(kMinutes), read(kHours), read(kDayOfWeek),
            read(kDayOfMonth), read(kMonth), read(kYear), read(kCentury)};
  }
};

uint8_t cmos_byte(CmosRtc& rtc, uint8_t index) {
  rtc.io_write(kIndexOffset, 1, index);
  return static_cast<uint8_t>(rtc.io_read(kDataOffset, 1));
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(bcd_24_hour_is_the_power_on_format, Fixture) {
  BOOST_TEST(read(kRegB) == kBPowerOn);
  const Clock c = clock();
  BOOST_TEST(c.sec == 0x07);
  BOOST_TEST(c.min == 0x45);
  BOOST_TEST(c.hour == 0x13);
  BOOST_TEST(c.dow == 0x05);  // Thursday; Sunday = 1
  BOOST_TEST(c.day == 0x29);
  BOOST_TEST(c.mon == 0x02);
  BOOST_TEST(c.year == 0x24);
  BOOST_TEST(c.century == 0x20);
}

BOOST_FIXTURE_TEST_CASE(binary_24_hour, Fixture) {
  write(kRegB, kBBinary | kB24Hour);
  const Clock c = clock();
  BOOST_TEST(c.sec == 7);
  BOOST_TEST(c.min == 45);
  BOOST_TEST(c.hour == 13);
  BOOST_TEST(c.dow == 5);
  BOOST_TEST(c.day == 29);
  BOOST_TEST(c.mon == 2);
  BOOST_TEST(c.year == 24);
  BOOST_TEST(c.century == 20);
}

BOOST_FIXTURE_TEST_CASE(twelve_hour_modes, Fixture) {
  write(kRegB, 0);  // BCD, 12-hour
  BOOST_TEST(read(kHours) == (kHourPm | 0x01));  // 1 PM
  write(kRegB, kBBinary);
  BOOST_TEST(read(kHours) == (kHourPm | 1));
  now = kThu20240229_000500;  // midnight is 12 AM
  BOOST_TEST(read(kHours) == 12);
  write(kRegB, 0);
  BOOST_TEST(read(kHours) == 0x12);
  now = kThu20240229_120059;  // noon is 12 PM
  BOOST_TEST(read(kHours) == (kHourPm | 0x12));
  write(kRegB, kBBinary);
  BOOST_TEST(read(kHours) == (kHourPm | 12));
  write(kRegB, kBBinary | kB24Hour);
  BOOST_TEST(read(kHours) == 12);
}

BOOST_FIXTURE_TEST_CASE(time_follows_the_clock, Fixture) {
  now = kFri19991231_235959;
  Clock c = clock();
  BOOST_TEST(c.sec == 0x59);
  BOOST_TEST(c.hour == 0x23);
  BOOST_TEST(c.dow == 0x06);
  BOOST_TEST(c.day == 0x31);
  BOOST_TEST(c.mon == 0x12);
  BOOST_TEST(c.year == 0x99);
  BOOST_TEST(c.century == 0x19);
  now += 1;  // across the century
  c = clock();
  BOOST_TEST(c.sec == 0x00);
  BOOST_TEST(c.min == 0x00);
  BOOST_TEST(c.hour == 0x00);
  BOOST_TEST(c.dow == 0x07);
  BOOST_TEST(c.day == 0x01);
  BOOST_TEST(c.mon == 0x01);
  BOOST_TEST(c.year == 0x00);
  BOOST_TEST(c.century == 0x20);
}

BOOST_FIXTURE_TEST_CASE(status_registers, Fixture) {
  BOOST_TEST(read(kRegA) == kAPowerOn);  // no UIP with an injected (seconds-only) clock
  BOOST_TEST(read(kRegD) == kDVrt);
  write(kRegA, 0xff);
  BOOST_TEST(read(kRegA) == kAWritable);  // UIP is read-only
  write(kRegD, 0);
  BOOST_TEST(read(kRegD) == kDVrt);
  write(kRegC, 0xff);
  BOOST_TEST(read(kRegC) == 0);
}

BOOST_FIXTURE_TEST_CASE(register_c_reports_updates_and_clears_on_read, Fixture) {
  BOOST_TEST(read(kRegC) == 0);
  now += 1;
  BOOST_TEST(read(kRegC) == kCUf);  // UIE off: flag, no IRQF
  BOOST_TEST(read(kRegC) == 0);
  write(kRegB, kB24Hour | kBUie);
  now += 1;
  BOOST_TEST(read(kRegC) == (kCIrqf | kCUf));
  // Alarm: don't-care in all three fields matches every update.
  write(kSecondsAlarm, 0xff);
  write(kMinutesAlarm, 0xc0);
  write(kHoursAlarm, 0xc5);
  write(kRegB, kB24Hour | kBAie);
  now += 1;
  BOOST_TEST(read(kRegC) == (kCIrqf | kCAf | kCUf));
  // A specific alarm time: 13:45:10 (BCD).
  write(kSecondsAlarm, 0x10);
  write(kMinutesAlarm, 0x45);
  write(kHoursAlarm, 0x13);
  now += 1;  // :11 now
  BOOST_TEST(read(kRegC) == kCUf);
  now = kThu20240229_134507 + 3;  // :10
  BOOST_TEST(read(kRegC) == (kCIrqf | kCAf | kCUf));
  BOOST_TEST(read(kSecondsAlarm) == 0x10);
}

BOOST_AUTO_TEST_CASE(uip_rule) {
  BOOST_TEST(!CmosRtc::update_in_progress_at(0));
  BOOST_TEST(!CmosRtc::update_in_progress_at(500'000));
  BOOST_TEST(!CmosRtc::update_in_progress_at(1'000'000 - kUipWindowUs - 1));
  BOOST_TEST(CmosRtc::update_in_progress_at(1'000'000 - kUipWindowUs));
  BOOST_TEST(CmosRtc::update_in_progress_at(999'999));
}

BOOST_AUTO_TEST_CASE(host_clock_by_default_and_uip_never_stuck) {
  CmosRtc rtc("rtc", 64 * kMiB, 0);
  auto bcd = [](uint8_t b) { return (b >> 4) * 10 + (b & 0x0f); };
  std::tm tm{};
  // The RTC reads system_clock (CLOCK_REALTIME); std::time() may come from
  // the coarse clock, up to a tick behind, and so a second behind near a
  // second's boundary: compare with the clock the device reads.
  auto now_s = [] { return std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()); };
  const std::time_t before = now_s();
  // As a guest does: read everything, and again if the seconds moved meanwhile.
  for (int tries = 0; tries < 10; ++tries) {
    const uint8_t sec = cmos_byte(rtc, kSeconds);
    tm.tm_sec = bcd(sec);
    tm.tm_min = bcd(cmos_byte(rtc, kMinutes));
    tm.tm_hour = bcd(cmos_byte(rtc, kHours));
    tm.tm_mday = bcd(cmos_byte(rtc, kDayOfMonth));
    tm.tm_mon = bcd(cmos_byte(rtc, kMonth)) - 1;
    tm.tm_year = bcd(cmos_byte(rtc, kCentury)) * 100 + bcd(cmos_byte(rtc, kYear)) - 1900;
    if (cmos_byte(rtc, kSeconds) == sec) break;
  }
  const std::time_t after = now_s();
  const std::time_t read = timegm(&tm);
  BOOST_TEST(read >= before);
  BOOST_TEST(read <= after);
  int clear = 0;
  for (int i = 0; i < 10000; ++i) clear += !(cmos_byte(rtc, kRegA) & kAUip);
  BOOST_TEST(clear > 0);
}

BOOST_FIXTURE_TEST_CASE(guest_sets_the_clock_with_set_bit, Fixture) {
  write(kRegB, kBSet | kB24Hour | kBUie);
  BOOST_TEST(read(kRegB) == (kBSet | kB24Hour));  // SET clears UIE
  // Frozen while SET: the clock does not move.
  now += 5;
  BOOST_TEST(read(kSeconds) == 0x07);
  write(kSeconds, 0x30);
  write(kMinutes, 0x15);
  write(kHours, 0x08);
  write(kDayOfMonth, 0x04);
  write(kMonth, 0x07);
  write(kYear, 0x31);
  write(kCentury, 0x20);
  BOOST_TEST(read(kSeconds) == 0x30);  // storage while frozen
  BOOST_TEST(read(kRegA) == kAPowerOn);  // no UIP while SET
  write(kRegB, kB24Hour);
  Clock c = clock();
  BOOST_TEST(c.sec == 0x30);
  BOOST_TEST(c.min == 0x15);
  BOOST_TEST(c.hour == 0x08);
  BOOST_TEST(c.day == 0x04);
  BOOST_TEST(c.mon == 0x07);
  BOOST_TEST(c.year == 0x31);
  BOOST_TEST(c.century == 0x20);
  BOOST_TEST(c.dow == 0x06);  // 2031-07-04 is a Friday: derived from the date
  now += 10;
  BOOST_TEST(read(kSeconds) == 0x40);
  const auto s = rtc.export_state();
  const std::time_t guest = 1940919330;  // 2031-07-04 08:15:30 UTC
  BOOST_TEST(static_cast<int64_t>(s.registers().at("clock_offset_seconds")) ==
             guest - (kThu20240229_134507 + 5));
  BOOST_TEST(s.counters().at("clock_sets") == 1u);
}

BOOST_FIXTURE_TEST_CASE(setting_in_binary_and_12_hour_mode, Fixture) {
  write(kRegB, kBSet | kBBinary);  // 12-hour, binary
  write(kHours, kHourPm | 11);     // 11 PM
  write(kMinutes, 59);
  write(kSeconds, 58);
  write(kRegB, kBBinary | kB24Hour);
  BOOST_TEST(read(kHours) == 23);
  BOOST_TEST(read(kMinutes) == 59);
  BOOST_TEST(read(kSeconds) == 58);
  BOOST_TEST(read(kDayOfMonth) == 29);
  now += 2;  // midnight: 1 March
  BOOST_TEST(read(kHours) == 0);
  BOOST_TEST(read(kDayOfMonth) == 1);
  BOOST_TEST(read(kMonth) == 3);
}

BOOST_FIXTURE_TEST_CASE(writing_a_time_register_without_set_moves_the_clock, Fixture) {
  write(kMinutes, 0x00);
  Clock c = clock();
  BOOST_TEST(c.min == 0x00);
  BOOST_TEST(c.sec == 0x07);
  BOOST_TEST(c.hour == 0x13);
  write(kDayOfWeek, 0x01);  // derived: ignored
  BOOST_TEST(read(kDayOfWeek) == 0x05);
  write(kYear, 0x25);
  BOOST_TEST(read(kYear) == 0x25);
  BOOST_TEST(read(kCentury) == 0x20);
  BOOST_TEST(read(kMonth) == 0x03);  // 29 Feb 2025 does not exist: normalised to 1 March
  BOOST_TEST(read(kDayOfMonth) == 0x01);
  write(kCentury, 0x21);
  BOOST_TEST(read(kCentury) == 0x21);
  BOOST_TEST(read(kYear) == 0x25);
}

BOOST_FIXTURE_TEST_CASE(index_port_and_nmi_mask, Fixture) {
  bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 1, kNmiDisable | kSeconds);
  uint64_t v = 0;
  bus.read(vmm::AddressSpace::pio, layout::kRtcData, 1, v);
  BOOST_TEST(v == 0x07u);  // the NMI bit is not part of the index
  bus.read(vmm::AddressSpace::pio, layout::kRtcIndex, 1, v);
  BOOST_TEST(v == (kNmiDisable | kSeconds));
  auto s = rtc.export_state();
  BOOST_TEST(s.registers().at("nmi_disabled") == 1u);
  BOOST_TEST(s.registers().at("index") == kSeconds);
  bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 1, 0x7f);
  s = rtc.export_state();
  BOOST_TEST(s.registers().at("nmi_disabled") == 0u);
  BOOST_TEST(s.registers().at("index") == 0x7fu);
}

BOOST_FIXTURE_TEST_CASE(cmos_ram_and_wide_accesses, Fixture) {
  for (unsigned i = 0x40; i < kSize; ++i) write(static_cast<uint8_t>(i), static_cast<uint8_t>(i ^ 0x5a));
  for (unsigned i = 0x40; i < kSize; ++i) BOOST_TEST(read(static_cast<uint8_t>(i)) == (i ^ 0x5a));
  // `out 0x70, ax`: index in the low byte, data in the high byte.
  bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 2, (0xa5u << 8) | 0x41);
  BOOST_TEST(read(0x41) == 0xa5);
  uint64_t v = 0;
  bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 1, 0x41);
  bus.read(vmm::AddressSpace::pio, layout::kRtcIndex, 2, v);
  BOOST_TEST(v == 0xa541u);
  bus.read(vmm::AddressSpace::pio, layout::kRtcIndex, 4, v);
  BOOST_TEST(v == 0xffffa541u);
  const std::string opaque = rtc.export_state().opaque();
  BOOST_TEST(opaque.size() == kSize);
  BOOST_TEST(static_cast<uint8_t>(opaque[0x41]) == 0xa5);
}

BOOST_AUTO_TEST_CASE(memory_fields_64_mib) {
  CmosRtc rtc("rtc", 64 * kMiB, 0, [] { return kThu20240229_134507; });
  BOOST_TEST(cmos_byte(rtc, kBaseMemLo) == 0x80);  // 640 KiB
  BOOST_TEST(cmos_byte(rtc, kBaseMemHi) == 0x02);
  BOOST_TEST(cmos_byte(rtc, kExtMemLo) == 0x00);   // 63 MiB = 64512 KiB = 0xfc00
  BOOST_TEST(cmos_byte(rtc, kExtMemHi) == 0xfc);
  BOOST_TEST(cmos_byte(rtc, kExtMem2Lo) == 0x00);
  BOOST_TEST(cmos_byte(rtc, kExtMem2Hi) == 0xfc);
  BOOST_TEST(cmos_byte(rtc, kMem16MLo) == 0x00);   // 48 MiB / 64 KiB = 0x300
  BOOST_TEST(cmos_byte(rtc, kMem16MHi) == 0x03);
  BOOST_TEST(cmos_byte(rtc, kMem4G0) == 0x00);
  BOOST_TEST(cmos_byte(rtc, kMem4G1) == 0x00);
  BOOST_TEST(cmos_byte(rtc, kMem4G2) == 0x00);
  unsigned sum = 0;
  for (unsigned i = kChecksumFirst; i <= kChecksumLast; ++i) sum += cmos_byte(rtc, static_cast<uint8_t>(i));
  BOOST_TEST(((cmos_byte(rtc, kChecksumHi) << 8) | cmos_byte(rtc, kChecksumLo)) == sum);
}

BOOST_AUTO_TEST_CASE(memory_fields_5_gib) {
  // 5 GiB: 3 GiB below the MMIO hole, 2 GiB from 4 GiB up.
  const uint64_t below = layout::kMmioHoleStart, above = 5 * kGiB - layout::kMmioHoleStart;
  CmosRtc rtc("rtc", below, above, [] { return kThu20240229_134507; });
  BOOST_TEST(cmos_byte(rtc, kBaseMemLo) == 0x80);
  BOOST_TEST(cmos_byte(rtc, kBaseMemHi) == 0x02);
  BOOST_TEST(cmos_byte(rtc, kExtMemLo) == 0xff);  // capped
  BOOST_TEST(cmos_byte(rtc, kExtMemHi) == 0xff);
  BOOST_TEST(cmos_byte(rtc, kExtMem2Lo) == 0xff);
  BOOST_TEST(cmos_byte(rtc, kExtMem2Hi) == 0xff);
  BOOST_TEST(cmos_byte(rtc, kMem16MLo) == 0x00);  // (3072 - 16) MiB / 64 KiB = 0xbf00
  BOOST_TEST(cmos_byte(rtc, kMem16MHi) == 0xbf);
  BOOST_TEST(cmos_byte(rtc, kMem4G0) == 0x00);    // 2 GiB / 64 KiB = 0x008000
  BOOST_TEST(cmos_byte(rtc, kMem4G1) == 0x80);
  BOOST_TEST(cmos_byte(rtc, kMem4G2) == 0x00);
}

BOOST_FIXTURE_TEST_CASE(reset_keeps_the_battery_backed_state, Fixture) {
  write(kMinutes, 0x00);  // guest moved its clock
  write(0x50, 0x77);      // and stored something
  write(kMem16MHi, 0);    // and overwrote a memory-size byte
  write(kRegB, kBBinary | kBUie);
  bus.write(vmm::AddressSpace::pio, layout::kRtcIndex, 1, kNmiDisable | 0x50);
  rtc.reset();
  BOOST_TEST(read(kRegB) == kBPowerOn);
  BOOST_TEST(read(kRegA) == kAPowerOn);
  BOOST_TEST(read(kMinutes) == 0x00);
  BOOST_TEST(read(0x50) == 0x77);
  BOOST_TEST(read(kMem16MHi) == 0x03);  // rewritten from the RAM size
  BOOST_TEST(rtc.export_state().registers().at("nmi_disabled") == 0u);
}

BOOST_FIXTURE_TEST_CASE(reset_while_frozen_commits_the_clock, Fixture) {
  write(kRegB, kBSet | kB24Hour);
  write(kHours, 0x02);
  rtc.reset();
  BOOST_TEST(read(kHours) == 0x02);
  now += 1;
  BOOST_TEST(read(kSeconds) == 0x08);  // running again
}

BOOST_AUTO_TEST_CASE(hostile_port_traffic_never_faults) {
  std::time_t now = kThu20240229_134507;
  CmosRtc rtc("rtc", 64 * kMiB, 0, [&] { return now; });
  std::mt19937_64 rng(0x146818);
  const unsigned sizes[] = {1, 2, 4};
  for (int i = 0; i < 200000; ++i) {
    const uint64_t offset = rng() % 4;
    const unsigned size = sizes[rng() % 3];
    const uint64_t value = rng() & vmm::all_ones(size);
    if (rng() % 2) rtc.io_write(offset, size, value);
    else rtc.io_read(offset, size);
    if (i % 1000 == 0) now += static_cast<std::time_t>(rng() % 100000);
    if (i % 50000 == 0) rtc.reset();
  }
  BOOST_TEST(rtc.export_state().registers().at("reg_d") == kDVrt);
  // After all that, setting a sane time still works.
  rtc.reset();
  rtc.io_write(kIndexOffset, 1, kRegB);
  rtc.io_write(kDataOffset, 1, kBSet | kB24Hour);
  const uint8_t sane[][2] = {{kSeconds, 0x01}, {kMinutes, 0x02}, {kHours, 0x03}, {kDayOfMonth, 0x04},
                             {kMonth, 0x05}, {kYear, 0x06}, {kCentury, 0x20}};
  for (auto& [reg, v] : sane) {
    rtc.io_write(kIndexOffset, 1, reg);
    rtc.io_write(kDataOffset, 1, v);
  }
  rtc.io_write(kIndexOffset, 1, kRegB);
  rtc.io_write(kDataOffset, 1, kB24Hour);
  BOOST_TEST(cmos_byte(rtc, kHours) == 0x03);
  BOOST_TEST(cmos_byte(rtc, kYear) == 0x06);
  BOOST_TEST(cmos_byte(rtc, kCentury) == 0x20);
}
