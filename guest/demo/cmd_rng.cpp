// The demo's `rng <n>` command: n (1..64) bytes from the virtio-rng device,
// printed as "rng: " and 2n lower-case hex digits.
#include "guest/demo/commands.hpp"
#include "guest/lib/print.hpp"
#include "guest/lib/string.hpp"
#include "guest/lib/virtio_rng.hpp"

namespace apiary::guestlib::demo {

namespace {
constexpr uint64_t kMaxBytes = 64;
}

void cmd_rng(const CommandContext& ctx) {
  uint64_t n = 0;
  const char* rest = ctx.args;
  while (*rest && !is_space(*rest)) ++rest;
  if (!parse_u64(ctx.args, &n) || *skip_spaces(rest) || n == 0 || n > kMaxBytes) {
    puts("usage: rng <n>   (1 <= n <= 64)");
    return;
  }
  uint8_t buf[kMaxBytes];
  virtio::Result r = virtio_rng::read(buf, n);
  if (r == virtio::Result::no_device) {
    puts("rng: no virtio-rng device");
    return;
  }
  if (r != virtio::Result::ok) {
    printf("rng: %s\n", virtio::result_name(r));
    return;
  }
  put_str("rng: ");
  for (uint64_t i = 0; i < n; ++i) printf("%02x", buf[i]);
  put_char('\n');
}

}  // namespace apiary::guestlib::demo
