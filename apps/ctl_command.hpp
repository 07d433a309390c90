// `apiary ctl`: the command-line client of the control plane's HTTP API
// (api/http_api.hpp), for people and scripts.
//
// Why a CLI in the same binary: curl works against the API, but a user has
// to know every route and body, read the bearer token by hand, and poll the
// action log to find out whether an action finished. `apiary ctl` turns
// that into `apiary ctl instance action ID pause --wait` with tables,
// exact exit codes (0 ok, 1 the API said no or the action failed, 2 usage,
// 3 unreachable / no token, 124 timeout) and a deadline on everything.
// docs/cli.md is the user's reference.
#pragma once

#include <string>
#include <vector>

namespace apiary::apps {

// `args` are the words after "ctl". Returns the exit status.
int ctl_command(const std::vector<std::string>& args);

// The top-level help text (`apiary ctl --help`).
void print_ctl_help();

}  // namespace apiary::apps
