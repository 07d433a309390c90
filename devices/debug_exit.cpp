#include "devices/debug_exit.hpp"

#include "vmm-core/layout.hpp"

namespace apiary::devices {

void DebugExit::io_write(uint64_t offset, unsigned, uint64_t value) {
  if (offset != 0) return;  // only the first port of the range ends the VM
  const int status = layout::debug_exit_status(static_cast<uint32_t>(value));
  last_status_ = status;
  events_.debug_exit(name(), status);
}

v1::DeviceState DebugExit::export_state() const {
  v1::DeviceState s = base_state();
  const int st = last_status_.load();
  if (st >= 0) (*s.mutable_registers())["last_status"] = static_cast<uint64_t>(st);
  return s;
}

void DebugExit::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  last_status_ = state.registers().count("last_status") ? static_cast<int>(r.reg("last_status", 0x7fffffff)) : -1;
}

}  // namespace apiary::devices
