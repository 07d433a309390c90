#include "apps/process_commands.hpp"

#include <signal.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vmm-core/kvm.hpp"
#include "cluster/controller_actor.hpp"
#include "cluster/node_actor.hpp"
#include "api/actor_control_plane.hpp"
#include "api/http_api.hpp"
#include "apps/actor_runtime.hpp"
#include "apps/actor_watch.hpp"
#include "apps/http_front.hpp"
#include "api/token_file.hpp"
#include "api/utc_time.hpp"
#include "apps/tls_peer.hpp"
#include "devices/machine.hpp"
#include "guest/embedded.hpp"
#include "net/vxlan.hpp"

namespace apiary::apps {

namespace {

using set_ctrl_atom = caf::atom_constant<caf::atom("setctrl")>;

template <class T>
bool number(const std::string& s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Options as --key value pairs; flags listed in `flags` take no value.
std::string parse_options(const std::vector<std::string>& args, std::map<std::string, std::string>& out,
                          const std::vector<std::string>& known) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (std::find(known.begin(), known.end(), a) == known.end()) return "unknown option: " + a;
    if (i + 1 >= args.size()) return a + " needs a value";
    out[a] = args[++i];
  }
  return {};
}

// Takes the flag --insecure out of `args`; true when it was there.
bool take_flag(std::vector<std::string>& args, const std::string& flag) {
  const auto n = std::erase(args, flag);
  return n > 0;
}

// --ca/--cert/--key (all three) or --insecure, exactly one of the two.
// Returns a usage problem, or "" with `tls` set (nullopt: --insecure).
std::string tls_options(std::map<std::string, std::string>& o, bool insecure, std::optional<TlsFiles>& tls) {
  const bool any = o.count("--ca") || o.count("--cert") || o.count("--key");
  if (insecure && any) return "--insecure and --ca/--cert/--key exclude each other";
  if (insecure) return {};
  if (!any)
    return "no transport security chosen: pass --ca FILE --cert FILE --key FILE for mutual TLS (apiary certs "
           "makes them; docs/security.md), or --insecure for plain text on a trusted network";
  for (const char* k : {"--ca", "--cert", "--key"})
    if (!o.count(k)) return std::string("--ca, --cert and --key go together: ") + k + " FILE is missing";
  tls = TlsFiles{o["--ca"], o["--cert"], o["--key"]};
  return {};
}

// Middleman with BASP heartbeats: a peer silent for `timeout` is declared
// down, its proxies go down with remote_link_unreachable, and monitors fire.
// With `tls`, CAF's OpenSSL module too: with a certificate, key and CA file
// configured it requires and verifies a certificate signed by the CA from
// every peer, on both sides (libcaf_openssl session.cpp; docs/security.md).
void configure_network(caf::actor_system_config& cfg, const std::optional<TlsFiles>& tls) {
  cfg.load<caf::io::middleman>();
  if (tls) {
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = tls->cert;
    cfg.openssl_key = tls->key;
    cfg.openssl_cafile = tls->ca;
  }
  cfg.set("logger.verbosity", caf::atom("quiet"));
  configure_scheduler(cfg);
  cfg.set("middleman.heartbeat-interval", caf::timespan{std::chrono::seconds(1)});
  cfg.set("middleman.connection-timeout", caf::timespan{std::chrono::seconds(5)});
  actors::register_control_types(cfg);
}

sigset_t stop_signals() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  return s;
}

// The process's log on stdout (a journal in deployment): one line each,
// who, the UTC time to the millisecond, what. Lines logged before open()
// are held back until then, so that the process's first line stays the one
// that says where it listens (scripts and the e2e tests read it; a
// restarted controller notes its recovery before it prints that line).
class StdoutLog {
 public:
  explicit StdoutLog(std::string who) : state_(std::make_shared<State>()) { state_->who = std::move(who); }
  // A command that ends before its first line (it could not start) still
  // prints what was logged.
  ~StdoutLog() { open(); }
  StdoutLog(const StdoutLog&) = delete;
  StdoutLog& operator=(const StdoutLog&) = delete;

  // What the actors call (on their own threads).
  std::function<void(const std::string&)> sink() const {
    return [state = state_](const std::string& line) {
      std::lock_guard lock(state->mutex);
      std::string text = state->who + ": " + stamp() + " " + line + "\n";
      if (state->open)
        std::cout << text << std::flush;  // one write: other threads print too
      else
        state->held.push_back(std::move(text));
    };
  }
  // Call after the first line: prints what was held back, then the rest as it comes.
  void open() const {
    std::lock_guard lock(state_->mutex);
    for (const auto& text : state_->held) std::cout << text;
    std::cout << std::flush;
    state_->held.clear();
    state_->open = true;
  }

 private:
  static std::string stamp() {
    const auto now = std::chrono::system_clock::now();
    return api::utc_iso8601(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count(),
                            true);
  }
  struct State {
    std::mutex mutex;
    std::string who;
    bool open = false;
    std::vector<std::string> held;
  };
  std::shared_ptr<State> state_;
};

// True once SIGINT/SIGTERM arrived (waits at most `d`).
bool signalled(std::chrono::milliseconds d) {
  sigset_t s = stop_signals();
  const timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>((d.count() % 1000) * 1000000)};
  return sigtimedwait(&s, nullptr, &ts) > 0;
}

// Stands in for the controller on a node: forwards every message to the
// controller currently connected (requests keep their reply path) and
// fails them while there is none, so the node keeps running its instances
// while the controller is away and re-registers when it is back.
struct RelayState {
  caf::actor target;
  static inline const char* name = "controller-relay";
};
// `initial` is the first controller (none at start). It is a parameter
// because CAF 0.17 binds a null pointer to a reference when an actor
// function takes no arguments, which UBSan flags.
caf::behavior controller_relay(caf::stateful_actor<RelayState>* self, caf::actor initial) {
  self->state.target = std::move(initial);
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
    if (!self->state.target) return caf::make_error(caf::sec::request_receiver_down);
    self->delegate(self->state.target, x.move_content_to_message());
    return caf::delegated<caf::message>{};
  });
  return {[self](set_ctrl_atom, caf::actor target) { self->state.target = std::move(target); }};
}

// How long a node waits for the controller's handshake (TCP, TLS and CAF's
// own). CAF's remote_actor waits forever for a peer that accepts the
// connection and then says nothing (a TLS controller, to a plain-text
// node), so the node asks the middleman itself, with this deadline.
constexpr auto kConnectTimeout = std::chrono::seconds(5);
// The diagnosis connection after a refusal (tls_peer.hpp).
constexpr auto kDiagnoseTimeout = std::chrono::milliseconds(3000);

// remote_actor<controller_actor> with a deadline, through `mm` (the plain
// middleman or the OpenSSL one). A second call while the first connection
// is still pending waits for that one (CAF keys them by host and port).
caf::expected<actors::controller_actor> connect_controller(caf::actor_system& sys, const caf::io::middleman_actor& mm,
                                                           const std::string& host, uint16_t port) {
  auto f = caf::make_function_view(mm, caf::duration{kConnectTimeout});
  auto x = f(caf::connect_atom_v, host, port);
  if (!x) return std::move(x.error());
  auto& ptr = std::get<1>(*x);
  if (!ptr) return caf::make_error(caf::sec::no_actor_published_at_port);
  if (!sys.assignable<actors::controller_actor>(std::get<2>(*x)))
    return caf::make_error(caf::sec::unexpected_actor_messaging_interface);
  return caf::actor_cast<actors::controller_actor>(std::move(ptr));
}

}  // namespace

int controller_command(const std::vector<std::string>& args) {
  for (auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << R"(Usage: apiary controller (--ca FILE --cert FILE --key FILE | --insecure)
                         [--host H] [--port P] [--node-host NH] [--node-port NP] [--store FILE]
                         [--token-file F] [--checkin-max-ms MS] [--power-sync-s S]
                         [--https-cert FILE --https-key FILE]

The control plane's controller: the HTTP API on H:P (default 127.0.0.1:8080)
and the endpoint nodes connect to on NP (default 4242), with the SQLite
store FILE (default ./apiary.sqlite). Nodes: apiary node --controller H:NP.
API clients send "Authorization: Bearer <token>" with the token in F
(default ./apiary.token), created (mode 0600) on the first start.
The node endpoint listens on NH (default: H) and speaks CAF's binary
protocol, with one of:
  --ca FILE --cert FILE --key FILE  mutual TLS: the endpoint presents the
        certificate FILE (key FILE) and accepts only nodes presenting a
        certificate signed by the CA in --ca FILE (apiary certs makes all
        three). Host names and node names are not checked against the
        certificates: every holder of a certificate from this CA is trusted.
  --insecure  plain text, no authentication: only on a trusted network.
One of the two is required (docs/security.md).
--https-cert FILE --https-key FILE serve the API over HTTPS (and its
console WebSocket as wss://) on H:P instead of plain HTTP; `apiary certs
issue NAME --san H` makes a pair, and `apiary ctl --api https://H:P
--cacert ca.crt` talks to it.
A node silent for --checkin-max-ms (default 120000) is missing, for ten
times that it is in error and its instances are declared errored.
Every --power-sync-s S (default 600, Nova's sync_power_state_interval; 0:
off) each connected node's VMs are compared with the records: an ACTIVE or
PAUSED instance whose VM is gone is recorded STOPPED, a VM whose record
does not want it running is powered off (ERROR records are left alone). A
node that reports a VMM halted or destroyed is compared 5 s later.
The cluster log (nodes coming and going, reconciliation, recovery, store
failures) goes to stdout, one line each with its UTC time. If the controller
stops on its own (a failed commit, a handler that throws), the process exits
with status 5 and the reason on stderr.
)";
      return 0;
    }
  std::vector<std::string> rest = args;
  const bool insecure = take_flag(rest, "--insecure");
  std::map<std::string, std::string> o;
  if (auto err = parse_options(rest, o,
                               {"--host", "--port", "--node-host", "--node-port", "--store", "--token-file",
                                "--checkin-max-ms", "--power-sync-s", "--ca", "--cert", "--key", "--https-cert",
                                "--https-key", "--test-break"});
      !err.empty()) {
    std::cerr << "apiary controller: " << err << "\n";
    return 2;
  }
  std::optional<TlsFiles> tls;
  if (auto err = tls_options(o, insecure, tls); !err.empty()) {
    std::cerr << "apiary controller: " << err << "\n";
    return 2;
  }
  if (o.count("--https-cert") != o.count("--https-key")) {
    std::cerr << "apiary controller: --https-cert and --https-key go together\n";
    return 2;
  }
  if (tls) {
    if (auto err = check_tls_files(*tls); !err.empty()) {
      std::cerr << "apiary controller: " << err << "\n";
      return 4;
    }
  }
  const std::string host = o.count("--host") ? o["--host"] : "127.0.0.1";
  // The node endpoint speaks CAF's binary protocol with no authentication of
  // its own: it gets its own address, so the API can be exposed without it.
  const std::string node_host = o.count("--node-host") ? o["--node-host"] : host;
  uint16_t port = 8080, node_port = 4242;
  if ((o.count("--port") && !number(o["--port"], port)) || (o.count("--node-port") && !number(o["--node-port"], node_port))) {
    std::cerr << "apiary controller: bad port\n";
    return 2;
  }
  sigset_t stop = stop_signals();
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  caf::actor_system_config cfg;
  configure_network(cfg, tls);
  caf::actor_system sys{cfg};
  actors::ControllerConfig ccfg;
  ccfg.store_path = o.count("--store") ? o["--store"] : "apiary.sqlite";
  if (o.count("--checkin-max-ms")) {
    uint64_t ms = 0;
    if (!number(o["--checkin-max-ms"], ms) || ms < 100) {
      std::cerr << "apiary controller: --checkin-max-ms: at least 100\n";
      return 2;
    }
    // NODE_CHECKIN_MAXIMUM; missing after it, error after 10x. The silence
    // sweep runs often enough to notice within a fraction of it.
    ccfg.checkin_max = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::milliseconds(ms));
    if (ccfg.checkin_max.count() == 0) ccfg.checkin_max = std::chrono::seconds(1);
    ccfg.sweep_interval = std::chrono::milliseconds(std::max<uint64_t>(100, ms / 4));
    // Nodes check in well within the silence limit; give them that long to
    // re-register before settling what a previous controller left running.
    ccfg.recovery_grace = std::min<std::chrono::milliseconds>(ccfg.recovery_grace, std::chrono::milliseconds(ms));
  }
  if (o.count("--power-sync-s")) {
    uint64_t s = 0;
    if (!number(o["--power-sync-s"], s) || s > 86400) {
      std::cerr << "apiary controller: --power-sync-s: seconds from 0 (off) to 86400\n";
      return 2;
    }
    ccfg.power_sync_interval = std::chrono::seconds(s);
  }
  if (o.count("--test-break")) {
    // Breaks a rule on purpose, so the chaos suite can show that its
    // checker catches the breakage (tests/chaos). Never in production.
    if (o["--test-break"] != "ignore-request-ids") {
      std::cerr << "apiary controller: --test-break: the only rule is ignore-request-ids\n";
      return 2;
    }
    ccfg.test_ignore_request_ids = true;
    std::cerr << "apiary controller: TEST ONLY: creates ignore their idempotency keys\n";
  }
  const std::string token_file = o.count("--token-file") ? o["--token-file"] : "apiary.token";
  std::string token;
  try {
    token = load_or_create_token(token_file);
  } catch (const TokenFileError& e) {
    std::cerr << "apiary controller: " << e.what() << "\n";
    return 4;
  }
  const StdoutLog log("apiary controller");
  ccfg.on_note = log.sink();
  actors::controller_actor controller;
  std::shared_ptr<actors::ControllerReads> reads;
  try {
    auto spawned = actors::spawn_controller_with_reads(sys, ccfg);
    controller = spawned.actor;
    reads = spawned.reads;
  } catch (const std::exception& e) {
    std::cerr << "apiary controller: cannot open the store: " << e.what() << "\n";
    return 4;
  }
  auto published = tls ? caf::openssl::publish(controller, node_port, node_host.c_str(), true)
                       : sys.middleman().publish(controller, node_port, node_host.c_str(), true);
  if (!published) {
    std::cerr << "apiary controller: cannot listen for nodes on " << node_host << ":" << node_port << ": "
              << sys.render(published.error()) << "\n";
    return 4;
  }
  ActorWatch watch(sys, caf::actor_cast<caf::actor>(controller));
  ActorControlPlane api(sys, controller, {}, std::chrono::seconds(10), reads);
  HttpServerOptions http_options;
  http_options.bearer_token = token;
  http_options.nova_images = embedded_nova_images();
  const bool https = o.count("--https-cert") > 0;
  if (https) {
    http_options.tls_cert_file = o["--https-cert"];
    http_options.tls_key_file = o["--https-key"];
  }
  HttpServer server(api, host, port, http_options);
  try {
    port = server.start();
  } catch (const std::exception& e) {
    std::cerr << "apiary controller: cannot start the API on " << host << ":" << port << ": " << e.what() << "\n";
    return 4;
  }
  std::cout << "apiary controller: API on " << (https ? "https://" : "http://") << host << ":" << port << ", nodes connect to " << node_host << ":"
            << *published << (tls ? " with mutual TLS" : " in plain text (--insecure)") << " (store "
            << ccfg.store_path << ", token in " << token_file << ")" << std::endl;
  log.open();
  int sig = 0;
  sigwait(&stop, &sig);
  if (auto failed = watch.failure(); !failed.empty()) {
    std::cerr << "apiary controller: the controller stopped: " << failed << "\n";
    server.stop();
    return kActorFailedStatus;
  }
  std::cout << "apiary controller: stopping" << std::endl;
  server.stop();
  caf::anon_send_exit(controller, caf::exit_reason::user_shutdown);
  return 0;
}

int node_command(const std::vector<std::string>& args) {
  for (auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << R"(Usage: apiary node --controller HOST:PORT (--ca FILE --cert FILE --key FILE | --insecure)
                   [--name N] [--vcpus V] [--memory MIB] [--simulated yes] [--checkin-ms MS]
                   [--status-file F] [--save-dir DIR] [--vtep ADDR[:PORT] | --no-overlay] [--taps]
                   [--migration-address ADDR] [--migration-kib-per-s N]

A node: runs instances on this host's KVM for the controller at HOST:PORT,
checks in with its capacity, and reconnects (re-registering) whenever the
controller goes away and comes back; its instances keep running meanwhile.
The connection is one of:
  --ca FILE --cert FILE --key FILE  mutual TLS: the node presents the
        certificate FILE (key FILE) and accepts only a controller whose
        certificate is signed by the CA in --ca FILE (the host name is not
        checked against the certificate).
  --insecure  plain text, no authentication: only on a trusted network.
One of the two is required; it must match the controller's. A refused
connection is reported on stderr with its reason, and retried every second.
With --status-file, the node rewrites F at every check-in with what it runs,
one "<instance id> <power state>" line each (its own view, not the
controller's).
Suspended instances (Nova's suspend) keep their whole state in
DIR/<instance id>.snap (--save-dir; default: <temp dir>/apiary-saved-<name>)
until they are resumed, also across a restart of the node.
A live migration into this node listens on --migration-address (an address
of this host the other nodes can reach; default 127.0.0.1) at a port picked
for it; the source node connects there directly. --migration-kib-per-s
limits the RAM an outgoing migration sends per second (default: no limit).
Instance NICs are ports of their network's switch on this node. Networks
reach across nodes over VXLAN (UDP): --vtep ADDR[:PORT] is this node's
tunnel endpoint, an IPv4 address of this host the other nodes can reach
(port 4789 by default); the node binds it at start and exits with status 4
if it cannot. --no-overlay: local switching only (a network with ports on
other nodes becomes error). One of the two is required for a node that runs
instances with NICs; without either, NICs are switched locally (as
--no-overlay) and the node says so.
--taps: every network with a port on this node also gets a host tap device,
"apiary-" and the network's VNI in 6 hex digits (`apiary ctl network show`
prints the VNI), up, MTU 1450, with no address: `ip addr add` one of the
network's range to reach its guests from this host. Needs CAP_NET_ADMIN and
/dev/net/tun; an existing interface of that name is never taken over. A tap
that cannot be made turns its network error (the reason is in the
controller's log and the network's record).
The node logs on stdout, with UTC times, when its check-ins start failing
(and why) and when one is answered again. If the node itself fails (one of
its handlers throws), the process exits with status 5 and the reason on
stderr, for the supervisor to start it again (it registers anew).
)";
      return 0;
    }
  std::vector<std::string> rest = args;
  const bool insecure = take_flag(rest, "--insecure");
  const bool no_overlay = take_flag(rest, "--no-overlay");
  const bool taps = take_flag(rest, "--taps");
  std::map<std::string, std::string> o;
  if (auto err = parse_options(rest, o,
                               {"--controller", "--name", "--vcpus", "--memory", "--simulated", "--checkin-ms", "--ca",
                                "--cert", "--key", "--status-file", "--save-dir", "--vtep",
                                "--migration-address", "--migration-kib-per-s"});
      !err.empty()) {
    std::cerr << "apiary node: " << err << "\n";
    return 2;
  }
  std::optional<TlsFiles> tls;
  if (auto err = tls_options(o, insecure, tls); !err.empty()) {
    std::cerr << "apiary node: " << err << "\n";
    return 2;
  }
  const std::string target = o["--controller"];
  const auto colon = target.rfind(':');
  uint16_t cport = 0;
  if (colon == std::string::npos || !number(target.substr(colon + 1), cport)) {
    std::cerr << "apiary node: --controller HOST:PORT is required\n";
    return 2;
  }
  const std::string chost = target.substr(0, colon);
  actors::NodeConfig n;
  char hostname[256] = "node";
  ::gethostname(hostname, sizeof hostname - 1);
  n.name = o.count("--name") ? o["--name"] : hostname;
  n.vcpus = std::max(1u, std::thread::hardware_concurrency());
  n.memory_mib = devices::host_memory_mib();
  if ((o.count("--vcpus") && !number(o["--vcpus"], n.vcpus)) || (o.count("--memory") && !number(o["--memory"], n.memory_mib))) {
    std::cerr << "apiary node: bad --vcpus or --memory\n";
    return 2;
  }
  n.simulated = o.count("--simulated") && o["--simulated"] == "yes";
  if (!n.simulated) n.cannot_run = vmm::kvm::why_unusable();
  if (!n.cannot_run.empty())
    std::cerr << "apiary node: " << n.name << " cannot run instances (" << n.cannot_run
              << "); it checks in, and the scheduler will not place instances on it. "
                 "Run it where /dev/kvm works, inside scripts/kvm-vm, or with --simulated\n";
  n.embedded_guest = embedded_guest_image;
  uint64_t checkin_ms = 2000;
  if (o.count("--checkin-ms") && (!number(o["--checkin-ms"], checkin_ms) || checkin_ms < 50)) {
    std::cerr << "apiary node: --checkin-ms: at least 50\n";
    return 2;
  }
  n.checkin_interval = std::chrono::milliseconds(checkin_ms);
  if (o.count("--status-file")) n.status_file = o["--status-file"];
  if (o.count("--save-dir")) n.save_dir = o["--save-dir"];
  if (o.count("--migration-address")) n.migration_host = o["--migration-address"];
  if (o.count("--migration-kib-per-s")) {
    uint64_t kib = 0;
    if (!number(o["--migration-kib-per-s"], kib) || kib == 0 || kib > (1ull << 40)) {
      std::cerr << "apiary node: --migration-kib-per-s: a number of KiB per second, 1 or more\n";
      return 2;
    }
    n.migration_bytes_per_second = kib << 10;
  }
  n.data_plane = !n.simulated;
  if (taps && !n.data_plane) {
    std::cerr << "apiary node: --taps: a simulated node has no data plane\n";
    return 2;
  }
  n.taps = taps;
  if (o.count("--vtep")) {
    if (no_overlay) {
      std::cerr << "apiary node: --vtep and --no-overlay exclude each other\n";
      return 2;
    }
    auto ep = net::parse_endpoint(o["--vtep"]);
    if (!ep) {
      std::cerr << "apiary node: --vtep: expected an IPv4 address with an optional port, like 10.0.0.1:4789\n";
      return 2;
    }
    try {
      n.tunnel = std::make_shared<net::VxlanTunnel>(*ep);
    } catch (const std::system_error& e) {
      std::cerr << "apiary node: --vtep " << o["--vtep"] << ": " << e.what() << "\n";
      return 4;
    }
  } else if (!no_overlay && !n.simulated) {
    std::cerr << "apiary node: no --vtep: NICs are switched on this node only (no overlay to other nodes)\n";
  }
  if (tls) {
    if (auto err = check_tls_files(*tls); !err.empty()) {
      std::cerr << "apiary node: " << err << "\n";
      return 4;
    }
  }

  sigset_t stop = stop_signals();
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  caf::actor_system_config cfg;
  configure_network(cfg, tls);
  caf::actor_system sys{cfg};
  auto relay = sys.spawn(controller_relay, caf::actor{});
  n.controller = relay;
  const StdoutLog log("apiary node");
  n.on_log = log.sink();
  auto node = actors::spawn_node(sys, n);
  ActorWatch watch(sys, caf::actor_cast<caf::actor>(node));
  std::cout << "apiary node: " << n.name << " (" << n.vcpus << " vCPUs, " << n.memory_mib << " MiB), controller "
            << target << (tls ? " (mutual TLS)" : " (plain text, --insecure)") << std::endl;
  log.open();

  const caf::io::middleman_actor mm = tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  bool stopping = false;
  bool said_waiting = false;
  std::string last_reason;
  while (!stopping) {
    auto typed = connect_controller(sys, mm, chost, cport);
    if (!typed) {
      if (!said_waiting)
        std::cout << "apiary node: waiting for the controller at " << target << " (" << sys.render(typed.error())
                  << ")" << std::endl;
      said_waiting = true;
      // Why, on stderr, whenever the reason changes. With TLS, CAF says
      // no more than disconnect_during_handshake: one connection of our own
      // with the same files finds out what the handshake's problem is.
      // A plain-text node is closed on by a TLS controller as soon as its
      // first bytes are not a TLS ClientHello (or, had it waited for the
      // controller to speak first, it would time out).
      std::string reason = sys.render(typed.error());
      const char* expects_tls = " (does it expect TLS? then start this node with --ca, --cert and --key)";
      if (typed.error() == caf::sec::request_timeout) {
        reason = "no handshake from the controller within " + std::to_string(kConnectTimeout.count()) + " s" +
                 (tls ? "" : expects_tls);
      } else if (tls) {
        if (auto why = diagnose_tls_peer(chost, cport, *tls, kDiagnoseTimeout); !why.empty()) reason = why;
      } else if (typed.error() == caf::sec::disconnect_during_handshake) {
        reason = std::string("the controller closed the connection during the handshake") + expects_tls;
      }
      if (reason != last_reason)
        std::cerr << "apiary node: cannot connect to the controller at " << target << ": " << reason
                  << "; retrying every second" << std::endl;
      last_reason = reason;
      stopping = signalled(std::chrono::milliseconds(1000));
      continue;
    }
    said_waiting = false;
    last_reason.clear();
    auto ctrl = caf::actor_cast<caf::actor>(*typed);
    std::cout << "apiary node: connected to the controller" << std::endl;
    caf::anon_send(relay, set_ctrl_atom::value, ctrl);
    caf::scoped_actor self{sys};
    self->monitor(ctrl);
    bool lost = false;
    while (!lost && !stopping) {
      self->receive([&](caf::down_msg&) { lost = true; }, caf::after(std::chrono::milliseconds(0)) >> [] {});
      if (!lost) stopping = signalled(std::chrono::milliseconds(200));
    }
    caf::anon_send(relay, set_ctrl_atom::value, caf::actor{});
    if (lost) std::cout << "apiary node: lost the controller; reconnecting" << std::endl;
  }
  caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
  if (auto failed = watch.failure(); !failed.empty()) {
    std::cerr << "apiary node: the node stopped: " << failed << "\n";
    return kActorFailedStatus;
  }
  std::cout << "apiary node: stopping" << std::endl;
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
  return 0;
}

}  // namespace apiary::apps
