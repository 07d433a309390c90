// A small HTTP/1.1 + WebSocket client for the control plane's API
// (Boost.Beast), used by `apiary ctl`.
//
// Why its own class: the CLI needs exactly three things from HTTP — one
// request with a bearer token and a hard deadline, the answer as
// {status, body}, and a clear *named* reason when there is no answer
// (the host does not resolve, nothing listens, the deadline passed, the
// connection broke) so it can pick the right exit code and message. Beast's
// synchronous calls ignore a tcp_stream's expiry, so every step here runs
// asynchronously on a private io_context driven to completion, which keeps
// the interface synchronous while every wait stays bounded. There is no CAF
// and no knowledge of the API's documents in here: bodies are strings.
//
// HTTPS (use_tls): the server's certificate must verify against the CA
// file given (or the system's CAs) and name the host we connected to (DNS
// or IP subjectAltName); the websocket then is wss://. A failed TLS
// handshake is an HttpError of kind connect ("the TLS handshake with ...
// failed: certificate verify failed (self-signed certificate in ...)").
//
// One TCP connection per request (no keep-alive reuse): the CLI makes few
// requests, and a fresh connection never trips over one the server closed.
//
// WebSocket streaming (stream_websocket) is for the console: frames from
// the server go to a callback, bytes read from an input descriptor go to
// the server as binary frames, and the stream ends cleanly (close 1000) on
// a deadline or a signal.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace apiary::apps {

enum class HttpMethod { get, post, del };

// "GET", "POST", "DELETE".
const char* to_string(HttpMethod m);

// An answer, whatever its status.
struct HttpReply {
  int status = 0;
  std::string body;
};

// Why there is no answer.
enum class HttpFailure {
  resolve,  // the host name does not resolve
  connect,  // no TCP connection: refused, unreachable, or the deadline passed while connecting
  timeout,  // connected, but the exchange did not finish before the deadline
  io,       // the connection broke mid-exchange, or the answer is not HTTP
};

// "resolve", "connect", "timeout", "io".
const char* to_string(HttpFailure f);

struct HttpError {
  HttpFailure kind;
  // For a human, self-contained, e.g.
  // "cannot connect to 127.0.0.1:1: Connection refused".
  std::string message;
};

// A reply or the reason there is none.
class HttpOutcome {
 public:
  HttpOutcome(HttpReply reply) : v_(std::move(reply)) {}  // NOLINT: implicit on purpose
  HttpOutcome(HttpError error) : v_(std::move(error)) {}  // NOLINT: implicit on purpose
  bool ok() const noexcept { return v_.index() == 0; }
  const HttpReply& reply() const { return std::get<0>(v_); }
  const HttpError& error() const { return std::get<1>(v_); }

 private:
  std::variant<HttpReply, HttpError> v_;
};

// How a websocket stream ended without an error.
struct WebSocketEnd {
  enum class How {
    server_closed,  // the server sent a close frame (code and reason below)
    deadline,       // WebSocketOptions::stream_until passed; we closed
    signal,         // one of WebSocketOptions::stop_signals arrived; we closed
    consumer,       // on_frame returned false; we closed
  };
  How how = How::server_closed;
  uint16_t close_code = 0;  // the server's close code (server_closed)
  std::string close_reason;
};

struct WebSocketOptions {
  // Every binary or text frame from the server, in order. Return false to
  // end the stream (e.g. the output can no longer be written).
  std::function<bool(std::string_view)> on_frame;
  // A descriptor whose bytes are sent to the server as binary frames until
  // it reaches end of file; -1 sends nothing. It is dup()ed, not taken.
  int input_fd = -1;
  // When set, the stream is closed cleanly at this time.
  std::optional<std::chrono::steady_clock::time_point> stream_until;
  // Signals that close the stream cleanly (e.g. SIGINT for Ctrl-C).
  std::vector<int> stop_signals;
};

// The upgrade was refused: the server's plain HTTP answer (e.g. 404, 401).
using WebSocketRefused = HttpReply;

using WebSocketOutcome = std::variant<WebSocketEnd, WebSocketRefused, HttpError>;

class HttpClient {
 public:
  using Clock = std::chrono::steady_clock;

  // `token` is sent as "Authorization: Bearer <token>" unless empty.
  // Every request must be answered before `deadline`.
  HttpClient(std::string host, uint16_t port, std::string token, Clock::time_point deadline);

  // Speak HTTPS, trusting the CA certificates in `ca_file` (PEM); "" trusts
  // the system's default CAs.
  void use_tls(std::string ca_file) {
    tls_ = true;
    ca_file_ = std::move(ca_file);
  }
  bool tls() const noexcept { return tls_; }

  void set_deadline(Clock::time_point deadline) noexcept { deadline_ = deadline; }
  Clock::time_point deadline() const noexcept { return deadline_; }
  // "host:port" (IPv6 hosts in brackets), for messages.
  std::string authority() const;

  // One request. A POST sends `body` as application/json.
  HttpOutcome request(HttpMethod method, const std::string& target, const std::string& body = {});
  HttpOutcome get(const std::string& target) { return request(HttpMethod::get, target); }
  HttpOutcome post(const std::string& target, const std::string& body) {
    return request(HttpMethod::post, target, body);
  }
  HttpOutcome del(const std::string& target) { return request(HttpMethod::del, target); }

  // Opens a websocket at `target` (the connection and the upgrade must
  // finish before the deadline) and streams until the server closes, the
  // stream_until time, a stop signal, or on_frame returning false. A
  // connection lost mid-stream is an HttpError of kind io.
  WebSocketOutcome stream_websocket(const std::string& target, const WebSocketOptions& options);

 private:
  std::string host_;
  uint16_t port_;
  std::string token_;
  Clock::time_point deadline_;
  bool tls_ = false;
  std::string ca_file_;
};

}  // namespace apiary::apps
