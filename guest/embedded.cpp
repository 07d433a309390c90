// The table behind embedded.hpp. The bytes come from embedded_images.S,
// which brackets each .incbin'd image with start/end symbols.
#include "guest/embedded.hpp"

extern "C" {
extern const uint8_t apiary_guest_demo_elf_start[];
extern const uint8_t apiary_guest_demo_elf_end[];
extern const uint8_t apiary_guest_hello_elf_start[];
extern const uint8_t apiary_guest_hello_elf_end[];
extern const uint8_t apiary_guest_triple_elf_start[];
extern const uint8_t apiary_guest_triple_elf_end[];
extern const uint8_t apiary_guest_spin_elf_start[];
extern const uint8_t apiary_guest_spin_elf_end[];
extern const uint8_t apiary_guest_smp_elf_start[];
extern const uint8_t apiary_guest_smp_elf_end[];
}

namespace apiary::guest {

std::span<const EmbeddedGuest> embedded_guests() {
  static const EmbeddedGuest guests[] = {
      {"demo", {apiary_guest_demo_elf_start, apiary_guest_demo_elf_end}},
      {"hello", {apiary_guest_hello_elf_start, apiary_guest_hello_elf_end}},
      {"triple", {apiary_guest_triple_elf_start, apiary_guest_triple_elf_end}},
      {"spin", {apiary_guest_spin_elf_start, apiary_guest_spin_elf_end}},
      {"smp", {apiary_guest_smp_elf_start, apiary_guest_smp_elf_end}},
  };
  return guests;
}

const EmbeddedGuest* find_embedded(std::string_view name) {
  for (const EmbeddedGuest& g : embedded_guests())
    if (g.name == name) return &g;
  return nullptr;
}

}  // namespace apiary::guest
