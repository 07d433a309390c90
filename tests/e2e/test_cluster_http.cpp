// `apiary cluster` as a user runs it: a separate process with the HTTP API
// on an ephemeral port, driven over HTTP — create a VM on real KVM, read its
// console, a Nova action, a refusal (409) and a missing capability (501),
// the action log, delete — then kill -9 and a restart on the same store,
// which must still hold every acknowledged record.
#define BOOST_TEST_MODULE cluster_http
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <regex>
#include <thread>

#include "tests/support/test_support.hpp"

extern char** environ;

using namespace std::chrono_literals;
namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace utf = boost::unit_test;

namespace {

// The cluster process; its first stdout line names the port.
struct Cluster {
  pid_t pid = -1;
  int port = 0;
  explicit Cluster(const std::string& store) {
    int out[2];
    BOOST_REQUIRE(::pipe(out) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, out[1]);
    std::vector<std::string> argv = {APIARY_BINARY, "cluster", "--nodes", "2", "--port", "0", "--store", store};
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    BOOST_REQUIRE(posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    std::string line;
    char c;
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < end && ::read(out[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(out[0]);
    std::smatch m;
    static const std::regex re("http://127\\.0\\.0\\.1:([0-9]+)");
    BOOST_REQUIRE_MESSAGE(std::regex_search(line, m, re), "no API line: " << line);
    port = std::stoi(m[1]);
  }
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
        return -2;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  ~Cluster() { stop(SIGKILL); }
};

struct Reply {
  int status = 0;
  std::string body;
};

Reply call(int port, http::verb verb, const std::string& target, const std::string& body = {}) {
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

std::string field(const std::string& json, const std::string& name) {
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
}  // namespace

BOOST_AUTO_TEST_CASE(create_act_refuse_delete_then_survive_kill_9, *utf::precondition(apiary::test::kvm_available)) {
  const std::string store = "/tmp/apiary-e2e-" + std::to_string(::getpid()) + ".sqlite";
  std::string id, deleted_id;
  {
    Cluster c(store);
    auto r = call(c.port, http::verb::post, "/v1/instances",
                  R"({"spec":{"name":"web-1","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"}}})");
    BOOST_TEST(r.status == 202);
    id = field(r.body, "id");
    BOOST_REQUIRE(!id.empty());
    BOOST_TEST(eventually([&] { return field(call(c.port, http::verb::get, "/v1/instances/" + id).body, "vm_state") == "active"; }));
    BOOST_TEST(eventually([&] {
      return call(c.port, http::verb::get, "/v1/instances/" + id + "/console/history").body.find("Apiary demo guest") !=
             std::string::npos;
    }));
    r = call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"pause"})");
    BOOST_TEST(r.status == 202);
    BOOST_TEST(eventually([&] { return field(call(c.port, http::verb::get, "/v1/instances/" + id).body, "vm_state") == "paused"; }));
    r = call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"pause"})");
    BOOST_TEST(r.status == 409);
    BOOST_TEST(r.body.find("Cannot 'pause' instance " + id + " while it is in vm_state paused") != std::string::npos);
    r = call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"suspend"})");
    BOOST_TEST(r.status == 501);
    r = call(c.port, http::verb::post, "/v1/instances", R"({"spec":{"name":"bad","board":{"vcpus":0}}})");
    BOOST_TEST(r.status == 422);
    BOOST_TEST(r.body.find("spec.board.vcpus") != std::string::npos);
    r = call(c.port, http::verb::get, "/v1/instances/" + id + "/actions");
    BOOST_TEST(r.body.find("\"action\":\"pause\"") != std::string::npos);

    // A second VM, deleted: its record must survive as deleted.
    r = call(c.port, http::verb::post, "/v1/instances",
             R"({"spec":{"name":"web-2","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"}}})");
    deleted_id = field(r.body, "id");
    BOOST_TEST(eventually([&] { return field(call(c.port, http::verb::get, "/v1/instances/" + deleted_id).body, "vm_state") == "active"; }));
    BOOST_TEST(call(c.port, http::verb::delete_, "/v1/instances/" + deleted_id).status == 202);
    BOOST_TEST(eventually([&] { return field(call(c.port, http::verb::get, "/v1/instances/" + deleted_id).body, "vm_state") == "deleted"; }));
    BOOST_TEST(c.stop(SIGKILL) == -SIGKILL);
  }
  {
    Cluster c(store);  // same store after kill -9
    auto r = call(c.port, http::verb::get, "/v1/instances/" + id);
    BOOST_TEST(r.status == 200);
    BOOST_TEST(field(r.body, "name") == "web-1");
    r = call(c.port, http::verb::get, "/v1/instances/" + deleted_id);
    BOOST_TEST(field(r.body, "vm_state") == "deleted");
    r = call(c.port, http::verb::get, "/v1/instances/" + id + "/actions");
    BOOST_TEST(r.body.find("\"action\":\"pause\"") != std::string::npos);
    BOOST_TEST(c.stop(SIGTERM) == 0);  // graceful stop
  }
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((store + suffix).c_str());
}
