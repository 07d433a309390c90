// `apiary cluster`: an all-in-one control plane — the controller, N nodes
// and the HTTP API in one process.
#pragma once

#include <string>
#include <vector>

namespace apiary::apps {

int cluster_command(const std::vector<std::string>& args);
void print_cluster_help();

}  // namespace apiary::apps
