#include "vmm-core/exit.hpp"

#include <cstring>

namespace apiary::vmm {

Exit decode_exit(const kvm_run& run) noexcept {
  switch (run.exit_reason) {
    case KVM_EXIT_IO:
      return ExitPio{run.io.port, run.io.size, run.io.direction == KVM_EXIT_IO_OUT, run.io.count,
                     run.io.data_offset};
    case KVM_EXIT_MMIO:
      return ExitMmio{run.mmio.phys_addr, static_cast<uint8_t>(run.mmio.len), run.mmio.is_write != 0};
    case KVM_EXIT_HLT:
      return ExitHlt{};
    case KVM_EXIT_SHUTDOWN:
      return ExitShutdown{};
    case KVM_EXIT_INTR:
      return ExitInterrupted{};
    case KVM_EXIT_INTERNAL_ERROR: {
      ExitInternalError e{run.internal.suberror, run.internal.ndata, {}};
      for (uint32_t i = 0; i < run.internal.ndata && i < 4; ++i) e.data[i] = run.internal.data[i];
      return e;
    }
    case KVM_EXIT_FAIL_ENTRY:
      return ExitFailEntry{run.fail_entry.hardware_entry_failure_reason};
    case KVM_EXIT_SYSTEM_EVENT:
      return ExitSystemEvent{run.system_event.type};
    default:
      return ExitUnknown{run.exit_reason};
  }
}

const char* exit_name(const Exit& exit) noexcept {
  static constexpr const char* names[] = {"pio",          "mmio",       "hlt",          "shutdown",
                                          "interrupted",  "internal_error", "fail_entry", "system_event",
                                          "unknown",      "run_failed"};
  static_assert(std::size(names) == std::variant_size_v<Exit>);
  return names[exit.index()];
}

std::string describe(const Exit& exit) {
  char buf[160];
  if (auto* p = std::get_if<ExitPio>(&exit)) {
    std::snprintf(buf, sizeof buf, "port I/O %s port %#x size %u count %u", p->write ? "out" : "in", p->port,
                  p->size, p->count);
  } else if (auto* m = std::get_if<ExitMmio>(&exit)) {
    std::snprintf(buf, sizeof buf, "MMIO %s %#llx len %u", m->write ? "write" : "read",
                  static_cast<unsigned long long>(m->addr), m->len);
  } else if (auto* ie = std::get_if<ExitInternalError>(&exit)) {
    const char* what = ie->suberror == KVM_INTERNAL_ERROR_EMULATION ? "emulation failure"
                       : ie->suberror == KVM_INTERNAL_ERROR_SIMUL_EX ? "exception while delivering exception"
                       : ie->suberror == KVM_INTERNAL_ERROR_DELIVERY_EV ? "event delivery failure"
                                                                          : "internal error";
    std::snprintf(buf, sizeof buf, "internal error (suberror %u: %s)", ie->suberror, what);
  } else if (auto* fe = std::get_if<ExitFailEntry>(&exit)) {
    std::snprintf(buf, sizeof buf, "VM entry failed (hardware reason %#llx)",
                  static_cast<unsigned long long>(fe->reason));
  } else if (auto* se = std::get_if<ExitSystemEvent>(&exit)) {
    std::snprintf(buf, sizeof buf, "system event %u", se->type);
  } else if (auto* u = std::get_if<ExitUnknown>(&exit)) {
    std::snprintf(buf, sizeof buf, "unknown exit reason %u", u->reason);
  } else if (auto* rf = std::get_if<ExitRunFailed>(&exit)) {
    std::snprintf(buf, sizeof buf, "KVM_RUN failed: %s", std::strerror(rf->err));
  } else {
    return exit_name(exit);
  }
  return buf;
}

}  // namespace apiary::vmm
