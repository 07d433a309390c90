// The control plane's HTTP/WebSocket front end (api/http_api.hpp) against
// an in-memory fake ControlPlaneApi, driven by Beast clients over loopback:
// every route and status (202/200/400/404/405/409/413/422/426/431/500/501/
// 504), Nova's refusal messages passed through verbatim, 422 listing every
// spec problem with its field path, malformed JSON and unknown fields,
// keep-alive, 100-continue, read deadlines, the console websocket (history,
// live output, input, detach, backlog overflow) and the bounded shutdown
// (idle keep-alive, busy connection, open websocket, call in flight).
#define BOOST_TEST_MODULE http_api
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <google/protobuf/util/json_util.h>

#include "cluster/nova_states.hpp"
#include "api/control_plane_api.hpp"
#include "api/http_api.hpp"
#include "cluster/shakenfist_states.hpp"
#include "ui/assets.hpp"

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using Response = http::response<http::string_body>;
using namespace std::chrono_literals;
using namespace apiary;
using apiary::apps::ControlPlaneApi;
using apiary::apps::HttpServer;
using apiary::apps::HttpServerOptions;
using apiary::apps::Result;
using control::TaskState;
using control::VmState;

namespace {

// --- the fake control plane ---------------------------------------------------

struct FakeInstance {
  v1::Instance instance;
  VmState vm = VmState::active;
  TaskState task = TaskState::none;
  std::vector<v1::ActionRecord> log;
  std::string history;
  std::string input;
};

class FakeApi : public ControlPlaneApi {
 public:
  // Adds an instance directly, in the given state.
  void add(const std::string& id, VmState vm, TaskState task = TaskState::none, std::string history = {}) {
    std::lock_guard lock(mu_);
    FakeInstance& f = instances_[id];
    f.instance.set_id(id);
    f.instance.set_name(id);
    f.vm = vm;
    f.task = task;
    f.history = std::move(history);
    sync(f);
  }

  // Console output from the "guest": appended to the history and sent to
  // every subscriber of the instance.
  void emit(const std::string& id, const std::string& bytes) {
    std::lock_guard lock(mu_);
    instances_[id].history += bytes;
    for (auto& [n, sub] : subscribers_) {
      if (sub.first == id) sub.second(bytes);
    }
  }

  std::string input_of(const std::string& id) {
    std::lock_guard lock(mu_);
    return instances_[id].input;
  }
  VmState vm_of(const std::string& id) {
    std::lock_guard lock(mu_);
    return instances_[id].vm;
  }
  std::size_t instance_count() {
    std::lock_guard lock(mu_);
    return instances_.size();
  }
  std::size_t subscriber_count() {
    std::lock_guard lock(mu_);
    return subscribers_.size();
  }
  std::vector<v1::ActionRequest> act_requests() {
    std::lock_guard lock(mu_);
    return act_requests_;
  }
  std::optional<v1::InstanceSpec> last_created_spec() {
    std::lock_guard lock(mu_);
    return last_spec_;
  }

  std::atomic<int> get_delay_ms{0};
  std::atomic<bool> throw_on_list{false};
  std::atomic<int> detach_calls{0};

  Result<v1::Instance> create(const v1::InstanceSpec& spec) override {
    std::lock_guard lock(mu_);
    last_spec_ = spec;
    for (auto& [id, f] : instances_) {
      if (f.instance.name() == spec.name()) return apps::api_error(409, "instance name '" + spec.name() + "' is in use");
    }
    std::string id = "i-" + std::to_string(next_id_++);
    FakeInstance& f = instances_[id];
    f.instance.set_id(id);
    f.instance.set_name(spec.name());
    *f.instance.mutable_spec() = spec;
    f.instance.set_record_state("initial");
    f.instance.set_created_at(1700000000000);
    f.instance.set_updated_at(1700000000000);
    f.vm = VmState::building;
    f.task = TaskState::scheduling;
    sync(f);
    return f.instance;
  }

  Result<v1::InstanceList> list() override {
    if (throw_on_list) throw std::runtime_error("store on fire");
    std::lock_guard lock(mu_);
    v1::InstanceList out;
    for (auto& [id, f] : instances_) *out.add_instances() = f.instance;
    return out;
  }

  Result<v1::Instance> get(const std::string& id) override {
    if (int ms = get_delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    std::lock_guard lock(mu_);
    auto it = instances_.find(id);
    if (it == instances_.end()) return apps::not_found(id);
    return it->second.instance;
  }

  Result<v1::ActionAccepted> act(const std::string& id, const v1::ActionRequest& request) override {
    std::lock_guard lock(mu_);
    act_requests_.push_back(request);
    auto it = instances_.find(id);
    if (it == instances_.end()) return apps::not_found(id);
    FakeInstance& f = it->second;
    auto action = control::action_from_api(request.action(), request.type());
    if (!action) return apps::api_error(400, "fake: unknown action");
    // As a control plane built without live migration: the 501 path.
    if (auto refusal = control::check(*action, f.vm, f.task, id, control::CapabilitySet{true, false}))
      return apps::refusal_error(*refusal);
    f.vm = control::success_state(*action, f.vm);
    sync(f);
    v1::ActionAccepted accepted;
    accepted.set_request_id("req-" + std::to_string(next_request_++));
    accepted.set_instance_id(id);
    accepted.set_action(control::api_name(*action));
    v1::ActionRecord& record = f.log.emplace_back();
    record.set_request_id(accepted.request_id());
    record.set_action(accepted.action());
    record.set_start(1000 + static_cast<int64_t>(f.log.size()));
    record.set_finish(2000 + static_cast<int64_t>(f.log.size()));
    record.set_result("success");
    record.add_events("compute_" + accepted.action());
    return accepted;
  }

  Result<v1::ActionLog> actions(const std::string& id) override {
    std::lock_guard lock(mu_);
    auto it = instances_.find(id);
    if (it == instances_.end()) return apps::not_found(id);
    v1::ActionLog log;
    for (auto& r : it->second.log) *log.add_actions() = r;
    return log;
  }

  Result<v1::ConsoleHistory> console_history(const std::string& id) override {
    std::lock_guard lock(mu_);
    auto it = instances_.find(id);
    if (it == instances_.end()) return apps::not_found(id);
    v1::ConsoleHistory h;
    h.set_data(it->second.history);
    h.set_dropped(7);
    return h;
  }

  // GET /v1/events: every watcher gets what notify() sends.
  Result<apps::WatchSubscription> watch(std::function<void(const v1::Changes&)> on_change,
                                        std::function<void(const std::string&)> on_end) override {
    std::lock_guard lock(mu_);
    const int n = next_sub_++;
    watchers_[n] = std::move(on_change);
    watch_ends_[n] = std::move(on_end);
    return apps::WatchSubscription{[this, n] {
      std::lock_guard l(mu_);
      watchers_.erase(n);
      watch_ends_.erase(n);
      ++watch_detaches;
    }};
  }
  // The feed is over (the controller went away): every watcher is told.
  void end_watches(const std::string& why) {
    std::lock_guard lock(mu_);
    for (auto& [n, e] : watch_ends_) e(why);
  }
  void notify(const v1::Changes& c) {
    std::lock_guard lock(mu_);
    for (auto& [n, w] : watchers_) w(c);
  }
  std::size_t watcher_count() {
    std::lock_guard lock(mu_);
    return watchers_.size();
  }
  std::atomic<int> watch_detaches{0};

  Result<apps::ConsoleSubscription> console_attach(const std::string& id,
                                                   std::function<void(std::string)> on_output) override {
    std::lock_guard lock(mu_);
    auto it = instances_.find(id);
    if (it == instances_.end()) return apps::not_found(id);
    int n = next_sub_++;
    subscribers_[n] = {id, std::move(on_output)};
    apps::ConsoleSubscription sub;
    sub.history.set_data(it->second.history);
    sub.input = [this, id](std::string bytes) {
      std::lock_guard l(mu_);
      instances_[id].input += bytes;
    };
    sub.detach = [this, n] {
      std::lock_guard l(mu_);
      subscribers_.erase(n);
      ++detach_calls;
    };
    return sub;
  }

 private:
  static void sync(FakeInstance& f) {
    f.instance.set_vm_state(control::to_string(f.vm));
    f.instance.set_task_state(f.task == TaskState::none ? "" : control::to_string(f.task));
  }

  std::mutex mu_;
  std::map<std::string, FakeInstance> instances_;
  std::map<int, std::pair<std::string, std::function<void(std::string)>>> subscribers_;
  std::map<int, std::function<void(const v1::Changes&)>> watchers_;
  std::map<int, std::function<void(const std::string&)>> watch_ends_;
  std::vector<v1::ActionRequest> act_requests_;
  std::optional<v1::InstanceSpec> last_spec_;
  int next_id_ = 1;
  int next_request_ = 1;
  int next_sub_ = 0;
};

// --- clients ------------------------------------------------------------------

// Runs `ioc` until *done or the deadline; true if done.
bool run_until(net::io_context& ioc, const bool& done, std::chrono::milliseconds timeout) {
  ioc.restart();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    ioc.run_one_for(deadline - now);
  }
  return done;
}

class Client {
 public:
  explicit Client(uint16_t port) { stream_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port)); }

  Response request(http::verb verb, const std::string& target, std::optional<std::string> body = std::nullopt,
                   bool keep_alive = true) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "localhost");
    if (body) {
      req.set(http::field::content_type, "application/json");
      req.body() = *body;
    }
    req.keep_alive(keep_alive);
    req.prepare_payload();
    http::write(stream_, req);
    return read_response();
  }

  void write_raw(std::string_view bytes) { net::write(stream_.socket(), net::buffer(bytes.data(), bytes.size())); }

  // Reads raw bytes until `needle` has arrived (or the timeout); returns
  // everything read so far (the event stream has no length to parse by).
  std::string read_until(std::string_view needle, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (raw_.find(needle) == std::string::npos) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      std::array<char, 1024> chunk{};
      bool done = false;
      std::size_t got = 0;
      error_code ec;
      stream_.async_read_some(net::buffer(chunk), [&](error_code e, std::size_t n) {
        ec = e;
        got = n;
        done = true;
      });
      if (!run_until(ioc_, done, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now))) {
        stream_.cancel();
        run_until(ioc_, done, 1s);
        break;
      }
      raw_.append(chunk.data(), got);
      if (ec) break;
    }
    return raw_;
  }

  Response read_response(std::chrono::milliseconds timeout = 5s) {
    Response res;
    error_code ec;
    bool done = false;
    http::async_read(stream_, buffer_, res, [&](error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    if (!run_until(ioc_, done, timeout)) {
      stream_.cancel();
      run_until(ioc_, done, 1s);
      BOOST_FAIL("no response within the timeout");
    }
    BOOST_REQUIRE_MESSAGE(!ec, "reading the response: " << ec.message());
    return res;
  }

  // Reads the response head only (for 100 Continue).
  unsigned read_interim_status() {
    http::response_parser<http::empty_body> parser;
    error_code ec;
    bool done = false;
    http::async_read_header(stream_, buffer_, parser, [&](error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    BOOST_REQUIRE(run_until(ioc_, done, 5s));
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    return parser.get().result_int();
  }

  // True if the server closes the connection (EOF or reset) within timeout.
  bool closed_within(std::chrono::milliseconds timeout) {
    std::array<char, 256> scratch{};
    error_code ec;
    bool done = false;
    auto read_more = std::make_shared<std::function<void()>>();
    *read_more = [&, read_more] {
      stream_.async_read_some(net::buffer(scratch), [&, read_more](error_code e, std::size_t) {
        if (e) {
          ec = e;
          done = true;
        } else {
          (*read_more)();  // discard whatever arrives before the close
        }
      });
    };
    (*read_more)();
    bool closed = run_until(ioc_, done, timeout);
    if (!closed) {
      stream_.cancel();
      run_until(ioc_, done, 1s);
    }
    *read_more = nullptr;
    return closed && ec != net::error::operation_aborted;
  }

 private:
  net::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
  std::string raw_;
};

class WsClient {
 public:
  // Connects and attempts the upgrade; `res` receives the server's answer.
  error_code connect(uint16_t port, const std::string& target, websocket::response_type& res) {
    beast::get_lowest_layer(ws_).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    error_code ec;
    ws_.handshake(res, "localhost", target, ec);
    return ec;
  }

  // One message, or nullopt (then error() says why).
  std::optional<std::string> read(std::chrono::milliseconds timeout = 5s) {
    bool done = false;
    error_code ec;
    ws_.async_read(buffer_, [&](error_code e, std::size_t) {
      ec = e;
      done = true;
    });
    if (!run_until(ioc_, done, timeout)) {
      beast::get_lowest_layer(ws_).cancel();
      run_until(ioc_, done, 1s);
      error_ = net::error::timed_out;
      return std::nullopt;
    }
    error_ = ec;
    if (ec) return std::nullopt;
    last_binary_ = ws_.got_binary();
    std::string s = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    return s;
  }

  void write_text(const std::string& s) {
    ws_.text(true);
    ws_.write(net::buffer(s));
  }
  void close() { ws_.close(websocket::close_code::normal); }

  error_code error() const { return error_; }
  bool last_binary() const { return last_binary_; }
  websocket::close_reason reason() const { return ws_.reason(); }

 private:
  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_{ioc_};
  beast::flat_buffer buffer_;
  error_code error_;
  bool last_binary_ = false;
};

// --- helpers ------------------------------------------------------------------

template <class M>
M parse(const std::string& body) {
  M m;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(body, &m, options);
  BOOST_REQUIRE_MESSAGE(status.ok(), "response is not a " << m.GetTypeName() << ": " << status.ToString() << "\n"
                                                          << body);
  return m;
}

v1::ApiError expect_error(const Response& res, unsigned status) {
  BOOST_TEST(res.result_int() == status, "status " << res.result_int() << " body " << res.body());
  BOOST_TEST(res[http::field::content_type] == "application/json");
  auto e = parse<v1::ApiError>(res.body());
  BOOST_TEST(e.code() == static_cast<int>(status));
  BOOST_TEST(e.title() == apps::status_title(static_cast<int>(status)));
  return e;
}

long long ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

HttpServerOptions test_options() {
  HttpServerOptions o;
  o.limits = spec::Limits{};  // not the host's: the same answer everywhere
  o.read_timeout = 5s;
  o.write_timeout = 5s;
  o.api_timeout = 5s;
  return o;
}

struct Server {
  explicit Server(HttpServerOptions options = test_options()) : server(api, "127.0.0.1", 0, std::move(options)) {
    port = server.start();
  }
  ~Server() { server.stop(); }

  Response call(http::verb verb, const std::string& target, std::optional<std::string> body = std::nullopt) {
    Client c(port);
    return c.request(verb, target, std::move(body));
  }

  FakeApi api;
  HttpServer server;
  uint16_t port = 0;
};

struct Fixture : Server {};

}  // namespace

// --- POST /v1/instances -------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(create_answers_202_with_the_defaulted_instance, Fixture) {
  BOOST_TEST(port != 0);
  auto res = call(http::verb::post, "/v1/instances", R"({"spec": {"name": "web-1"}})");
  BOOST_TEST(res.result_int() == 202u, res.body());
  BOOST_TEST(res[http::field::content_type] == "application/json");
  BOOST_TEST(res[http::field::location] == "/v1/instances/i-1");
  auto inst = parse<v1::Instance>(res.body());
  BOOST_TEST(inst.id() == "i-1");
  BOOST_TEST(inst.name() == "web-1");
  BOOST_TEST(inst.vm_state() == "building");
  BOOST_TEST(inst.spec().board().vcpus() == 1u);  // defaults applied before create()
  BOOST_TEST(inst.spec().board().memory_mib() == 64u);
  BOOST_TEST(inst.spec().boot().embedded_guest() == "demo");
  // snake_case names, zero values printed, int64 as strings (proto3 JSON).
  BOOST_TEST(res.body().find(R"("vm_state":"building")") != std::string::npos, res.body());
  BOOST_TEST(res.body().find(R"("power_state":"")") != std::string::npos, res.body());
  BOOST_TEST(res.body().find(R"("created_at":"1700000000000")") != std::string::npos, res.body());
  BOOST_TEST(res.body().find(R"("memory_mib")") != std::string::npos, res.body());

  // lowerCamelCase input is accepted too.
  res = call(http::verb::post, "/v1/instances", R"({"spec":{"name":"web-2","board":{"vcpus":2,"memoryMib":128}}})");
  BOOST_TEST(res.result_int() == 202u, res.body());
  BOOST_TEST(parse<v1::Instance>(res.body()).spec().board().memory_mib() == 128u);
  BOOST_TEST(api.instance_count() == 2u);
}

BOOST_FIXTURE_TEST_CASE(create_with_malformed_json_is_400, Fixture) {
  for (std::string body : {R"({"spec":)", "", "   ", "[]", "not json", R"({"spec":{"name":"a"}} trailing)",
                           R"({"spec":{"board":{"vcpus":"many"}}})"}) {
    BOOST_TEST_CONTEXT("body: " << body) {
      auto e = expect_error(call(http::verb::post, "/v1/instances", body), 400);
      BOOST_TEST(!e.message().empty());
    }
  }
  auto e = expect_error(call(http::verb::post, "/v1/instances", R"({"spec":)"), 400);
  BOOST_TEST(e.message().starts_with("invalid JSON: "), e.message());
  e = expect_error(call(http::verb::post, "/v1/instances", R"({"spec":{"board":{"vcpus":"many"}}})"), 400);
  BOOST_REQUIRE(e.problems_size() == 1);
  BOOST_TEST(e.problems(0).path() == "spec.board.vcpus");
  BOOST_TEST(api.instance_count() == 0u);
}

BOOST_FIXTURE_TEST_CASE(create_with_unknown_fields_is_400_naming_the_field, Fixture) {
  auto e = expect_error(call(http::verb::post, "/v1/instances", R"({"spec":{"name":"a","board":{"vcpuz":1}}})"), 400);
  BOOST_REQUIRE(e.problems_size() == 1);
  BOOST_TEST(e.problems(0).path() == "spec.board.vcpuz");
  BOOST_TEST(e.problems(0).message() == "unknown field");
  e = expect_error(call(http::verb::post, "/v1/instances", R"({"spek":{"name":"a"}})"), 400);
  BOOST_REQUIRE(e.problems_size() == 1);
  BOOST_TEST(e.problems(0).path() == "spek");
  BOOST_TEST(api.instance_count() == 0u);
  BOOST_TEST(!api.last_created_spec().has_value());
}

BOOST_FIXTURE_TEST_CASE(create_with_an_invalid_spec_is_422_with_every_problem, Fixture) {
  auto res = call(http::verb::post, "/v1/instances",
                  R"({"spec":{"name":"Bad_Name","board":{"vcpus":0,"memory_mib":1},)"
                  R"("devices":{"nics":[{"network":"","mac":"zz"}]}}})");
  auto e = expect_error(res, 422);
  std::vector<std::string> paths;
  for (auto& p : e.problems()) {
    paths.push_back(p.path());
    BOOST_TEST(!p.message().empty());
  }
  std::vector<std::string> expected = {"spec.name", "spec.board.vcpus", "spec.board.memory_mib",
                                       "spec.devices.nics[0].network", "spec.devices.nics[0].mac"};
  BOOST_TEST(paths == expected, boost::test_tools::per_element());
  BOOST_TEST(e.message() == "invalid instance spec: 5 problems");
  BOOST_TEST(e.problems(1).message() == "must be 1..64 (got 0)");

  // No spec at all: the name is the one thing without a default.
  e = expect_error(call(http::verb::post, "/v1/instances", "{}"), 422);
  BOOST_REQUIRE(e.problems_size() == 1);
  BOOST_TEST(e.problems(0).path() == "spec.name");
  BOOST_TEST(e.message() == "invalid instance spec: 1 problem");
  BOOST_TEST(api.instance_count() == 0u);
}

BOOST_FIXTURE_TEST_CASE(create_passes_the_control_planes_refusal_through, Fixture) {
  BOOST_TEST(call(http::verb::post, "/v1/instances", R"({"spec":{"name":"dup"}})").result_int() == 202u);
  auto e = expect_error(call(http::verb::post, "/v1/instances", R"({"spec":{"name":"dup"}})"), 409);
  BOOST_TEST(e.message() == "instance name 'dup' is in use");
}

// --- GET /v1/instances, GET/DELETE /v1/instances/{id} -------------------------

BOOST_FIXTURE_TEST_CASE(list_and_get, Fixture) {
  auto list = parse<v1::InstanceList>(call(http::verb::get, "/v1/instances").body());
  BOOST_TEST(list.instances_size() == 0);
  BOOST_TEST(call(http::verb::get, "/v1/instances").body() == R"({"instances":[]})");

  api.add("i-a", VmState::active);
  api.add("i-b", VmState::stopped);
  auto res = call(http::verb::get, "/v1/instances?limit=10");  // the query is ignored
  BOOST_TEST(res.result_int() == 200u);
  list = parse<v1::InstanceList>(res.body());
  BOOST_REQUIRE(list.instances_size() == 2);
  BOOST_TEST(list.instances(0).id() == "i-a");
  BOOST_TEST(list.instances(1).vm_state() == "stopped");

  res = call(http::verb::get, "/v1/instances/i-b");
  BOOST_TEST(res.result_int() == 200u);
  BOOST_TEST(parse<v1::Instance>(res.body()).vm_state() == "stopped");
  // Path segments are percent-decoded.
  BOOST_TEST(parse<v1::Instance>(call(http::verb::get, "/v1/instances/i%2Da").body()).id() == "i-a");

  auto e = expect_error(call(http::verb::get, "/v1/instances/nope"), 404);
  BOOST_TEST(e.message() == "instance nope not found");
}

BOOST_FIXTURE_TEST_CASE(delete_is_the_delete_action, Fixture) {
  api.add("i-d", VmState::active);
  auto res = call(http::verb::delete_, "/v1/instances/i-d");
  BOOST_TEST(res.result_int() == 202u, res.body());
  auto accepted = parse<v1::ActionAccepted>(res.body());
  BOOST_TEST(accepted.action() == "delete");
  BOOST_TEST(accepted.instance_id() == "i-d");
  BOOST_TEST(!accepted.request_id().empty());
  BOOST_TEST((api.vm_of("i-d") == VmState::deleted));
  auto requests = api.act_requests();
  BOOST_REQUIRE(requests.size() == 1u);
  BOOST_TEST(requests[0].action() == "delete");

  expect_error(call(http::verb::delete_, "/v1/instances/ghost"), 404);
}

// --- actions ------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(accepted_actions_answer_202, Fixture) {
  api.add("i-1", VmState::active);
  auto res = call(http::verb::post, "/v1/instances/i-1/actions", R"({"action":"pause"})");
  BOOST_TEST(res.result_int() == 202u, res.body());
  auto accepted = parse<v1::ActionAccepted>(res.body());
  BOOST_TEST(accepted.action() == "pause");
  BOOST_TEST(accepted.instance_id() == "i-1");
  BOOST_TEST((api.vm_of("i-1") == VmState::paused));

  res = call(http::verb::post, "/v1/instances/i-1/actions", R"({"action":"reboot","type":"HARD","args":{"why":"test"}})");
  BOOST_TEST(res.result_int() == 202u, res.body());
  BOOST_TEST(parse<v1::ActionAccepted>(res.body()).action() == "reboot");
  auto requests = api.act_requests();
  BOOST_REQUIRE(requests.size() == 2u);
  BOOST_TEST(requests[1].type() == "HARD");
  BOOST_TEST(requests[1].args().at("why") == "test");
  BOOST_TEST((api.vm_of("i-1") == VmState::active));

  expect_error(call(http::verb::post, "/v1/instances/ghost/actions", R"({"action":"pause"})"), 404);
}

BOOST_FIXTURE_TEST_CASE(refusals_pass_novas_message_through_verbatim, Fixture) {
  api.add("i-s", VmState::stopped);
  auto e = expect_error(call(http::verb::post, "/v1/instances/i-s/actions", R"({"action":"pause"})"), 409);
  BOOST_TEST(e.title() == "Conflict");
  BOOST_TEST(e.message() == "Cannot 'pause' instance i-s while it is in vm_state stopped");
  BOOST_TEST(e.message() == control::check(control::Action::pause, VmState::stopped, TaskState::none, "i-s")->message);
  BOOST_TEST(e.problems_size() == 0);

  api.add("i-t", VmState::active, TaskState::powering_off);
  e = expect_error(call(http::verb::post, "/v1/instances/i-t/actions", R"({"action":"reboot","type":"SOFT"})"), 409);
  BOOST_TEST(e.message() == "Cannot 'reboot' instance i-t while it is in task_state powering_off");

  api.add("i-u", VmState::active);
  e = expect_error(call(http::verb::post, "/v1/instances/i-u/actions", R"({"action":"live_migrate"})"), 501);
  BOOST_TEST(e.title() == "Not Implemented");
  BOOST_TEST(e.message() ==
             control::check(control::Action::live_migrate, VmState::active, TaskState::none, "i-u",
                            control::CapabilitySet{true, false})
                 ->message);
  BOOST_TEST(e.message().starts_with("Cannot 'live_migrate' instance i-u: not implemented"));
  BOOST_TEST((api.vm_of("i-s") == VmState::stopped));
  BOOST_TEST((api.vm_of("i-u") == VmState::active));
}

BOOST_FIXTURE_TEST_CASE(bad_action_requests_are_400, Fixture) {
  api.add("i-1", VmState::active);
  for (std::string body : {R"({"action":"fly"})", R"({"action":"reboot"})", R"({"action":"reboot","type":"MEDIUM"})",
                           R"({"action":"reboot_hard"})", R"({"action":"create"})",
                           R"({"action":"pause","type":"HARD"})", R"({})", R"({"action":)",
                           R"({"action":"pause","force":true})", ""}) {
    BOOST_TEST_CONTEXT("body: " << body) {
      expect_error(call(http::verb::post, "/v1/instances/i-1/actions", body), 400);
    }
  }
  auto e = expect_error(call(http::verb::post, "/v1/instances/i-1/actions", R"({"action":"fly"})"), 400);
  BOOST_TEST(e.message() == "unknown action 'fly'");
  e = expect_error(call(http::verb::post, "/v1/instances/i-1/actions", R"({"action":"pause","force":true})"), 400);
  BOOST_REQUIRE(e.problems_size() == 1);
  BOOST_TEST(e.problems(0).path() == "force");
  BOOST_TEST(api.act_requests().empty());  // none reached the control plane
}

BOOST_FIXTURE_TEST_CASE(action_log, Fixture) {
  api.add("i-1", VmState::active);
  call(http::verb::post, "/v1/instances/i-1/actions", R"({"action":"stop"})");
  call(http::verb::post, "/v1/instances/i-1/actions", R"({"action":"start"})");
  auto res = call(http::verb::get, "/v1/instances/i-1/actions");
  BOOST_TEST(res.result_int() == 200u);
  auto log = parse<v1::ActionLog>(res.body());
  BOOST_REQUIRE(log.actions_size() == 2);
  BOOST_TEST(log.actions(0).action() == "stop");
  BOOST_TEST(log.actions(1).action() == "start");
  BOOST_TEST(log.actions(1).result() == "success");
  BOOST_TEST(log.actions(1).events(0) == "compute_start");
  BOOST_TEST(log.actions(0).request_id() == "req-1");
  expect_error(call(http::verb::get, "/v1/instances/ghost/actions"), 404);
}

// --- console ------------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(console_history, Fixture) {
  api.add("i-1", VmState::active, TaskState::none, "boot ok\r\n");
  auto res = call(http::verb::get, "/v1/instances/i-1/console/history");
  BOOST_TEST(res.result_int() == 200u);
  auto h = parse<v1::ConsoleHistory>(res.body());
  BOOST_TEST(h.data() == "boot ok\r\n");
  BOOST_TEST(h.dropped() == 7u);

  // Bytes that are not UTF-8 come out as U+FFFD rather than vanishing.
  api.add("i-2", VmState::active, TaskState::none, std::string("a\xff" "b", 3));
  h = parse<v1::ConsoleHistory>(call(http::verb::get, "/v1/instances/i-2/console/history").body());
  BOOST_TEST(h.data() == "a\xEF\xBF\xBD" "b");

  expect_error(call(http::verb::get, "/v1/instances/ghost/console/history"), 404);
  auto e = expect_error(call(http::verb::get, "/v1/instances/i-1/console"), 426);
  BOOST_TEST(call(http::verb::get, "/v1/instances/i-1/console")[http::field::upgrade] == "websocket");
  BOOST_TEST(!e.message().empty());
}

BOOST_FIXTURE_TEST_CASE(console_websocket_history_live_output_and_input, Fixture) {
  api.add("i-1", VmState::active, TaskState::none, std::string("boot\xff\n", 6));
  {
    WsClient ws;
    websocket::response_type res;
    auto ec = ws.connect(port, "/v1/instances/i-1/console", res);
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    BOOST_TEST(res.result_int() == 101u);

    auto first = ws.read();
    BOOST_REQUIRE_MESSAGE(first.has_value(), ws.error().message());
    BOOST_TEST(*first == std::string("boot\xff\n", 6));  // raw bytes on the websocket
    BOOST_TEST(ws.last_binary());
    BOOST_TEST(api.subscriber_count() == 1u);

    api.emit("i-1", "login: ");
    auto live = ws.read();
    BOOST_REQUIRE(live.has_value());
    BOOST_TEST(*live == "login: ");
    api.emit("i-1", "a");
    api.emit("i-1", "b");
    std::string more;
    while (more.size() < 2) {
      auto m = ws.read();
      BOOST_REQUIRE(m.has_value());
      more += *m;
    }
    BOOST_TEST(more == "ab");

    ws.write_text("root\n");
    ws.write_text("ls\n");
    BOOST_TEST(wait_for([&] { return api.input_of("i-1") == "root\nls\n"; }), api.input_of("i-1"));
    ws.close();
  }
  BOOST_TEST(wait_for([&] { return api.subscriber_count() == 0u; }));
  BOOST_TEST(api.detach_calls.load() == 1);

  // A second client sees everything so far as its history.
  WsClient again;
  websocket::response_type res;
  BOOST_REQUIRE(!again.connect(port, "/v1/instances/i-1/console", res));
  auto h = again.read();
  BOOST_REQUIRE(h.has_value());
  BOOST_TEST(*h == std::string("boot\xff\nlogin: ab", 15));
}

BOOST_FIXTURE_TEST_CASE(console_websocket_for_an_unknown_instance_is_404, Fixture) {
  WsClient ws;
  websocket::response_type res;
  auto ec = ws.connect(port, "/v1/instances/ghost/console", res);
  BOOST_TEST((ec == websocket::error::upgrade_declined), ec.message());

  // The same upgrade by hand, to see the answer (Beast 1.74 does not hand
  // a declined answer back from handshake()).
  Client c(port);
  c.write_raw("GET /v1/instances/ghost/console HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
              "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
  auto e = expect_error(c.read_response(), 404);
  BOOST_TEST(e.message() == "instance ghost not found");
  BOOST_TEST(api.subscriber_count() == 0u);
}

BOOST_AUTO_TEST_CASE(console_websocket_closes_a_client_that_falls_too_far_behind) {
  auto options = test_options();
  options.ws_backlog_bytes = 1024;
  Server s(options);
  s.api.add("i-1", VmState::active);
  WsClient ws;
  websocket::response_type res;
  BOOST_REQUIRE(!ws.connect(s.port, "/v1/instances/i-1/console", res));
  BOOST_TEST(wait_for([&] { return s.api.subscriber_count() == 1u; }));
  s.api.emit("i-1", std::string(4096, 'x'));  // more than the backlog at once
  std::optional<std::string> m;
  while ((m = ws.read())) {
  }
  BOOST_TEST((ws.error() == websocket::error::closed), ws.error().message());
  BOOST_TEST(ws.reason().code == static_cast<uint16_t>(websocket::close_code::policy_error));
  BOOST_TEST(wait_for([&] { return s.api.subscriber_count() == 0u; }));
}

// --- protocol -----------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(unknown_paths_are_404, Fixture) {
  api.add("i-1", VmState::active);
  for (std::string target : {"/v1", "/v2/instances", "/v1/instance", "/v1/instances/i-1/foo",
                             "/v1/instances/i-1/console/history/x", "/v1/instances//actions",
                             "/v1/instances/%zz", "/v1/instances/%0a", "/v1/instances/i-1/actions/1", "/v1/instances/"}) {
    BOOST_TEST_CONTEXT("target: " << target) {
      expect_error(call(http::verb::get, target), 404);
    }
  }
  // "/" is the dashboard's front door.
  auto root = call(http::verb::get, "/");
  BOOST_TEST(root.result_int() == 302u);
  BOOST_TEST(root[http::field::location] == "/ui/");
}

BOOST_FIXTURE_TEST_CASE(wrong_methods_are_405_with_allow, Fixture) {
  api.add("i-1", VmState::active);
  struct Case {
    http::verb verb;
    std::string target;
    std::string allow;
  };
  std::vector<Case> cases = {
      {http::verb::put, "/v1/instances", "GET, POST"},
      {http::verb::delete_, "/v1/instances", "GET, POST"},
      {http::verb::post, "/v1/instances/i-1", "GET, DELETE"},
      {http::verb::patch, "/v1/instances/i-1", "GET, DELETE"},
      {http::verb::delete_, "/v1/instances/i-1/actions", "GET, POST"},
      {http::verb::post, "/v1/instances/i-1/console/history", "GET"},
      {http::verb::post, "/v1/instances/i-1/console", "GET"},
  };
  for (auto& c : cases) {
    BOOST_TEST_CONTEXT(c.verb << " " << c.target) {
      auto res = call(c.verb, c.target, std::string("{}"));
      expect_error(res, 405);
      BOOST_TEST(res[http::field::allow] == c.allow);
    }
  }
  BOOST_TEST(api.act_requests().empty());
}

BOOST_FIXTURE_TEST_CASE(bodies_over_one_mib_are_413, Fixture) {
  // Exactly 1 MiB is still read (padding with JSON whitespace).
  std::string body = R"({"spec":{"name":"big"}})";
  body.resize(1024 * 1024, ' ');
  BOOST_TEST(call(http::verb::post, "/v1/instances", body).result_int() == 202u);

  // One byte more, announced by Content-Length and actually sent.
  body.push_back(' ');
  {
    Client c(port);
    auto res = c.request(http::verb::post, "/v1/instances", body);
    auto e = expect_error(res, 413);
    BOOST_TEST(e.message() == "request body exceeds 1048576 bytes");
    BOOST_TEST(!res.keep_alive());
  }
  // Announced only: answered before the body is sent.
  {
    Client c(port);
    c.write_raw("POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n");
    expect_error(c.read_response(), 413);
  }
  // Chunked, no length announced.
  {
    Client c(port);
    c.write_raw("POST /v1/instances/i-1/actions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::string chunk(64 * 1024, ' ');
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
    std::string piece = std::string(size_line) + chunk + "\r\n";
    for (int i = 0; i < 17; ++i) c.write_raw(piece);
    expect_error(c.read_response(), 413);
  }
  BOOST_TEST(api.instance_count() == 1u);
}

BOOST_FIXTURE_TEST_CASE(malformed_http_and_huge_headers, Fixture) {
  {
    Client c(port);
    c.write_raw("GARBAGE\r\n\r\n");
    expect_error(c.read_response(), 400);
  }
  {
    Client c(port);
    c.write_raw("GET /v1/instances HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
    expect_error(c.read_response(), 431);
  }
}

BOOST_FIXTURE_TEST_CASE(keep_alive_serves_several_requests_on_one_connection, Fixture) {
  api.add("i-1", VmState::active);
  Client c(port);
  for (int i = 0; i < 3; ++i) {
    auto res = c.request(http::verb::get, "/v1/instances/i-1");
    BOOST_TEST(res.result_int() == 200u);
    BOOST_TEST(res.keep_alive());
  }
  BOOST_TEST(c.request(http::verb::get, "/nowhere").result_int() == 404u);  // errors keep the connection too
  auto res = c.request(http::verb::get, "/v1/instances", std::nullopt, /*keep_alive=*/false);
  BOOST_TEST(res.result_int() == 200u);
  BOOST_TEST(!res.keep_alive());
  BOOST_TEST(c.closed_within(2s));
}

BOOST_FIXTURE_TEST_CASE(expect_100_continue, Fixture) {
  Client c(port);
  std::string body = R"({"spec":{"name":"cont"}})";
  c.write_raw("POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
              "Content-Length: " +
              std::to_string(body.size()) + "\r\n\r\n");
  BOOST_TEST(c.read_interim_status() == 100u);
  c.write_raw(body);
  auto res = c.read_response();
  BOOST_TEST(res.result_int() == 202u, res.body());
}

BOOST_FIXTURE_TEST_CASE(exceptions_from_the_control_plane_are_500, Fixture) {
  api.throw_on_list = true;
  auto e = expect_error(call(http::verb::get, "/v1/instances"), 500);
  BOOST_TEST(e.message() == "internal error: store on fire");
}

BOOST_AUTO_TEST_CASE(a_slow_control_plane_is_answered_504) {
  auto options = test_options();
  options.api_timeout = 200ms;
  Server s(options);
  s.api.add("i-1", VmState::active);
  s.api.get_delay_ms = 1000;
  Client c(s.port);
  auto start = std::chrono::steady_clock::now();
  auto e = expect_error(c.request(http::verb::get, "/v1/instances/i-1"), 504);
  BOOST_TEST(ms_since(start) < 900);
  BOOST_TEST(e.message() == "the control plane did not answer within 200 ms");
  // The connection stays usable; other calls are not stuck behind the slow one.
  s.api.get_delay_ms = 0;
  BOOST_TEST(c.request(http::verb::get, "/v1/instances").result_int() == 200u);
}

BOOST_AUTO_TEST_CASE(requests_have_a_read_deadline) {
  auto options = test_options();
  options.read_timeout = 300ms;
  Server s(options);
  {
    Client c(s.port);
    c.write_raw("GET /v1/instan");  // and nothing more
    auto start = std::chrono::steady_clock::now();
    BOOST_TEST(c.closed_within(3s));
    BOOST_TEST(ms_since(start) < 2000);
  }
  {
    Client c(s.port);  // idle keep-alive connections end the same way
    BOOST_TEST(c.request(http::verb::get, "/v1/instances").result_int() == 200u);
    BOOST_TEST(c.closed_within(3s));
  }
}

BOOST_AUTO_TEST_CASE(concurrent_clients_on_several_io_threads) {
  auto options = test_options();
  options.io_threads = 2;
  options.api_threads = 2;
  Server s(options);
  s.api.add("i-1", VmState::active);
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t) {
    clients.emplace_back([&] {
      try {  // Boost.Test assertions are for the main thread; a failure shows up in `ok`
        Client c(s.port);
        for (int i = 0; i < 20; ++i) {
          if (c.request(http::verb::get, "/v1/instances/i-1").result_int() == 200u) ++ok;
        }
      } catch (...) {
      }
    });
  }
  for (auto& t : clients) t.join();
  BOOST_TEST(ok.load() == 120);
}

// --- shutdown -----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(stop_is_prompt_with_an_idle_keep_alive_connection) {
  auto options = test_options();
  options.shutdown_grace = 3s;
  auto s = std::make_unique<Server>(options);
  Client c(s->port);
  BOOST_TEST(c.request(http::verb::get, "/v1/instances").result_int() == 200u);
  auto start = std::chrono::steady_clock::now();
  s->server.stop();
  BOOST_TEST(ms_since(start) < 1000);
  BOOST_TEST(c.closed_within(1s));
  s->server.stop();  // idempotent
  // Nobody listens any more.
  net::io_context ioc;
  tcp::socket sock(ioc);
  error_code ec;
  sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), s->port), ec);
  BOOST_TEST(ec.failed());
}

BOOST_AUTO_TEST_CASE(stop_is_bounded_with_a_half_sent_request) {
  auto options = test_options();
  options.shutdown_grace = 300ms;
  options.read_timeout = 30s;
  Server s(options);
  Client c(s.port);
  c.write_raw("POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{");
  std::this_thread::sleep_for(50ms);
  auto start = std::chrono::steady_clock::now();
  s.server.stop();
  BOOST_TEST(ms_since(start) < 1500);
  BOOST_TEST(c.closed_within(1s));
}

BOOST_AUTO_TEST_CASE(stop_lets_a_call_in_flight_answer) {
  Server s(test_options());
  s.api.add("i-1", VmState::active);
  s.api.get_delay_ms = 300;
  Client c(s.port);
  c.write_raw("GET /v1/instances/i-1 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(100ms);  // the call is running
  std::thread stopper([&] { s.server.stop(); });
  auto res = c.read_response();
  stopper.join();
  BOOST_TEST(res.result_int() == 200u);
  BOOST_TEST(!res.keep_alive());  // answered with Connection: close
}

BOOST_AUTO_TEST_CASE(stop_closes_console_websockets_with_going_away) {
  auto options = test_options();
  options.shutdown_grace = 3s;
  Server s(options);
  s.api.add("i-1", VmState::active, TaskState::none, "hi");
  WsClient ws;
  websocket::response_type res;
  BOOST_REQUIRE(!ws.connect(s.port, "/v1/instances/i-1/console", res));
  BOOST_REQUIRE(ws.read() == std::optional<std::string>("hi"));
  std::optional<std::string> got;
  std::thread reader([&] { got = ws.read(5s); });  // answers the close handshake
  std::this_thread::sleep_for(50ms);
  auto start = std::chrono::steady_clock::now();
  s.server.stop();
  auto took = ms_since(start);
  reader.join();
  BOOST_TEST(took < 2000);
  BOOST_TEST(!got.has_value());
  BOOST_TEST((ws.error() == websocket::error::closed), ws.error().message());
  BOOST_TEST(ws.reason().code == static_cast<uint16_t>(websocket::close_code::going_away));
  BOOST_TEST(s.api.subscriber_count() == 0u);
  BOOST_TEST(s.api.detach_calls.load() == 1);
}

BOOST_AUTO_TEST_CASE(start_reports_the_bound_port_and_refuses_a_second_start) {
  FakeApi api;
  HttpServer a(api, "127.0.0.1", 0, test_options());
  BOOST_TEST(a.port() == 0u);
  uint16_t port = a.start();
  BOOST_TEST(port != 0u);
  BOOST_TEST(a.port() == port);
  BOOST_CHECK_THROW(a.start(), std::logic_error);
  HttpServer b(api, "127.0.0.1", port, test_options());  // taken
  BOOST_CHECK_THROW(b.start(), std::system_error);
  HttpServer never_started(api, "127.0.0.1", 0);
  never_started.stop();
}

// --- /v1/networks (the fake keeps ControlPlaneApi's 501 defaults) --------------

BOOST_FIXTURE_TEST_CASE(network_routes_reach_the_api_and_validate_first, Fixture) {
  auto e = expect_error(call(http::verb::get, "/v1/networks"), 501);
  BOOST_TEST(e.message().find("networks") != std::string::npos, e.message());
  expect_error(call(http::verb::post, "/v1/networks", R"({"name": "n1", "cidr": "10.0.0.0/24"})"), 501);
  expect_error(call(http::verb::get, "/v1/networks/net-1"), 501);
  expect_error(call(http::verb::delete_, "/v1/networks/net-1"), 501);
  // Checked by the server before the API is called.
  expect_error(call(http::verb::post, "/v1/networks", R"({"cidr": "10.0.0.0/24"})"), 400);
  expect_error(call(http::verb::post, "/v1/networks", R"({"name": "n1", "bogus": 1})"), 400);
  auto res = call(http::verb::put, "/v1/networks");
  expect_error(res, 405);
  BOOST_TEST(res[http::field::allow] == "GET, POST");
  res = call(http::verb::post, "/v1/networks/net-1");
  expect_error(res, 405);
  BOOST_TEST(res[http::field::allow] == "GET, DELETE");
  expect_error(call(http::verb::get, "/v1/networks/net-1/extra"), 404);
}

// --- authentication, nodes, metrics, idempotent create ------------------------

namespace {
HttpServerOptions with_token(std::string token) {
  auto o = test_options();
  o.bearer_token = std::move(token);
  return o;
}

std::string raw_get(const std::string& target, const std::string& auth_line) {
  return "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + auth_line + "Content-Length: 0\r\n\r\n";
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_missing_or_wrong_bearer_token_is_401_and_nothing_runs) {
  Server s(with_token("0123456789abcdef"));
  for (const std::string& auth : {std::string(), std::string("Authorization: Bearer wrong-token-wrong\r\n"),
                                 std::string("Authorization: Bearer 0123456789abcdeX\r\n"),
                                 std::string("Authorization: Basic 0123456789abcdef\r\n"),
                                 std::string("Authorization: Bearer 0123456789abcdef0\r\n")}) {
    BOOST_TEST_CONTEXT("auth line: " << auth) {
      Client c(s.port);
      c.write_raw(raw_get("/v1/instances", auth));
      auto e = expect_error(c.read_response(), 401);
      BOOST_TEST(e.message() == (auth.empty() ? "missing bearer token (Authorization: Bearer <token>)"
                                              : "wrong bearer token"));
    }
  }
  // A create without the token is refused from its headers: no instance.
  Client c(s.port);
  c.write_raw("POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n"
              R"({"spec":{"name":"a"}})" "\n");
  auto res = c.read_response();
  BOOST_TEST(res.result_int() == 401u);
  BOOST_TEST(res[http::field::www_authenticate] == "Bearer realm=\"apiary\"");
  BOOST_TEST(s.api.instance_count() == 0u);

  // The right token (scheme case-insensitive) gets through.
  for (const char* scheme : {"Bearer", "bearer"}) {
    Client ok(s.port);
    ok.write_raw(raw_get("/v1/instances", std::string("Authorization: ") + scheme + " 0123456789abcdef\r\n"));
    BOOST_TEST(ok.read_response().result_int() == 200u);
  }
}

BOOST_FIXTURE_TEST_CASE(node_and_metrics_routes_reach_the_control_plane, Fixture) {
  // The fake has no nodes or metrics: the interface's defaults answer 501.
  auto e = expect_error(call(http::verb::get, "/v1/nodes"), 501);
  BOOST_TEST(e.message() == "nodes are not implemented by this control plane");
  expect_error(call(http::verb::post, "/v1/nodes/n1/stop"), 501);
  expect_error(call(http::verb::get, "/metrics"), 501);
  // Wrong methods and unknown node paths.
  BOOST_TEST(call(http::verb::post, "/v1/nodes").result_int() == 405u);
  BOOST_TEST(call(http::verb::get, "/v1/nodes/n1/stop").result_int() == 405u);
  BOOST_TEST(call(http::verb::post, "/metrics").result_int() == 405u);
  expect_error(call(http::verb::post, "/v1/nodes/n1/start"), 404);
  expect_error(call(http::verb::get, "/v1/nodes/n1"), 404);
}

BOOST_FIXTURE_TEST_CASE(a_create_with_a_request_id_uses_the_idempotent_call, Fixture) {
  // The fake does not implement it: 501 naming the key, and nothing created.
  auto e = expect_error(call(http::verb::post, "/v1/instances", R"({"spec":{"name":"a"},"request_id":"k-1"})"), 501);
  BOOST_TEST(e.message().find("k-1") != std::string::npos, e.message());
  BOOST_TEST(api.instance_count() == 0u);
  // Wrong type for request_id is a 400 with its path.
  e = expect_error(call(http::verb::post, "/v1/instances", R"({"spec":{"name":"a"},"request_id":{}})"), 400);
  BOOST_TEST(api.instance_count() == 0u);
}

// --- the dashboard: sign-in, files, state machines, event stream ---------------

namespace {
constexpr const char* kToken = "0123456789abcdef";

Response raw_call(uint16_t port, const std::string& request) {
  Client c(port);
  c.write_raw(request);
  return c.read_response();
}
}  // namespace

BOOST_AUTO_TEST_CASE(the_dashboard_signs_in_with_the_token_and_its_cookie_acts_only_from_the_page) {
  Server s(with_token(kToken));
  // Before signing in: pages redirect to the sign-in page, data is 401, the
  // sign-in page itself is served.
  for (const char* page : {"/", "/ui/", "/ui"}) {
    auto res = raw_call(s.port, raw_get(page, ""));
    BOOST_TEST(res.result_int() == 302u, page);
    BOOST_TEST(res[http::field::location] == "/ui/login", page);
  }
  expect_error(raw_call(s.port, raw_get("/ui/app.js", "")), 401);
  expect_error(raw_call(s.port, raw_get("/v1/events", "")), 401);
  auto login = raw_call(s.port, raw_get("/ui/login", ""));
  BOOST_TEST(login.result_int() == 200u);
  BOOST_TEST(login[http::field::content_type] == "text/html; charset=utf-8");
  BOOST_TEST(login["Content-Security-Policy"].find("frame-ancestors 'none'") != std::string::npos);
  BOOST_TEST(login.body().find("token") != std::string::npos);

  // A wrong token sets nothing; the right one sets the cookie.
  auto sign_in = [&](const std::string& body) {
    return raw_call(s.port, "POST /ui/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  };
  auto bad = sign_in(R"({"token":"0123456789abcdeX"})");
  BOOST_TEST(expect_error(bad, 401).message() == "wrong token");
  BOOST_TEST(bad[http::field::set_cookie].empty());
  expect_error(sign_in(R"({"tokn":"x"})"), 400);
  auto ok = sign_in(R"({"token":"0123456789abcdef"})");
  BOOST_TEST(ok.result_int() == 204u);
  const std::string cookie(ok[http::field::set_cookie]);
  BOOST_TEST(cookie.find("HttpOnly") != std::string::npos);
  BOOST_TEST(cookie.find("SameSite=Strict") != std::string::npos);
  const std::string kCookie = cookie.substr(0, cookie.find(';'));
  BOOST_TEST_REQUIRE(kCookie.starts_with("apiary_session="), cookie);
  // Not the token: an HMAC of it (64 hex digits), the same for every sign-in.
  BOOST_TEST(kCookie.find(kToken) == std::string::npos, cookie);
  BOOST_TEST(kCookie.size() == std::string("apiary_session=").size() + 64);
  BOOST_TEST(std::string(sign_in(R"({"token":"0123456789abcdef"})")[http::field::set_cookie]) == cookie);

  // The cookie reads, and shows the page.
  const std::string with_cookie = "Cookie: theme=dark; " + kCookie + "\r\n";
  BOOST_TEST(raw_call(s.port, raw_get("/v1/instances", with_cookie)).result_int() == 200u);
  auto page = raw_call(s.port, raw_get("/ui/", with_cookie));
  BOOST_TEST(page.result_int() == 200u);
  BOOST_TEST(page[http::field::content_type] == "text/html; charset=utf-8");
  // A stale or forged cookie is 401 and says so.
  auto stale = expect_error(raw_call(s.port, raw_get("/v1/instances", "Cookie: apiary_session=00\r\n")), 401);
  BOOST_TEST(stale.message() == "the dashboard's session is not valid (sign in again at /ui/login)");

  // A change with the cookie needs the page's header (no cross-site form can
  // send one), and nothing happens without it.
  const std::string body = R"({"spec":{"name":"from-a-form"}})";
  auto post = [&](const std::string& extra) {
    return raw_call(s.port, "POST /v1/instances HTTP/1.1\r\nHost: localhost\r\n" + with_cookie + extra +
                                "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                                "\r\n\r\n" + body);
  };
  auto refused = expect_error(post(""), 403);
  BOOST_TEST(refused.message().find("X-Requested-With: apiary-ui") != std::string::npos, refused.message());
  BOOST_TEST(s.api.instance_count() == 0u);
  BOOST_TEST(post("X-Requested-With: apiary-ui\r\n").result_int() == 202u);
  BOOST_TEST(s.api.instance_count() == 1u);

  // A console websocket opened with the cookie from another site is refused.
  s.api.add("i-9", VmState::active);
  const std::string upgrade =
      "GET /v1/instances/i-9/console HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + with_cookie;
  auto foreign = expect_error(raw_call(s.port, upgrade + "Origin: http://evil.example\r\n\r\n"), 403);
  BOOST_TEST(foreign.message() == "cross-origin request refused (the Origin is not this server)");
  BOOST_TEST(s.api.subscriber_count() == 0u);
  {
    Client same(s.port);
    same.write_raw(upgrade + "Origin: http://localhost\r\n\r\n");
    BOOST_TEST(same.read_until("101 Switching Protocols").find("101 Switching Protocols") != std::string::npos);
  }

  // An unauthenticated sign-in may not send much.
  auto big = sign_in(R"({"token":")" + std::string(5000, 'x') + R"("})");
  BOOST_TEST(expect_error(big, 413).message() == "request body exceeds 4096 bytes");

  // Signing out clears the cookie.
  auto out = raw_call(s.port, "POST /ui/logout HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
  BOOST_TEST(out.result_int() == 204u);
  BOOST_TEST(std::string(out[http::field::set_cookie]).find("Max-Age=0") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(every_dashboard_file_is_served_with_its_type, Fixture) {
  BOOST_TEST_REQUIRE(!ui::assets().empty());
  for (const auto& asset : ui::assets()) {
    BOOST_TEST_CONTEXT(asset.path) {
      auto res = call(http::verb::get, std::string(asset.path));
      BOOST_TEST(res.result_int() == 200u);
      BOOST_TEST(std::string(res[http::field::content_type]) == std::string(asset.content_type));
      BOOST_TEST(res.body().size() == asset.data.size());
      BOOST_TEST(res["X-Content-Type-Options"] == "nosniff");
    }
  }
  BOOST_TEST(ui::find("/ui/index.html") != nullptr);
  BOOST_TEST(ui::find("/ui/login.html") != nullptr);
  expect_error(call(http::verb::get, "/ui/no-such-file.js"), 404);
  BOOST_TEST(call(http::verb::post, "/ui/app.js").result_int() == 405u);
  BOOST_TEST(call(http::verb::get, "/ui/session").result_int() == 405u);
}

BOOST_FIXTURE_TEST_CASE(the_state_machines_are_the_tables_that_are_enforced, Fixture) {
  auto res = call(http::verb::get, "/v1/state-machines");
  BOOST_TEST_REQUIRE(res.result_int() == 200u);
  auto all = parse<v1::StateMachines>(res.body());
  std::map<std::string, v1::StateMachine> by_name;
  for (const auto& m : all.machines()) by_name[m.name()] = m;
  BOOST_TEST_REQUIRE(by_name.size() == 5u);
  auto has_edge = [](const v1::StateMachine& m, const std::string& from, const std::string& to,
                     const std::string& label) {
    for (const auto& t : m.transitions())
      if (t.from() == from && t.to() == to && t.label() == label) return true;
    return false;
  };
  const auto& nova = by_name["nova"];
  BOOST_TEST(nova.field() == "vm_state");
  BOOST_TEST(nova.initial() == "building");
  BOOST_TEST(nova.states_size() == static_cast<int>(control::kVmStateCount));
  BOOST_TEST(has_edge(nova, "active", "paused", "pause"));
  BOOST_TEST(has_edge(nova, "paused", "active", "unpause"));
  BOOST_TEST(has_edge(nova, "building", "active", "create"));
  BOOST_TEST(!has_edge(nova, "stopped", "paused", "pause"));  // Nova refuses it (409)
  // Every Nova edge is an action the precondition table accepts.
  for (const auto& t : nova.transitions()) {
    auto a = control::action_from_string(t.label());
    auto from = control::vm_state_from_string(t.from());
    BOOST_TEST_REQUIRE((a && from), t.label() << " from " << t.from());
    BOOST_TEST(control::allowed_from(*a, *from), t.label() << " from " << t.from());
  }
  BOOST_TEST(by_name["propolis"].field() == "lifecycle_state");
  BOOST_TEST(by_name["propolis"].states_size() == 8);
  BOOST_TEST(by_name["shakenfist_node"].transitions_size() == static_cast<int>(control::node_transitions().size()));
  BOOST_TEST(by_name["shakenfist_network"].transitions_size() ==
             static_cast<int>(control::network_transitions().size()));
  BOOST_TEST(by_name["shakenfist_instance"].transitions_size() ==
             static_cast<int>(control::sf_instance_transitions().size()));
  for (const auto& t : control::network_transitions())  // labels are the table's own words
    BOOST_TEST(has_edge(by_name["shakenfist_network"], control::to_string(t.from), control::to_string(t.to), t.why));
}

BOOST_FIXTURE_TEST_CASE(the_event_stream_says_hello_then_each_change_and_ends_its_watch, Fixture) {
  {
    Client c(port);
    c.write_raw(raw_get("/v1/events", ""));
    auto head = c.read_until("event: hello\ndata: {}\n\n");
    BOOST_TEST(head.starts_with("HTTP/1.1 200 OK\r\n"), head);
    BOOST_TEST(head.find("Content-Type: text/event-stream") != std::string::npos, head);
    BOOST_TEST_REQUIRE(head.find("event: hello\ndata: {}\n\n") != std::string::npos, head);
    BOOST_TEST_REQUIRE(api.watcher_count() == 1u);
    v1::Changes c1;
    c1.add_instances("i-1");
    c1.add_nodes("node-1");
    api.notify(c1);
    const std::string expected =
        "event: change\ndata: {\"instances\":[\"i-1\"],\"networks\":[],\"nodes\":[\"node-1\"]}\n\n";
    BOOST_TEST(c.read_until(expected).find(expected) != std::string::npos);
  }
  // The client went away: the watch ends.
  for (int i = 0; i < 100 && api.watch_detaches.load() == 0; ++i) std::this_thread::sleep_for(20ms);
  BOOST_TEST(api.watch_detaches.load() == 1);
  BOOST_TEST(api.watcher_count() == 0u);
  BOOST_TEST(call(http::verb::post, "/v1/events").result_int() == 405u);
}

BOOST_AUTO_TEST_CASE(without_a_token_a_foreign_origin_still_cannot_act) {
  Server s;  // no bearer token: the API is open, but not to other web sites
  const std::string body = R"({"spec":{"name":"x"}})";
  auto post = [&](const std::string& origin) {
    return raw_call(s.port, "POST /v1/instances HTTP/1.1\r\nHost: localhost\r\n" + origin +
                                "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                                "\r\n\r\n" + body);
  };
  auto e = expect_error(post("Origin: http://evil.example\r\n"), 403);
  BOOST_TEST(e.message() == "cross-origin request refused (the Origin is not this server)");
  BOOST_TEST(s.api.instance_count() == 0u);
  BOOST_TEST(post("Origin: http://localhost\r\n").result_int() == 202u);
  // No Origin (not a browser): it reaches the control plane, which refuses
  // the same name twice.
  BOOST_TEST(post("").result_int() == 409u);
  BOOST_TEST(s.api.instance_count() == 1u);
  // Reading is not refused (a browser cannot read another site's answer anyway).
  BOOST_TEST(raw_call(s.port, raw_get("/v1/instances", "Origin: http://evil.example\r\n")).result_int() == 200u);
}

BOOST_AUTO_TEST_CASE(the_event_stream_outlives_the_write_timeout_and_ends_with_its_feed) {
  auto o = test_options();
  o.write_timeout = 300ms;
  Server s(o);
  Client c(s.port);
  c.write_raw(raw_get("/v1/events", ""));
  BOOST_TEST_REQUIRE(c.read_until("event: hello").find("event: hello") != std::string::npos);
  std::this_thread::sleep_for(1s);  // idle for more than three write timeouts
  v1::Changes ch;
  ch.add_networks("n-1");
  s.api.notify(ch);
  const std::string expected = "data: {\"instances\":[],\"networks\":[\"n-1\"],\"nodes\":[]}";
  BOOST_TEST(c.read_until(expected).find(expected) != std::string::npos);
  // The control plane's feed ends (its controller is gone): so does the stream.
  s.api.end_watches("the controller is gone");
  BOOST_TEST(c.closed_within(5s));
  for (int i = 0; i < 100 && s.api.watch_detaches.load() == 0; ++i) std::this_thread::sleep_for(20ms);
  BOOST_TEST(s.api.watch_detaches.load() == 1);
}
