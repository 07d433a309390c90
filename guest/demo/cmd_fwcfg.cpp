// The demo's `fwcfg` command: signature, CPU count and kernel command line
// from the fw_cfg device, as "fw_cfg: QEMU cpus=N cmdline=...". The
// signature and CPU count come through the data port; the command line
// through DMA when the device offers it (so both paths are exercised),
// else through the data port too.
#include "guest/demo/commands.hpp"
#include "guest/lib/fw_cfg.hpp"
#include "guest/lib/print.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib::demo {

namespace {
char cmdline[layout::kCmdlineMax + 1];  // static: DMA writes it by address
}

void cmd_fwcfg(const CommandContext&) {
  if (!fw_cfg::present()) {
    puts("fw_cfg: not present");
    return;
  }
  uint32_t features = fw_cfg::features();
  fw_cfg::select(fw_cfg::kKeyNbCpus);
  uint32_t cpus = fw_cfg::read_le16();
  fw_cfg::select(fw_cfg::kKeyCmdlineSize);
  uint32_t size = fw_cfg::read_le32();
  if (size > layout::kCmdlineMax) size = layout::kCmdlineMax;
  if (size && (features & fw_cfg::kIdDma)) {
    if (!fw_cfg::dma_read(fw_cfg::kKeyCmdlineData, cmdline, size)) {
      puts("fw_cfg: dma error");
      return;
    }
  } else if (size) {
    fw_cfg::select(fw_cfg::kKeyCmdlineData);
    fw_cfg::read_bytes(cmdline, size);
  }
  cmdline[size] = '\0';  // the size may or may not count a NUL
  printf("fw_cfg: QEMU cpus=%u cmdline=%s\n", cpus, cmdline);
}

}  // namespace apiary::guestlib::demo
