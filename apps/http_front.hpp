// What the apps that serve the HTTP API (`apiary cluster`, `apiary
// controller`) give it beyond the control plane: the images Nova's API
// offers are the guests built into this binary.
#pragma once

#include <vector>

#include "api/http_api.hpp"
#include "guest/embedded.hpp"

namespace apiary::apps {

inline std::vector<nova::Image> embedded_nova_images() {
  std::vector<nova::Image> out;
  for (const auto& g : guest::embedded_guests()) out.push_back({std::string(g.name), g.image.size()});
  return out;
}

}  // namespace apiary::apps
