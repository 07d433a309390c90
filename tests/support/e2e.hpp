// Helpers for end-to-end tests: an `apiary` subcommand as a child process
// whose first stdout line is read (it names ports), killed by signal with a
// bounded wait; a tiny HTTP client on Beast; polling with deadlines.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace apiary::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using namespace std::chrono_literals;

// An `apiary` child process; `first_line` is its first stdout line.
struct ApiaryProcess {
  pid_t pid = -1;
  std::string first_line;
  explicit ApiaryProcess(std::vector<std::string> argv) {
    argv.insert(argv.begin(), APIARY_BINARY);
    int out[2];
    BOOST_REQUIRE(::pipe(out) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
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
  }
  // The port in the first "http://127.0.0.1:PORT" of the first line.
  int http_port() const {
    std::smatch m;
    static const std::regex re("http://127\\.0\\.0\\.1:([0-9]+)");
    BOOST_REQUIRE_MESSAGE(std::regex_search(first_line, m, re), "no API line: " << first_line);
    return std::stoi(m[1]);
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

// A string field of a flat JSON object (enough for the API's answers).
inline std::string json_field(const std::string& json, const std::string& name) {
  std::smatch m;
  const std::regex re("\"" + name + "\":\"([^\"]*)\"");
  return std::regex_search(json, m, re) ? m[1].str() : std::string();
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
