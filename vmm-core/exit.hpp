// VM exits as a closed set of value types.
//
// decode_exit() is a pure function of the kvm_run page, so the decoding is
// unit-tested without /dev/kvm. PIO and MMIO exits are normally consumed
// inline by the vCPU loop (see vcpu.hpp); the rest travel up to the owner
// (the vCPU actor), which decides what each means for the instance.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <variant>

namespace apiary::vmm {

struct ExitPio {
  uint16_t port;
  uint8_t size;      // 1, 2 or 4
  bool write;
  uint32_t count;    // > 1 for rep ins/outs
  uint64_t data_offset;  // into the kvm_run page
};
struct ExitMmio {
  uint64_t addr;
  uint8_t len;       // 1..8
  bool write;
};
struct ExitHlt {};
struct ExitShutdown {};     // triple fault
struct ExitInterrupted {};  // kicked (KVM_RUN returned EINTR)
struct ExitInternalError {  // e.g. emulation failure of an unsupported instruction
  uint32_t suberror;
  uint32_t ndata;
  uint64_t data[4];
};
struct ExitFailEntry {
  uint64_t reason;
};
struct ExitSystemEvent {
  uint32_t type;  // KVM_SYSTEM_EVENT_*
};
struct ExitUnknown {
  uint32_t reason;
};
struct ExitRunFailed {  // KVM_RUN returned an errno other than EINTR
  int err;
};

using Exit = std::variant<ExitPio, ExitMmio, ExitHlt, ExitShutdown, ExitInterrupted, ExitInternalError,
                          ExitFailEntry, ExitSystemEvent, ExitUnknown, ExitRunFailed>;

Exit decode_exit(const kvm_run& run) noexcept;
// One line for logs and diagnostics, e.g. "internal error (suberror 1: emulation failure)".
std::string describe(const Exit& exit);
// Stable short name of the exit kind ("pio", "hlt", "shutdown", ...).
const char* exit_name(const Exit& exit) noexcept;

}  // namespace apiary::vmm
