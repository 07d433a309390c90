// MC146818 CMOS real-time clock and its 128 bytes of CMOS RAM (ports 0x70
// index, 0x71 data).
//
// Why it exists: guests read the wall-clock time from it at boot (Linux's
// read_persistent_clock), firmware-style code reads the memory-size bytes,
// and writing the index port is also how PC code masks NMIs.
//
// Model:
//  * Time is the host clock (UTC) plus a guest offset, computed at each read:
//    nothing ticks in the background. The clock is injectable for tests; by
//    default it is std::chrono::system_clock (the same seconds as
//    time(nullptr), plus the sub-second phase that UIP needs).
//  * Register B selects BCD or binary (DM, bit 2) and 12- or 24-hour (bit 1;
//    in 12-hour mode bit 7 of the hours marks PM). Changing them changes how
//    the next read is encoded; nothing is converted in place.
//  * UIP (register A bit 7) reads 1 during the last 244 us of every host
//    second, just before the time registers change, as on the real part: a
//    guest that sees UIP = 0 has at least 244 us to read a consistent time.
//    It is never stuck. With an injected clock (seconds only, no phase) UIP
//    always reads 0.
//  * Setting the clock: while SET (register B bit 7) is 1 the time registers
//    are frozen and plain storage; clearing SET turns them into a new guest
//    offset from the host clock (decoded in the mode that was in force
//    while SET was 1). Writing a time register while SET is 0
//    changes that field at once (a new offset, too). Day-of-week is derived
//    from the date and writes to it do not move the clock. Out-of-range
//    values are normalised (timegm), never refused.
//  * No interrupt is generated (no IRQ 8 wiring). Register C reports UF when
//    an update happened since the previous read of C, and AF when, in
//    addition, the current time matches the alarm (0xC0-0xFF = don't care);
//    IRQF as the enables in register B dictate. Reading C clears it. PF is
//    not modelled. Register D reads VRT (battery good).
//  * The NMI mask bit (index port bit 7) is kept and exported; there is no
//    NMI source for it to mask. Reading the index port returns the last
//    value written to it.
//  * Battery-backed state survives reset(): the guest's clock offset and the
//    general CMOS RAM. reset() restores registers A-D and the index to their
//    power-on values and rewrites the memory-size bytes and their checksum.
//
// Registration: bus.add(pio, layout::kRtcIndex, layout::kRtcPorts, &rtc, "rtc")
// (offset 0 = index, 1 = data; a 16-bit write sets the index then writes
// the data byte, as `out 0x70, ax` does).
#pragma once

#include <ctime>
#include <functional>
#include <mutex>

#include "devices/device.hpp"

namespace apiary::devices {

namespace cmos {
inline constexpr unsigned kIndexOffset = 0, kDataOffset = 1;
inline constexpr uint8_t kNmiDisable = 0x80, kIndexMask = 0x7f;
inline constexpr size_t kSize = 128;
// Clock registers.
inline constexpr uint8_t kSeconds = 0x00, kSecondsAlarm = 0x01, kMinutes = 0x02, kMinutesAlarm = 0x03,
                         kHours = 0x04, kHoursAlarm = 0x05, kDayOfWeek = 0x06, kDayOfMonth = 0x07,
                         kMonth = 0x08, kYear = 0x09, kRegA = 0x0a, kRegB = 0x0b, kRegC = 0x0c, kRegD = 0x0d,
                         kCentury = 0x32;
inline constexpr uint8_t kAUip = 0x80, kAWritable = 0x7f, kAPowerOn = 0x26;  // 32.768 kHz, 1024 Hz
inline constexpr uint8_t kBSet = 0x80, kBPie = 0x40, kBAie = 0x20, kBUie = 0x10, kBSqwe = 0x08,
                         kBBinary = 0x04, kB24Hour = 0x02, kBDse = 0x01, kBPowerOn = kB24Hour;
inline constexpr uint8_t kCIrqf = 0x80, kCPf = 0x40, kCAf = 0x20, kCUf = 0x10;
inline constexpr uint8_t kDVrt = 0x80;
inline constexpr uint8_t kHourPm = 0x80, kAlarmDontCare = 0xc0;
inline constexpr uint32_t kUipWindowUs = 244;
// Memory-size bytes (IBM AT / BIOS conventions).
inline constexpr uint8_t kBaseMemLo = 0x15, kBaseMemHi = 0x16;        // KiB below 1 MiB
inline constexpr uint8_t kExtMemLo = 0x17, kExtMemHi = 0x18;          // KiB above 1 MiB, capped
inline constexpr uint8_t kExtMem2Lo = 0x30, kExtMem2Hi = 0x31;        // same, second copy
inline constexpr uint8_t kMem16MLo = 0x34, kMem16MHi = 0x35;          // 64 KiB units above 16 MiB
inline constexpr uint8_t kMem4G0 = 0x5b, kMem4G1 = 0x5c, kMem4G2 = 0x5d;  // 64 KiB units above 4 GiB
inline constexpr uint8_t kChecksumFirst = 0x10, kChecksumLast = 0x2d;  // summed into 0x2e (hi), 0x2f
inline constexpr uint8_t kChecksumHi = 0x2e, kChecksumLo = 0x2f;
}  // namespace cmos

class CmosRtc final : public Device {
 public:
  using Clock = std::function<std::time_t()>;

  // ram_below_4g: bytes of RAM under 4 GiB (GuestMemory::low_end());
  // ram_above_4g: bytes from 4 GiB up (GuestMemory::size() - low_end()).
  // An empty clock means the host's system clock.
  CmosRtc(std::string name, uint64_t ram_below_4g, uint64_t ram_above_4g, Clock clock = {});
  const char* kind() const noexcept override { return "mc146818"; }

  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

  // The UIP rule: true during the last kUipWindowUs of a second.
  static bool update_in_progress_at(uint32_t micros_into_second) noexcept;

 private:
  struct Now {
    std::time_t host;
    uint32_t micros;
    bool has_phase;
  };
  Now now() const;
  std::time_t guest_time(const Now& n) const noexcept { return n.host + offset_; }
  std::tm guest_tm(const Now& n) const;
  // With mutex_ held from here on.
  bool binary() const noexcept { return cmos_[cmos::kRegB] & cmos::kBBinary; }
  bool hours24() const noexcept { return cmos_[cmos::kRegB] & cmos::kB24Hour; }
  uint8_t encode(unsigned v) const noexcept;
  unsigned decode(uint8_t b) const noexcept;
  uint8_t encode_hour(unsigned h) const noexcept;
  unsigned decode_hour(uint8_t b) const noexcept;
  uint8_t clock_reg(unsigned reg, const std::tm& tm) const noexcept;  // a time register's live value
  void freeze(const Now& n);           // SET 0 -> 1
  void commit(const Now& n);           // SET 1 -> 0
  void set_time(const Now& n, std::tm tm);
  uint8_t read_reg(unsigned reg);
  void write_reg(unsigned reg, uint8_t v);
  void write_memory_fields();

  const uint64_t ram_below_4g_, ram_above_4g_;
  const Clock clock_;
  mutable std::mutex mutex_;
  uint8_t cmos_[cmos::kSize] = {};
  uint8_t index_ = 0;
  bool nmi_disabled_ = false;
  int64_t offset_ = 0;              // guest time - host time, seconds
  std::time_t last_c_read_ = 0;     // guest time of the last read of register C
  uint64_t reads_ = 0, writes_ = 0, clock_sets_ = 0;
};

}  // namespace apiary::devices
