// The demo shell's command table and its built-in commands; see
// commands.hpp for how to add one.
#include "guest/demo/commands.hpp"

#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "guest/lib/string.hpp"

namespace apiary::guestlib::demo {

const Command kCommands[] = {
    {"help", "help", "list the commands", cmd_help},
    {"info", "info", "show vCPUs, memory, boot protocol and command line", cmd_info},
    {"exit", "exit [n]", "end the VM with debug-exit code n (default 0)", cmd_exit},
    {"reboot", "reboot", "reboot through the i8042 reset line (0xFE to port 0x64)", cmd_reboot},
    {"reset", "reset", "reboot through the reset control register (0x06 to port 0xCF9)", cmd_reset},
    {"poweroff", "poweroff", "ACPI soft-off (SLP_TYP=5, SLP_EN)", cmd_poweroff},
    {"crash", "crash", "triple fault (empty IDT, ud2)", cmd_crash},
    {"time", "time", "RTC date and time, ISO 8601 UTC", cmd_time},
    {"fwcfg", "fwcfg", "fw_cfg signature, CPU count and command line", cmd_fwcfg},
    {"disk", "disk ...", "virtio-blk: info | read <s> | write <s> <text> | flush", cmd_disk},
    {"rng", "rng <n>", "n (1-64) random bytes from virtio-rng, as hex", cmd_rng},
};
const size_t kCommandCount = sizeof kCommands / sizeof kCommands[0];

const Command* find_command(const char* name) {
  size_t len = 0;
  while (name[len] && !is_space(name[len])) ++len;
  for (size_t i = 0; i < kCommandCount; ++i)
    if (str_len(kCommands[i].name) == len && str_eq_n(kCommands[i].name, name, len)) return &kCommands[i];
  return nullptr;
}

void cmd_help(const CommandContext&) {
  puts("commands:");
  for (size_t i = 0; i < kCommandCount; ++i) printf("  %-10s %s\n", kCommands[i].usage, kCommands[i].help);
}

void cmd_info(const CommandContext& ctx) {
  printf("vcpus: %u\n", vcpu_count());
  // Rounded to the nearest MiB: the map leaves out the 384 KiB legacy hole
  // below 1 MiB, so a 256 MiB VM has 255.6 MiB of RAM entries.
  printf("memory: %lu MiB\n", (ctx.boot.ram_bytes + (1u << 19)) >> 20);
  printf("protocol: %s\n", ctx.boot.protocol_name);
  printf("cmdline: %s\n", ctx.boot.cmdline);
}

void cmd_exit(const CommandContext& ctx) {
  uint64_t code = 0;
  if (*ctx.args) {
    const char* rest = ctx.args;
    while (*rest && !is_space(*rest)) ++rest;
    if (!parse_u64(ctx.args, &code) || *skip_spaces(rest) || code > 0xffffffffu) {
      puts("usage: exit [n]");
      return;
    }
  }
  debug_exit(static_cast<uint32_t>(code));
}

}  // namespace apiary::guestlib::demo
