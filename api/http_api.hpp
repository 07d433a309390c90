// The control plane's HTTP/1.1 + WebSocket front end (Boost.Beast).
//
// Why a hand-written Beast server: the API is small (a dozen routes), must
// answer with exact statuses (Nova's 409 text verbatim, 422 with every spec
// problem), must never let a client or a slow control plane pin a thread,
// and must stop promptly. Beast gives us those controls directly without a
// framework. The server only translates: JSON <-> api.proto messages and
// routes -> ControlPlaneApi calls (api/control_plane_api.hpp); it holds no
// state about instances.
//
// Routes (bodies are the proto3 JSON of proto/apiary/v1/api.proto; output
// uses snake_case names and prints every field):
//   POST   /v1/instances                      CreateInstanceRequest -> 202 Instance
//                                             (+ Location), 400 bad JSON / unknown
//                                             field, 422 spec problems
//   GET    /v1/instances                      200 InstanceList
//   GET    /v1/instances/{id}                 200 Instance, 404
//   DELETE /v1/instances/{id}                 202 ActionAccepted (the "delete" action)
//   POST   /v1/instances/{id}/actions         ActionRequest -> 202 ActionAccepted,
//                                             400 unknown action, 409/501 refusal
//   GET    /v1/instances/{id}/actions         200 ActionLog
//   GET    /v1/instances/{id}/console/history 200 ConsoleHistory
//   GET    /v1/instances/{id}/console         WebSocket (426 without the upgrade)
//   POST   /v1/networks                       CreateNetworkRequest -> 201 Network
//                                             (+ Location), 400 no name / bad cidr
//   GET    /v1/networks                       200 NetworkList
//   GET    /v1/networks/{id}                  200 Network, 404
//   DELETE /v1/networks/{id}                  202 Network (delete_wait or deleted),
//                                             404, 409 already deleted
//   GET    /v1/nodes                          200 NodeList
//   POST   /v1/nodes/{name}/stop              202 Node (stopping: it drains), 404, 409
//   GET    /metrics                           200 Prometheus text format 0.0.4
//   GET    /v1/events                         server-sent events: "hello" first (load
//                                             everything), then "change" with a Changes
//                                             document per store commit; a comment line
//                                             every 15 s of silence
//   GET    /v1/state-machines                 200 StateMachines (api/state_machines.hpp)
//   GET    /, /ui/...                         the dashboard (ui/assets.hpp): / redirects
//                                             to /ui/; /ui/ is index.html
//   POST   /ui/session                        SessionRequest -> 204 + the session cookie,
//                                             401 wrong token
//   POST   /ui/logout                         204, the cookie cleared
//   *      /compute/v2.1/...                  OpenStack Nova's compute API, the subset
//                                             its clients use (api/nova_api.hpp)
// CreateInstanceRequest.request_id, when set, makes the create idempotent
// (ControlPlaneApi::create_with_request_id).
// Authentication: with options.bearer_token set, every request needs
// "Authorization: Bearer <token>" (or "X-Auth-Token: <token>", as
// OpenStack's clients send it); otherwise 401 (with WWW-Authenticate),
// answered from the headers alone, and the connection is closed. A browser
// signs in at /ui/login (the only page served without the token): POST
// /ui/session with the token sets the cookie apiary_session (HttpOnly,
// SameSite=Strict; Secure over TLS), which then counts as the token, except
// that a request it authenticates must carry "X-Requested-With: apiary-ui"
// unless it is a GET, and a websocket it opens must have this server as its
// Origin (403 otherwise: no cross-site request can act with it).
// An unauthenticated GET of a dashboard page is redirected to /ui/login.
// Anything else is 404; a known path with another method is 405 with an
// Allow header. Every error body is an ApiError. The query string is
// ignored; path segments are percent-decoded.
//
// Console websocket: the first binary frame is the history (skipped when
// empty), then every chunk of live output is a binary frame. Text or binary
// frames from the client are console input, delivered in order (the next
// frame is read only after the previous one was delivered). A client that
// falls more than ws_backlog_bytes behind is closed with 1008 (policy) and
// can reconnect for the history. On stop() the server closes with 1001.
//
// Threading: `io_threads` threads run one io_context; every connection is
// on its own strand. ControlPlaneApi calls run on a separate pool of
// `api_threads` threads (so a slow call never blocks network I/O) and their
// answers are posted back to the connection's strand; a call still running
// after `api_timeout` is answered 504 and its eventual result dropped.
//
// Limits: request bodies over max_body_bytes are 413 (also when announced
// by Content-Length, before reading the body), headers over 16 KiB are 431.
// A request must arrive completely within read_timeout (an idle keep-alive
// connection is closed after it), a response must be written within
// write_timeout. "Expect: 100-continue" is honoured.
//
// Shutdown, stop(): the listener closes, idle keep-alive connections are
// closed at once, requests in flight may finish (answered with
// "Connection: close") and websockets are closed with 1001, for at most
// shutdown_grace; then all I/O stops, every console subscription is
// detached, and stop() waits for API calls already running (bounded by the
// ControlPlaneApi contract). stop() must not be called from an io thread
// or from inside an API call.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "api/control_plane_api.hpp"
#include "api/nova_api.hpp"
#include "proto/spec.hpp"

namespace apiary::apps {

namespace detail {
class HttpServerCore;
}

struct HttpServerOptions {
  std::size_t io_threads = 1;
  // API calls mostly wait (for the controller's answer, which waits for a
  // group commit), so there are more of these threads than cores: with 4,
  // four creates in flight held every one and a GET, which no longer needs
  // the controller (reads off the writer), queued behind them.
  std::size_t api_threads = 16;
  std::size_t max_body_bytes = 1024 * 1024;
  std::chrono::milliseconds read_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};
  std::chrono::milliseconds api_timeout{30000};
  std::chrono::milliseconds shutdown_grace{2000};
  // Websocket: a ping goes out after half of this without traffic, and the
  // connection is closed if nothing arrives in the other half.
  std::chrono::milliseconds ws_idle_timeout{60000};
  std::size_t ws_backlog_bytes = 1024 * 1024;
  // Every request must carry "Authorization: Bearer <token>", or it is
  // answered 401 before its body is read. Empty: no authentication.
  std::string bearer_token;
  // HTTPS: with both set (PEM files; the certificate file may carry the
  // chain), every connection on the port is TLS (1.2 or later) and the
  // console websocket is wss://; a plain HTTP request gets nothing back.
  // start() throws std::runtime_error naming the file that does not load.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Bounds for validating specs on POST /v1/instances.
  spec::Limits limits = spec::host_limits();
  // What Nova's API offers as images (/compute/v2.1/images): the embedded
  // guests, listed by the apps layer.
  std::vector<nova::Image> nova_images;
};

class HttpServer {
 public:
  HttpServer(ControlPlaneApi& api, std::string host, uint16_t port);
  HttpServer(ControlPlaneApi& api, std::string host, uint16_t port, HttpServerOptions options);
  ~HttpServer();  // stop()

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the threads. Returns the bound port (useful
  // with port 0). Throws std::system_error if the address can't be bound,
  // std::runtime_error if the HTTPS files can't be used, std::logic_error
  // if called twice.
  uint16_t start();

  // Graceful, bounded shutdown (see above). Idempotent; a no-op if start()
  // was never called. The server can't be started again.
  void stop();

  // The bound port; 0 before start().
  uint16_t port() const noexcept;

 private:
  std::unique_ptr<detail::HttpServerCore> core_;
};

}  // namespace apiary::apps
