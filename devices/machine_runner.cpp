#include "devices/machine_runner.hpp"

#include <cstdio>
#include <thread>
#include <vector>

namespace apiary::devices {

const char* to_string(RunOutcome::Kind k) noexcept {
  switch (k) {
    case RunOutcome::Kind::debug_exit: return "debug_exit";
    case RunOutcome::Kind::poweroff: return "poweroff";
    case RunOutcome::Kind::reset: return "reset";
    case RunOutcome::Kind::triple_fault: return "triple_fault";
    case RunOutcome::Kind::guest_fault: return "guest_fault";
    case RunOutcome::Kind::halted: return "halted";
    case RunOutcome::Kind::stopped: return "stopped";
    case RunOutcome::Kind::timeout: return "timeout";
  }
  return "unknown";
}

MachineRunner::MachineRunner(Machine& m) : machine_(m) {
  machine_.set_event_handler([this](const MachineEvent& e) {
    if (auto* d = std::get_if<EventDebugExit>(&e)) {
      finish({RunOutcome::Kind::debug_exit, d->status, "debug exit", 0});
    } else if (auto* r = std::get_if<EventResetRequest>(&e)) {
      finish({RunOutcome::Kind::reset, 0, "reset requested by " + r->device, 0});
    } else if (auto* p = std::get_if<EventPoweroffRequest>(&e)) {
      finish({RunOutcome::Kind::poweroff, 0, "poweroff requested by " + p->device, 0});
    }
  });
}

MachineRunner::~MachineRunner() { machine_.set_event_handler(nullptr); }

void MachineRunner::finish(RunOutcome outcome) {
  {
    std::lock_guard lock(mutex_);
    if (outcome_) return;
    outcome_ = std::move(outcome);
    stopping_ = true;
  }
  for (auto& v : machine_.vcpus()) v->kick();
  done_cv_.notify_all();
}

void MachineRunner::stop() { finish({RunOutcome::Kind::stopped, 0, "stopped by the host", 0}); }

void MachineRunner::vcpu_thread(vmm::VcpuBackend& v) {
  v.bind_thread();
  while (!stopping_) {
    vmm::Exit e = v.run();
    if (std::holds_alternative<vmm::ExitInterrupted>(e)) continue;
    if (std::holds_alternative<vmm::ExitShutdown>(e)) {
      finish({RunOutcome::Kind::triple_fault, 0, "triple fault", v.id()});
    } else if (std::holds_alternative<vmm::ExitHlt>(e)) {
      // Only seen without an in-kernel irqchip (the simulated backend): an
      // idle vCPU. The machine is halted when all of them are.
      std::unique_lock lock(mutex_);
      if (++halted_ == machine_.vcpus().size()) {
        lock.unlock();
        finish({RunOutcome::Kind::halted, 0, "all vCPUs halted", v.id()});
      }
      break;
    } else if (auto* se = std::get_if<vmm::ExitSystemEvent>(&e)) {
      finish({se->type == KVM_SYSTEM_EVENT_RESET ? RunOutcome::Kind::reset : RunOutcome::Kind::poweroff, 0,
              vmm::describe(e), v.id()});
    } else {
      finish({RunOutcome::Kind::guest_fault, 0, "vCPU " + std::to_string(v.id()) + ": " + vmm::describe(e),
              v.id()});
    }
  }
  v.unbind_thread();
}

RunOutcome MachineRunner::run(std::optional<std::chrono::milliseconds> timeout) {
  {
    std::lock_guard lock(mutex_);
    outcome_.reset();
    stopping_ = false;
    halted_ = 0;
  }
  std::vector<std::thread> threads;
  threads.reserve(machine_.vcpus().size());
  for (auto& v : machine_.vcpus()) threads.emplace_back([this, &v] { vcpu_thread(*v); });
  {
    std::unique_lock lock(mutex_);
    auto done = [this] { return outcome_.has_value(); };
    if (timeout) {
      if (!done_cv_.wait_for(lock, *timeout, done)) {
        lock.unlock();
        finish({RunOutcome::Kind::timeout, 0, "deadline of " + std::to_string(timeout->count()) + " ms passed", 0});
      }
    } else {
      done_cv_.wait(lock, done);
    }
  }
  // finish() set stopping_ before kicking, and a kick sets immediate_exit, so
  // a vCPU between its stopping_ check and KVM_RUN still leaves at once.
  for (auto& t : threads) t.join();
  std::lock_guard lock(mutex_);
  // A deadline says where the guest was: each vCPU's position and counts,
  // read now that no thread is inside KVM_RUN.
  if (outcome_->kind == RunOutcome::Kind::timeout) {
    for (auto& v : machine_.vcpus()) {
      char where[160];
      vmm::VcpuDump d;
      try {
        d = v->dump();
      } catch (const std::exception&) {
        d.id = v->id();  // registers unreadable: the counts still say something
      }
      const vmm::VcpuCounters c = v->counters();
      std::snprintf(where, sizeof where, "; vCPU %u: rip=%#llx rflags=%#llx mp_state=%u runs=%llu pio=%llu mmio=%llu",
                    d.id, static_cast<unsigned long long>(d.regs.rip), static_cast<unsigned long long>(d.regs.rflags),
                    d.mp_state, static_cast<unsigned long long>(c.runs), static_cast<unsigned long long>(c.pio_exits),
                    static_cast<unsigned long long>(c.mmio_exits));
      outcome_->detail += where;
    }
  }
  return *outcome_;
}

}  // namespace apiary::devices
