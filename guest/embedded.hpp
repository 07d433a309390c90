// Guest images compiled into the apiary binary.
//
// `apiary run` with no --kernel boots the demo guest, and tests can boot
// hello without touching the filesystem; both need the images inside the
// executable. The build produces demo.elf, hello.elf and the test guests
// triple.elf, spin.elf and smp.elf (PVH ELF images, see
// guest/CMakeLists.txt) and embedded_images.S pulls them in with .incbin, so
// this is a plain host library: link apiary_embedded_guests and call
// embedded_guests() / find_embedded().
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace apiary::guest {

struct EmbeddedGuest {
  std::string_view name;          // "demo", "hello", "triple", "spin", "smp"
  std::span<const uint8_t> image;  // a PVH ELF image
};

// Every embedded guest; the default guest, "demo", is first.
std::span<const EmbeddedGuest> embedded_guests();

// The guest with this name, or nullptr.
const EmbeddedGuest* find_embedded(std::string_view name);

}  // namespace apiary::guest
