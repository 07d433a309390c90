// The control plane's HTTP/WebSocket client (see api/http_client.hpp for
// why it exists and its contract).
//
// How the deadline is kept: Beast's synchronous calls do not honour a
// tcp_stream's expiry, so each step (resolve, connect, write, read,
// handshake) is started asynchronously and a private io_context is run
// until that one step has completed; the stream's expiry (or a timer, for
// the resolver) cancels the step when the deadline passes.
#include "api/http_client.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/x509.h>

namespace apiary::apps {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = HttpClient::Clock;
namespace ssl = net::ssl;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

constexpr const char* kUserAgent = "apiary-ctl";
constexpr unsigned kHttp11 = 11;
// The largest answer accepted: an action log with many events can be big,
// but nothing the API sends comes near this.
constexpr std::uint64_t kMaxAnswerBytes = 64ull * 1024 * 1024;
// Console input is forwarded in chunks of at most this many bytes.
constexpr std::size_t kInputChunkBytes = 4096;
// A silent websocket is pinged after half of this and dropped when nothing
// at all arrives within it (the server pings on its own schedule too).
constexpr auto kWsIdleTimeout = std::chrono::seconds(60);
// How long our close handshake may take once we decide to stop.
constexpr auto kWsCloseGrace = std::chrono::seconds(2);

http::verb to_verb(HttpMethod m) {
  switch (m) {
    case HttpMethod::get: return http::verb::get;
    case HttpMethod::post: return http::verb::post;
    case HttpMethod::del: return http::verb::delete_;
  }
  return http::verb::get;
}

// Runs `io` until the one operation that `start` begins has completed and
// returns its error code. `start` receives the completion handler.
template <class Start>
beast::error_code run_step(net::io_context& io, Start&& start) {
  beast::error_code result;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  io.restart();
  io.run();
  return result;
}

struct Resolved {
  tcp::resolver::results_type endpoints;
  std::optional<HttpError> error;
};

// The resolver has no expiry of its own: a timer cancels it at the deadline.
Resolved resolve(net::io_context& io, const std::string& host, uint16_t port, Clock::time_point deadline) {
  // A numeric address needs no lookup (and so cannot outlive the deadline in
  // getaddrinfo, which a cancel cannot interrupt).
  beast::error_code numeric_ec;
  const auto address = net::ip::make_address(host, numeric_ec);
  if (!numeric_ec)
    return Resolved{tcp::resolver::results_type::create(tcp::endpoint(address, port), host, std::to_string(port)),
                    std::nullopt};
  tcp::resolver resolver(io);
  net::steady_timer timer(io);
  bool timed_out = false;
  timer.expires_at(deadline);
  timer.async_wait([&](beast::error_code ec) {
    if (ec) return;
    timed_out = true;
    resolver.cancel();
  });
  Resolved r;
  beast::error_code result;
  resolver.async_resolve(host, std::to_string(port),
                         [&](beast::error_code ec, tcp::resolver::results_type endpoints) {
                           timer.cancel();
                           result = ec;
                           r.endpoints = std::move(endpoints);
                         });
  io.restart();
  io.run();
  if (result) {
    r.error = HttpError{HttpFailure::resolve,
                        "cannot resolve the API host " + host + ": " + (timed_out ? "timed out" : result.message())};
  }
  return r;
}

std::optional<HttpError> connect(net::io_context& io, beast::tcp_stream& stream,
                                 const tcp::resolver::results_type& endpoints, Clock::time_point deadline,
                                 const std::string& authority) {
  stream.expires_at(deadline);
  const auto ec = run_step(io, [&](auto handler) { stream.async_connect(endpoints, std::move(handler)); });
  if (!ec) return std::nullopt;
  return HttpError{HttpFailure::connect, "cannot connect to the API at " + authority + ": " +
                                             (ec == beast::error::timeout ? "timed out" : ec.message())};
}

// A client TLS context trusting `ca_file` ("" : the system's CAs).
std::optional<HttpError> make_tls_context(std::optional<ssl::context>& ctx, const std::string& ca_file) {
  ctx.emplace(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  beast::error_code ec;
  if (ca_file.empty())
    ctx->set_default_verify_paths(ec);
  else
    ctx->load_verify_file(ca_file, ec);
  if (ec)
    return HttpError{HttpFailure::connect,
                     "cannot load the CA certificates " + (ca_file.empty() ? std::string("of the system") : ca_file) +
                         ": " + ec.message()};
  ctx->set_verify_mode(ssl::verify_peer);
  return std::nullopt;
}

// The TLS handshake (bounded by the stream's expiry, still the deadline),
// checking the server's certificate against the CA and `host`.
std::optional<HttpError> tls_handshake(net::io_context& io, TlsStream& stream, const std::string& host,
                                       const std::string& authority) {
  stream.set_verify_callback(ssl::host_name_verification(host));
  beast::error_code numeric_ec;
  net::ip::make_address(host, numeric_ec);
  if (numeric_ec) SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());  // SNI for names only
  const auto ec = run_step(io, [&](auto handler) { stream.async_handshake(ssl::stream_base::client, std::move(handler)); });
  if (!ec) return std::nullopt;
  std::string why = ec == beast::error::timeout ? std::string("timed out") : ec.message();
  const long verify = SSL_get_verify_result(stream.native_handle());
  if (verify != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
  return HttpError{HttpFailure::connect, "the TLS handshake with the API at " + authority + " failed: " + why};
}

// A failed step after the connection was made: the deadline, or a break.
HttpError exchange_failure(beast::error_code ec, const std::string& what, const std::string& authority) {
  if (ec == beast::error::timeout) {
    return {HttpFailure::timeout, what + ": no answer from " + authority + " before the deadline"};
  }
  return {HttpFailure::io, what + ": the connection to " + authority + " failed: " + ec.message()};
}

std::string host_header(const std::string& host, uint16_t port) {
  const bool ipv6 = host.find(':') != std::string::npos;
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// Puts a descriptor's file status flags back when it goes out of scope:
// asio makes a descriptor non-blocking, and a dup shares that flag with
// the original (our stdin, which the shell gets back).
class FlagsRestorer {
 public:
  explicit FlagsRestorer(int fd) : fd_(fd), flags_(fd >= 0 ? ::fcntl(fd, F_GETFL) : -1) {}
  ~FlagsRestorer() {
    if (flags_ >= 0) ::fcntl(fd_, F_SETFL, flags_);
  }
  FlagsRestorer(const FlagsRestorer&) = delete;
  FlagsRestorer& operator=(const FlagsRestorer&) = delete;

 private:
  int fd_;
  int flags_;
};

// One console websocket, from the connection to the end of the stream;
// over TLS (wss://) when Stream is TlsStream.
template <class Stream>
class WebSocketSession {
 public:
  template <class... StreamArgs>
  WebSocketSession(net::io_context& io, const WebSocketOptions& options, StreamArgs&&... stream_args)
      : io_(io),
        options_(options),
        ws_(io, std::forward<StreamArgs>(stream_args)...),
        signals_(io),
        until_(io),
        input_(io) {}

  // `tls_host`: the host name the server's certificate must carry (TLS).
  WebSocketOutcome run(const tcp::resolver::results_type& endpoints, const std::string& host,
                       const std::string& target, const std::string& token, Clock::time_point deadline,
                       const std::string& authority, const std::string& tls_host = {}) {
    authority_ = authority;
    if (auto err = connect(io_, beast::get_lowest_layer(ws_), endpoints, deadline, authority)) return *err;
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      if (auto err = tls_handshake(io_, ws_.next_layer(), tls_host, authority)) return *err;
    }
    if (auto refused_or_error = handshake(host, target, token)) return *refused_or_error;
    stream();
    if (error_) return *error_;
    return end_;
  }

 private:
  // The upgrade, bounded by the tcp_stream's expiry (still the deadline).
  std::optional<WebSocketOutcome> handshake(const std::string& host, const std::string& target,
                                            const std::string& token) {
    ws_.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
      req.set(http::field::user_agent, kUserAgent);
      if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    }));
    websocket::response_type response;
    const auto ec =
        run_step(io_, [&](auto handler) { ws_.async_handshake(response, host, target, std::move(handler)); });
    if (ec == websocket::error::upgrade_declined) {
      return WebSocketRefused{static_cast<int>(response.result_int()), response.body()};
    }
    if (ec) return exchange_failure(ec, "GET " + target + " (websocket upgrade)", authority_);
    return std::nullopt;
  }

  // From here on the websocket's own timeouts apply, not the deadline.
  void stream() {
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout t{};
    t.handshake_timeout = kWsCloseGrace;  // bounds our closing handshake
    t.idle_timeout = kWsIdleTimeout;
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.binary(true);
    FlagsRestorer restore_input_flags(options_.input_fd);
    read_frame();
    start_input();
    watch_deadline();
    watch_signals();
    io_.restart();
    io_.run();
  }

  void read_frame() {
    ws_.async_read(frame_, [this](beast::error_code ec, std::size_t) { on_frame(ec); });
  }

  void on_frame(beast::error_code ec) {
    if (ec) return on_read_end(ec);
    const std::string_view data(static_cast<const char*>(frame_.cdata().data()), frame_.size());
    // Once we are closing, late frames are dropped: the consumer is done.
    if (!closing_ && options_.on_frame && !options_.on_frame(data)) begin_close(WebSocketEnd::How::consumer);
    frame_.consume(frame_.size());
    read_frame();
  }

  // The read loop ends: the server's close, the end of our close, or a break.
  void on_read_end(beast::error_code ec) {
    stop_side_operations();
    if (closing_) return;  // our close finished (or timed out): end_ is set
    if (ec == websocket::error::closed) {
      end_.how = WebSocketEnd::How::server_closed;
      end_.close_code = static_cast<uint16_t>(ws_.reason().code);
      end_.close_reason = std::string(ws_.reason().reason.c_str());
      return;
    }
    error_ = exchange_failure(ec, "console websocket", authority_);
  }

  void begin_close(WebSocketEnd::How how) {
    if (closing_) return;
    closing_ = true;
    end_.how = how;
    stop_side_operations();
    // The pending read completes when the server's close frame arrives.
    ws_.async_close(websocket::close_code::normal, [](beast::error_code) {});
  }

  void stop_side_operations() {
    until_.cancel();
    beast::error_code ignored;
    signals_.cancel(ignored);
    if (input_.is_open()) input_.close(ignored);
  }

  void start_input() {
    if (options_.input_fd < 0) return;
    const int fd = ::dup(options_.input_fd);
    if (fd < 0) return;
    beast::error_code ec;
    input_.assign(fd, ec);
    if (ec) {
      ::close(fd);
      return;
    }
    read_input();
  }

  // Input is read only after the previous chunk was sent, so at most one
  // write is in flight and the buffer is never shared.
  void read_input() {
    input_.async_read_some(net::buffer(input_buffer_), [this](beast::error_code ec, std::size_t n) {
      if (ec || closing_) return;  // end of input: the output keeps streaming
      ws_.async_write(net::buffer(input_buffer_.data(), n), [this](beast::error_code wec, std::size_t) {
        if (!wec && !closing_) read_input();
      });
    });
  }

  void watch_deadline() {
    if (!options_.stream_until) return;
    until_.expires_at(*options_.stream_until);
    until_.async_wait([this](beast::error_code ec) {
      if (!ec) begin_close(WebSocketEnd::How::deadline);
    });
  }

  void watch_signals() {
    if (options_.stop_signals.empty()) return;
    for (int s : options_.stop_signals) signals_.add(s);
    signals_.async_wait([this](beast::error_code ec, int) {
      if (!ec) begin_close(WebSocketEnd::How::signal);
    });
  }

  net::io_context& io_;
  const WebSocketOptions& options_;
  websocket::stream<Stream> ws_;
  net::signal_set signals_;
  net::steady_timer until_;
  net::posix::stream_descriptor input_;
  beast::flat_buffer frame_;
  std::array<char, kInputChunkBytes> input_buffer_{};
  std::string authority_;
  bool closing_ = false;
  WebSocketEnd end_;
  std::optional<HttpError> error_;
};

}  // namespace

const char* to_string(HttpMethod m) {
  switch (m) {
    case HttpMethod::get: return "GET";
    case HttpMethod::post: return "POST";
    case HttpMethod::del: return "DELETE";
  }
  return "?";
}

const char* to_string(HttpFailure f) {
  switch (f) {
    case HttpFailure::resolve: return "resolve";
    case HttpFailure::connect: return "connect";
    case HttpFailure::timeout: return "timeout";
    case HttpFailure::io: return "io";
  }
  return "?";
}

HttpClient::HttpClient(std::string host, uint16_t port, std::string token, Clock::time_point deadline)
    : host_(std::move(host)), port_(port), token_(std::move(token)), deadline_(deadline) {}

std::string HttpClient::authority() const { return host_header(host_, port_); }

namespace {

// One request and its answer on a connected (and, for TLS, handshaken) stream.
template <class Stream>
HttpOutcome exchange(net::io_context& io, Stream& stream, HttpMethod method, const std::string& target,
                     const std::string& body, const std::string& token, const std::string& authority) {
  const std::string what = std::string(to_string(method)) + " " + target;
  http::request<http::string_body> req{to_verb(method), target, kHttp11};
  req.set(http::field::host, authority);
  req.set(http::field::user_agent, kUserAgent);
  req.set(http::field::accept, "application/json");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  if (method == HttpMethod::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  auto ec = run_step(io, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
  if (ec) return exchange_failure(ec, what, authority);

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxAnswerBytes);
  ec = run_step(io, [&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
  if (ec) return exchange_failure(ec, what, authority);
  beast::error_code ignored;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
  auto& res = parser.get();
  return HttpReply{static_cast<int>(res.result_int()), std::move(res.body())};
}

}  // namespace

HttpOutcome HttpClient::request(HttpMethod method, const std::string& target, const std::string& body) {
  net::io_context io;
  auto resolved = resolve(io, host_, port_, deadline_);
  if (resolved.error) return *resolved.error;
  if (!tls_) {
    PlainStream stream(io);
    if (auto err = connect(io, stream, resolved.endpoints, deadline_, authority())) return *err;
    return exchange(io, stream, method, target, body, token_, authority());
  }
  std::optional<ssl::context> ctx;
  if (auto err = make_tls_context(ctx, ca_file_)) return *err;
  TlsStream stream(io, *ctx);
  if (auto err = connect(io, beast::get_lowest_layer(stream), resolved.endpoints, deadline_, authority())) return *err;
  if (auto err = tls_handshake(io, stream, host_, authority())) return *err;
  return exchange(io, stream, method, target, body, token_, authority());
}

WebSocketOutcome HttpClient::stream_websocket(const std::string& target, const WebSocketOptions& options) {
  net::io_context io;
  auto resolved = resolve(io, host_, port_, deadline_);
  if (resolved.error) return *resolved.error;
  if (!tls_) {
    WebSocketSession<PlainStream> session(io, options);
    return session.run(resolved.endpoints, authority(), target, token_, deadline_, authority());
  }
  std::optional<ssl::context> ctx;
  if (auto err = make_tls_context(ctx, ca_file_)) return *err;
  WebSocketSession<TlsStream> session(io, options, *ctx);
  return session.run(resolved.endpoints, authority(), target, token_, deadline_, authority(), host_);
}

}  // namespace apiary::apps
