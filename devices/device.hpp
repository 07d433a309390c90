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
  virtual v1::DeviceState export_state() const = 0;
  DeviceRunState run_state() const noexcept { return state_; }

 protected:
  // A DeviceState with name, kind and run state filled in.
  v1::DeviceState base_state() const;

 private:
  std::string name_;
  DeviceRunState state_ = DeviceRunState::created;
};

}  // namespace apiary::devices
