// libFuzzer target: any byte string as a kernel image, through format
// detection and every loader. Only vmm::Error may come out; the sanitizers
// catch everything else.
#include <cstddef>
#include <cstdint>

#include "vmm-core/boot.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static apiary::vmm::GuestMemory mem(16 << 20);
  apiary::vmm::BootInputs in{{data, size}, "console=ttyS0", {}};
  using Loader = apiary::vmm::BootPlan (*)(apiary::vmm::GuestMemory&, const apiary::vmm::BootInputs&);
  for (Loader load : {&apiary::vmm::load_kernel, &apiary::vmm::load_pvh, &apiary::vmm::load_multiboot,
                      &apiary::vmm::load_linux}) {
    try {
      load(mem, in);
    } catch (const apiary::vmm::Error&) {
    }
  }
  return 0;
}
