#include "actors/vcpu_actor.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "actors/thread_reaper.hpp"
#include "proto/apiary/v1/diagnostics.pb.h"
#include "vmm-core/exit.hpp"

namespace apiary::actors {

namespace {

enum class Cmd { hold, release, reset, dump, exit };

const char* mp_state_name(uint32_t s) {
  switch (s) {
    case KVM_MP_STATE_RUNNABLE: return "runnable";
    case KVM_MP_STATE_UNINITIALIZED: return "uninitialized";
    case KVM_MP_STATE_INIT_RECEIVED: return "init_received";
    case KVM_MP_STATE_HALTED: return "halted";
    case KVM_MP_STATE_SIPI_RECEIVED: return "sipi_received";
    default: return "other";
  }
}

std::string serialize_dump(const vmm::VcpuDump& d) {
  v1::VcpuState s;
  s.set_id(d.id);
  auto& r = *s.mutable_registers();
  const auto& g = d.regs;
  r["rax"] = g.rax; r["rbx"] = g.rbx; r["rcx"] = g.rcx; r["rdx"] = g.rdx;
  r["rsi"] = g.rsi; r["rdi"] = g.rdi; r["rsp"] = g.rsp; r["rbp"] = g.rbp;
  r["r8"] = g.r8; r["r9"] = g.r9; r["r10"] = g.r10; r["r11"] = g.r11;
  r["r12"] = g.r12; r["r13"] = g.r13; r["r14"] = g.r14; r["r15"] = g.r15;
  r["rip"] = g.rip; r["rflags"] = g.rflags;
  const auto& sr = d.sregs;
  r["cr0"] = sr.cr0; r["cr2"] = sr.cr2; r["cr3"] = sr.cr3; r["cr4"] = sr.cr4;
  r["efer"] = sr.efer; r["apic_base"] = sr.apic_base;
  auto seg = [&](const char* n, const kvm_segment& k) {
    r[std::string(n) + ".selector"] = k.selector;
    r[std::string(n) + ".base"] = k.base;
    r[std::string(n) + ".limit"] = k.limit;
    r[std::string(n) + ".type"] = k.type;
  };
  seg("cs", sr.cs); seg("ds", sr.ds); seg("es", sr.es); seg("fs", sr.fs);
  seg("gs", sr.gs); seg("ss", sr.ss); seg("tr", sr.tr); seg("ldt", sr.ldt);
  r["gdt.base"] = sr.gdt.base; r["gdt.limit"] = sr.gdt.limit;
  r["idt.base"] = sr.idt.base; r["idt.limit"] = sr.idt.limit;
  s.set_mp_state(d.mp_state);
  s.set_mp_state_name(mp_state_name(d.mp_state));
  return s.SerializeAsString();
}

// Classifies an exit the vCPU cannot handle itself. Empty kind: keep running.
std::pair<std::string, std::string> classify(const vmm::Exit& e, uint32_t id) {
  if (std::holds_alternative<vmm::ExitInterrupted>(e) || std::holds_alternative<vmm::ExitHlt>(e)) return {};
  if (std::holds_alternative<vmm::ExitShutdown>(e)) return {"triple_fault", "vCPU " + std::to_string(id) + ": triple fault"};
  return {"guest_fault", "vCPU " + std::to_string(id) + ": " + vmm::describe(e)};
}

// The dedicated thread of a KVM vCPU. Commands are queued, the vCPU kicked,
// and the thread answers each with a thread_ack message to the actor.
class VcpuThread {
 public:
  VcpuThread(vmm::VcpuBackend& backend, const vmm::BootPlan& plan, caf::actor self, caf::actor owner)
      : backend_(backend), plan_(plan), self_(self.address()), owner_(owner.address()) {
    thread_ = std::thread([this] {
      loop();
      finished_->store(true);
    });
  }
  ~VcpuThread() { stop(); }

  // Tells the thread to leave and hands it to the process's reaper, which
  // joins it off this (CAF worker) thread and then lets go of `keep` (this
  // object and the machine its backend belongs to): thread_reaper.hpp.
  static void retire(const std::shared_ptr<VcpuThread>& t, std::shared_ptr<void> machine, std::string what) {
    {
      std::lock_guard lock(t->mutex_);
      t->stopping_ = true;
    }
    t->cv_.notify_one();
    t->backend_.kick();
    ThreadReaper::Job job;
    job.thread = std::move(t->thread_);
    job.finished = t->finished_;
    job.kick = [b = &t->backend_] { b->kick(); };
    job.keep = std::make_shared<std::pair<std::shared_ptr<VcpuThread>, std::shared_ptr<void>>>(t, std::move(machine));
    job.what = std::move(what);
    ThreadReaper::instance().reap(std::move(job));
  }

  // Queues a command. Every command but a release kicks the vCPU out of
  // guest context; a release finds the thread parked (or already running)
  // and only wakes it: a kick would make its next KVM_RUN return at once.
  // seq 0: no answer wanted.
  void post(Cmd c, uint64_t seq) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back({c, seq});
    }
    cv_.notify_one();
    if (c != Cmd::release) backend_.kick();
  }
  // Idempotent: makes the thread leave and joins it here (bounded by the
  // kick). Only for a thread never handed to retire().
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) {
      backend_.kick();
      thread_.join();
    }
  }

 private:
  // A message to `to` if it still runs (nothing otherwise: its end is its
  // own owner's business).
  template <class... Ts>
  static void tell(const caf::actor_addr& to, Ts&&... xs) {
    if (auto strong = caf::actor_cast<caf::actor>(to)) caf::anon_send(strong, std::forward<Ts>(xs)...);
  }

  void reply(uint64_t seq, std::string payload = {}) {
    if (seq != 0) tell(self_, thread_ack_atom::value, seq, std::move(payload));
  }

  void loop() {
    backend_.bind_thread();
    for (;;) {
      std::optional<std::pair<Cmd, uint64_t>> cmd;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || running_; });
        if (stopping_) break;
        if (!queue_.empty()) {
          cmd = queue_.front();
          queue_.pop_front();
        }
      }
      if (cmd) {
        if (!execute(cmd->first, cmd->second)) break;
        continue;
      }
      vmm::Exit e = backend_.run();
      auto [kind, detail] = classify(e, backend_.id());
      if (kind.empty()) continue;
      {
        std::lock_guard lock(mutex_);
        running_ = false;  // park until told otherwise
      }
      tell(owner_, guest_event_atom::value, kind, backend_.id(), detail);
    }
    backend_.unbind_thread();
  }

  bool execute(Cmd c, uint64_t seq) {
    switch (c) {
      case Cmd::hold: {
        std::lock_guard lock(mutex_);
        running_ = false;
        break;
      }
      case Cmd::release: {
        std::lock_guard lock(mutex_);
        running_ = true;
        break;
      }
      case Cmd::reset:
        try {
          backend_.reset(backend_.id() == 0 ? &plan_ : nullptr);
        } catch (const std::exception& ex) {
          tell(owner_, guest_event_atom::value, std::string("guest_fault"), backend_.id(),
               std::string("vCPU reset failed: ") + ex.what());
        }
        break;
      case Cmd::dump:
        try {
          reply(seq, serialize_dump(backend_.dump()));
        } catch (const std::exception& ex) {
          reply(seq, {});
        }
        return true;
      case Cmd::exit:
        reply(seq);
        return false;
    }
    reply(seq);
    return true;
  }

  vmm::VcpuBackend& backend_;
  const vmm::BootPlan& plan_;
  // Weak: the actor's state holds this object (no cycle), and the thread
  // may outlive both actors (the reaper joins it later).
  caf::actor_addr self_;
  caf::actor_addr owner_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::pair<Cmd, uint64_t>> queue_;
  bool running_ = false;
  bool stopping_ = false;
  std::shared_ptr<std::atomic<bool>> finished_ = std::make_shared<std::atomic<bool>>(false);
  std::thread thread_;
};

struct VcpuActorState {
  std::shared_ptr<devices::Machine> machine;
  vmm::VcpuBackend* backend = nullptr;
  caf::actor owner;
  std::shared_ptr<VcpuThread> thread;  // KVM only
  uint64_t next_seq = 1;
  std::unordered_map<uint64_t, caf::typed_response_promise<ack_atom>> pending_acks;
  std::unordered_map<uint64_t, caf::typed_response_promise<std::string>> pending_dumps;
  // Simulated backend
  bool sim_running = false;
  bool step_scheduled = false;
  bool ignore_kicks = false;  // fault hook: holds are never acknowledged
  bool released = false;              // between release and hold (the guest may run)
  bool pending_triple_fault = false;  // fault hook: the next step is a triple fault
  std::vector<caf::typed_response_promise<ack_atom>> ignored;
  static inline const char* name = "vcpu";
};

using vcpu_pointer = vcpu_actor::stateful_pointer<VcpuActorState>;

void schedule_step(vcpu_pointer self) {
  auto& st = self->state;
  if (st.sim_running && !st.step_scheduled) {
    st.step_scheduled = true;
    self->send(self, step_atom::value);
  }
}

// Runs a command: on the KVM thread (reply later) or inline (simulated).
//
// A release is acknowledged once queued, not once the thread has woken:
// the queue keeps it ordered before any later command, and a resume's last
// phase then waits for no thread wake-up. Waiting for them cost a resume
// up to a scheduler tick per vCPU (seen: 1.8 ms per release phase of a
// 4-vCPU instance on a machine's own, software-emulated /dev/kvm, its APs
// woken behind the spinning BSP; docs/benchmarks.md). A hold
// is still acknowledged by the thread: only it knows the vCPU left guest
// context.
caf::result<ack_atom> control(vcpu_pointer self, Cmd c) {
  auto& st = self->state;
  if (st.thread && c == Cmd::release) {
    st.thread->post(c, 0);
    return ack_atom::value;
  }
  if (st.thread) {
    auto rp = self->make_response_promise<ack_atom>();
    const uint64_t seq = st.next_seq++;
    st.pending_acks.emplace(seq, rp);
    st.thread->post(c, seq);
    return rp;
  }
  switch (c) {
    case Cmd::hold:
      if (st.ignore_kicks) {  // a vCPU that never leaves guest context
        st.ignored.push_back(self->make_response_promise<ack_atom>());
        return st.ignored.back();
      }
      st.sim_running = false;
      st.released = false;
      break;
    case Cmd::release:
      st.sim_running = true;
      st.released = true;
      schedule_step(self);
      break;
    case Cmd::reset:
      st.backend->reset(st.backend->id() == 0 ? &st.machine->boot_plan() : nullptr);
      break;
    default:
      break;
  }
  return ack_atom::value;
}

vcpu_actor::behavior_type vcpu_impl(vcpu_pointer self, std::shared_ptr<devices::Machine> machine, uint32_t index,
                                    caf::actor owner) {
  auto& st = self->state;
  st.machine = machine;
  st.backend = machine->vcpus().at(index).get();
  st.owner = owner;
  if (!machine->simulated())
    st.thread = std::make_shared<VcpuThread>(*st.backend, machine->boot_plan(), caf::actor_cast<caf::actor>(self), owner);
  const std::string what = "vCPU " + std::to_string(index) + " of the instance actor #" +
                           std::to_string(owner ? owner.id() : 0);
  self->attach_functor([thread = st.thread, m = machine, what] {
    // Never leave a thread in KVM_RUN behind, nor wait for it here: the
    // reaper joins it, then releases the machine.
    if (thread)
      VcpuThread::retire(thread, m, what);
  });
  return {
      [=](hold_atom) -> caf::result<ack_atom> { return control(self, Cmd::hold); },
      [=](release_atom) -> caf::result<ack_atom> { return control(self, Cmd::release); },
      [=](reset_atom) -> caf::result<ack_atom> { return control(self, Cmd::reset); },
      [=](exit_atom) -> caf::result<ack_atom> {
        auto& s = self->state;
        if (s.thread) {
          auto r = control(self, Cmd::exit);
          return r;
        }
        s.sim_running = false;
        return ack_atom::value;
      },
      [=](dump_atom) -> caf::result<std::string> {
        auto& s = self->state;
        if (s.thread) {
          auto rp = self->make_response_promise<std::string>();
          const uint64_t seq = s.next_seq++;
          s.pending_dumps.emplace(seq, rp);
          s.thread->post(Cmd::dump, seq);
          return rp;
        }
        return serialize_dump(s.backend->dump());
      },
      [=](fault_hook_atom, const std::string& hook) -> caf::result<ack_atom> {
        auto& s = self->state;
        if (hook == "ignore_kicks") s.ignore_kicks = true;
        if (hook == "triple_fault" && s.backend && !s.thread) {
          // Simulation: the guest triple-faults at its next step (now, if it
          // may run; otherwise when it is released).
          s.pending_triple_fault = true;
          if (s.released) {
            s.sim_running = true;
            schedule_step(self);
          }
        }
        return ack_atom::value;
      },
      [=](step_atom) {
        auto& s = self->state;
        s.step_scheduled = false;
        if (!s.sim_running) return;
        vmm::Exit e = s.pending_triple_fault ? vmm::Exit{vmm::ExitShutdown{}} : s.backend->run();
        s.pending_triple_fault = false;
        auto [kind, detail] = classify(e, s.backend->id());
        if (!kind.empty()) {
          s.sim_running = false;
          caf::anon_send(s.owner, guest_event_atom::value, kind, s.backend->id(), detail);
          return;
        }
        if (std::holds_alternative<vmm::ExitHlt>(e)) {
          s.sim_running = false;  // idle: nothing more to simulate until released again
          return;
        }
        schedule_step(self);
      },
      [=](thread_ack_atom, uint64_t seq, std::string& payload) {
        auto& s = self->state;
        if (auto it = s.pending_acks.find(seq); it != s.pending_acks.end()) {
          it->second.deliver(ack_atom::value);
          s.pending_acks.erase(it);
        } else if (auto jt = s.pending_dumps.find(seq); jt != s.pending_dumps.end()) {
          jt->second.deliver(std::move(payload));
          s.pending_dumps.erase(jt);
        }
      },
  };
}

}  // namespace

vcpu_actor spawn_vcpu(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine, uint32_t index,
                      caf::actor owner) {
  return sys.spawn(vcpu_impl, std::move(machine), index, std::move(owner));
}

}  // namespace apiary::actors
