// Nova's compute API v2.1 over ControlPlaneApi; see nova_api.hpp.
#include "api/nova_api.hpp"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <ctime>
#include <optional>
#include <set>

#include "api/utc_time.hpp"
#include "cluster/nova_states.hpp"
#include "proto/apiary/v1/nova.pb.h"
#include "proto/spec.hpp"

namespace apiary::apps::nova {

namespace {

namespace pb = google::protobuf;

// The image of an instance booted from a host kernel file, not an embedded
// guest: GET /images/kernel answers 404 (the clients ignore it).
constexpr std::string_view kKernelImage = "kernel";
constexpr std::string_view kCustomFlavor = "custom";
constexpr std::string_view kProject = "apiary";  // tenant_id, user_id: there is one

std::string to_json(const pb::Message& m) {
  pb::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;  // {} and [] as Nova prints them; json_name is used
  std::string out;
  if (!pb::util::MessageToJsonString(m, &out, o).ok())
    return R"({"computeFault": {"code": 500, "message": "response could not be encoded as JSON"}})";
  return out;
}

Response json(unsigned status, const pb::Message& m) { return Response{status, to_json(m), {}}; }

// Nova's error body, by status.
Response fault(unsigned status, const std::string& message) {
  v1::NovaFault f;
  v1::NovaFaultDetail* d = nullptr;
  switch (status) {
    case 400: d = f.mutable_bad_request(); break;
    case 401: d = f.mutable_unauthorized(); break;
    case 404: d = f.mutable_item_not_found(); break;
    case 405: d = f.mutable_bad_method(); break;
    case 409: d = f.mutable_conflicting_request(); break;
    case 413: d = f.mutable_over_limit(); break;
    case 501: d = f.mutable_not_implemented(); break;
    case 503: d = f.mutable_service_unavailable(); break;
    default:
      status = status >= 400 && status <= 599 ? status : 500;
      d = f.mutable_compute_fault();
  }
  d->set_code(static_cast<int32_t>(status));
  d->set_message(message);
  // Only the kind that is set is printed (unset messages are never printed).
  pb::util::JsonPrintOptions o;
  std::string out;
  (void)pb::util::MessageToJsonString(f, &out, o);
  if (status == 405) return Response{status, out, {{"Allow", "GET, POST, DELETE"}}};
  return Response{status, out, {}};
}

Response fault(const v1::ApiError& e) {
  std::string message = e.message();
  for (const auto& p : e.problems()) message += "; " + (p.path().empty() ? "" : p.path() + ": ") + p.message();
  return fault(static_cast<unsigned>(e.code()), message);
}

Response method_not_allowed() { return fault(405, "method not allowed"); }

std::string iso8601(int64_t unix_ms) { return api::utc_iso8601(unix_ms); }

void add_links(pb::RepeatedPtrField<v1::NovaLink>* links, const std::string& base, const std::string& rel_path) {
  auto* self = links->Add();
  self->set_rel("self");
  self->set_href(base + "/" + rel_path);
  auto* bookmark = links->Add();
  bookmark->set_rel("bookmark");
  const std::string v = "/v2.1";
  const auto at = base.rfind(v);
  bookmark->set_href((at == std::string::npos ? base : base.substr(0, at)) + "/" + rel_path);
}

// --- flavors and images ---

const Flavor* find_flavor(std::string_view id_or_name) {
  for (const auto& f : kFlavors)
    if (f.id == id_or_name || f.name == id_or_name) return &f;
  return nullptr;
}

std::string_view flavor_of(const v1::InstanceSpec& spec) {
  for (const auto& f : kFlavors)
    if (f.vcpus == spec.board().vcpus() && f.ram_mib == spec.board().memory_mib()) return f.id;
  return kCustomFlavor;
}

v1::NovaFlavor flavor_json(const Flavor& f, const std::string& base) {
  v1::NovaFlavor out;
  out.set_id(std::string(f.id));
  out.set_name(std::string(f.name));
  out.set_ram(static_cast<int32_t>(f.ram_mib));
  out.set_vcpus(static_cast<int32_t>(f.vcpus));
  out.set_disk(0);
  out.set_is_public(true);
  out.set_rxtx_factor(1.0);
  add_links(out.mutable_links(), base, "flavors/" + std::string(f.id));
  return out;
}

v1::NovaImage image_json(const Image& g) {
  v1::NovaImage out;
  out.set_id(g.name);
  out.set_name(g.name);
  out.set_status("active");
  out.set_visibility("public");
  out.set_container_format("bare");
  out.set_disk_format("raw");
  out.set_size(static_cast<int32_t>(std::min<uint64_t>(g.size, INT32_MAX)));
  return out;
}

const Image* find_image(const Request& r, std::string_view name) {
  if (!r.images) return nullptr;
  for (const auto& i : *r.images)
    if (i.name == name) return &i;
  return nullptr;
}

// --- servers ---

// Nova's power_state numbers (nova/compute/power_state.py): the
// hypervisor's view when the record has one, else what the vm_state implies.
int32_t power_state_number(std::string_view power, std::string_view vm) {
  const std::string_view s = power.empty() ? vm : power;
  if (s == "running" || s == "active" || s == "rescued" || s == "resized") return 1;
  if (s == "paused") return 3;
  if (s == "shutdown" || s == "stopped" || s == "shelved" || s == "shelved_offloaded") return 4;
  if (s == "crashed") return 6;
  if (s == "suspended") return 7;
  return 0;  // NOSTATE: building, error, deleted
}

// Network id -> name, for the addresses map.
std::map<std::string, std::string> network_names(ControlPlaneApi& api) {
  std::map<std::string, std::string> names;
  auto nets = api.list_networks();
  if (nets.ok())
    for (const auto& n : nets.value().networks()) names[n.id()] = n.name();
  return names;
}

v1::NovaServer server_json(const v1::Instance& in, const std::string& base,
                           const std::map<std::string, std::string>& net_names) {
  v1::NovaServer s;
  s.set_id(in.id());
  s.set_name(in.name());
  s.set_status(server_status(in.vm_state(), in.task_state()));
  const auto& boot = in.spec().boot();
  const std::string image = boot.has_embedded_guest() ? boot.embedded_guest() : std::string(kKernelImage);
  s.mutable_image()->set_id(image);
  add_links(s.mutable_image()->mutable_links(), base, "images/" + image);
  const std::string flavor(flavor_of(in.spec()));
  s.mutable_flavor()->set_id(flavor);
  add_links(s.mutable_flavor()->mutable_links(), base, "flavors/" + flavor);
  s.set_created(iso8601(in.created_at()));
  s.set_updated(iso8601(in.updated_at() ? in.updated_at() : in.created_at()));
  s.set_host_id(in.node());
  s.set_tenant_id(std::string(kProject));
  s.set_user_id(std::string(kProject));
  for (const auto& nic : in.spec().devices().nics()) {
    auto it = net_names.find(nic.network());
    const std::string key = it == net_names.end() ? nic.network() : it->second;
    auto& list = (*s.mutable_addresses())[key];
    if (nic.ipv4().empty()) continue;
    auto* a = list.add_values()->mutable_struct_value()->mutable_fields();
    (*a)["addr"].set_string_value(nic.ipv4().substr(0, nic.ipv4().find('/')));
    (*a)["version"].set_number_value(4);
    (*a)["OS-EXT-IPS-MAC:mac_addr"].set_string_value(nic.mac());
    (*a)["OS-EXT-IPS:type"].set_string_value("fixed");
  }
  add_links(s.mutable_links(), base, "servers/" + in.id());
  s.set_vm_state(in.vm_state());
  if (in.task_state().empty())
    s.mutable_task_state()->set_null_value(pb::NULL_VALUE);
  else
    s.mutable_task_state()->set_string_value(in.task_state());
  s.set_power_state(power_state_number(in.power_state(), in.vm_state()));
  s.set_host(in.node());
  s.set_hypervisor_hostname(in.node());
  s.set_instance_name(in.name());
  s.set_progress(in.vm_state() == "building" ? 0 : 100);
  return s;
}

bool live(const v1::Instance& in) { return in.vm_state() != "deleted"; }

Response list_servers(ControlPlaneApi& api, const Request& r, bool detail) {
  auto all = api.list();
  if (!all.ok()) return fault(all.error());
  const auto names = detail ? network_names(api) : std::map<std::string, std::string>{};
  // ?name= is a substring match (Nova: a regular expression).
  auto name = r.query.find("name");
  v1::NovaServerList out;
  for (const auto& in : all.value().instances()) {
    if (!live(in)) continue;
    if (name != r.query.end() && in.name().find(name->second) == std::string::npos) continue;
    if (detail) {
      *out.add_servers() = server_json(in, r.base_url, names);
    } else {
      auto* s = out.add_servers();
      s->set_id(in.id());
      s->set_name(in.name());
      add_links(s->mutable_links(), r.base_url, "servers/" + in.id());
    }
  }
  if (detail) return json(200, out);
  // The short form has only id, name and links: print just those.
  pb::Struct brief;
  auto* list = (*brief.mutable_fields())["servers"].mutable_list_value();
  for (const auto& s : out.servers()) {
    auto* f = list->add_values()->mutable_struct_value()->mutable_fields();
    (*f)["id"].set_string_value(s.id());
    (*f)["name"].set_string_value(s.name());
    auto* links = (*f)["links"].mutable_list_value();
    for (const auto& l : s.links()) {
      auto* lf = links->add_values()->mutable_struct_value()->mutable_fields();
      (*lf)["rel"].set_string_value(l.rel());
      (*lf)["href"].set_string_value(l.href());
    }
  }
  return Response{200, to_json(brief), {}};
}

Response show_server(ControlPlaneApi& api, const Request& r, const std::string& id) {
  auto in = api.get(id);
  if (!in.ok()) return fault(in.error());
  if (!live(in.value())) return fault(404, "Instance " + id + " could not be found.");
  v1::NovaServerBody body;
  *body.mutable_server() = server_json(in.value(), r.base_url, network_names(api));
  return json(200, body);
}

std::optional<std::string> parse(const std::string& body, pb::Message& m) {
  pb::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  if (body.empty()) return "a JSON body is required";
  auto st = pb::util::JsonStringToMessage(body, &m, o);
  if (!st.ok()) return "malformed request body: " + std::string(st.message());
  return std::nullopt;
}

Response create_server(ControlPlaneApi& api, const Request& r) {
  v1::NovaCreateServerBody req;
  if (auto bad = parse(r.body, req)) return fault(400, *bad);
  if (!req.has_server()) return fault(400, "the body must be {\"server\": {...}}");
  const auto& s = req.server();
  if (s.name().empty()) return fault(400, "server name is required");
  if (s.image_ref().empty()) return fault(400, "imageRef is required: one of the images in GET /images");
  if (!find_image(r, s.image_ref())) return fault(400, "Image " + s.image_ref() + " could not be found.");
  const Flavor* f = find_flavor(s.flavor_ref());
  if (!f) return fault(400, "Flavor " + s.flavor_ref() + " could not be found.");
  v1::InstanceSpec spec;
  spec.set_name(s.name());
  spec.mutable_board()->set_vcpus(f->vcpus);
  spec.mutable_board()->set_memory_mib(f->ram_mib);
  spec.mutable_boot()->set_embedded_guest(s.image_ref());
  // networks: "auto"/"none"/absent: no NIC; a list of {"uuid", "fixed_ip"}.
  if (s.networks().kind_case() == pb::Value::kListValue) {
    for (const auto& v : s.networks().list_value().values()) {
      if (v.kind_case() != pb::Value::kStructValue) return fault(400, "networks: each entry must be an object");
      const auto& fields = v.struct_value().fields();
      auto uuid = fields.find("uuid");
      if (uuid == fields.end() || uuid->second.string_value().empty())
        return fault(400, "networks: each entry needs a \"uuid\" (a network id)");
      auto* nic = spec.mutable_devices()->add_nics();
      nic->set_network(uuid->second.string_value());
      if (auto ip = fields.find("fixed_ip"); ip != fields.end() && !ip->second.string_value().empty()) {
        // Nova gives an address; Apiary's NIC takes it with its prefix,
        // which the network's CIDR decides: the controller fills it in.
        nic->set_ipv4(ip->second.string_value());
      }
    }
  } else if (s.networks().kind_case() == pb::Value::kStringValue && s.networks().string_value() != "auto" &&
             s.networks().string_value() != "none") {
    return fault(400, "networks must be \"auto\", \"none\" or a list");
  }
  spec::apply_defaults(spec);
  auto problems = spec::validate(spec, spec::host_limits());
  if (!problems.empty()) {
    std::string msg = "Invalid server: ";
    for (const auto& p : problems) msg += spec::to_string(p) + "; ";
    msg.resize(msg.size() - 2);
    return fault(400, msg);
  }
  auto made = api.create(spec);
  if (!made.ok()) return fault(made.error());
  v1::NovaCreatedServerBody out;
  out.mutable_server()->set_id(made.value().id());
  add_links(out.mutable_server()->mutable_links(), r.base_url, "servers/" + made.value().id());
  out.mutable_server()->set_disk_config("MANUAL");
  (*out.mutable_server()->add_security_groups()->mutable_fields())["name"].set_string_value("default");
  Response resp = json(202, out);
  resp.headers.emplace_back("Location", r.base_url + "/servers/" + made.value().id());
  return resp;
}

Response run_action(ControlPlaneApi& api, const std::string& id, v1::ActionRequest req, unsigned ok_status) {
  auto action = control::action_from_api(req.action(), req.type());
  if (!action) return fault(400, "unknown action '" + req.action() + "'");
  auto r = api.act(id, req);
  if (!r.ok()) {
    v1::ApiError e = r.error();
    // Nova's own wording for a server that does not exist.
    if (e.code() == 404) e.set_message("Instance " + id + " could not be found.");
    return fault(e);
  }
  Response resp{ok_status, {}, {}};
  if (!r.value().request_id().empty()) resp.headers.emplace_back("x-compute-request-id", r.value().request_id());
  return resp;
}

// The string field `key` of a Struct value, "" when absent or not a string.
std::string str_field(const pb::Value& v, const std::string& key) {
  if (v.kind_case() != pb::Value::kStructValue) return {};
  auto it = v.struct_value().fields().find(key);
  if (it == v.struct_value().fields().end()) return {};
  if (it->second.kind_case() == pb::Value::kNumberValue)
    return std::to_string(static_cast<long long>(it->second.number_value()));
  return it->second.string_value();
}

Response server_action(ControlPlaneApi& api, const Request& r, const std::string& id) {
  pb::Struct body;
  if (auto bad = parse(r.body, body)) return fault(400, *bad);
  if (body.fields_size() != 1) return fault(400, "an action body has exactly one key, e.g. {\"pause\": null}");
  const auto& [key, arg] = *body.fields().begin();
  const std::string_view command = command_of(key);
  if (command.empty()) return fault(400, "Action '" + key + "' is not supported by this compute API");
  v1::ActionRequest req;
  req.set_action(std::string(command));
  auto& args = *req.mutable_args();
  if (key == "reboot") {
    const std::string type = str_field(arg, "type");
    if (type != "SOFT" && type != "HARD") return fault(400, "reboot needs \"type\": \"SOFT\" or \"HARD\"");
    req.set_type(type);
  } else if (key == "resize") {
    const std::string ref = str_field(arg, "flavorRef");
    const Flavor* f = find_flavor(ref);
    if (!f) return fault(400, "Flavor " + ref + " could not be found.");
    args["vcpus"] = std::to_string(f->vcpus);
    args["memory_mib"] = std::to_string(f->ram_mib);
  } else if (key == "createImage" || key == "createBackup") {
    if (auto n = str_field(arg, "name"); !n.empty()) args["name"] = n;
    if (auto rot = str_field(arg, "rotation"); !rot.empty()) args["rotation"] = rot;
  } else if (key == "rescue") {
    if (auto img = str_field(arg, "rescue_image_ref"); !img.empty()) args["image"] = img;
  } else if (key == "os-migrateLive" || key == "unshelve") {
    // "host": null (or absent) lets the scheduler pick, as in Nova.
    if (auto host = str_field(arg, "host"); !host.empty()) args["host"] = host;
  }
  return run_action(api, id, std::move(req), 202);
}

Response instance_actions(ControlPlaneApi& api, const std::string& id, const std::string& request_id) {
  auto log = api.actions(id);
  if (!log.ok()) return fault(log.error());
  auto convert = [&](const v1::ActionRecord& a, bool with_events) {
    v1::NovaInstanceAction out;
    out.set_action(a.action());
    out.set_instance_uuid(id);
    out.set_request_id(a.request_id());
    out.set_user_id(std::string(kProject));
    out.set_project_id(std::string(kProject));
    out.set_start_time(iso8601(a.start()));
    if (a.result() == "error")
      out.mutable_message()->set_string_value("Error");
    else
      out.mutable_message()->set_null_value(pb::NULL_VALUE);
    if (with_events) {
      for (const auto& line : a.events()) {
        auto* e = out.add_events();
        e->set_event(line);
        e->set_start_time(iso8601(a.start()));
        e->set_finish_time(iso8601(a.finish()));
        e->set_result(a.result() == "success" ? "Success" : a.result() == "running" ? "" : "Error");
      }
    }
    return out;
  };
  if (request_id.empty()) {
    v1::NovaInstanceActionList out;
    // Nova lists the newest first.
    for (auto it = log.value().actions().rbegin(); it != log.value().actions().rend(); ++it)
      *out.add_instance_actions() = convert(*it, false);
    return json(200, out);
  }
  for (const auto& a : log.value().actions()) {
    if (a.request_id() != request_id) continue;
    v1::NovaInstanceActionBody out;
    *out.mutable_instance_action() = convert(a, true);
    return json(200, out);
  }
  return fault(404, "Action " + request_id + " not found");
}

Response version_document(const Request& r) {
  v1::NovaVersionDocument doc;
  auto* v = doc.mutable_version();
  v->set_id("v2.1");
  v->set_status("CURRENT");
  v->set_version(std::string(kMaxVersion));
  v->set_min_version(std::string(kMinVersion));
  v->set_updated("2013-07-23T11:33:21Z");
  auto* l = v->add_links();
  l->set_rel("self");
  l->set_href(r.base_url + "/");
  return json(200, doc);
}

Response flavors(const Request& r) {
  const auto& p = r.path;
  const bool get = r.method == "GET";
  if (p.size() == 1 || (p.size() == 2 && p[1] == "detail")) {
    if (!get) return method_not_allowed();
    v1::NovaFlavorList out;
    for (const auto& f : kFlavors) *out.add_flavors() = flavor_json(f, r.base_url);
    return json(200, out);
  }
  const Flavor* f = find_flavor(p[1]);
  if (!f || f->id != p[1]) return fault(404, "Flavor " + p[1] + " could not be found.");
  if (!get) return method_not_allowed();
  if (p.size() == 2) {
    v1::NovaFlavorBody out;
    *out.mutable_flavor() = flavor_json(*f, r.base_url);
    return json(200, out);
  }
  if (p.size() == 3 && p[2] == "os-extra_specs") return json(200, v1::NovaExtraSpecs{});
  return fault(404, "no such resource");
}

Response images(const Request& r) {
  if (r.method != "GET") return method_not_allowed();
  const auto& p = r.path;
  if (p.size() == 1 || (p.size() == 2 && p[1] == "detail")) {
    auto name = r.query.find("name");
    v1::NovaImageList out;
    if (r.images)
      for (const auto& g : *r.images)
        if (name == r.query.end() || g.name == name->second) *out.add_images() = image_json(g);
    return json(200, out);
  }
  if (p.size() != 2) return fault(404, "no such resource");
  const auto* g = find_image(r, p[1]);
  if (!g) return fault(404, "Image " + p[1] + " could not be found.");
  // Glance v2's shape: the bare image object.
  return json(200, image_json(*g));
}

}  // namespace

bool is_nova_path(const std::vector<std::string>& segments) {
  return segments.size() >= 2 && segments[0] == "compute" && segments[1] == "v2.1";
}

std::string server_status(std::string_view vm, std::string_view task) {
  // nova/api/openstack/common.py: the status of a vm_state, refined by
  // some task_states.
  if (vm == "active") {
    if (task == "rebooting") return "REBOOT";
    if (task == "rebooting_hard") return "HARD_REBOOT";
    if (task == "rebuilding") return "REBUILD";
    if (task == "migrating") return "MIGRATING";
    if (task == "updating_password") return "PASSWORD";
    if (task.rfind("resize_", 0) == 0) return "RESIZE";
    return "ACTIVE";
  }
  if (vm == "building") return "BUILD";
  if (vm == "stopped") {
    if (task.rfind("resize_", 0) == 0) return "RESIZE";
    if (task == "rebuilding") return "REBUILD";
    return "SHUTOFF";
  }
  if (vm == "resized") return task == "resize_reverting" ? "REVERT_RESIZE" : "VERIFY_RESIZE";
  if (vm == "paused") return "PAUSED";
  if (vm == "suspended") return "SUSPENDED";
  if (vm == "rescued") return "RESCUE";
  if (vm == "error") return task == "rebuilding" ? "REBUILD" : "ERROR";
  if (vm == "deleted") return "DELETED";
  if (vm == "soft_deleted") return "SOFT_DELETED";
  if (vm == "shelved") return "SHELVED";
  if (vm == "shelved_offloaded") return "SHELVED_OFFLOADED";
  return "UNKNOWN";
}

std::string_view command_of(std::string_view key) {
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"pause", "pause"},
      {"unpause", "unpause"},
      {"suspend", "suspend"},
      {"resume", "resume"},
      {"os-stop", "stop"},
      {"os-start", "start"},
      {"reboot", "reboot"},
      {"shelve", "shelve"},
      {"shelveOffload", "shelve_offload"},
      {"unshelve", "unshelve"},
      {"rescue", "rescue"},
      {"unrescue", "unrescue"},
      {"resize", "resize"},
      {"confirmResize", "confirm_resize"},
      {"revertResize", "revert_resize"},
      {"createImage", "snapshot"},
      {"createBackup", "backup"},
      {"rebuild", "rebuild"},
      {"changePassword", "set_admin_password"},
      {"os-migrateLive", "live_migrate"},
      {"restore", "restore"},
      {"forceDelete", "delete"},
  };
  for (const auto& [k, v] : kMap)
    if (k == key) return v;
  return {};
}

Response handle(ControlPlaneApi& api, const Request& r) {
  const auto& p = r.path;
  try {
    if (p.empty() || (p.size() == 1 && p[0].empty())) {
      if (r.method != "GET") return method_not_allowed();
      return version_document(r);
    }
    if (p[0] == "flavors") return flavors(r);
    if (p[0] == "images") return images(r);
    if (p[0] != "servers") return fault(404, "no such resource: " + p[0]);
    if (p.size() == 1) {
      if (r.method == "GET") return list_servers(api, r, false);
      if (r.method == "POST") return create_server(api, r);
      return method_not_allowed();
    }
    if (p.size() == 2 && p[1] == "detail") {
      if (r.method != "GET") return method_not_allowed();
      return list_servers(api, r, true);
    }
    const std::string& id = p[1];
    if (p.size() == 2) {
      if (r.method == "GET") return show_server(api, r, id);
      if (r.method == "DELETE") {
        v1::ActionRequest del;
        del.set_action("delete");
        return run_action(api, id, std::move(del), 204);
      }
      return method_not_allowed();
    }
    if (p.size() == 3 && p[2] == "action") {
      if (r.method != "POST") return method_not_allowed();
      return server_action(api, r, id);
    }
    if (p[2] == "os-instance-actions" && p.size() <= 4) {
      if (r.method != "GET") return method_not_allowed();
      return instance_actions(api, id, p.size() == 4 ? p[3] : std::string());
    }
    return fault(404, "no such resource");
  } catch (const std::exception& e) {
    return fault(500, std::string("internal error: ") + e.what());
  }
}

}  // namespace apiary::apps::nova
