// `apiary controller` and `apiary node`: the control plane as separate
// processes connected through the CAF middleman (BASP over TCP, with
// heartbeats and a connection timeout so a dead peer is noticed).
#pragma once

#include <string>
#include <vector>

namespace apiary::apps {

int controller_command(const std::vector<std::string>& args);
int node_command(const std::vector<std::string>& args);

}  // namespace apiary::apps
