// The control plane's HTTP/1.1 + WebSocket server; see http_api.hpp for the
// routes, limits and shutdown behaviour.
//
// Design notes:
//  * One io_context, one strand per connection (sockets are accepted onto
//    make_strand), so a connection's handlers never run concurrently and
//    need no locks. The acceptor has its own strand.
//  * Anything that may take time (JSON parsing of a body up to 1 MiB, spec
//    validation, every ControlPlaneApi call, console input and detach) runs
//    on `pool`, a boost::asio::thread_pool. The result is posted back to the
//    connection's strand. A per-request steady_timer answers 504 when the
//    pool does not answer in time; a sequence number makes sure exactly one
//    of "result" and "timeout" produces the response.
//  * Console output arrives on the control plane's threads through
//    on_output. It goes into a ConsoleLink (mutex + queue), which posts a
//    wake-up to the websocket's strand; the websocket drains the queue in
//    frames of up to 64 KiB. The link outlives the websocket if the control
//    plane still holds on_output, and once closed it drops output and posts
//    nothing, which is what makes it safe to destroy the io_context after
//    stop() closed every link.
//  * stop(): mark stopping, close the acceptor, ask every session to wind
//    down (idle HTTP: close now; busy HTTP: answer with Connection: close;
//    websocket: close 1001), wait up to shutdown_grace for the sessions to
//    end, then stop the io_context, join its threads, close+detach every
//    console link, stop+join the pool (waits for calls already running;
//    queued ones are dropped) and destroy the io_context, which destroys
//    whatever sessions were still pending.
#include "api/http_api.hpp"

#include <algorithm>
#include <cctype>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <google/protobuf/util/json_util.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "api/nova_api.hpp"
#include "api/state_machines.hpp"
#include "cluster/nova_states.hpp"
#include "ui/assets.hpp"

namespace apiary::apps {

namespace detail {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;
namespace ssl = net::ssl;

// A connection is plain TCP, or TLS over it (options.tls_cert_file): the
// sessions are templates over the stream, everything else is shared.
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
template <class Stream>
Stream make_stream(tcp::socket socket, ssl::context* ctx);
template <>
PlainStream make_stream<PlainStream>(tcp::socket socket, ssl::context*) {
  return PlainStream(std::move(socket));
}
template <>
TlsStream make_stream<TlsStream>(tcp::socket socket, ssl::context* ctx) {
  return TlsStream(std::move(socket), *ctx);
}

constexpr std::size_t kHeaderLimit = 16 * 1024;
constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::size_t kWsMessageMax = 64 * 1024;   // one input frame
constexpr std::size_t kWsFrameMax = 64 * 1024;     // one output frame
constexpr std::size_t kLingerMaxBytes = 16 * 1024 * 1024;
constexpr std::chrono::milliseconds kLingerTime{2000};
constexpr std::chrono::milliseconds kAcceptRetry{100};
constexpr const char* kServerName = "apiary";
// The dashboard's sign-in (docs/dashboard.md): the cookie carries the
// token, hex-encoded; a request authenticated by it that changes something
// must carry kUiHeader (a cross-site form cannot add a header), and a
// console websocket opened with it must come from the same origin.
constexpr std::string_view kSessionCookie = "apiary_session";
constexpr std::string_view kSessionLabel = "apiary-ui-session-v1";  // what the cookie's HMAC signs
constexpr const char* kUiHeader = "X-Requested-With";
constexpr std::string_view kUiHeaderValue = "apiary-ui";
// The event stream (GET /v1/events): a comment line after this much
// silence keeps proxies and the browser from timing the stream out; a
// reader that falls this far behind is closed (it reconnects and reloads).
constexpr std::chrono::seconds kEventHeartbeat{15};
constexpr std::size_t kEventBacklog = 1024 * 1024;
constexpr std::size_t kEventWriteMax = 64 * 1024;
constexpr std::size_t kPublicBodyLimit = 4096;  // what an unauthenticated sign-in may send

// --- text helpers -------------------------------------------------------------

// Length of the well-formed UTF-8 sequence starting at s[i], or 0.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t n = 0;
  uint32_t cp = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
    cp = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
    cp = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
    cp = lead & 0x07u;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0u) != 0x80u) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3Fu);
  }
  if (n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return n;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// proto3 strings must be UTF-8 (the JSON printer silently drops bad bytes):
// replace every ill-formed byte with U+FFFD.
std::string sanitize_utf8(std::string_view s) {
  if (valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// "/v1/instances/i-1/actions?x=y" -> {"v1", "instances", "i-1", "actions"};
// nullopt for a target that is not an absolute path or has a bad escape.
std::optional<std::vector<std::string>> split_path(std::string_view target) {
  target = target.substr(0, target.find_first_of("?#"));
  if (target.empty() || target.front() != '/') return std::nullopt;
  target.remove_prefix(1);
  std::vector<std::string> segments;
  while (true) {
    auto slash = target.find('/');
    auto decoded = percent_decode(target.substr(0, slash));
    if (!decoded) return std::nullopt;
    segments.push_back(std::move(*decoded));
    if (slash == std::string_view::npos) break;
    target.remove_prefix(slash + 1);
  }
  return segments;
}

std::string hex_encode(std::string_view s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    out += kDigits[c >> 4];
    out += kDigits[c & 0xF];
  }
  return out;
}

// The dashboard's session cookie for `token`: HMAC-SHA256 keyed with the
// token over a fixed label, hex. The token itself never travels in a cookie
// (cookies are not kept apart by port, and proxies log them); another token
// makes every cookie invalid.
std::string session_value(const std::string& token) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
           reinterpret_cast<const unsigned char*>(kSessionLabel.data()), kSessionLabel.size(), mac, &len) == nullptr)
    throw std::runtime_error("HMAC-SHA256 failed");
  return hex_encode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

// The value of cookie `name` in a Cookie header ("a=1; b=2"), or nullopt.
std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const auto semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=')
      return pair.substr(name.size() + 1);
    if (semi == std::string_view::npos) break;
    header.remove_prefix(semi + 1);
  }
  return std::nullopt;
}

// "http://host:port" -> "host:port" (the Origin header against Host).
std::string_view origin_host(std::string_view origin) {
  const auto scheme = origin.find("://");
  return scheme == std::string_view::npos ? origin : origin.substr(scheme + 3);
}

// Instance ids are whatever the control plane issues; we only insist on
// printable UTF-8 so they can go into messages and JSON unchanged.
bool plausible_id(const std::string& id) {
  if (id.empty() || !valid_utf8(id)) return false;
  return std::none_of(id.begin(), id.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r' || s.back() == '^'))
    s.pop_back();
  return s;
}

// --- JSON ---------------------------------------------------------------------

std::string to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  auto status = google::protobuf::util::MessageToJsonString(m, &out, options);
  if (!status.ok()) {
    return R"({"code":500,"title":"Internal Server Error","message":"response could not be encoded as JSON","problems":[]})";
  }
  return out;
}

// Parses `body` into `msg` (unknown fields are errors). On failure, the 400
// answer: the parser's message, plus the field path when it names one, e.g.
// "(spec.board) vcpuz: Cannot find field." -> path "spec.board.vcpuz".
std::optional<v1::ApiError> parse_json_body(const std::string& body, google::protobuf::Message& msg) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
    return api_error(400, "request body is empty; expected a JSON object");
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(body, &msg, options);
  if (status.ok()) return std::nullopt;

  std::string raw = trim(sanitize_utf8(std::string(status.message())));
  std::string path;
  std::string_view rest = raw;
  if (rest.starts_with("(")) {
    auto close = rest.find(')');
    if (close != std::string_view::npos) {
      path = std::string(rest.substr(1, close - 1));
      rest.remove_prefix(close + 1);
    }
  }
  while (rest.starts_with(" ") || rest.starts_with(":")) rest.remove_prefix(1);
  static constexpr std::string_view kUnknown = ": Cannot find field.";
  auto unknown = rest.find(kUnknown);
  if (unknown != std::string_view::npos && unknown > 0 && rest.substr(0, unknown).find(' ') == std::string_view::npos) {
    std::string field(rest.substr(0, unknown));
    path = path.empty() ? field : path + "." + field;
    rest = "unknown field";
  }
  v1::ApiError e = api_error(400, "invalid JSON: " + raw);
  if (!path.empty()) {
    auto* p = e.add_problems();
    p->set_path(path);
    p->set_message(std::string(rest));
  }
  return e;
}

// --- answers ------------------------------------------------------------------

struct Answer {
  unsigned status = 200;
  std::string body;  // JSON, unless content_type says otherwise
  std::string content_type = "application/json";
  std::vector<std::pair<http::field, std::string>> headers;
  std::vector<std::pair<std::string, std::string>> named_headers;  // fields Beast has no enum for
};

Answer error_answer(v1::ApiError e) {
  if (e.code() < 400 || e.code() > 599) e.set_code(500);
  if (e.title().empty()) e.set_title(status_title(e.code()));
  e.set_message(sanitize_utf8(e.message()));
  for (auto& p : *e.mutable_problems()) {
    p.set_path(sanitize_utf8(p.path()));
    p.set_message(sanitize_utf8(p.message()));
  }
  Answer a;
  a.status = static_cast<unsigned>(e.code());
  a.body = to_json(e);
  return a;
}

Answer error_answer(int status, std::string message) { return error_answer(api_error(status, std::move(message))); }

template <class T>
Answer answer(unsigned ok_status, const Result<T>& r) {
  if (!r.ok()) return error_answer(r.error());
  Answer a;
  a.status = ok_status;
  a.body = to_json(r.value());
  return a;
}

// 302 to `location`, with a line of text for clients that do not follow it.
Answer redirect(const char* location, std::string text) {
  Answer a;
  a.status = 302;
  a.content_type = "text/plain; charset=utf-8";
  a.body = std::move(text);
  a.headers.emplace_back(http::field::location, location);
  return a;
}

Answer method_not_allowed(const char* allow) {
  Answer a = error_answer(405, std::string("method not allowed; use ") + allow);
  a.headers.emplace_back(http::field::allow, allow);
  return a;
}

// What a pool job hands back to the connection.
struct ConsoleStart {
  std::string history;
  std::function<void(std::string)> input;
  bool event_stream = false;  // GET /v1/events: history is the first event, no input
};
struct Outcome {
  Answer answer;
  std::optional<ConsoleStart> console;  // set: upgrade to a websocket
};

// --- console link -------------------------------------------------------------

// The queue between a console's on_output (control-plane threads) and its
// websocket (strand). Thread-safe.
class ConsoleLink {
 public:
  explicit ConsoleLink(std::size_t max_backlog) : max_backlog_(max_backlog) {}

  // on_output. Drops everything once closed or overflowed.
  void push(std::string bytes) {
    std::lock_guard lock(mu_);
    if (closed_ || overflow_ || bytes.empty()) return;
    if (bytes.size() > max_backlog_ - std::min(bytes_, max_backlog_)) {
      overflow_ = true;
      pending_.clear();
      bytes_ = 0;
    } else {
      bytes_ += bytes.size();
      pending_.push_back(std::move(bytes));
    }
    notify_locked();
  }

  // The websocket is ready: from now on `wake` (which must only post) is
  // called when output arrives.
  void bind(std::function<void()> wake) {
    std::lock_guard lock(mu_);
    if (closed_) return;
    wake_ = std::move(wake);
    if (!pending_.empty() || overflow_) notify_locked();
  }

  // Moves up to `max` bytes of pending output into `out` (cleared first).
  // Returns false if output was lost because the backlog overflowed.
  bool take(std::string& out, std::size_t max) {
    out.clear();
    std::lock_guard lock(mu_);
    wake_pending_ = false;
    if (overflow_) return false;
    while (!pending_.empty() && out.size() < max) {
      std::string& front = pending_.front();
      std::size_t n = std::min(front.size(), max - out.size());
      out.append(front, 0, n);
      if (n == front.size()) {
        pending_.pop_front();
      } else {
        front.erase(0, n);
      }
      bytes_ -= n;
    }
    return true;
  }

  // The source has ended (e.g. the controller is gone): the reader is woken
  // and take() answers false, as for an overflow.
  void end() {
    std::lock_guard lock(mu_);
    if (closed_) return;
    overflow_ = true;
    pending_.clear();
    bytes_ = 0;
    notify_locked();
  }

  // Stops delivery (no more wake-ups, output dropped). Idempotent.
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    wake_ = nullptr;
    pending_.clear();
    bytes_ = 0;
  }

  // The subscription's detach. Runs it at once if the link is closed already.
  void set_detach(std::function<void()> detach) {
    {
      std::lock_guard lock(mu_);
      if (!closed_) {
        detach_ = std::move(detach);
        return;
      }
    }
    if (detach) detach();
  }

  // close() and run the detach function, once.
  void close_and_detach() {
    std::function<void()> detach;
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      wake_ = nullptr;
      pending_.clear();
      bytes_ = 0;
      detach = std::move(detach_);
      detach_ = nullptr;
    }
    if (detach) detach();
  }

 private:
  void notify_locked() {
    if (wake_ && !wake_pending_) {
      wake_pending_ = true;
      wake_();
    }
  }

  const std::size_t max_backlog_;
  std::mutex mu_;
  bool closed_ = false;
  bool overflow_ = false;
  std::deque<std::string> pending_;
  std::size_t bytes_ = 0;
  std::function<void()> wake_;
  bool wake_pending_ = false;
  std::function<void()> detach_;
};

// --- sessions -----------------------------------------------------------------

class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  explicit SessionBase(HttpServerCore& core) : core_(core) {}
  virtual ~SessionBase();
  SessionBase(const SessionBase&) = delete;
  SessionBase& operator=(const SessionBase&) = delete;

  // Called from stop(), on any thread: wind down (posts to the strand).
  virtual void begin_shutdown() = 0;

 protected:
  HttpServerCore& core_;
};

class HttpServerCore {
 public:
  HttpServerCore(ControlPlaneApi& api, std::string host, uint16_t port, HttpServerOptions options)
      : api_(api), host_(std::move(host)), requested_port_(port), options_(std::move(options)) {
    options_.io_threads = std::max<std::size_t>(options_.io_threads, 1);
    options_.api_threads = std::max<std::size_t>(options_.api_threads, 1);
    if (!options_.bearer_token.empty()) session_cookie_ = session_value(options_.bearer_token);
  }
  ~HttpServerCore() { stop(); }

  uint16_t start();
  void stop();
  uint16_t port() const noexcept { return bound_port_.load(); }

  ControlPlaneApi& api() { return api_; }
  const HttpServerOptions& options() const { return options_; }
  const std::string& session_cookie() const { return session_cookie_; }
  bool stopping() const noexcept { return stopping_.load(); }
  net::thread_pool& pool() { return *pool_; }

  void add_session(const std::shared_ptr<SessionBase>& s) {
    std::lock_guard lock(mu_);
    sessions_[s.get()] = s;
  }
  void remove_session(SessionBase* s) {
    std::lock_guard lock(mu_);
    sessions_.erase(s);
    if (sessions_.empty()) cv_.notify_all();
  }
  void register_link(const std::shared_ptr<ConsoleLink>& link) {
    std::lock_guard lock(mu_);
    std::erase_if(links_, [](const std::weak_ptr<ConsoleLink>& w) { return w.expired(); });
    links_.push_back(link);
  }
  // Stops delivery now and runs the detach on the pool. While stopping,
  // runs it right here instead: the pool may be gone, and stop() has
  // detached (or is about to detach) every link anyway.
  void detach_later(const std::shared_ptr<ConsoleLink>& link) {
    link->close();
    if (stopping_) {
      link->close_and_detach();
      return;
    }
    net::post(*pool_, [link] { link->close_and_detach(); });
  }

 private:
  void do_accept();

  ControlPlaneApi& api_;
  const std::string host_;
  const uint16_t requested_port_;
  HttpServerOptions options_;
  std::string session_cookie_;  // the dashboard's cookie value ("" without a token)

  std::mutex lifecycle_mu_;  // start/stop
  bool started_ = false;
  bool stopped_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<uint16_t> bound_port_{0};

  // Destroyed in reverse: the acceptor and timer before the io_context.
  std::optional<ssl::context> ssl_ctx_;  // set: every connection is TLS
  std::optional<net::io_context> ioc_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<net::steady_timer> accept_retry_;
  std::optional<net::thread_pool> pool_;
  std::vector<std::thread> threads_;

  std::mutex mu_;  // sessions_, links_
  std::condition_variable cv_;
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions_;
  std::vector<std::weak_ptr<ConsoleLink>> links_;
};

SessionBase::~SessionBase() { core_.remove_session(this); }

// One console websocket (over the HTTP session's stream, TLS or not).
template <class Stream>
class WsSession : public SessionBase {
 public:
  WsSession(HttpServerCore& core, Stream&& stream, std::shared_ptr<ConsoleLink> link, ConsoleStart start)
      : SessionBase(core),
        ws_(std::move(stream)),
        link_(std::move(link)),
        input_(std::move(start.input)),
        history_(std::move(start.history)) {}

  ~WsSession() override {
    if (!detached_) core_.detach_later(link_);
  }

  void run(Request req) {
    req_ = std::move(req);
    if (core_.stopping()) {
      finish();
      return;
    }
    beast::get_lowest_layer(ws_).expires_never();  // the websocket's own timeouts take over
    websocket::stream_base::timeout t{};
    t.handshake_timeout = core_.options().read_timeout;
    t.idle_timeout = core_.options().ws_idle_timeout;
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, kServerName); }));
    ws_.read_message_max(kWsMessageMax);
    ws_.binary(true);
    ws_.async_accept(req_, [self = self()](error_code ec) { self->on_accept(ec); });
  }

  void begin_shutdown() override {
    net::post(ws_.get_executor(), [self = self()] {
      if (!self->accepted_) {
        self->finish();
        error_code ec;
        beast::get_lowest_layer(self->ws_).socket().close(ec);
        return;
      }
      self->start_close(websocket::close_reason(websocket::close_code::going_away, "server shutting down"));
    });
  }

 private:
  std::shared_ptr<WsSession> self() { return std::static_pointer_cast<WsSession>(shared_from_this()); }

  void on_accept(error_code ec) {
    if (ec) {
      finish();
      return;
    }
    accepted_ = true;
    std::weak_ptr<WsSession> weak = self();
    auto ex = ws_.get_executor();
    link_->bind([weak, ex] {
      net::post(ex, [weak] {
        if (auto s = weak.lock()) s->pump();
      });
    });
    do_read();
    pump();
  }

  // Writes the next frame: the history first, then queued output.
  void pump() {
    if (writing_ || close_sent_ || done_ || !accepted_) return;
    if (closing_) {
      close_sent_ = true;
      ws_.async_close(close_reason_, [self = self()](error_code) { self->finish(); });
      return;
    }
    if (!history_.empty()) {
      out_ = std::move(history_);
      history_.clear();
    } else if (!link_->take(out_, kWsFrameMax)) {
      start_close(websocket::close_reason(websocket::close_code::policy_error, "console output backlog exceeded"));
      return;
    }
    if (out_.empty()) return;
    writing_ = true;
    ws_.async_write(net::buffer(out_), [self = self()](error_code ec, std::size_t) {
      self->writing_ = false;
      if (ec) {
        self->finish();
        return;
      }
      self->pump();
    });
  }

  void start_close(websocket::close_reason reason) {
    if (closing_ || done_) return;
    closing_ = true;
    close_reason_ = std::move(reason);
    pump();
  }

  void do_read() {
    if (done_ || close_sent_) return;
    ws_.async_read(rbuf_, [self = self()](error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(error_code ec) {
    if (ec) {
      finish();
      return;
    }
    std::string data = beast::buffers_to_string(rbuf_.data());
    rbuf_.consume(rbuf_.size());
    if (!input_ || data.empty()) {
      do_read();
      return;
    }
    // Deliver on the pool; read the next frame only when this one is in.
    auto ex = ws_.get_executor();
    net::post(core_.pool(), [self = self(), ex, data = std::move(data)]() mutable {
      try {
        self->input_(std::move(data));
      } catch (...) {
        // Input is best effort; a failing sink must not kill the session.
      }
      net::post(ex, [self = std::move(self)] { self->do_read(); });
    });
  }

  // The connection is over (or about to be): stop output and detach.
  void finish() {
    if (done_) return;
    done_ = true;
    detached_ = true;
    core_.detach_later(link_);
  }

  websocket::stream<Stream> ws_;
  std::shared_ptr<ConsoleLink> link_;
  std::function<void(std::string)> input_;
  std::string history_;
  Request req_;
  beast::flat_buffer rbuf_;
  std::string out_;
  websocket::close_reason close_reason_;
  bool accepted_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool close_sent_ = false;
  bool done_ = false;
  bool detached_ = false;
};

// One server-sent event stream (GET /v1/events) over the HTTP session's
// stream. The response has no length and ends when either side closes;
// change events come from a ConsoleLink like console output.
template <class Stream>
class EventSession : public SessionBase {
 public:
  EventSession(HttpServerCore& core, Stream&& stream, std::shared_ptr<ConsoleLink> link, std::string first)
      : SessionBase(core),
        stream_(std::move(stream)),
        link_(std::move(link)),
        out_(std::string("HTTP/1.1 200 OK\r\nServer: ") + kServerName +
             "\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
             "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n" + first),
        heartbeat_(stream_.get_executor()) {}

  ~EventSession() override {
    if (!detached_) core_.detach_later(link_);
  }

  void run() {
    if (core_.stopping()) {
      finish();
      return;
    }
    std::weak_ptr<EventSession> weak = self();
    auto ex = stream_.get_executor();
    link_->bind([weak, ex] {
      net::post(ex, [weak] {
        if (auto s = weak.lock()) s->pump();
      });
    });
    // The read first: a stream's timer covers the operations pending when it
    // is set, so a read started after the first write would inherit the
    // write's deadline and end the stream after write_timeout.
    do_read();
    write();
    arm_heartbeat();
  }

  void begin_shutdown() override {
    net::post(stream_.get_executor(), [self = self()] { self->finish(); });
  }

 private:
  std::shared_ptr<EventSession> self() { return std::static_pointer_cast<EventSession>(shared_from_this()); }

  void pump() {
    if (writing_ || done_) return;
    if (!link_->take(out_, kEventWriteMax)) {
      finish();  // the reader fell too far behind: it reconnects and reloads
      return;
    }
    if (!out_.empty()) write();
  }

  void write() {
    writing_ = true;
    beast::get_lowest_layer(stream_).expires_after(core_.options().write_timeout);
    net::async_write(stream_, net::buffer(out_), [self = self()](error_code ec, std::size_t) {
      self->writing_ = false;
      beast::get_lowest_layer(self->stream_).expires_never();
      if (ec) {
        self->finish();
        return;
      }
      self->out_.clear();
      self->pump();
    });
  }

  void arm_heartbeat() {
    heartbeat_.expires_after(kEventHeartbeat);
    heartbeat_.async_wait([self = self()](error_code ec) {
      if (ec || self->done_) return;
      if (!self->writing_) {
        self->out_ = ": keep-alive\n\n";
        self->write();
      }
      self->arm_heartbeat();
    });
  }

  // The client sends nothing after its request; a read ends when it goes.
  void do_read() {
    stream_.async_read_some(net::buffer(rbuf_), [self = self()](error_code ec, std::size_t) {
      if (ec) {
        self->finish();
        return;
      }
      self->do_read();
    });
  }

  void finish() {
    if (done_) return;
    done_ = true;
    detached_ = true;
    core_.detach_later(link_);
    heartbeat_.cancel();
    error_code ignored;
    beast::get_lowest_layer(stream_).socket().close(ignored);
  }

  Stream stream_;
  std::shared_ptr<ConsoleLink> link_;
  std::string out_;
  net::steady_timer heartbeat_;
  std::array<char, 512> rbuf_{};
  bool writing_ = false;
  bool done_ = false;
  bool detached_ = false;
};

// One HTTP connection: read a request, answer it, repeat while keep-alive.
// Over TLS the handshake comes first, bounded by read_timeout.
template <class Stream>
class HttpSession : public SessionBase {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  HttpSession(HttpServerCore& core, tcp::socket socket, ssl::context* ctx)
      : SessionBase(core),
        stream_(make_stream<Stream>(std::move(socket), ctx)),
        ex_(stream_.get_executor()),
        api_timer_(ex_) {}

  void run() {
    net::dispatch(ex_, [self = self()] {
      if (self->core_.stopping()) {
        self->close();
        return;
      }
      if constexpr (kTls) {
        self->state_ = State::handshaking;
        beast::get_lowest_layer(self->stream_).expires_after(self->core_.options().read_timeout);
        self->stream_.async_handshake(ssl::stream_base::server, [self](error_code ec) {
          if (ec || self->core_.stopping()) {
            self->close();  // not TLS, a certificate the client refused, a timeout
            return;
          }
          self->do_read();
        });
      } else {
        self->do_read();
      }
    });
  }

  // The stream's executor, kept apart: after an upgrade the stream has
  // moved into the websocket session.
  void begin_shutdown() override {
    net::post(ex_, [self = self()] {
      // Idle keep-alive connections (no byte of a next request yet) and
      // lingering ones go now; the others finish their request.
      bool idle = self->state_ == State::reading &&
                  (!self->parser_ || (!self->parser_->got_some() && self->buffer_.size() == 0));
      if (idle || self->state_ == State::lingering || self->state_ == State::handshaking) self->close();
    });
  }

 private:
  enum class State { handshaking, reading, awaiting, writing, lingering, closed, upgraded };

  std::shared_ptr<HttpSession> self() { return std::static_pointer_cast<HttpSession>(shared_from_this()); }

  void do_read() {
    state_ = State::reading;
    parser_.emplace();
    body_limit_ = core_.options().max_body_bytes;
    parser_->body_limit(body_limit_);
    parser_->header_limit(kHeaderLimit);
    beast::get_lowest_layer(stream_).expires_after(core_.options().read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = self()](error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (ec) {
      on_read_error(ec);
      return;
    }
    auto& req = parser_->get();
    const auto auth = req[http::field::authorization];
    const auto x_token = req["X-Auth-Token"];
    const std::string_view target(req.target().data(), req.target().size());
    const bool by_header = authorized(std::string_view(auth.data(), auth.size())) ||
                           token_matches(std::string_view(x_token.data(), x_token.size()));
    const auto cookie = req[http::field::cookie];
    const bool by_cookie = !by_header && cookie_matches(std::string_view(cookie.data(), cookie.size()));
    if (!by_header && !by_cookie && public_ui_path(req.method(), target)) {
      // A sign-in is a token: nothing more is read unauthenticated. (The
      // parser checked Content-Length against the general limit with the
      // header already, so the length is checked here.)
      body_limit_ = kPublicBodyLimit;
      const auto length = parser_->content_length();
      if (parser_->chunked() || (length && *length > kPublicBodyLimit)) {
        version_ = req.version();
        reply_and_linger(413, "request body exceeds " + std::to_string(kPublicBodyLimit) + " bytes");
        return;
      }
    }
    if (!by_header && !by_cookie && !public_ui_path(req.method(), target)) {
      // Before the body: an unauthenticated client gets nothing read or run.
      // A browser asking for the dashboard is sent to its sign-in page.
      Answer a;
      if (req.method() == http::verb::get && dashboard_page(target)) {
        a = redirect("/ui/login", "sign in at /ui/login\n");
      } else {
        a = error_answer(401, !req[http::field::cookie].empty() && req[http::field::authorization].empty()
                                  ? "the dashboard's session is not valid (sign in again at /ui/login)"
                              : req[http::field::authorization].empty()
                                  ? "missing bearer token (Authorization: Bearer <token>)"
                                  : "wrong bearer token");
        a.headers.emplace_back(http::field::www_authenticate, "Bearer realm=\"apiary\"");
      }
      keep_alive_ = false;
      linger_after_write_ = true;
      version_ = req.version();
      send(std::move(a));
      return;
    }
    // What a browser on another site sends (it cannot hide its Origin):
    // refused whatever the authentication, also when no token is set. A
    // cookie-signed change must also carry the page's header.
    const bool foreign = foreign_origin(req);
    if (foreign || (by_cookie && !from_the_page(req))) {
      Answer a = error_answer(403, foreign ? "cross-origin request refused (the Origin is not this server)"
                                           : std::string("cross-site request refused: a request signed in by the "
                                                         "dashboard's cookie needs the header ") +
                                                 kUiHeader + ": " + std::string(kUiHeaderValue));
      keep_alive_ = false;
      linger_after_write_ = true;
      version_ = req.version();
      send(std::move(a));
      return;
    }
    if (beast::iequals(req[http::field::expect], "100-continue") && !parser_->is_done()) {
      continue_.emplace(http::status::continue_, req.version());
      http::async_write(stream_, *continue_, [self = self()](error_code ec, std::size_t) {
        if (ec) {
          self->close();
          return;
        }
        self->read_body();
      });
      return;
    }
    read_body();
  }

  // True when no token is configured, or the header carries it. The
  // comparison takes the same time wherever the first difference is.
  bool authorized(std::string_view header) const {
    const std::string& token = core_.options().bearer_token;
    if (token.empty()) return true;
    static constexpr std::string_view kScheme = "Bearer ";
    if (header.size() != kScheme.size() + token.size()) return false;
    for (size_t i = 0; i < kScheme.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(header[i])) != std::tolower(static_cast<unsigned char>(kScheme[i])))
        return false;
    return token_matches(header.substr(kScheme.size()));
  }

  // "X-Auth-Token: <token>" (OpenStack clients without a Keystone send the
  // token so: keystoneauth's admin_token plugin) counts as the bearer token.
  bool token_matches(std::string_view value) const {
    const std::string& token = core_.options().bearer_token;
    if (token.empty() || value.size() != token.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(value[i] ^ token[i]);
    return diff == 0;
  }

  // The dashboard's cookie (POST /ui/session set it) carries the token.
  bool cookie_matches(std::string_view header) const {
    if (core_.options().bearer_token.empty() || header.empty()) return false;
    auto value = cookie_value(header, kSessionCookie);
    if (!value) return false;
    const std::string& expected = core_.session_cookie();
    if (value->size() != expected.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < expected.size(); ++i)
      diff |= static_cast<unsigned char>((*value)[i] ^ expected[i]);
    return diff == 0;
  }

  // What a browser may reach before signing in: the sign-in page itself,
  // signing in and signing out.
  static bool public_ui_path(http::verb method, std::string_view target) {
    target = target.substr(0, target.find_first_of("?#"));
    if (method == http::verb::get)
      return target == "/ui/login" || target == "/ui/login.html" || target == "/ui/login.js";
    if (method == http::verb::post) return target == "/ui/session" || target == "/ui/logout";
    return false;
  }

  // Pages (not data) of the dashboard: an unauthenticated GET is redirected.
  static bool dashboard_page(std::string_view target) {
    target = target.substr(0, target.find_first_of("?#"));
    return target == "/" || target == "/ui" || target == "/ui/" || target == "/ui/index.html";
  }

  // A websocket or a change (not GET/HEAD) whose Origin is another server.
  // Clients that are not browsers send no Origin.
  static bool foreign_origin(const Request& req) {
    if (!websocket::is_upgrade(req) && (req.method() == http::verb::get || req.method() == http::verb::head))
      return false;
    const auto origin = req[http::field::origin];
    const auto host = req[http::field::host];
    return !origin.empty() &&
           origin_host(std::string_view(origin.data(), origin.size())) != std::string_view(host.data(), host.size());
  }

  // A cookie-authenticated request came from the dashboard itself: a plain
  // GET or a websocket (it passed foreign_origin), or a request with the
  // dashboard's header.
  static bool from_the_page(const Request& req) {
    if (websocket::is_upgrade(req) || req.method() == http::verb::get || req.method() == http::verb::head)
      return true;
    const auto v = req[kUiHeader];
    return std::string_view(v.data(), v.size()) == kUiHeaderValue;
  }

  void read_body() {
    if (parser_->is_done()) {
      on_request();
      return;
    }
    http::async_read(stream_, buffer_, *parser_, [self = self()](error_code ec, std::size_t) {
      if (ec) {
        self->on_read_error(ec);
        return;
      }
      self->on_request();
    });
  }

  void on_read_error(error_code ec) {
    if (ec == http::error::body_limit) {
      reply_and_linger(413, "request body exceeds " + std::to_string(body_limit_) + " bytes");
    } else if (ec == http::error::header_limit) {
      reply_and_linger(431, "request header exceeds " + std::to_string(kHeaderLimit) + " bytes");
    } else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message) {
      reply_and_linger(400, "malformed HTTP request: " + ec.message());
    } else {
      close();  // end of stream, timeout (the socket is closed already), reset, stop()
    }
  }

  void reply_and_linger(int status, std::string message) {
    keep_alive_ = false;
    linger_after_write_ = true;
    version_ = 11;
    send(error_answer(status, std::move(message)));
  }

  void on_request() {
    Request req = parser_->release();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    route(std::move(req));
  }

  // --- routing ---

  void route(Request req) {
    const std::string target(req.target().data(), req.target().size());
    auto segments = split_path(target);
    if (segments && nova::is_nova_path(*segments)) return route_nova(*segments, target, std::move(req));
    if (segments && segments->size() >= 2 && (*segments)[0] == "v1" && (*segments)[1] == "networks")
      return route_networks(*segments, target, std::move(req));
    if (segments && segments->size() >= 2 && (*segments)[0] == "v1" && (*segments)[1] == "nodes")
      return route_nodes(*segments, target, std::move(req));
    if (segments && (*segments)[0] == "ui") return route_ui(*segments, std::move(req));
    if (segments && segments->size() == 1 && (*segments)[0].empty()) {
      if (req.method() != http::verb::get) return send(method_not_allowed("GET"));
      return send(redirect("/ui/", "the dashboard is at /ui/\n"));
    }
    if (segments && segments->size() == 2 && (*segments)[0] == "v1" && (*segments)[1] == "events") {
      if (req.method() != http::verb::get) return send(method_not_allowed("GET"));
      return events();
    }
    if (segments && segments->size() == 2 && (*segments)[0] == "v1" && (*segments)[1] == "state-machines") {
      if (req.method() != http::verb::get) return send(method_not_allowed("GET"));
      Answer a;
      a.body = to_json(state_machines());
      return send(std::move(a));
    }
    if (segments && segments->size() == 1 && (*segments)[0] == "metrics") {
      if (req.method() != http::verb::get) return send(method_not_allowed("GET"));
      return call([](ControlPlaneApi& api) {
        auto r = api.metrics();
        if (!r.ok()) return Outcome{error_answer(r.error()), {}};
        Answer a;
        a.body = std::move(r.value());
        a.headers.emplace_back(http::field::content_type, kPrometheusContentType);
        return Outcome{std::move(a), {}};
      });
    }
    if (!segments || segments->size() < 2 || (*segments)[0] != "v1" || (*segments)[1] != "instances") {
      send(not_found_path(target));
      return;
    }
    const auto& seg = *segments;
    const auto method = req.method();
    const std::size_t n = seg.size();
    if (n == 2) {
      if (method == http::verb::get) return call([](ControlPlaneApi& api) { return Outcome{answer(200, api.list()), {}}; });
      if (method == http::verb::post) return create(std::move(req.body()));
      return send(method_not_allowed("GET, POST"));
    }
    const std::string& id = seg[2];
    if (!plausible_id(id)) return send(not_found_path(target));
    if (n == 3) {
      if (method == http::verb::get)
        return call([id](ControlPlaneApi& api) { return Outcome{answer(200, api.get(id)), {}}; });
      if (method == http::verb::delete_) {
        v1::ActionRequest del;
        del.set_action("delete");
        return call([id, del](ControlPlaneApi& api) { return Outcome{answer(202, api.act(id, del)), {}}; });
      }
      return send(method_not_allowed("GET, DELETE"));
    }
    if (n == 4 && seg[3] == "actions") {
      if (method == http::verb::get)
        return call([id](ControlPlaneApi& api) { return Outcome{answer(200, api.actions(id)), {}}; });
      if (method == http::verb::post) return act(id, std::move(req.body()));
      return send(method_not_allowed("GET, POST"));
    }
    if (n == 4 && seg[3] == "console") {
      if (method != http::verb::get) return send(method_not_allowed("GET"));
      if (!websocket::is_upgrade(req)) {
        Answer a = error_answer(426, "the console is a WebSocket; send an Upgrade: websocket request");
        a.headers.emplace_back(http::field::upgrade, "websocket");
        return send(std::move(a));
      }
      return attach(id, std::move(req));
    }
    if (n == 5 && seg[3] == "console" && seg[4] == "history") {
      if (method != http::verb::get) return send(method_not_allowed("GET"));
      return call([id](ControlPlaneApi& api) {
        auto r = api.console_history(id);
        if (r.ok()) r.value().set_data(sanitize_utf8(r.value().data()));
        return Outcome{answer(200, r), {}};
      });
    }
    send(not_found_path(target));
  }

  void route_networks(const std::vector<std::string>& seg, const std::string& target, Request req) {
    const auto method = req.method();
    if (seg.size() == 2) {
      if (method == http::verb::get)
        return call([](ControlPlaneApi& api) { return Outcome{answer(200, api.list_networks()), {}}; });
      if (method == http::verb::post) {
        return call([body = std::move(req.body())](ControlPlaneApi& api) {
          v1::CreateNetworkRequest r;
          if (auto bad = parse_json_body(body, r)) return Outcome{error_answer(std::move(*bad)), {}};
          if (r.name().empty()) return Outcome{error_answer(400, "\"name\" is required"), {}};
          auto res = api.create_network(r);
          Outcome o{answer(201, res), {}};
          if (res.ok() && !res.value().id().empty())
            o.answer.headers.emplace_back(http::field::location, "/v1/networks/" + res.value().id());
          return o;
        });
      }
      return send(method_not_allowed("GET, POST"));
    }
    const std::string& id = seg[2];
    if (seg.size() != 3 || !plausible_id(id)) return send(not_found_path(target));
    if (method == http::verb::get)
      return call([id](ControlPlaneApi& api) { return Outcome{answer(200, api.get_network(id)), {}}; });
    if (method == http::verb::delete_)
      return call([id](ControlPlaneApi& api) { return Outcome{answer(202, api.delete_network(id)), {}}; });
    return send(method_not_allowed("GET, DELETE"));
  }

  // /compute/v2.1/...: Nova's API (api/nova_api.hpp), on the API pool like
  // every other call.
  void route_nova(const std::vector<std::string>& seg, const std::string& target, Request req) {
    nova::Request r;
    r.method = std::string(req.method_string());
    r.path.assign(seg.begin() + 2, seg.end());
    if (const auto q = target.find('?'); q != std::string::npos) {
      std::string_view rest = std::string_view(target).substr(q + 1);
      while (!rest.empty()) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        const auto eq = pair.find('=');
        auto k = percent_decode(pair.substr(0, eq));
        auto v = percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
        if (k && v) r.query[*k] = *v;
        if (amp == std::string_view::npos) break;
        rest.remove_prefix(amp + 1);
      }
    }
    r.body = std::move(req.body());
    const auto host = req[http::field::host];
    r.base_url = std::string(kTls ? "https://" : "http://") +
                 (host.empty() ? std::string("localhost") : std::string(host.data(), host.size())) + "/compute/v2.1";
    r.images = &core_.options().nova_images;
    return call([r = std::move(r)](ControlPlaneApi& api) {
      nova::Response n = nova::handle(api, r);
      Answer a;
      a.status = n.status;
      a.body = std::move(n.body);
      a.named_headers = std::move(n.headers);
      return Outcome{std::move(a), {}};
    });
  }

  void route_nodes(const std::vector<std::string>& seg, const std::string& target, Request req) {
    const auto method = req.method();
    if (seg.size() == 2) {
      if (method == http::verb::get)
        return call([](ControlPlaneApi& api) { return Outcome{answer(200, api.list_nodes()), {}}; });
      return send(method_not_allowed("GET"));
    }
    if (seg.size() != 4 || seg[3] != "stop" || !plausible_id(seg[2])) return send(not_found_path(target));
    if (method != http::verb::post) return send(method_not_allowed("POST"));
    return call([name = seg[2]](ControlPlaneApi& api) { return Outcome{answer(202, api.stop_node(name)), {}}; });
  }

  // /ui/...: the dashboard's files (ui/assets.hpp), sign-in and sign-out.
  void route_ui(const std::vector<std::string>& seg, Request req) {
    const std::string rest = seg.size() == 2 ? seg[1] : std::string();
    if (seg.size() == 2 && (rest == "session" || rest == "logout")) {
      if (req.method() != http::verb::post) return send(method_not_allowed("POST"));
      return rest == "session" ? sign_in(req.body()) : sign_out();
    }
    if (req.method() != http::verb::get) return send(method_not_allowed("GET"));
    std::string path = "/ui";
    for (size_t i = 1; i < seg.size(); ++i) path += "/" + seg[i];
    if (path == "/ui" || path == "/ui/") path = "/ui/index.html";
    if (path == "/ui/login") path = "/ui/login.html";
    const ui::Asset* asset = ui::find(path);
    if (!asset) return send(not_found_path(path));
    Answer a;
    a.body.assign(asset->data);
    a.content_type = std::string(asset->content_type);
    a.headers.emplace_back(http::field::cache_control, "no-cache");
    a.named_headers.emplace_back("X-Content-Type-Options", "nosniff");
    if (path.ends_with(".html")) {
      a.named_headers.emplace_back("Content-Security-Policy",
                                   "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                   "img-src 'self' data:; frame-ancestors 'none'");
      a.named_headers.emplace_back("X-Frame-Options", "DENY");
    }
    send(std::move(a));
  }

  // POST /ui/session {"token": "..."}: 204 and the session cookie, or 401.
  void sign_in(const std::string& body) {
    v1::SessionRequest r;
    if (auto bad = parse_json_body(body, r)) return send(error_answer(std::move(*bad)));
    const std::string& token = core_.options().bearer_token;
    if (!token.empty() && !token_matches(r.token())) {
      Answer a = error_answer(401, r.token().empty() ? "no token given" : "wrong token");
      return send(std::move(a));
    }
    Answer a;
    a.status = 204;
    if (!token.empty())
      a.headers.emplace_back(http::field::set_cookie, std::string(kSessionCookie) + "=" + core_.session_cookie() +
                                                          "; Path=/; HttpOnly; SameSite=Strict" +
                                                          (kTls ? "; Secure" : ""));
    send(std::move(a));
  }

  void sign_out() {
    Answer a;
    a.status = 204;
    a.headers.emplace_back(http::field::set_cookie, std::string(kSessionCookie) +
                                                        "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" +
                                                        (kTls ? "; Secure" : ""));
    send(std::move(a));
  }

  // GET /v1/events: a watch on the pool, then the stream takes the socket.
  void events() {
    auto link = std::make_shared<ConsoleLink>(kEventBacklog);
    core_.register_link(link);
    call(
        [link](ControlPlaneApi& api) {
          auto r = api.watch(
              [link](const v1::Changes& c) { link->push("event: change\ndata: " + to_json(c) + "\n\n"); },
              [link](const std::string&) { link->end(); });
          if (!r.ok()) return Outcome{error_answer(r.error()), {}};
          link->set_detach(std::move(r.value().detach));
          // retry: how long the browser waits before reconnecting.
          return Outcome{{}, ConsoleStart{"retry: 2000\nevent: hello\ndata: {}\n\n", nullptr, true}};
        },
        link);
  }

  static Answer not_found_path(std::string_view target) {
    return error_answer(404, "no such resource: " + std::string(target.substr(0, 256)));
  }

  void create(std::string body) {
    auto limits = core_.options().limits;
    call([body = std::move(body), limits](ControlPlaneApi& api) {
      v1::CreateInstanceRequest req;
      if (auto bad = parse_json_body(body, req)) return Outcome{error_answer(std::move(*bad)), {}};
      v1::InstanceSpec spec = req.spec();
      spec::apply_defaults(spec);
      auto problems = spec::validate(spec, limits);
      if (!problems.empty()) {
        for (auto& p : problems) p.path = p.path.empty() ? "spec" : "spec." + p.path;
        std::string message = "invalid instance spec: " + std::to_string(problems.size()) +
                              (problems.size() == 1 ? " problem" : " problems");
        return Outcome{error_answer(api_error(422, message, problems)), {}};
      }
      auto r = req.request_id().empty() ? api.create(spec) : api.create_with_request_id(spec, req.request_id());
      Outcome o{answer(202, r), {}};
      if (r.ok() && !r.value().id().empty()) {
        o.answer.headers.emplace_back(http::field::location, "/v1/instances/" + r.value().id());
      }
      return o;
    });
  }

  void act(const std::string& id, std::string body) {
    call([id, body = std::move(body)](ControlPlaneApi& api) {
      v1::ActionRequest req;
      if (auto bad = parse_json_body(body, req)) return Outcome{error_answer(std::move(*bad)), {}};
      if (req.action().empty()) return Outcome{error_answer(400, "\"action\" is required"), {}};
      if (req.action() == "create") {
        return Outcome{error_answer(400, "'create' is not an instance action; POST /v1/instances"), {}};
      }
      if (req.action() == "reboot" && req.type() != "SOFT" && req.type() != "HARD") {
        return Outcome{error_answer(400, "reboot needs \"type\": \"SOFT\" or \"HARD\""), {}};
      }
      auto action = control::action_from_api(req.action(), req.type());
      if (!action) return Outcome{error_answer(400, "unknown action '" + req.action() + "'"), {}};
      if (control::reboot_type(*action) == nullptr && !req.type().empty()) {
        return Outcome{error_answer(400, "\"type\" is only valid for reboot"), {}};
      }
      return Outcome{answer(202, api.act(id, req)), {}};
    });
  }

  void attach(const std::string& id, Request req) {
    upgrade_req_ = std::move(req);
    auto link = std::make_shared<ConsoleLink>(core_.options().ws_backlog_bytes);
    core_.register_link(link);
    call(
        [id, link](ControlPlaneApi& api) {
          auto r = api.console_attach(id, [link](std::string bytes) { link->push(std::move(bytes)); });
          if (!r.ok()) return Outcome{error_answer(r.error()), {}};
          auto& sub = r.value();
          link->set_detach(std::move(sub.detach));
          return Outcome{{}, ConsoleStart{std::move(*sub.history.mutable_data()), std::move(sub.input)}};
        },
        link);
  }

  // --- API calls on the pool ---

  void call(std::function<Outcome(ControlPlaneApi&)> job, std::shared_ptr<ConsoleLink> link = nullptr) {
    state_ = State::awaiting;
    const uint64_t seq = ++seq_;
    api_link_ = std::move(link);
    api_timer_.expires_after(core_.options().api_timeout);
    api_timer_.async_wait([self = self(), seq](error_code ec) {
      if (!ec) self->on_api_timeout(seq);
    });
    auto ex = ex_;
    ControlPlaneApi* api = &core_.api();
    net::post(core_.pool(), [self = self(), seq, ex, api, job = std::move(job)]() mutable {
      Outcome outcome;
      try {
        outcome = job(*api);
      } catch (const std::exception& e) {
        outcome = Outcome{error_answer(500, std::string("internal error: ") + e.what()), {}};
      } catch (...) {
        outcome = Outcome{error_answer(500, "internal error"), {}};
      }
      net::post(ex, [self = std::move(self), seq, outcome = std::move(outcome)]() mutable {
        self->on_api_done(seq, std::move(outcome));
      });
    });
  }

  void on_api_timeout(uint64_t seq) {
    if (state_ != State::awaiting || seq != seq_) return;
    if (api_link_) core_.detach_later(std::exchange(api_link_, nullptr));
    send(error_answer(504, "the control plane did not answer within " +
                               std::to_string(core_.options().api_timeout.count()) + " ms"));
  }

  void on_api_done(uint64_t seq, Outcome outcome) {
    if (state_ != State::awaiting || seq != seq_) return;  // answered 504 already; a late attach was detached
    api_timer_.cancel();
    auto link = std::exchange(api_link_, nullptr);
    if (outcome.console && link) {
      if (outcome.console->event_stream) {
        start_events(std::move(link), std::move(outcome.console->history));
      } else {
        upgrade(std::move(link), std::move(*outcome.console));
      }
      return;
    }
    if (link) link->close();  // attach failed: nothing to detach
    send(std::move(outcome.answer));
  }

  void upgrade(std::shared_ptr<ConsoleLink> link, ConsoleStart start) {
    state_ = State::upgraded;
    beast::get_lowest_layer(stream_).expires_never();
    auto ws = std::make_shared<WsSession<Stream>>(core_, std::move(stream_), std::move(link), std::move(start));
    core_.add_session(ws);
    ws->run(std::move(upgrade_req_));
  }

  void start_events(std::shared_ptr<ConsoleLink> link, std::string first) {
    state_ = State::upgraded;
    beast::get_lowest_layer(stream_).expires_never();
    auto es = std::make_shared<EventSession<Stream>>(core_, std::move(stream_), std::move(link), std::move(first));
    core_.add_session(es);
    es->run();
  }

  // --- writing ---

  void send(Answer a) {
    state_ = State::writing;
    auto res = std::make_shared<Response>(static_cast<http::status>(a.status), version_);
    res->set(http::field::server, kServerName);
    res->set(http::field::content_type, a.content_type);
    for (auto& [name, value] : a.headers) res->set(name, value);
    for (auto& [name, value] : a.named_headers) res->set(name, value);
    res->keep_alive(keep_alive_ && !core_.stopping());
    res->body() = std::move(a.body);
    res->prepare_payload();
    res_ = res;
    beast::get_lowest_layer(stream_).expires_after(core_.options().write_timeout);
    http::async_write(stream_, *res_, [self = self()](error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(error_code ec) {
    bool keep = res_ && res_->keep_alive();
    res_.reset();
    if (ec) {
      close();
      return;
    }
    if (linger_after_write_) {
      linger();
      return;
    }
    if (!keep || core_.stopping()) {
      error_code ignored;
      beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
      close();
      return;
    }
    do_read();
  }

  // After an error answer to a request we did not read completely: stop
  // sending, and read (and drop) what the client still sends for a while,
  // so that closing does not reset the connection before the client has
  // read our answer.
  void linger() {
    state_ = State::lingering;
    error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    beast::get_lowest_layer(stream_).expires_after(kLingerTime);
    drain();
  }

  void drain() {
    stream_.async_read_some(net::buffer(drain_buf_), [self = self()](error_code ec, std::size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > kLingerMaxBytes || self->state_ != State::lingering) {
        self->close();
        return;
      }
      self->drain();
    });
  }

  void close() {
    if (state_ == State::closed || state_ == State::upgraded) return;
    state_ = State::closed;
    api_timer_.cancel();
    error_code ignored;
    beast::get_lowest_layer(stream_).socket().close(ignored);
  }

  Stream stream_;
  decltype(std::declval<Stream&>().get_executor()) ex_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> continue_;
  std::shared_ptr<Response> res_;
  net::steady_timer api_timer_;
  Request upgrade_req_;
  std::shared_ptr<ConsoleLink> api_link_;
  std::array<char, 4096> drain_buf_{};
  std::size_t drained_ = 0;
  State state_ = State::reading;
  uint64_t seq_ = 0;
  unsigned version_ = 11;
  std::size_t body_limit_ = 0;  // of the request being read
  bool keep_alive_ = true;
  bool linger_after_write_ = false;
};

// --- server -------------------------------------------------------------------

// The server's TLS context: TLS 1.2 or later, the certificate chain and key
// of the options; a client certificate is not asked for (API clients
// authenticate with the bearer token).
ssl::context make_tls_context(const HttpServerOptions& o) {
  if (o.tls_cert_file.empty() || o.tls_key_file.empty())
    throw std::runtime_error("HttpServer: HTTPS needs both a certificate and a key file");
  ssl::context ctx(ssl::context::tls_server);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  error_code ec;
  ctx.use_certificate_chain_file(o.tls_cert_file, ec);
  if (ec) throw std::runtime_error("HttpServer: cannot load the HTTPS certificate " + o.tls_cert_file + ": " + ec.message());
  ctx.use_private_key_file(o.tls_key_file, ssl::context::pem, ec);
  if (ec) throw std::runtime_error("HttpServer: cannot load the HTTPS key " + o.tls_key_file + ": " + ec.message());
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    throw std::runtime_error("HttpServer: " + o.tls_key_file + " is not the key of " + o.tls_cert_file);
  return ctx;
}

uint16_t HttpServerCore::start() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (started_) throw std::logic_error("HttpServer::start called twice");
  started_ = true;

  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) ssl_ctx_.emplace(make_tls_context(options_));
  ioc_.emplace(static_cast<int>(options_.io_threads));
  const std::string where = host_ + ":" + std::to_string(requested_port_);
  try {
    tcp::resolver resolver(*ioc_);
    auto endpoints = resolver.resolve(host_, std::to_string(requested_port_), tcp::resolver::passive);
    if (endpoints.empty()) {
      throw std::system_error(std::make_error_code(std::errc::address_not_available), "HttpServer: resolve " + where);
    }
    tcp::endpoint endpoint = endpoints.begin()->endpoint();
    acceptor_.emplace(net::make_strand(*ioc_));
    acceptor_->open(endpoint.protocol());
    acceptor_->set_option(net::socket_base::reuse_address(true));
    acceptor_->bind(endpoint);
    acceptor_->listen(net::socket_base::max_listen_connections);
    bound_port_ = acceptor_->local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    // Asio throws Boost's system_error; callers get the std one.
    std::error_code code = e.code().category() == boost::system::system_category()
                               ? std::error_code(e.code().value(), std::system_category())
                               : std::make_error_code(std::errc::address_not_available);
    throw std::system_error(code, "HttpServer: cannot listen on " + where + ": " + e.code().message());
  }
  accept_retry_.emplace(acceptor_->get_executor());

  pool_.emplace(options_.api_threads);
  work_.emplace(ioc_->get_executor());
  net::post(acceptor_->get_executor(), [this] { do_accept(); });
  for (std::size_t i = 0; i < options_.io_threads; ++i) threads_.emplace_back([this] { ioc_->run(); });
  return bound_port_;
}

void HttpServerCore::do_accept() {
  acceptor_->async_accept(net::make_strand(*ioc_), [this](error_code ec, tcp::socket socket) {
    if (stopping_ || !acceptor_->is_open()) return;
    if (ec) {
      // E.g. out of file descriptors: try again shortly instead of spinning.
      accept_retry_->expires_after(kAcceptRetry);
      accept_retry_->async_wait([this](error_code wait_ec) {
        if (!wait_ec && !stopping_) do_accept();
      });
      return;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (ssl_ctx_) {
      auto session = std::make_shared<HttpSession<TlsStream>>(*this, std::move(socket), &*ssl_ctx_);
      add_session(session);
      session->run();
    } else {
      auto session = std::make_shared<HttpSession<PlainStream>>(*this, std::move(socket), nullptr);
      add_session(session);
      session->run();
    }
    do_accept();
  });
}

void HttpServerCore::stop() {
  std::lock_guard lifecycle(lifecycle_mu_);
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_ = true;

  if (!threads_.empty()) {
    // 1. No new connections; existing ones wind down.
    net::post(acceptor_->get_executor(), [this] {
      error_code ignored;
      acceptor_->close(ignored);
      accept_retry_->cancel();
    });
    std::vector<std::shared_ptr<SessionBase>> snapshot;
    {
      std::lock_guard lock(mu_);
      for (auto& [ptr, weak] : sessions_) {
        if (auto s = weak.lock()) snapshot.push_back(std::move(s));
      }
    }
    for (auto& s : snapshot) s->begin_shutdown();
    snapshot.clear();

    // 2. Give them shutdown_grace to finish.
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, options_.shutdown_grace, [this] { return sessions_.empty(); });
    }

    // 3. Stop all I/O.
    work_.reset();
    ioc_->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  // 4. No console output is delivered from here on, and every subscription
  // the control plane still holds is detached.
  std::vector<std::shared_ptr<ConsoleLink>> links;
  {
    std::lock_guard lock(mu_);
    for (auto& weak : links_) {
      if (auto l = weak.lock()) links.push_back(std::move(l));
    }
    links_.clear();
  }
  for (auto& l : links) l->close_and_detach();
  links.clear();

  // 5. Wait for API calls already running; drop queued ones.
  if (pool_) {
    pool_->stop();
    pool_->join();
    pool_.reset();
  }

  // 6. Destroy what is left (pending handlers hold the last sessions).
  accept_retry_.reset();
  acceptor_.reset();
  ioc_.reset();
}

}  // namespace detail

HttpServer::HttpServer(ControlPlaneApi& api, std::string host, uint16_t port)
    : HttpServer(api, std::move(host), port, HttpServerOptions{}) {}

HttpServer::HttpServer(ControlPlaneApi& api, std::string host, uint16_t port, HttpServerOptions options)
    : core_(std::make_unique<detail::HttpServerCore>(api, std::move(host), port, std::move(options))) {}

HttpServer::~HttpServer() { core_->stop(); }

uint16_t HttpServer::start() { return core_->start(); }
void HttpServer::stop() { core_->stop(); }
uint16_t HttpServer::port() const noexcept { return core_->port(); }

}  // namespace apiary::apps
