#include "apps/cluster_command.hpp"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <iostream>
#include <thread>

#include "apps/actor_runtime.hpp"
#include "apps/actor_watch.hpp"
#include "vmm-core/kvm.hpp"
#include "cluster/controller_actor.hpp"
#include "cluster/node_actor.hpp"
#include "api/actor_control_plane.hpp"
#include "api/http_api.hpp"
#include "apps/http_front.hpp"
#include "api/token_file.hpp"
#include "devices/machine.hpp"
#include "guest/embedded.hpp"
#include "net/vxlan.hpp"

namespace apiary::apps {

namespace {
struct ClusterOptions {
  uint32_t nodes = 2;
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string store = "apiary.sqlite";
  std::string token_file = "apiary.token";
  bool simulated = false;
};

template <class T>
bool number(const std::string& s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string parse(const std::vector<std::string>& args, ClusterOptions& o) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--simulated") {
      o.simulated = true;
      continue;
    }
    if (i + 1 >= args.size()) return a == "--nodes" || a == "--port" || a == "--host" || a == "--store" ||
                                             a == "--token-file"
                                          ? a + " needs a value"
                                          : "unknown option: " + a;
    const std::string& v = args[++i];
    if (a == "--nodes") {
      if (!number(v, o.nodes) || o.nodes == 0 || o.nodes > 64) return "--nodes: 1..64";
    } else if (a == "--port") {
      if (!number(v, o.port)) return "--port: not a port number: " + v;
    } else if (a == "--host") {
      o.host = v;
    } else if (a == "--store") {
      o.store = v;
    } else if (a == "--token-file") {
      o.token_file = v;
    } else {
      return "unknown option: " + a;
    }
  }
  return {};
}
}  // namespace

void print_cluster_help() {
  std::cout << R"(Usage: apiary cluster [options]

An all-in-one control plane: the controller, N nodes and the HTTP API in one
process. Instances run on this host's KVM (or the simulated backend).

Options:
  --nodes N        number of in-process nodes (default 2)
  --host H         API listen address (default 127.0.0.1)
  --port P         API port (default 8080; 0 picks a free one)
  --store FILE     SQLite store (default ./apiary.sqlite)
  --token-file F   the API's bearer token (default ./apiary.token; created,
                   mode 0600, on the first start)
  --simulated      instances use the simulated vCPU backend (no /dev/kvm needed)

API (every request: Authorization: Bearer <token>): POST/GET /v1/instances,
GET/DELETE /v1/instances/{id}, POST/GET /v1/instances/{id}/actions,
GET /v1/instances/{id}/console/history, WebSocket /v1/instances/{id}/console,
GET /v1/nodes, POST /v1/nodes/{name}/stop, /v1/networks, GET /metrics.
The CLI: apiary ctl --help.
Stops on SIGINT/SIGTERM.
)";
}

int cluster_command(const std::vector<std::string>& args) {
  for (auto& a : args)
    if (a == "--help" || a == "-h") {
      print_cluster_help();
      return 0;
    }
  ClusterOptions o;
  if (auto err = parse(args, o); !err.empty()) {
    std::cerr << "apiary cluster: " << err << "\n";
    return 2;
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  configure_scheduler(cfg);
  actors::register_control_types(cfg);
  caf::actor_system sys{cfg};

  actors::ControllerConfig ccfg;
  ccfg.store_path = o.store;
  actors::controller_actor controller;
  std::shared_ptr<actors::ControllerReads> reads;
  try {
    auto spawned = actors::spawn_controller_with_reads(sys, ccfg);
    controller = spawned.actor;
    reads = spawned.reads;
  } catch (const std::exception& e) {
    std::cerr << "apiary cluster: cannot open the store: " << e.what() << "\n";
    return 4;
  }
  const uint32_t host_cpus = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t host_mib = devices::host_memory_mib();
  std::map<std::string, actors::node_actor> nodes;
  const std::string cannot_run = o.simulated ? std::string() : vmm::kvm::why_unusable();
  if (!cannot_run.empty())
    std::cerr << "apiary cluster: the nodes cannot run instances (" << cannot_run
              << "); creates will fail with 'no valid host'. Run where /dev/kvm works, inside "
                 "scripts/kvm-vm, or with --simulated\n";
  for (uint32_t i = 1; i <= o.nodes; ++i) {
    actors::NodeConfig n;
    n.name = "node-" + std::to_string(i);
    n.vcpus = host_cpus;
    n.memory_mib = host_mib / o.nodes;
    n.controller = caf::actor_cast<caf::actor>(controller);
    n.simulated = o.simulated;
    n.cannot_run = cannot_run;
    // The nodes share this host: their overlay runs over loopback, each
    // with a tunnel endpoint on a port the kernel picks.
    n.data_plane = !o.simulated;
    if (n.data_plane) n.tunnel = std::make_shared<net::VxlanTunnel>(net::Endpoint{htonl(INADDR_LOOPBACK), 0});
    n.embedded_guest = embedded_guest_image;
    nodes.emplace(n.name, actors::spawn_node(sys, n));
  }

  std::string token;
  try {
    token = load_or_create_token(o.token_file);
  } catch (const TokenFileError& e) {
    std::cerr << "apiary cluster: " << e.what() << "\n";
    return 4;
  }
  ActorWatch watch(sys, caf::actor_cast<caf::actor>(controller));
  ActorControlPlane api(sys, controller, nodes, std::chrono::seconds(10), reads);
  HttpServerOptions http_options;
  http_options.bearer_token = token;
  http_options.nova_images = embedded_nova_images();
  HttpServer server(api, o.host, o.port, http_options);
  uint16_t port = 0;
  try {
    port = server.start();
  } catch (const std::exception& e) {
    std::cerr << "apiary cluster: cannot listen on " << o.host << ":" << o.port << ": " << e.what() << "\n";
    return 4;
  }
  std::cout << "apiary cluster: API on http://" << o.host << ":" << port << " (" << o.nodes << " nodes, store "
            << o.store << ", token in " << o.token_file << ")" << std::endl;
  int sig = 0;
  sigwait(&stop, &sig);
  const std::string failed = watch.failure();
  if (!failed.empty()) std::cerr << "apiary cluster: the controller stopped: " << failed << "\n";
  else std::cout << "apiary cluster: stopping" << std::endl;
  server.stop();
  for (auto& [name, n] : nodes) caf::anon_send_exit(n, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(controller, caf::exit_reason::user_shutdown);
  return failed.empty() ? 0 : kActorFailedStatus;
}

}  // namespace apiary::apps
