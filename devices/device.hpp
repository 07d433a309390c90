// What every emulated device is: an I/O handler on the bus (called inline on
// vCPU threads) plus a Lifecycle (called by its device actor on the control
// plane), and the one-way channels through which it reports to the machine.
//
// Devices never call into the instance or an actor. Interrupts leave through
// an IrqLine, and machine-level events (reset/poweroff requests, debug exit,
// progress codes) through a DeviceEvents sink. The owner decides what they
// mean (e.g. a reset request becomes target state Reboot).
#pragma once

#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>

#include "proto/apiary/v1/device.pb.h"
#include "vmm-core/bus.hpp"

namespace apiary::devices {

// One input line of the interrupt controller (a GSI).
class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void set_level(uint32_t gsi, bool level) = 0;
};

// Machine-level events raised by devices. Called on the vCPU thread that did
// the I/O, so implementations must be quick and thread-safe (set a flag,
// kick vCPUs, post a message).
class DeviceEvents {
 public:
  virtual ~DeviceEvents() = default;
  virtual void reset_requested(std::string_view device) = 0;
  virtual void poweroff_requested(std::string_view device) = 0;
  virtual void debug_exit(std::string_view device, int status) = 0;
  virtual void progress(std::string_view device, uint8_t code) = 0;
};

// Device lifecycle states, in the order a well-behaved owner drives them.
enum class DeviceRunState { created, running, paused, halted };
const char* to_string(DeviceRunState s) noexcept;

class Device : public vmm::IoHandler {
 public:
  explicit Device(std::string name) : name_(std::move(name)) {}
  const std::string& name() const noexcept { return name_; }
  virtual const char* kind() const noexcept = 0;

  // Lifecycle. pause() returns only when in-flight work is finished or
  // parked; reset() returns the device to its power-on state.
  virtual void start() { state_ = DeviceRunState::running; }
  virtual void pause() { state_ = DeviceRunState::paused; }
  virtual void resume() { state_ = DeviceRunState::running; }
  virtual void reset() = 0;
  virtual void halt() { state_ = DeviceRunState::halted; }
  // Whether a lifecycle call may wait for something outside the device's
  // own registers: in-flight I/O, a worker thread, another thread's lock
  // held across I/O. The owner runs such a device's lifecycle where a stuck
  // call cannot hold anything else up and is named by a deadline (its own
  // actor); a device that only flips register state under a short lock may
  // be started and halted by the owner directly (actors/instance_actor.hpp,
  // "Device actors").
  virtual bool lifecycle_may_wait() const noexcept { return false; }
  virtual v1::DeviceState export_state() const = 0;
  // Puts back the guest-visible state export_state() wrote (a snapshot
  // being restored), on a device that is not running: nothing else touches
  // it meanwhile. Counters are this process's statistics and start afresh.
  // A state that is missing a field or holds an impossible value throws
  // Errc::snapshot_corrupt naming the device and the field, and may leave
  // the device half-restored (the machine being built is then discarded).
  virtual void import_state(const v1::DeviceState& state) = 0;
  DeviceRunState run_state() const noexcept { return state_; }

 protected:
  // A DeviceState with name, kind and run state filled in.
  v1::DeviceState base_state() const;

 private:
  std::string name_;
  DeviceRunState state_ = DeviceRunState::created;
};

// Reads back a DeviceState for import_state(): every accessor names the
// device and field in its Errc::snapshot_corrupt.
class StateReader {
 public:
  // Checks that the state is this device's (name and kind).
  StateReader(const Device& device, const v1::DeviceState& state);
  // The register `name`, refused when missing or above `max`.
  uint64_t reg(const std::string& name, uint64_t max = ~0ull) const;
  template <class T>
  T reg_as(const std::string& name) const {
    return static_cast<T>(reg(name, static_cast<uint64_t>(std::numeric_limits<T>::max())));
  }
  bool flag(const std::string& name) const { return reg(name, 1) != 0; }
  const std::string& opaque() const noexcept { return state_.opaque(); }
  [[noreturn]] void fail(const std::string& what) const;

 private:
  const Device& device_;
  const v1::DeviceState& state_;
};

// A byte cursor over DeviceState.opaque, for device-private layouts
// (little-endian integers, length-prefixed byte strings).
class OpaqueReader {
 public:
  OpaqueReader(const StateReader& r) : r_(r), data_(r.opaque()) {}
  uint8_t u8();
  uint16_t u16();
  uint32_t u32();
  std::string bytes(size_t max);  // u32 length, then the bytes
  void expect_end() const;

 private:
  const StateReader& r_;
  std::string_view data_;
  size_t pos_ = 0;
};
class OpaqueWriter {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { u8(static_cast<uint8_t>(v)); u8(static_cast<uint8_t>(v >> 8)); }
  void u32(uint32_t v) { u16(static_cast<uint16_t>(v)); u16(static_cast<uint16_t>(v >> 16)); }
  template <class Range>
  void bytes(const Range& r) {
    u32(static_cast<uint32_t>(std::size(r)));
    for (auto b : r) u8(static_cast<uint8_t>(b));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace apiary::devices
