// What a fuzzed device reports to: an interrupt line and machine events that
// go nowhere (the fuzzers look for crashes, not for what a device signals).
#pragma once

#include <cstdint>
#include <string_view>

#include "devices/device.hpp"

namespace apiary::fuzz {

struct NullIrq final : devices::IrqLine {
  void set_level(uint32_t, bool) override {}
};
struct NullEvents final : devices::DeviceEvents {
  void reset_requested(std::string_view) override {}
  void poweroff_requested(std::string_view) override {}
  void debug_exit(std::string_view, int) override {}
  void progress(std::string_view, uint8_t) override {}
};

}  // namespace apiary::fuzz
