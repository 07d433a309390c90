// smp: brings up every application processor the way an OS does and shows
// each one running C++ code: the BSP copies the real-mode trampoline
// (trampoline.S) to layout::kApTrampoline, hands it its CR3 and GDT,
// enables its local APIC and broadcasts INIT, then STARTUP twice through
// the xAPIC ICR. Each AP climbs to long mode, prints "AP <id> online" under
// a spinlock, bumps a counter and halts. The BSP waits (bounded) for
// vcpus - 1 APs, then prints "all <N> CPUs online" and debug-exits 0; on
// timeout "smp: only X of Y APs came up" and debug-exit 1.
//
// Why broadcast ("all excluding self") rather than one AP at a time: it
// needs no knowledge of the APs' APIC ids and starts them in parallel; the
// trampoline hands out stacks with an atomic counter.
#include "guest/lib/boot_info.hpp"
#include "guest/lib/io.hpp"
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "guest/lib/string.hpp"
#include "vmm-core/layout.hpp"

extern "C" {
extern const char ap_trampoline_start[];
extern const char ap_trampoline_end[];
extern const char ap_boot_cr3[];
extern const char ap_boot_gdtr[];
[[noreturn]] void ap_main();
}

namespace apiary::guestlib {

namespace {

// xAPIC registers (MMIO offsets from layout::kLapicBase) and ICR fields.
constexpr uint64_t kLapicSvr = 0x0f0;
constexpr uint64_t kLapicIcrLow = 0x300;
constexpr uint64_t kLapicIcrHigh = 0x310;
constexpr uint32_t kSvrEnable = 1u << 8;
constexpr uint32_t kSvrSpuriousVector = 0xff;
constexpr uint32_t kIcrInit = 5u << 8;
constexpr uint32_t kIcrStartup = 6u << 8;
constexpr uint32_t kIcrDeliveryPending = 1u << 12;
constexpr uint32_t kIcrLevelAssert = 1u << 14;
constexpr uint32_t kIcrAllExcludingSelf = 3u << 18;

// Loop bounds, in iterations. The emulator here runs ~0.6M instructions/s
// (a pause loop iteration ~8 us); 64 APs come up in ~0.1 s.
constexpr uint32_t kIcrPolls = 10000;
constexpr uint32_t kInitDelay = 10000;          // the "10 ms" after INIT (~80 ms here)
constexpr uint32_t kStartupDelay = 2000;        // the "200 us" after each STARTUP
constexpr uint64_t kWaitIterations = 1000000;   // for all APs: ~8 s here

struct [[gnu::packed]] Gdtr {
  uint16_t limit;
  uint64_t base;
};

uint32_t print_lock;     // 0 free, 1 held
uint32_t aps_online;     // APs that got to ap_main

void lock() {
  while (__atomic_exchange_n(&print_lock, 1u, __ATOMIC_ACQUIRE)) cpu_relax();
}
void unlock() { __atomic_store_n(&print_lock, 0u, __ATOMIC_RELEASE); }

void delay(uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) cpu_relax();
}

void lapic_write(uint64_t reg, uint32_t v) { mmio_write32(layout::kLapicBase + reg, v); }
uint32_t lapic_read(uint64_t reg) { return mmio_read32(layout::kLapicBase + reg); }

// Sends one IPI (the write of the low half sends it); false if the LAPIC
// still shows it pending after kIcrPolls polls.
bool send_ipi(uint32_t icr_low) {
  lapic_write(kLapicIcrHigh, 0);
  lapic_write(kLapicIcrLow, icr_low);
  for (uint32_t i = 0; i < kIcrPolls; ++i)
    if (!(lapic_read(kLapicIcrLow) & kIcrDeliveryPending)) return true;
  return false;
}

// Copies the trampoline and fills in what the APs need from the BSP.
void install_trampoline() {
  auto* page = reinterpret_cast<char*>(layout::kApTrampoline);
  memcpy(page, ap_trampoline_start, static_cast<size_t>(ap_trampoline_end - ap_trampoline_start));
  uint64_t cr3;
  asm volatile("mov %%cr3, %0" : "=r"(cr3));
  Gdtr gdtr;
  asm volatile("sgdt %0" : "=m"(gdtr));
  memcpy(page + (ap_boot_cr3 - ap_trampoline_start), &cr3, sizeof cr3);
  memcpy(page + (ap_boot_gdtr - ap_trampoline_start), &gdtr, sizeof gdtr);
  memory_fence();
}

}  // namespace

int guest_main(const BootInfo&) {
  uint32_t vcpus = vcpu_count();
  uint32_t aps = vcpus - 1;
  printf("smp: bsp apic id %u, %u vCPUs\n", apic_id(), vcpus);
  if (aps) {
    install_trampoline();
    lapic_write(kLapicSvr, kSvrEnable | kSvrSpuriousVector);
    uint32_t vector = static_cast<uint32_t>(layout::kApTrampoline >> 12);
    bool sent = send_ipi(kIcrAllExcludingSelf | kIcrLevelAssert | kIcrInit);
    delay(kInitDelay);
    for (int i = 0; i < 2 && sent; ++i) {
      sent = send_ipi(kIcrAllExcludingSelf | kIcrLevelAssert | kIcrStartup | vector);
      delay(kStartupDelay);
    }
    if (!sent) puts("smp: IPI still pending in the ICR");
    uint64_t i = 0;
    while (__atomic_load_n(&aps_online, __ATOMIC_ACQUIRE) < aps && i < kWaitIterations) {
      cpu_relax();
      ++i;
    }
  }
  lock();
  uint32_t online = __atomic_load_n(&aps_online, __ATOMIC_ACQUIRE);
  if (online < aps) {
    printf("smp: only %u of %u APs came up\n", online, aps);
    unlock();
    return 1;
  }
  printf("all %u CPUs online\n", vcpus);
  unlock();
  return 0;
}

}  // namespace apiary::guestlib

// Each AP arrives here from the trampoline, on its own stack.
extern "C" void ap_main() {
  using namespace apiary::guestlib;
  uint32_t id = apic_id();
  lock();
  printf("AP %u online\n", id);
  __atomic_fetch_add(&aps_online, 1u, __ATOMIC_RELEASE);
  unlock();
  halt_forever();
}
