// i8042 controller + PS/2 keyboard: command decoding, the output-buffer
// queues and the IRQ 1 edge logic. See i8042.hpp for the model.
#include "devices/i8042.hpp"

#include "vmm-core/layout.hpp"

namespace apiary::devices {

using namespace i8042;

// 0xFE is the one pulse command guests use to reset; the general rule below
// (0xF0-0xFF pulse every output line whose bit is 0) must cover it.
static_assert((layout::kI8042ResetCommand & 0xf0) == kCmdPulseFirst &&
              !(layout::kI8042ResetCommand & kOutResetDeasserted));
static_assert(layout::kI8042Command - layout::kI8042Data == kCommandOffset);

namespace {
inline constexpr uint8_t kTypematicDefault = 0x2b;  // 10.9 characters/s, 500 ms delay
}

I8042::I8042(std::string name, IrqLine& irq_line, DeviceEvents& events)
    : Device(std::move(name)), irq_line_(irq_line), events_(events) {
  power_on();
}

void I8042::power_on() {
  for (auto& b : ram_) b = 0;
  ram_[0] = kCfgPowerOn;
  out_port_ = kOutPowerOn;
  out_byte_ = 0;
  obf_ = false;
  sys_ = true;  // firmware POST is considered done: the guest boots warm
  a2_ = false;
  pending_cmd_ = -1;
  kbd_pending_ = -1;
  kbd_scanning_ = true;
  kbd_leds_ = 0;
  kbd_scanset_ = 2;
  kbd_typematic_ = kTypematicDefault;
  kbd_last_sent_ = 0;
  ctrl_queue_.clear();
  kbd_reply_.clear();
  kbd_queue_.clear();
}

void I8042::reset() {
  std::lock_guard lock(mutex_);
  power_on();
  update_irq();
}

uint8_t I8042::status() const {
  uint8_t s = kStatusUnlocked;
  if (obf_) s |= kStatusObf;
  if (sys_) s |= kStatusSys;
  if (a2_) s |= kStatusA2;
  return s;
}

void I8042::set_irq(bool level) {
  irq_level_ = level;
  if (level) ++irqs_;
  irq_line_.set_level(layout::kI8042Irq, level);
}

void I8042::update_irq(bool pulse) {
  const bool level = obf_ && (ram_[0] & kCfgKbdInt);
  if (level && irq_level_ && pulse) {
    // A new byte replaced the one just read: the line would have dropped
    // between the two on real hardware, and an edge-triggered PIC needs it.
    set_irq(false);
    set_irq(true);
    return;
  }
  if (level != irq_level_) set_irq(level);
}

void I8042::refill() {
  if (obf_) return;
  if (!ctrl_queue_.empty()) {
    out_byte_ = ctrl_queue_.front();
    ctrl_queue_.pop_front();
    obf_ = true;
    return;
  }
  if (ram_[0] & kCfgKbdDisable) return;  // the keyboard's clock is held low: it waits
  auto take = [this](auto& q) {
    out_byte_ = q.front();
    q.pop_front();
  };
  if (!kbd_reply_.empty()) take(kbd_reply_);
  else if (!kbd_queue_.empty()) take(kbd_queue_);
  else return;
  kbd_last_sent_ = out_byte_;
  obf_ = true;
}

void I8042::reply(uint8_t b) {
  if (ctrl_queue_.size() < kCtrlQueueSize) ctrl_queue_.push_back(b);
}

void I8042::kbd_send(uint8_t b) {
  if (kbd_reply_.size() < kCtrlQueueSize) kbd_reply_.push_back(b);
}

uint8_t I8042::read_data() {
  ++data_reads_;
  const uint8_t b = out_byte_;
  if (obf_) {
    obf_ = false;
    refill();
    update_irq(/*pulse=*/true);
  }
  return b;
}

bool I8042::write_output_port(uint8_t v) {
  // Bit 0 is the CPU reset line, active low: writing 0 pulses it. The line
  // goes back high at once (the machine resets, or the owner ignores it).
  out_port_ = static_cast<uint8_t>((v & ~kOutKbdObf) | kOutResetDeasserted);
  if (v & kOutResetDeasserted) return false;
  ++reset_requests_;
  return true;
}

bool I8042::write_command(uint8_t cmd) {
  a2_ = true;
  pending_cmd_ = -1;  // a new command abandons one still waiting for data
  ++commands_;
  bool reset = false;
  if (cmd >= kCmdReadRamFirst && cmd <= kCmdReadRamLast) {
    reply(ram_[cmd - kCmdReadRamFirst]);
  } else if (cmd >= kCmdWriteRamFirst && cmd <= kCmdWriteRamLast) {
    pending_cmd_ = cmd;
  } else if (cmd >= kCmdPulseFirst) {
    if (!(cmd & kOutResetDeasserted)) {
      ++reset_requests_;
      reset = true;
    }
  } else {
    switch (cmd) {
      case kCmdSelfTest:
        sys_ = true;
        reply(kSelfTestOk);
        break;
      case kCmdInterfaceTest:
        reply(kInterfaceTestOk);
        break;
      case kCmdDisableKbd:
        ram_[0] |= kCfgKbdDisable;
        break;
      case kCmdEnableKbd:
        ram_[0] &= static_cast<uint8_t>(~kCfgKbdDisable);
        break;
      case kCmdReadOutPort:
        reply(static_cast<uint8_t>(out_port_ | (obf_ ? kOutKbdObf : 0)));
        break;
      case kCmdWriteOutPort:
      case kCmdWriteKbdBuffer:
      case kCmdWriteAuxBuffer:
      case kCmdWriteAux:
        pending_cmd_ = cmd;
        break;
      case kCmdAuxTest:
        reply(kAuxTestClockStuckHigh);
        break;
      case kCmdDisableAux:
      case kCmdEnableAux:
        break;  // single channel: nothing to switch
      case kCmdDisableA20:
        out_port_ &= static_cast<uint8_t>(~kOutA20);
        break;
      case kCmdEnableA20:
        out_port_ |= kOutA20;
        break;
      default:
        ++unknown_commands_;
        break;
    }
  }
  refill();
  update_irq();
  return reset;
}

bool I8042::write_data(uint8_t v) {
  a2_ = false;
  bool reset = false;
  if (pending_cmd_ >= 0) {
    const auto cmd = static_cast<uint8_t>(pending_cmd_);
    pending_cmd_ = -1;
    if (cmd >= kCmdWriteRamFirst && cmd <= kCmdWriteRamLast) {
      const unsigned index = cmd - kCmdWriteRamFirst;
      if (index == 0) {
        ram_[0] = v & 0x7f;  // bit 7 of the configuration byte is reserved (0)
        sys_ = v & kCfgSys;
      } else {
        ram_[index] = v;
      }
    } else if (cmd == kCmdWriteOutPort) {
      reset = write_output_port(v);
    } else if (cmd == kCmdWriteKbdBuffer) {
      reply(v);  // appears in the output buffer as if the keyboard sent it
    } else if (cmd == kCmdWriteAuxBuffer) {
      reply(v);  // no aux channel: comes back without AUXDATA
    } else if (cmd == kCmdWriteAux) {
      ++aux_dropped_;  // no mouse to send it to
    }
  } else {
    keyboard_command(v);
  }
  refill();
  update_irq();
  return reset;
}

void I8042::keyboard_command(uint8_t v) {
  ++kbd_commands_;
  if (kbd_pending_ >= 0) {  // the argument of ED / F0 / F3
    const auto cmd = static_cast<uint8_t>(kbd_pending_);
    kbd_pending_ = -1;
    kbd_send(kKbdAck);
    if (cmd == kKbdSetLeds) {
      kbd_leds_ = v & 0x07;
    } else if (cmd == kKbdScancodeSet) {
      if (v == 0) kbd_send(kbd_scanset_);
      else if (v <= 3) kbd_scanset_ = v;
    } else if (cmd == kKbdTypematic) {
      kbd_typematic_ = v & 0x7f;
    }
    return;
  }
  auto defaults = [this] {
    kbd_leds_ = 0;
    kbd_scanset_ = 2;
    kbd_typematic_ = kTypematicDefault;
    kbd_queue_.clear();
  };
  switch (v) {
    case kKbdSetLeds:
    case kKbdScancodeSet:
    case kKbdTypematic:
      kbd_send(kKbdAck);
      kbd_pending_ = v;
      break;
    case kKbdEcho:
      kbd_send(kKbdEcho);
      break;
    case kKbdIdentify:
      kbd_send(kKbdAck);
      kbd_send(kKbdId1);
      kbd_send(kKbdId2);
      break;
    case kKbdEnable:
      kbd_scanning_ = true;
      kbd_send(kKbdAck);
      break;
    case kKbdDisable:
      defaults();
      kbd_scanning_ = false;
      kbd_send(kKbdAck);
      break;
    case kKbdDefaults:
      defaults();
      kbd_send(kKbdAck);
      break;
    case kKbdResend:
      kbd_send(kbd_last_sent_);
      break;
    case kKbdReset:
      defaults();
      kbd_reply_.clear();
      kbd_scanning_ = true;
      kbd_send(kKbdAck);
      kbd_send(kKbdBatOk);
      break;
    default:
      ++unknown_commands_;
      kbd_send(kKbdAck);
      break;
  }
}

size_t I8042::inject_scancodes(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  size_t accepted = 0;
  for (uint8_t b : bytes) {
    if (!kbd_scanning_) {
      ++input_discarded_disabled_;
    } else if (kbd_queue_.size() >= kKbdQueueSize) {
      ++input_dropped_;
    } else {
      kbd_queue_.push_back(b);
      ++injected_;
      ++accepted;
    }
  }
  refill();
  update_irq();
  return accepted;
}

size_t I8042::inject_ctrl_alt_del() {
  static constexpr uint8_t seq[] = {
      kScanCtrl,
      kScanAlt,
      kScanExtended,
      kScanDelete,
      kScanExtended,
      static_cast<uint8_t>(kScanDelete | kScanRelease),
      static_cast<uint8_t>(kScanAlt | kScanRelease),
      static_cast<uint8_t>(kScanCtrl | kScanRelease),
  };
  return inject_scancodes(seq);
}

uint64_t I8042::io_read(uint64_t offset, unsigned size) {
  uint64_t v = vmm::all_ones(size);
  std::lock_guard lock(mutex_);
  // Only the first byte is ours; the rest of a wide access belongs to the
  // neighbouring ports, which read as all-ones here.
  if (offset == kDataOffset) v = (v & ~0xffull) | read_data();
  else if (offset == kCommandOffset) v = (v & ~0xffull) | status();
  return v;
}

void I8042::io_write(uint64_t offset, unsigned, uint64_t value) {
  bool reset = false;
  {
    std::lock_guard lock(mutex_);
    const auto b = static_cast<uint8_t>(value);
    if (offset == kDataOffset) reset = write_data(b);
    else if (offset == kCommandOffset) reset = write_command(b);
  }
  // Outside the lock: the owner may react by resetting this device.
  if (reset) events_.reset_requested(name());
}

v1::DeviceState I8042::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  auto& r = *s.mutable_registers();
  r["status"] = status();
  r["config"] = ram_[0];
  r["output_port"] = out_port_;
  r["output_buffer"] = out_byte_;
  r["pending_command"] = pending_cmd_ < 0 ? 0 : static_cast<uint64_t>(pending_cmd_);
  r["kbd_pending_command"] = kbd_pending_ < 0 ? 0 : static_cast<uint64_t>(kbd_pending_);
  r["kbd_leds"] = kbd_leds_;
  r["kbd_scancode_set"] = kbd_scanset_;
  r["kbd_typematic"] = kbd_typematic_;
  r["kbd_scanning"] = kbd_scanning_;
  r["output_full"] = obf_;
  r["sys_flag"] = sys_;
  r["a2"] = a2_;
  r["pending_command_set"] = pending_cmd_ >= 0;
  r["kbd_pending_command_set"] = kbd_pending_ >= 0;
  r["kbd_last_sent"] = kbd_last_sent_;
  OpaqueWriter w;  // controller RAM, then the three output queues in priority order
  w.bytes(ram_);
  w.bytes(ctrl_queue_);
  w.bytes(kbd_reply_);
  w.bytes(kbd_queue_);
  s.set_opaque(w.take());
  auto& c = *s.mutable_counters();
  c["irqs"] = irqs_;
  c["irq_level"] = irq_level_;
  c["commands"] = commands_;
  c["kbd_commands"] = kbd_commands_;
  c["unknown_commands"] = unknown_commands_;
  c["data_reads"] = data_reads_;
  c["injected"] = injected_;
  c["input_dropped"] = input_dropped_;
  c["input_discarded_disabled"] = input_discarded_disabled_;
  c["kbd_queue"] = kbd_queue_.size() + kbd_reply_.size();
  c["controller_queue"] = ctrl_queue_.size();
  c["reset_requests"] = reset_requests_;
  c["aux_dropped"] = aux_dropped_;
  return s;
}

void I8042::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  OpaqueReader o(r);
  const std::string ram = o.bytes(i8042::kRamSize), ctrl = o.bytes(ctrl_queue_.capacity()),
                    reply = o.bytes(kbd_reply_.capacity()), kbd = o.bytes(kbd_queue_.capacity());
  o.expect_end();
  if (ram.size() != i8042::kRamSize) r.fail("controller RAM has " + std::to_string(ram.size()) + " bytes");
  std::lock_guard lock(mutex_);
  std::copy(ram.begin(), ram.end(), ram_);
  out_port_ = r.reg_as<uint8_t>("output_port");
  out_byte_ = r.reg_as<uint8_t>("output_buffer");
  obf_ = r.flag("output_full");
  sys_ = r.flag("sys_flag");
  a2_ = r.flag("a2");
  pending_cmd_ = r.flag("pending_command_set") ? r.reg_as<uint8_t>("pending_command") : -1;
  kbd_pending_ = r.flag("kbd_pending_command_set") ? r.reg_as<uint8_t>("kbd_pending_command") : -1;
  kbd_scanning_ = r.flag("kbd_scanning");
  kbd_leds_ = r.reg_as<uint8_t>("kbd_leds");
  kbd_scanset_ = r.reg_as<uint8_t>("kbd_scancode_set");
  kbd_typematic_ = r.reg_as<uint8_t>("kbd_typematic");
  kbd_last_sent_ = r.reg_as<uint8_t>("kbd_last_sent");
  ctrl_queue_.assign(ctrl.begin(), ctrl.end());
  kbd_reply_.assign(reply.begin(), reply.end());
  kbd_queue_.assign(kbd.begin(), kbd.end());
  update_irq();
}

}  // namespace apiary::devices
