// A flat multiboot v1 image (address-field header, no ELF) whose entry runs
// the given machine code at layout::kKernelLoad + the header. For tests and
// benchmarks that need a guest of a few instructions (an idle `cli; hlt`, a
// jump into MMIO) without building one in guest/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::vmm {

inline std::vector<uint8_t> multiboot_flat_image(const std::vector<uint8_t>& code) {
  bootproto::MultibootHeader h{};
  h.magic = bootproto::kMultibootHeaderMagic;
  h.flags = bootproto::kMbHeaderAoutKludge;
  h.checksum = 0u - h.magic - h.flags;
  h.header_addr = layout::kKernelLoad;
  h.load_addr = layout::kKernelLoad;
  h.entry_addr = layout::kKernelLoad + sizeof h;
  std::vector<uint8_t> img(sizeof h + code.size());
  std::memcpy(img.data(), &h, sizeof h);
  std::copy(code.begin(), code.end(), img.begin() + sizeof h);
  return img;
}

}  // namespace apiary::vmm
