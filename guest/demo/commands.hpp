// The demo guest's shell commands.
//
// The shell (main.cpp) only reads lines and looks names up in kCommands; a
// command is a name, a one-line help text and a handler. Besides the
// built-ins (help, info, exit) there is one per platform device, so each
// VMM device can be exercised by hand or by a test piping lines in: reboot,
// reset, poweroff, crash (cmd_power.cpp), time, fwcfg, disk, rng. To add
// one: write the handler in its own cmd_<name>.cpp, declare it below, add a
// row to the table in commands.cpp, and list the file in
// guest/CMakeLists.txt.
#pragma once

#include <stddef.h>

#include "guest/lib/boot_info.hpp"

namespace apiary::guestlib::demo {

struct CommandContext {
  const BootInfo& boot;
  const char* args;  // the rest of the line after the name, leading blanks skipped
};

using CommandHandler = void (*)(const CommandContext& ctx);

struct Command {
  const char* name;
  const char* usage;  // shown by help, e.g. "exit [n]"
  const char* help;   // one line
  CommandHandler run;
};

// The table, in the order help lists it.
extern const Command kCommands[];
extern const size_t kCommandCount;

// nullptr when no command has this name (name ends at a blank or NUL).
const Command* find_command(const char* name);

void cmd_help(const CommandContext& ctx);
void cmd_info(const CommandContext& ctx);
void cmd_exit(const CommandContext& ctx);
void cmd_reboot(const CommandContext& ctx);    // cmd_power.cpp
void cmd_reset(const CommandContext& ctx);     // cmd_power.cpp
void cmd_poweroff(const CommandContext& ctx);  // cmd_power.cpp
void cmd_crash(const CommandContext& ctx);     // cmd_power.cpp
void cmd_time(const CommandContext& ctx);      // cmd_time.cpp
void cmd_fwcfg(const CommandContext& ctx);     // cmd_fwcfg.cpp
void cmd_disk(const CommandContext& ctx);      // cmd_disk.cpp
void cmd_rng(const CommandContext& ctx);       // cmd_rng.cpp

}  // namespace apiary::guestlib::demo
