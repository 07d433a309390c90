// Port I/O, CPUID and halt for freestanding guest code.
//
// Everything a guest does to the outside world goes through an I/O port, and
// each port access is a VM exit, so these are inline single instructions with
// no extra work around them. The port numbers themselves live in
// vmm-core/layout.hpp; this file only knows how to reach a port.
#pragma once

#include <stdint.h>

namespace apiary::guestlib {

inline void outb(uint16_t port, uint8_t v) { asm volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
inline void outw(uint16_t port, uint16_t v) { asm volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
inline void outl(uint16_t port, uint32_t v) { asm volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

inline uint8_t inb(uint16_t port) {
  uint8_t v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint16_t inw(uint16_t port) {
  uint16_t v;
  asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint32_t inl(uint16_t port) {
  uint32_t v;
  asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

struct CpuidResult {
  uint32_t eax, ebx, ecx, edx;
};

inline CpuidResult cpuid(uint32_t leaf, uint32_t subleaf = 0) {
  CpuidResult r;
  asm volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(subleaf));
  return r;
}

// Memory-mapped device registers (virtio-mmio, the local APIC). The guest
// identity-maps 0..4 GiB, so a guest-physical address is also a pointer.
// volatile keeps each access a single load or store of exactly that width.
inline uint32_t mmio_read32(uint64_t addr) { return *reinterpret_cast<volatile uint32_t*>(addr); }
inline void mmio_write32(uint64_t addr, uint32_t v) { *reinterpret_cast<volatile uint32_t*>(addr) = v; }
inline uint8_t mmio_read8(uint64_t addr) { return *reinterpret_cast<volatile uint8_t*>(addr); }

// Spin-wait hint, also a compiler barrier: a polled location is re-read.
inline void cpu_relax() { asm volatile("pause" ::: "memory"); }
// Full fence: stores to shared rings are visible before a doorbell write.
inline void memory_fence() { asm volatile("mfence" ::: "memory"); }

// Interrupts stay disabled in these guests, so this parks the vCPU for good.
[[noreturn]] inline void halt_forever() {
  for (;;) asm volatile("cli; hlt");
}

}  // namespace apiary::guestlib
