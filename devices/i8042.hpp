// i8042 PS/2 keyboard controller (ports 0x60 data, 0x64 status/command) with
// one PS/2 keyboard behind it and no auxiliary (mouse) port.
//
// Why it exists: guests expect it. Linux and most firmware reboot through it
// (command 0xFE pulses the CPU reset line), probe it at boot, and it is the
// only input path for a keyboard — the host injects scancodes (including
// Ctrl+Alt+Del, the classic "please reboot" for a guest) through it.
//
// Model: the controller processes every byte at once, so IBF always reads 0.
// It has a one-byte output buffer fed from two queues: controller replies
// (to 0x64 commands) first, then keyboard bytes (replies to keyboard commands
// and host-injected scancodes, bounded, overflow dropped and counted).
// Keyboard bytes wait while the keyboard interface is disabled (0xAD or
// config bit 4). IRQ 1 follows "output buffer full AND config bit 0"; the
// irqchip only sees edges, and a read that is immediately followed by the
// next byte sends a low/high pair so an edge-triggered PIC sees every byte.
//
// There is no auxiliary (mouse) port, and the controller says so quickly
// rather than let a guest time out: 0xA9 (aux test) answers "clock line stuck
// high", 0xD3 (aux loopback) echoes its byte without the AUXDATA status bit
// (Linux's probe treats that as "no aux port" at once), 0xD4's byte is
// dropped, 0xA7/0xA8 are ignored.
//
// Bytes reach the guest exactly as injected: no scancode translation is
// applied (with the power-on config, translation on, the guest expects set 1,
// which is what inject_ctrl_alt_del() sends). A20 is stored in the output
// port but not emulated (it is always enabled).
//
// Registration: the two ports are not adjacent (0x61-0x63 belong to others),
// so register the two adapters:
//   bus.add(pio, layout::kI8042Data, 1, &kbd.data_port(), "i8042-data");
//   bus.add(pio, layout::kI8042Command, 1, &kbd.command_port(), "i8042-cmd");
// The Device's own io_read/io_write take offsets relative to kI8042Data
// (0 = data, 4 = status/command); other offsets read as all-ones.
#pragma once

#include <mutex>
#include <span>

#include "devices/device.hpp"
#include "devices/fifo.hpp"
#include "devices/offset_port.hpp"

namespace apiary::devices {

namespace i8042 {
// Offsets from layout::kI8042Data.
inline constexpr unsigned kDataOffset = 0, kCommandOffset = 4;
// Status register (read at 0x64).
inline constexpr uint8_t kStatusObf = 0x01, kStatusIbf = 0x02, kStatusSys = 0x04, kStatusA2 = 0x08,
                         kStatusUnlocked = 0x10, kStatusAuxObf = 0x20, kStatusTimeout = 0x40,
                         kStatusParity = 0x80;
// Controller configuration byte ("command byte", internal RAM byte 0).
inline constexpr uint8_t kCfgKbdInt = 0x01, kCfgAuxInt = 0x02, kCfgSys = 0x04, kCfgKbdDisable = 0x10,
                         kCfgAuxDisable = 0x20, kCfgTranslate = 0x40;
inline constexpr uint8_t kCfgPowerOn = kCfgKbdInt | kCfgSys | kCfgTranslate;
// Output port (0xD0 / 0xD1).
inline constexpr uint8_t kOutResetDeasserted = 0x01, kOutA20 = 0x02, kOutKbdObf = 0x10;
inline constexpr uint8_t kOutPowerOn = kOutResetDeasserted | kOutA20;
// Controller commands (written to 0x64).
inline constexpr uint8_t kCmdReadRamFirst = 0x20, kCmdReadRamLast = 0x3f;    // 0x20 = read config
inline constexpr uint8_t kCmdWriteRamFirst = 0x60, kCmdWriteRamLast = 0x7f;  // 0x60 = write config
inline constexpr uint8_t kCmdSelfTest = 0xaa, kCmdInterfaceTest = 0xab, kCmdDisableKbd = 0xad,
                         kCmdEnableKbd = 0xae, kCmdReadOutPort = 0xd0, kCmdWriteOutPort = 0xd1,
                         kCmdWriteKbdBuffer = 0xd2, kCmdDisableA20 = 0xdd, kCmdEnableA20 = 0xdf,
                         kCmdPulseFirst = 0xf0;  // 0xf0-0xff: pulse output lines whose bit is 0
// Auxiliary-port commands, answered as a controller without an aux port.
inline constexpr uint8_t kCmdDisableAux = 0xa7, kCmdEnableAux = 0xa8, kCmdAuxTest = 0xa9,
                         kCmdWriteAuxBuffer = 0xd3, kCmdWriteAux = 0xd4;
inline constexpr uint8_t kSelfTestOk = 0x55, kInterfaceTestOk = 0x00;
inline constexpr uint8_t kAuxTestClockStuckHigh = 0x02;  // nothing connected
// Keyboard commands (written to 0x60) and replies.
inline constexpr uint8_t kKbdSetLeds = 0xed, kKbdEcho = 0xee, kKbdScancodeSet = 0xf0, kKbdIdentify = 0xf2,
                         kKbdTypematic = 0xf3, kKbdEnable = 0xf4, kKbdDisable = 0xf5, kKbdDefaults = 0xf6,
                         kKbdResend = 0xfe, kKbdReset = 0xff;
inline constexpr uint8_t kKbdAck = 0xfa, kKbdBatOk = 0xaa, kKbdId1 = 0xab, kKbdId2 = 0x83;
inline constexpr uint8_t kRamSize = 32;
inline constexpr size_t kKbdQueueSize = 256;
inline constexpr size_t kCtrlQueueSize = 16;
// Set-1 scancodes used by inject_ctrl_alt_del().
inline constexpr uint8_t kScanCtrl = 0x1d, kScanAlt = 0x38, kScanExtended = 0xe0, kScanDelete = 0x53,
                         kScanRelease = 0x80;
}  // namespace i8042

class I8042 final : public Device {
 public:
  I8042(std::string name, IrqLine& irq_line, DeviceEvents& events);
  const char* kind() const noexcept override { return "i8042"; }

  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  vmm::IoHandler& data_port() noexcept { return data_port_; }
  vmm::IoHandler& command_port() noexcept { return command_port_; }

  // Host keyboard input, bytes as the guest reads them. Returns how many were
  // queued; the rest are dropped (queue full, or keyboard scanning disabled by
  // the guest) and counted.
  size_t inject_scancodes(std::span<const uint8_t> bytes);
  // Ctrl down, Alt down, Delete down, Delete up, Alt up, Ctrl up (set 1).
  size_t inject_ctrl_alt_del();

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:

  // All called with mutex_ held. Those that may request a reset return true.
  uint8_t read_data();
  uint8_t status() const;
  bool write_command(uint8_t cmd);
  bool write_data(uint8_t v);
  void keyboard_command(uint8_t v);
  void reply(uint8_t b);         // controller reply
  void kbd_send(uint8_t b);      // keyboard reply (ahead of injected scancodes)
  bool write_output_port(uint8_t v);
  void refill();                 // output buffer <- queues
  void update_irq(bool pulse = false);
  void set_irq(bool level);
  void power_on();

  IrqLine& irq_line_;
  DeviceEvents& events_;
  OffsetPort data_port_{*this, i8042::kDataOffset};
  OffsetPort command_port_{*this, i8042::kCommandOffset};
  mutable std::mutex mutex_;

  uint8_t ram_[i8042::kRamSize] = {};  // ram_[0] is the configuration byte
  uint8_t out_port_ = i8042::kOutPowerOn;
  uint8_t out_byte_ = 0;               // output buffer (last byte stays readable)
  bool obf_ = false;
  bool sys_ = true;                    // status SYS flag
  bool a2_ = false;                    // last write went to the command port
  int pending_cmd_ = -1;               // controller command awaiting its data byte
  int kbd_pending_ = -1;               // keyboard command awaiting its argument
  bool kbd_scanning_ = true;
  uint8_t kbd_leds_ = 0, kbd_scanset_ = 2, kbd_typematic_ = 0, kbd_last_sent_ = 0;
  InlineFifo<uint8_t, i8042::kCtrlQueueSize> ctrl_queue_;  // controller replies: first
  InlineFifo<uint8_t, i8042::kCtrlQueueSize> kbd_reply_;   // keyboard replies: next
  LazyFifo<uint8_t> kbd_queue_{i8042::kKbdQueueSize};      // host scancodes: last
  bool irq_level_ = false;
  uint64_t irqs_ = 0, commands_ = 0, kbd_commands_ = 0, unknown_commands_ = 0, injected_ = 0,
           input_dropped_ = 0, input_discarded_disabled_ = 0, reset_requests_ = 0, data_reads_ = 0,
           aux_dropped_ = 0;
};

}  // namespace apiary::devices
