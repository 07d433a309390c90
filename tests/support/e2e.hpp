// Helpers for end-to-end tests: an `apiary` subcommand as a child process
// whose first stdout line is read (it names ports), killed by signal with a
// bounded wait; a tiny HTTP client on Beast; polling with deadlines.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace apiary::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using namespace std::chrono_literals;

// The bearer token http_call sends ("" sends no Authorization header). A
// test sets it from the token file its controller wrote (read_token).
inline std::string& bearer_token() {
  static std::string token;
  return token;
}

// The token a controller wrote into `path` (its --token-file), waiting up
// to `wait` for the file to appear; "" if it never does.
inline std::string read_token(const std::string& path, std::chrono::milliseconds wait = 10s) {
  std::string token;
  const auto end = std::chrono::steady_clock::now() + wait;
  while (token.empty() && std::chrono::steady_clock::now() < end) {
    std::ifstream in(path);
    std::getline(in, token);
    if (token.empty()) std::this_thread::sleep_for(20ms);
  }
  return token;
}

// An `apiary` child process; `first_line` is its first stdout line. A
// controller or cluster started with "--token-file F" makes http_call send
// the token it wrote there (bearer_token()).
struct ApiaryProcess {
  pid_t pid = -1;
  std::string first_line;
  // `stderr_path`, when given, receives the process's stderr (created or
  // truncated); otherwise it is the test's.
  explicit ApiaryProcess(std::vector<std::string> argv, const std::string& stderr_path = {}) {
    argv.insert(argv.begin(), APIARY_BINARY);
    int out[2];
    BOOST_REQUIRE(::pipe(out) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (!stderr_path.empty())
      posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    // The test's stdin is not the service's (under scripts/kvm-vm it is a
    // relay FIFO that ends when the host's stdin does).
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, out[1]);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    BOOST_REQUIRE(posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    char c;
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < end && ::read(out[0], &c, 1) == 1 && c != '\n') first_line += c;
    ::close(out[0]);
    for (size_t i = 1; i + 1 < argv.size(); ++i)
      if (argv[i] == "--token-file") bearer_token() = read_token(argv[i + 1]);
  }
  // The port in the first "http://127.0.0.1:PORT" of the first line.
  int http_port() const {
    std::smatch m;
    static const std::regex re("http://127\\.0\\.0\\.1:([0-9]+)");
    BOOST_REQUIRE_MESSAGE(std::regex_search(first_line, m, re), "no API line: " << first_line);
    return std::stoi(m[1]);
  }
  // The number that the first group of the regex `pattern` matches in the
  // first line (e.g. a port); -1 if the pattern does not match.
  int port_in_first_line(const std::string& pattern) const {
    std::smatch m;
    const std::regex re(pattern);
    return std::regex_search(first_line, m, re) ? std::stoi(m[1]) : -1;
  }
  // Signals the process and waits (bounded); exit status, or -signal.
  int stop(int sig) {
    if (pid <= 0) return -1;
    ::kill(pid, sig);
    int status = 0;
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        pid = -1;
        return -1000;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  ~ApiaryProcess() { stop(SIGKILL); }
};

struct Reply {
  int status = 0;
  std::string body;
};

inline Reply http_call(int port, http::verb verb, const std::string& target, const std::string& body = {}) {
  net::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(30s);
  stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  if (!bearer_token().empty()) req.set(http::field::authorization, "Bearer " + bearer_token());
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res);
  beast::error_code ec;
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  BOOST_TEST_MESSAGE(http::to_string(verb) << " " << target << " -> " << res.result_int() << " " << res.body());
  return {static_cast<int>(res.result_int()), res.body()};
}

// The console websocket of an instance (/v1/instances/{id}/console), with
// the bearer token. Everything received accumulates in `received` (the
// history frame first); every wait is bounded.
//
// A wait on one console also serves every other open one (the test's
// thread owns them all): the control plane pings a console that has sent
// nothing for half its 60 s idle timeout and closes it at the full timeout,
// and a console whose io nobody runs cannot answer. Seen: test_overlay's
// first console, opened before two more Linux guests booted under TCG (over
// a minute), was closed before the test used it.
class ConsoleClient {
 public:
  ConsoleClient(int port, const std::string& id, const std::string& host = "127.0.0.1") {
    beast::get_lowest_layer(ws_).expires_after(10s);
    beast::get_lowest_layer(ws_).connect(
        net::ip::tcp::endpoint(net::ip::make_address(host), static_cast<unsigned short>(port)));
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(beast::websocket::stream_base::decorator([](beast::websocket::request_type& req) {
      if (!bearer_token().empty()) req.set(http::field::authorization, "Bearer " + bearer_token());
    }));
    // A refused upgrade says why (the control plane's status and message).
    beast::websocket::response_type res;
    beast::error_code ec;
    ws_.handshake(res, host, "/v1/instances/" + id + "/console", ec);
    if (ec)
      BOOST_FAIL("console of " << id << ": upgrade refused: " << ec.message() << " (" << res.result_int() << " "
                               << res.body() << ")");
    ws_.binary(true);
    start_read();
    open_consoles().insert(this);
  }
  ConsoleClient(const ConsoleClient&) = delete;
  ConsoleClient& operator=(const ConsoleClient&) = delete;
  void send(const std::string& text) { ws_.write(net::buffer(text)); }
  // True once `needle` occurs in what arrived after position `from`.
  bool wait_for(const std::string& needle, std::chrono::milliseconds d = 20s, size_t from = 0) {
    const auto end = std::chrono::steady_clock::now() + d;
    while (received.find(needle, from) == std::string::npos && !closed_ && std::chrono::steady_clock::now() < end)
      serve(50ms);
    return received.find(needle, from) != std::string::npos;
  }
  // Sends a line and waits for `needle` in the output that follows it.
  bool command(const std::string& line, const std::string& needle, std::chrono::milliseconds d = 20s) {
    const size_t from = received.size();
    send(line + "\r");
    return wait_for(needle, d, from);
  }
  // Lets output arrive for `d` (to check that none does).
  void idle(std::chrono::milliseconds d) {
    const auto end = std::chrono::steady_clock::now() + d;
    for (auto now = std::chrono::steady_clock::now(); now < end; now = std::chrono::steady_clock::now())
      serve(std::min<std::chrono::milliseconds>(50ms, std::chrono::ceil<std::chrono::milliseconds>(end - now)));
  }
  bool closed() const { return closed_; }
  ~ConsoleClient() {
    open_consoles().erase(this);
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
    io_.restart();
    io_.run_for(1s);
  }
  std::string received;

 private:
  static std::set<ConsoleClient*>& open_consoles() {
    static std::set<ConsoleClient*> open;
    return open;
  }
  // Runs this console's io for `d`, after what the other consoles can do at
  // once (their reads, which answer the server's pings).
  void serve(std::chrono::milliseconds d) {
    for (auto* other : open_consoles()) {
      if (other == this) continue;
      other->io_.restart();
      other->io_.poll();
    }
    io_.restart();
    io_.run_for(d);
  }
  // One read always outstanding; its handler appends and reads again.
  void start_read() {
    ws_.async_read(buf_, [this](beast::error_code ec, std::size_t) {
      if (ec) {
        closed_ = true;
        return;
      }
      received += beast::buffers_to_string(buf_.data());
      buf_.consume(buf_.size());
      start_read();
    });
  }
  net::io_context io_;
  beast::websocket::stream<beast::tcp_stream> ws_{io_};
  beast::flat_buffer buf_;
  bool closed_ = false;
};

// A string field of a flat JSON object (enough for the API's answers).
inline std::string json_field(const std::string& json, const std::string& name) {
  std::smatch m;
  const std::regex re("\"" + name + "\":\"([^\"]*)\"");
  return std::regex_search(json, m, re) ? m[1].str() : std::string();
}

// A whole file ("" if it cannot be read).
inline std::string file_contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds d = 30s) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (!p()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

}  // namespace apiary::test
