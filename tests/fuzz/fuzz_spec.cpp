// libFuzzer target: any byte string as a JSON or text-format instance spec,
// parsed and validated. Parsing must report problems, never crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/spec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto r : {apiary::spec::parse_json(text), apiary::spec::parse_text(text)}) {
    if (r.spec) {
      apiary::spec::apply_defaults(*r.spec);
      (void)apiary::spec::validate(*r.spec, {});
    }
  }
  return 0;
}
