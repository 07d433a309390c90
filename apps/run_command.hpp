// `apiary run`: boot one VM (the embedded demo guest by default) with its
// serial console on this terminal.
#pragma once

#include <string>
#include <vector>

namespace apiary::apps {

// Process exit codes of `apiary run` (besides a guest's debug-exit status,
// which is (v << 1) | 1 and therefore always odd).
inline constexpr int kExitPoweroff = 0;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitBadSpec = 4;
inline constexpr int kExitNoKvm = 6;
inline constexpr int kExitGuestFault = 8;
inline constexpr int kExitStopped = 10;
inline constexpr int kExitSaved = 12;  // --save: the VM's state is in the file, the VM stopped
inline constexpr int kExitMigrated = 13;  // --migrate-to: the VM runs on at the destination
inline constexpr int kExitTimeout = 124;

int run_command(const std::vector<std::string>& args);
void print_run_help();

}  // namespace apiary::apps
