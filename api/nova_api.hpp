// OpenStack Nova's compute API v2.1 at /compute/v2.1: the subset that the
// unmodified `openstack` and `nova` clients use to list, show, create,
// act on and delete servers, with flavors and images to pick from.
//
// Why a translation layer and not a second control plane: Nova's API is
// another spelling of Apiary's own (/v1): the same vm_state/task_state
// model (cluster/nova_states.hpp), the same actions with the same
// preconditions, the same refusal messages. Everything here calls
// ControlPlaneApi and rewrites the answer in Nova's JSON (the messages of
// proto/apiary/v1/nova.proto), so a refusal reads the same on both APIs.
// No CAF, no Beast: the HTTP server (api/http_api.cpp) hands over a parsed
// request and sends back what this returns.
//
// What maps to what (docs/nova-api.md has the routes and an example):
//  * flavors are the boards Apiary offers (kFlavors: vCPUs and RAM; no root
//    disk), images are the guests built into the apiary binary (by name:
//    the image id is the name);
//  * a server is an instance: status from (vm_state, task_state) as Nova
//    computes it, OS-EXT-STS:* and OS-EXT-SRV-ATTR:host from the record;
//  * a server action body ({"pause": null}, {"os-stop": null},
//    {"reboot": {"type": "HARD"}}, ...) becomes the Nova command of the
//    same name; DELETE /servers/{id} is "delete".
//  * errors are Nova's bodies: {"conflictingRequest": {"code": 409,
//    "message": ...}}, itemNotFound, badRequest, notImplemented, ...
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/control_plane_api.hpp"

namespace apiary::apps::nova {

// The microversions served: 2.1 only (the base API; the clients then send
// no newer request bodies and read no newer fields).
inline constexpr std::string_view kMinVersion = "2.1";
inline constexpr std::string_view kMaxVersion = "2.1";

struct Flavor {
  std::string_view id;
  std::string_view name;
  uint32_t vcpus;
  uint32_t ram_mib;
};
// The boards offered. An instance whose board is none of these (made
// through /v1) shows the flavor id "custom".
inline constexpr std::array<Flavor, 5> kFlavors{{
    {"1", "a1.tiny", 1, 64},
    {"2", "a1.small", 1, 128},
    {"3", "a1.medium", 2, 256},
    {"4", "a1.large", 4, 512},
    {"5", "a1.xlarge", 8, 2048},
}};

// An image the clients can boot: a guest built into the apiary binary (the
// apps layer lists them; this layer may not reach guest/).
struct Image {
  std::string name;  // also its id
  uint64_t size = 0;  // bytes
};

struct Request {
  std::string method;                          // "GET", "POST", "DELETE", ...
  std::vector<std::string> path;               // the segments after compute/v2.1
  std::map<std::string, std::string> query;    // decoded; repeated keys: the last
  std::string body;
  std::string base_url;                        // "http://host:port/compute/v2.1", for links
  const std::vector<Image>* images = nullptr;  // what GET /images lists; none when null
};

struct Response {
  unsigned status = 200;
  std::string body;  // JSON, or empty (202/204 without a body)
  std::vector<std::pair<std::string, std::string>> headers;
};

// True for /compute/v2.1 and everything below it.
bool is_nova_path(const std::vector<std::string>& segments);

// Serves one request. Never throws for bad input: a malformed body, an
// unknown route or action is a Nova error body.
Response handle(ControlPlaneApi& api, const Request& request);

// Nova's API status of a server ("ACTIVE", "PAUSED", "SHUTOFF", "BUILD",
// "REBOOT", "HARD_REBOOT", ...), from its vm_state and task_state
// (snake_case, as in v1::Instance).
std::string server_status(std::string_view vm_state, std::string_view task_state);

// The Nova action body's key -> Apiary's command name ("os-stop" -> "stop",
// "shelveOffload" -> "shelve_offload", ...); "" for a key Nova does not have
// or Apiary does not map.
std::string_view command_of(std::string_view action_key);

}  // namespace apiary::apps::nova
