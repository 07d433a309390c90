// The control plane as the HTTP server sees it: one synchronous call per API
// operation, typed with the messages of proto/apiary/v1/api.proto.
//
// Why an interface: the HTTP layer (api/http_api.hpp) should know nothing
// about actors, the state store or CAF, and its tests should run against an
// in-memory fake. The real implementation (on the controller actors) lives
// elsewhere and implements this class.
//
// Contract for implementations:
//  * Every call returns within a bounded time (a request/response with a
//    timeout on the actor side). The server runs the calls on its own small
//    thread pool, never on its network threads, and answers 504 if a call
//    takes longer than its api_timeout; but a call that never returns still
//    ties up a pool thread and delays HttpServer::stop(), so don't.
//  * Calls may run concurrently, from several threads.
//  * Failures are values, not exceptions: return an ApiError (helpers
//    below). An exception escaping a call is answered as 500.
//  * create() receives a spec that already had spec::apply_defaults() and
//    passed spec::validate(); it may still refuse (e.g. 409 for a name in
//    use).
//  * act() receives an ActionRequest whose action the server already
//    resolved with control::action_from_api() (so it is a known Nova
//    command other than "create", and "reboot" carries SOFT or HARD).
//    DELETE /v1/instances/{id} arrives here as {"action": "delete"}. A
//    refused action is returned with refusal_error(), which keeps Nova's
//    status (409/501) and message verbatim.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "cluster/nova_states.hpp"
#include "proto/apiary/v1/api.pb.h"
#include "proto/spec.hpp"

namespace apiary::apps {

// The HTTP reason phrase for the statuses this API uses ("Conflict",
// "Not Implemented", ...); "Error" for anything else.
inline const char* status_title(int http_status) {
  switch (http_status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
  }
}

// An ApiError with code = http_status and the matching title.
inline v1::ApiError api_error(int http_status, std::string message,
                              const std::vector<spec::Problem>& problems = {}) {
  v1::ApiError e;
  e.set_code(http_status);
  e.set_title(status_title(http_status));
  e.set_message(std::move(message));
  for (const auto& p : problems) {
    auto* fp = e.add_problems();
    fp->set_path(p.path);
    fp->set_message(p.message);
  }
  return e;
}

inline v1::ApiError not_found(const std::string& instance_id) {
  return api_error(404, "instance " + instance_id + " not found");
}

// Nova's refusal as an answer: 409 "Conflict" or 501 "Not Implemented",
// message unchanged.
inline v1::ApiError refusal_error(const control::Refusal& r) { return api_error(r.http_status, r.message); }

// A value or an error answer. The error's `code` is the HTTP status; the
// server fills in `title` if it is empty and answers 500 if `code` is not a
// 4xx/5xx status.
template <class T>
class Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}                // NOLINT: implicit on purpose
  Result(v1::ApiError error) : v_(std::in_place_index<1>, std::move(error)) {}     // NOLINT: implicit on purpose

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  const v1::ApiError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, v1::ApiError> v_;
};

// A live console connection (console_attach).
//
//  * `history` is the output produced before the subscription started; the
//    implementation guarantees that history followed by the on_output calls
//    is the console stream with no gap and no overlap.
//  * `input(bytes)` delivers client keystrokes to the guest. Bounded and
//    non-blocking in practice (queue or drop); called from one thread at a
//    time, in order.
//  * `detach()` ends the subscription. After it returns, on_output is not
//    called again. The server calls it exactly once per successful attach
//    (when the websocket closes or the server stops); it must not be called
//    from inside on_output, and the server never does.
struct ConsoleSubscription {
  v1::ConsoleHistory history;
  std::function<void(std::string)> input;
  std::function<void()> detach;
};

// A live feed of changes (watch). `detach()` ends it. The server calls it
// exactly once per successful watch.
struct WatchSubscription {
  std::function<void()> detach;
};

class ControlPlaneApi {
 public:
  virtual ~ControlPlaneApi() = default;

  // POST /v1/instances: 202 with the new instance (normally vm_state
  // "building"), or e.g. 409.
  virtual Result<v1::Instance> create(const v1::InstanceSpec& spec) = 0;
  // GET /v1/instances
  virtual Result<v1::InstanceList> list() = 0;
  // GET /v1/instances/{id}: 404 (not_found()) when there is no such instance.
  virtual Result<v1::Instance> get(const std::string& id) = 0;
  // POST /v1/instances/{id}/actions and DELETE /v1/instances/{id}: 202, or
  // 404, or refusal_error() (409/501).
  virtual Result<v1::ActionAccepted> act(const std::string& id, const v1::ActionRequest& request) = 0;
  // GET /v1/instances/{id}/actions
  virtual Result<v1::ActionLog> actions(const std::string& id) = 0;
  // GET /v1/instances/{id}/console/history
  virtual Result<v1::ConsoleHistory> console_history(const std::string& id) = 0;
  // The websocket at /v1/instances/{id}/console. `on_output` receives live
  // console bytes; it may be called from any thread (one call at a time, in
  // output order) from the moment console_attach is entered until detach()
  // returns, and it never blocks (the server queues the bytes). An error
  // here (e.g. 404) is answered as plain HTTP instead of the upgrade.
  virtual Result<ConsoleSubscription> console_attach(const std::string& id,
                                                     std::function<void(std::string)> on_output) = 0;

  // POST /v1/instances with a request_id (the client's idempotency key,
  // never empty here): the same create as above, except that a key seen
  // before answers the instance it created. The default answers 501.
  virtual Result<v1::Instance> create_with_request_id(const v1::InstanceSpec& spec, const std::string& request_id) {
    (void)spec;
    return api_error(501, "idempotent create (request_id " + request_id + ") is not implemented by this control plane");
  }

  // Nodes. The defaults answer 501.
  // GET /v1/nodes
  virtual Result<v1::NodeList> list_nodes() { return api_error(501, "nodes are not implemented by this control plane"); }
  // POST /v1/nodes/{name}/stop: 202 with the node as it is after the request
  // (stopping; it drains, then becomes stopped); 404; 409 when its state
  // cannot stop.
  virtual Result<v1::Node> stop_node(const std::string& name) {
    (void)name;
    return api_error(501, "nodes are not implemented by this control plane");
  }
  // GET /v1/events (server-sent events): from the moment watch returns,
  // `on_change` receives the keys of the records that changed (instances
  // whose record, action log or VMM state changed; networks; nodes), from
  // any thread, one call at a time; it never blocks. `on_end` is called
  // (at most once, instead of any further on_change) when the feed can give
  // no more, e.g. the controller is gone, with the reason. After detach()
  // returns, neither is called again. The default answers 501.
  virtual Result<WatchSubscription> watch(std::function<void(const v1::Changes&)> on_change,
                                          std::function<void(const std::string&)> on_end) {
    (void)on_change;
    (void)on_end;
    return api_error(501, "change events are not implemented by this control plane");
  }
  // GET /metrics: the Prometheus text exposition (version 0.0.4).
  virtual Result<std::string> metrics() { return api_error(501, "metrics are not implemented by this control plane"); }

  // Networks. The defaults answer 501, for implementations without them.
  // POST /v1/networks: 201 with the new network; 400 (no name, bad cidr).
  virtual Result<v1::Network> create_network(const v1::CreateNetworkRequest& request) {
    (void)request;
    return networks_not_implemented();
  }
  // GET /v1/networks
  virtual Result<v1::NetworkList> list_networks() { return networks_not_implemented(); }
  // GET /v1/networks/{id}: 404 when there is no such network.
  virtual Result<v1::Network> get_network(const std::string& id) {
    (void)id;
    return networks_not_implemented();
  }
  // DELETE /v1/networks/{id}: 202 with the network as it is after the
  // request (delete_wait while instances are attached, else deleted); 404;
  // 409 when it is already deleted.
  virtual Result<v1::Network> delete_network(const std::string& id) {
    (void)id;
    return networks_not_implemented();
  }

 private:
  static v1::ApiError networks_not_implemented() {
    return api_error(501, "networks are not implemented by this control plane");
  }
};

}  // namespace apiary::apps
