// Nova's compute API layer (api/nova_api.hpp) against an in-memory control
// plane: the status of every vm_state, every action key mapping to an
// Apiary command, create turning a flavor, an image and networks into a
// spec, refusals passed through in Nova's shape, and bad input (a malformed
// body, unknown flavor or image, an invalid name, an action body with two
// keys or an unknown one, a reboot without a type, an unknown server or
// route, a wrong method) answered with Nova's error body and changing
// nothing.
#define BOOST_TEST_MODULE nova_api
#include <boost/test/unit_test.hpp>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <map>
#include <optional>

#include "api/nova_api.hpp"
#include "api/utc_time.hpp"
#include "cluster/nova_states.hpp"

using namespace apiary;
using namespace apiary::apps;
namespace pb = google::protobuf;

namespace {

// Enough of a control plane: instances in a map, actions checked against
// Nova's table (cluster/nova_states.hpp) like the controller does.
class FakeApi : public ControlPlaneApi {
 public:
  std::map<std::string, v1::Instance> instances;
  std::vector<v1::ActionRequest> acted;
  std::optional<v1::InstanceSpec> created;

  Result<v1::Instance> create(const v1::InstanceSpec& spec) override {
    created = spec;
    v1::Instance in;
    in.set_id("i-" + std::to_string(instances.size() + 1));
    in.set_name(spec.name());
    *in.mutable_spec() = spec;
    in.set_vm_state("building");
    in.set_created_at(1796374358888);
    instances[in.id()] = in;
    return in;
  }
  Result<v1::InstanceList> list() override {
    v1::InstanceList l;
    for (auto& [id, in] : instances) *l.add_instances() = in;
    return l;
  }
  Result<v1::Instance> get(const std::string& id) override {
    auto it = instances.find(id);
    if (it == instances.end()) return not_found(id);
    return it->second;
  }
  Result<v1::ActionAccepted> act(const std::string& id, const v1::ActionRequest& r) override {
    auto it = instances.find(id);
    if (it == instances.end()) return not_found(id);
    auto a = control::action_from_api(r.action(), r.type());
    BOOST_REQUIRE(a);
    auto vm = control::vm_state_from_string(it->second.vm_state());
    BOOST_REQUIRE(vm);
    if (auto refused = control::check(*a, *vm, control::TaskState::none, id, control::CapabilitySet{}))
      return refusal_error(*refused);
    acted.push_back(r);
    v1::ActionAccepted ok;
    ok.set_request_id("req-" + std::to_string(acted.size()));
    return ok;
  }
  Result<v1::ActionLog> actions(const std::string& id) override {
    if (!instances.count(id)) return not_found(id);
    v1::ActionLog log;
    auto* a = log.add_actions();
    a->set_request_id("req-1");
    a->set_action("create");
    a->set_start(1796374358888);
    a->set_finish(1796374359888);
    a->set_result("success");
    a->add_events("scheduled on node-1");
    return log;
  }
  Result<v1::ConsoleHistory> console_history(const std::string& id) override { return not_found(id); }
  Result<ConsoleSubscription> console_attach(const std::string& id, std::function<void(std::string)>) override {
    return not_found(id);
  }
};

const std::vector<nova::Image> kImages{{"demo", 4096}, {"hello", 2048}};

nova::Response call(FakeApi& api, std::string method, std::vector<std::string> path, std::string body = {},
                    std::map<std::string, std::string> query = {}) {
  nova::Request r;
  r.method = std::move(method);
  r.path = std::move(path);
  r.body = std::move(body);
  r.query = std::move(query);
  r.base_url = "http://127.0.0.1:8080/compute/v2.1";
  r.images = &kImages;
  return nova::handle(api, r);
}

pb::Struct json(const nova::Response& r) {
  pb::Struct s;
  BOOST_REQUIRE_MESSAGE(pb::util::JsonStringToMessage(r.body, &s).ok(), "not a JSON object: " << r.body);
  return s;
}

// The error's kind (Nova's key) and message.
std::pair<std::string, std::string> fault_of(const nova::Response& r) {
  const auto s = json(r);
  BOOST_REQUIRE_EQUAL(s.fields_size(), 1);
  const auto& [kind, detail] = *s.fields().begin();
  const auto& f = detail.struct_value().fields();
  BOOST_TEST(f.at("code").number_value() == static_cast<double>(r.status));
  return {kind, f.at("message").string_value()};
}

v1::Instance& add(FakeApi& api, const std::string& id, const std::string& vm) {
  auto& in = api.instances[id];
  in.set_id(id);
  in.set_name("web");
  in.set_vm_state(vm);
  in.mutable_spec()->set_name("web");
  in.mutable_spec()->mutable_board()->set_vcpus(1);
  in.mutable_spec()->mutable_board()->set_memory_mib(128);
  in.mutable_spec()->mutable_boot()->set_embedded_guest("demo");
  in.set_node("node-1");
  return in;
}

}  // namespace

// Every surface shows times one way (Nova's fields, ctl, the process logs).
BOOST_AUTO_TEST_CASE(times_read_as_iso8601_utc) {
  BOOST_TEST(api::utc_iso8601(1796374358888) == "2026-12-04T08:52:38Z");
  BOOST_TEST(api::utc_iso8601(1796374358888, true) == "2026-12-04T08:52:38.888Z");
  BOOST_TEST(api::utc_iso8601(1796374358005, true) == "2026-12-04T08:52:38.005Z");
  BOOST_TEST(api::utc_iso8601(0).empty());  // a field never set
  BOOST_TEST(api::utc_iso8601(-5, true).empty());
}

BOOST_AUTO_TEST_CASE(every_vm_state_has_a_nova_status) {
  for (auto vm : control::kAllVmStates) {
    const std::string status = nova::server_status(control::to_string(vm), "");
    BOOST_TEST(status != "UNKNOWN", control::to_string(vm));
  }
  BOOST_TEST(nova::server_status("active", "") == "ACTIVE");
  BOOST_TEST(nova::server_status("active", "rebooting_hard") == "HARD_REBOOT");
  BOOST_TEST(nova::server_status("stopped", "") == "SHUTOFF");
  BOOST_TEST(nova::server_status("paused", "") == "PAUSED");
  BOOST_TEST(nova::server_status("building", "spawning") == "BUILD");
  BOOST_TEST(nova::server_status("shelved_offloaded", "") == "SHELVED_OFFLOADED");
}

BOOST_AUTO_TEST_CASE(every_action_key_names_an_apiary_command) {
  for (const char* key : {"pause", "unpause", "suspend", "resume", "os-stop", "os-start", "reboot", "shelve",
                          "shelveOffload", "unshelve", "rescue", "unrescue", "resize", "confirmResize",
                          "revertResize", "createImage", "createBackup", "rebuild", "changePassword",
                          "os-migrateLive", "restore", "forceDelete"}) {
    const auto command = nova::command_of(key);
    BOOST_TEST_REQUIRE(!command.empty(), key);
    BOOST_TEST(control::action_from_api(command, command == "reboot" ? "HARD" : "").has_value(), key);
  }
  BOOST_TEST(nova::command_of("lock").empty());
  BOOST_TEST(nova::command_of("").empty());
}

BOOST_AUTO_TEST_CASE(the_version_document_offers_2_1) {
  FakeApi api;
  auto r = call(api, "GET", {});
  BOOST_TEST(r.status == 200u);
  const auto doc = json(r);
  const auto& v = doc.fields().at("version").struct_value().fields();
  BOOST_TEST(v.at("id").string_value() == "v2.1");
  BOOST_TEST(v.at("status").string_value() == "CURRENT");
  BOOST_TEST(v.at("version").string_value() == "2.1");
  BOOST_TEST(v.at("min_version").string_value() == "2.1");
  BOOST_TEST(v.at("links").list_value().values_size() == 1);
}

BOOST_AUTO_TEST_CASE(create_turns_flavor_image_and_networks_into_a_spec) {
  FakeApi api;
  auto r = call(api, "POST", {"servers"},
                R"({"server": {"name": "web-1", "imageRef": "hello", "flavorRef": "3", "min_count": 1,
                    "networks": [{"uuid": "net-red"}, {"uuid": "net-blue", "fixed_ip": "10.0.0.9"}]}})");
  BOOST_TEST_REQUIRE(r.status == 202u, r.body);
  BOOST_REQUIRE(api.created);
  BOOST_TEST(api.created->name() == "web-1");
  BOOST_TEST(api.created->board().vcpus() == 2u);
  BOOST_TEST(api.created->board().memory_mib() == 256u);
  BOOST_TEST(api.created->boot().embedded_guest() == "hello");
  BOOST_TEST_REQUIRE(api.created->devices().nics_size() == 2);
  BOOST_TEST(api.created->devices().nics(0).network() == "net-red");
  BOOST_TEST(api.created->devices().nics(1).ipv4() == "10.0.0.9");
  const auto created = json(r);
  const auto& server = created.fields().at("server").struct_value().fields();
  BOOST_TEST(server.at("id").string_value() == "i-1");
  bool location = false;
  for (const auto& [k, v] : r.headers) location |= k == "Location" && v.find("/servers/i-1") != std::string::npos;
  BOOST_TEST(location);

  // As GET shows it: Nova's status, the flavor and image references.
  api.instances["i-1"].set_vm_state("active");
  auto shown = call(api, "GET", {"servers", "i-1"});
  BOOST_TEST_REQUIRE(shown.status == 200u);
  const auto shown_doc = json(shown);
  const auto& s = shown_doc.fields().at("server").struct_value().fields();
  BOOST_TEST(s.at("status").string_value() == "ACTIVE");
  BOOST_TEST(s.at("flavor").struct_value().fields().at("id").string_value() == "3");
  BOOST_TEST(s.at("image").struct_value().fields().at("id").string_value() == "hello");
  BOOST_TEST(s.at("OS-EXT-STS:task_state").kind_case() == pb::Value::kNullValue);
  BOOST_TEST(s.at("OS-EXT-STS:power_state").number_value() == 1.0);
  BOOST_TEST(s.at("metadata").struct_value().fields_size() == 0);
}

BOOST_AUTO_TEST_CASE(bad_creates_are_refused_and_create_nothing) {
  FakeApi api;
  struct Case {
    const char* body;
    const char* says;
  };
  for (const Case& c : {
           Case{"{not json", "malformed request body"},
           Case{"", "a JSON body is required"},
           Case{R"({"name": "x"})", "{\"server\""},
           Case{R"({"server": {"imageRef": "demo", "flavorRef": "1"}})", "name is required"},
           Case{R"({"server": {"name": "a", "imageRef": "windows", "flavorRef": "1"}})", "Image windows"},
           Case{R"({"server": {"name": "a", "imageRef": "demo", "flavorRef": "99"}})", "Flavor 99"},
           Case{R"({"server": {"name": "Not Valid", "imageRef": "demo", "flavorRef": "1"}})", "Invalid server"},
           Case{R"({"server": {"name": "a", "imageRef": "demo", "flavorRef": "1", "networks": "all"}})",
                "networks must be"},
           Case{R"({"server": {"name": "a", "imageRef": "demo", "flavorRef": "1", "networks": [{"fixed_ip": "1.2.3.4"}]}})",
                "uuid"},
       }) {
    auto r = call(api, "POST", {"servers"}, c.body);
    BOOST_TEST(r.status == 400u, c.body);
    auto [kind, message] = fault_of(r);
    BOOST_TEST(kind == "badRequest");
    BOOST_TEST(message.find(c.says) != std::string::npos, c.body << " -> " << message);
  }
  BOOST_TEST(api.instances.empty());
  BOOST_TEST(!api.created);
}

BOOST_AUTO_TEST_CASE(actions_run_and_refusals_read_as_in_nova) {
  FakeApi api;
  add(api, "i-9", "active");
  auto r = call(api, "POST", {"servers", "i-9", "action"}, R"({"pause": null})");
  BOOST_TEST(r.status == 202u, r.body);
  BOOST_TEST_REQUIRE(api.acted.size() == 1u);
  BOOST_TEST(api.acted[0].action() == "pause");
  r = call(api, "POST", {"servers", "i-9", "action"}, R"({"reboot": {"type": "HARD"}})");
  BOOST_TEST(r.status == 202u);
  BOOST_TEST(api.acted.back().action() == "reboot");
  BOOST_TEST(api.acted.back().type() == "HARD");
  r = call(api, "POST", {"servers", "i-9", "action"}, R"({"resize": {"flavorRef": "4"}})");
  BOOST_TEST(api.acted.back().args().at("vcpus") == "4");
  BOOST_TEST(api.acted.back().args().at("memory_mib") == "512");

  api.instances["i-9"].set_vm_state("paused");
  r = call(api, "POST", {"servers", "i-9", "action"}, R"({"pause": null})");
  BOOST_TEST(r.status == 409u);
  auto [kind, message] = fault_of(r);
  BOOST_TEST(kind == "conflictingRequest");
  BOOST_TEST(message == "Cannot 'pause' instance i-9 while it is in vm_state paused");

  r = call(api, "DELETE", {"servers", "i-9"});
  BOOST_TEST(r.status == 204u);
  BOOST_TEST(api.acted.back().action() == "delete");
}

BOOST_AUTO_TEST_CASE(bad_actions_and_routes_are_named_errors) {
  FakeApi api;
  add(api, "i-9", "active");
  struct Case {
    std::string method;
    std::vector<std::string> path;
    std::string body;
    unsigned status;
    const char* kind;
  };
  for (const Case& c : {
           Case{"POST", {"servers", "i-9", "action"}, R"({"pause": null, "unpause": null})", 400, "badRequest"},
           Case{"POST", {"servers", "i-9", "action"}, R"({"lock": null})", 400, "badRequest"},
           Case{"POST", {"servers", "i-9", "action"}, R"({"reboot": {}})", 400, "badRequest"},
           Case{"POST", {"servers", "i-9", "action"}, R"({"reboot": {"type": "GENTLE"}})", 400, "badRequest"},
           Case{"POST", {"servers", "i-9", "action"}, R"([1, 2])", 400, "badRequest"},
           Case{"POST", {"servers", "i-9", "action"}, R"({"resize": {"flavorRef": "nope"}})", 400, "badRequest"},
           Case{"POST", {"servers", "i-404", "action"}, R"({"pause": null})", 404, "itemNotFound"},
           Case{"GET", {"servers", "i-404"}, "", 404, "itemNotFound"},
           Case{"DELETE", {"servers", "i-404"}, "", 404, "itemNotFound"},
           Case{"GET", {"servers", "i-9", "action"}, "", 405, "badMethod"},
           Case{"PUT", {"servers"}, "", 405, "badMethod"},
           Case{"GET", {"os-hypervisors"}, "", 404, "itemNotFound"},
           Case{"GET", {"flavors", "42"}, "", 404, "itemNotFound"},
           Case{"GET", {"images", "windows"}, "", 404, "itemNotFound"},
       }) {
    auto r = call(api, c.method, c.path, c.body);
    BOOST_TEST(r.status == c.status, c.method << " " << c.path.back() << " " << c.body << " -> " << r.body);
    BOOST_TEST(fault_of(r).first == c.kind, r.body);
  }
  BOOST_TEST(api.acted.empty());
  BOOST_TEST(api.instances.at("i-9").vm_state() == "active");
}

BOOST_AUTO_TEST_CASE(lists_flavors_images_and_the_action_log) {
  FakeApi api;
  add(api, "i-9", "active");
  auto f = json(call(api, "GET", {"flavors", "detail"}));
  BOOST_TEST(f.fields().at("flavors").list_value().values_size() == static_cast<int>(nova::kFlavors.size()));
  auto extra = json(call(api, "GET", {"flavors", "2", "os-extra_specs"}));
  BOOST_TEST(extra.fields().count("extra_specs") == 1u);
  auto imgs = json(call(api, "GET", {"images"}, "", {{"name", "hello"}}));
  BOOST_TEST_REQUIRE(imgs.fields().at("images").list_value().values_size() == 1);
  auto one = json(call(api, "GET", {"images", "demo"}));
  BOOST_TEST(one.fields().at("size").number_value() == 4096.0);
  auto brief = json(call(api, "GET", {"servers"}, "", {{"name", "we"}}));
  BOOST_TEST(brief.fields().at("servers").list_value().values_size() == 1);
  auto none = json(call(api, "GET", {"servers"}, "", {{"name", "db"}}));
  BOOST_TEST(none.fields().at("servers").list_value().values_size() == 0);
  auto acts = json(call(api, "GET", {"servers", "i-9", "os-instance-actions"}));
  const auto& list = acts.fields().at("instanceActions").list_value();
  BOOST_TEST_REQUIRE(list.values_size() == 1);
  BOOST_TEST(list.values(0).struct_value().fields().at("request_id").string_value() == "req-1");
  auto one_action = json(call(api, "GET", {"servers", "i-9", "os-instance-actions", "req-1"}));
  const auto& ev = one_action.fields().at("instanceAction").struct_value().fields().at("events").list_value();
  BOOST_TEST(ev.values_size() == 1);
}
