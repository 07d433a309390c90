// `apiary ctl`: the control plane's command-line client (see
// apps/ctl_command.hpp for why, docs/cli.md for the user's reference).
//
// Shape: the words are split into global options (allowed anywhere), a
// noun, a verb and the verb's own options; a table of verbs names each
// verb's arguments and options and its handler. Handlers validate their
// input before the first request, so a usage error is exit 2 even without
// a token. Every request goes through one HttpClient whose deadline is the
// command's (--timeout covers waits too). A failure anywhere is thrown as a
// CtlFailure carrying its exit code and printed once, by ctl_command.
//
// Answers are parsed with protobuf's JSON mapping into the generated
// api.proto types (unknown fields ignored, so a newer server still works);
// --json prints the server's own JSON instead of a table.
#include "apps/ctl_command.hpp"

#include <signal.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "api/http_client.hpp"
#include "api/token_file.hpp"
#include "api/utc_time.hpp"
#include "net/tap.hpp"
#include "proto/apiary/v1/api.pb.h"
#include "proto/spec.hpp"

namespace apiary::apps {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

// --- constants ----------------------------------------------------------------

constexpr int kExitOk = 0;
constexpr int kExitApiError = 1;  // the API answered an error, or a waited-for action failed
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;  // no connection, or no token
constexpr int kExitTimeout = 124;    // as timeout(1)

constexpr const char* kProgram = "apiary ctl";
constexpr const char* kDefaultApi = "127.0.0.1:8080";
constexpr const char* kDefaultTokenFile = "apiary.token";
constexpr const char* kEnvApi = "APIARY_API";
constexpr const char* kEnvToken = "APIARY_TOKEN";
constexpr const char* kEnvTokenFile = "APIARY_TOKEN_FILE";
constexpr const char* kHttpScheme = "http://";
constexpr const char* kHttpsScheme = "https://";
constexpr const char* kEnvCacert = "APIARY_CACERT";

constexpr milliseconds kDefaultTimeout = 120s;
// --timeout is at most a day: anything longer is a typo.
constexpr double kMaxTimeoutSeconds = 24 * 3600;
constexpr milliseconds kPollInterval = 200ms;

constexpr int kMinHttpError = 400;
constexpr int kHttpNotFound = 404;
// An error body that is not an ApiError is quoted up to this many bytes.
constexpr std::size_t kMaxQuotedBody = 200;
constexpr std::size_t kColumnGap = 3;
constexpr int64_t kMsPerSecond = 1000;
constexpr int64_t kSecondsPerMinute = 60;
constexpr int64_t kSecondsPerHour = 3600;

// The states the waits look for (cluster/nova_states.hpp,
// cluster/shakenfist_states.hpp, proto/apiary/v1/api.proto).
constexpr std::string_view kResultRunning = "running";
constexpr std::string_view kResultSuccess = "success";
constexpr std::string_view kVmBuilding = "building";
constexpr std::string_view kVmActive = "active";
constexpr std::string_view kActionCreate = "create";
constexpr std::string_view kTaskNone = "none";
constexpr std::string_view kRebootSoft = "SOFT";
constexpr std::string_view kRebootHard = "HARD";
constexpr std::string_view kNodeStopped = "stopped";
constexpr std::string_view kNodeFailedStates[] = {"error", "deleted"};

// Websocket close codes a console may end with, that are not failures.
constexpr uint16_t kCloseNormal = 1000;
constexpr uint16_t kCloseGoingAway = 1001;

// --disk PATH[:ro] / PATH[:rw]
constexpr std::string_view kReadOnlySuffix = ":ro";
constexpr std::string_view kReadWriteSuffix = ":rw";
constexpr const char* kDiskIdPrefix = "disk";

// --- failures -----------------------------------------------------------------

// Ends the command: ctl_command prints "apiary ctl: <message>" to stderr
// and exits with `code`. Message lines after the first are printed as is.
struct CtlFailure {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, std::string message) { throw CtlFailure{code, std::move(message)}; }

// A usage error names where to look for help.
[[noreturn]] void usage_error(const std::string& message, std::string_view noun = {}) {
  const std::string help = noun.empty() ? "apiary ctl --help" : "apiary ctl " + std::string(noun) + " --help";
  fail(kExitUsage, message + " (see " + help + ")");
}

// --- words --------------------------------------------------------------------

struct OptionSpec {
  std::string_view name;
  bool takes_value = false;
  bool repeatable = false;
};

// The options found, by name (a flag has one empty value per occurrence),
// and the positional arguments in order.
struct Parsed {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>, std::less<>> options;

  bool has(std::string_view name) const { return options.find(name) != options.end(); }
  std::optional<std::string> value(std::string_view name) const {
    auto it = options.find(name);
    if (it == options.end() || it->second.empty()) return std::nullopt;
    return it->second.back();
  }
  std::vector<std::string> all(std::string_view name) const {
    auto it = options.find(name);
    return it == options.end() ? std::vector<std::string>{} : it->second;
  }
};

const OptionSpec* find_option(std::span<const OptionSpec> specs, std::string_view name) {
  for (const auto& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

bool looks_like_option(std::string_view word) { return word.size() > 1 && word[0] == '-'; }

// Moves the options named in `specs` from `args` into `out` ("--name value"
// or "--name=value"). Other words go to `rest`, in order; "--" ends option
// parsing (it and what follows go to `rest` unless `strict`). With `strict`
// an unknown option is a usage error and `rest` gets only positionals.
void take_options(const std::vector<std::string>& args, std::span<const OptionSpec> specs, bool strict,
                  std::string_view noun, Parsed& out, std::vector<std::string>& rest) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (word == "--") {
      rest.insert(rest.end(), args.begin() + static_cast<std::ptrdiff_t>(i + (strict ? 1 : 0)), args.end());
      return;
    }
    const auto eq = word.find('=');
    const std::string name = looks_like_option(word) ? word.substr(0, eq) : word;
    const OptionSpec* spec = looks_like_option(word) ? find_option(specs, name) : nullptr;
    if (!spec) {
      if (strict && looks_like_option(word)) usage_error("unknown option " + name, noun);
      rest.push_back(word);
      continue;
    }
    if (!spec->repeatable && out.has(name)) usage_error(name + " given twice", noun);
    std::string value;
    if (spec->takes_value) {
      if (eq != std::string::npos) {
        value = word.substr(eq + 1);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        usage_error(name + " needs a value", noun);
      }
    } else if (eq != std::string::npos) {
      usage_error(name + " takes no value", noun);
    }
    out.options[name].push_back(std::move(value));
  }
}

template <class T>
std::optional<T> parse_number(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// A positive whole number for option `name`.
template <class T>
T positive_number(const std::string& name, const std::string& text, std::string_view noun) {
  auto v = parse_number<T>(text);
  if (!v || *v == 0) usage_error(name + ": expected a positive whole number, got '" + text + "'", noun);
  return *v;
}

// --- global options -----------------------------------------------------------

constexpr OptionSpec kGlobalOptions[] = {
    {"--api", true},   {"--token-file", true}, {"--timeout", true}, {"--json", false},
    {"--cacert", true}, {"--help", false},      {"-h", false},
};

struct ApiAddress {
  std::string host;
  uint16_t port = 0;
  bool https = false;  // given as https://HOST:PORT
};

struct Globals {
  ApiAddress api;
  std::optional<std::string> token_file;
  std::optional<milliseconds> timeout;
  std::optional<std::string> cacert;  // HTTPS, trusting this CA file
  bool json = false;
  bool help = false;
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// HOST:PORT, [IPV6]:PORT, optionally as http://HOST:PORT[/] or
// https://HOST:PORT[/].
ApiAddress parse_api(std::string text) {
  const std::string original = text;
  bool https = false;
  if (text.starts_with(kHttpScheme)) text.erase(0, std::strlen(kHttpScheme));
  if (text.starts_with(kHttpsScheme)) {
    text.erase(0, std::strlen(kHttpsScheme));
    https = true;
  }
  if (text.ends_with("/")) text.pop_back();
  ApiAddress a;
  std::string port;
  if (text.starts_with("[")) {
    const auto close = text.find("]:");
    if (close == std::string::npos) usage_error("--api: expected [IPV6]:PORT, got '" + original + "'");
    a.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      usage_error("--api: expected HOST:PORT, got '" + original + "'");
    }
    a.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  const auto p = parse_number<uint16_t>(port);
  if (a.host.empty() || !p || *p == 0) usage_error("--api: expected HOST:PORT, got '" + original + "'");
  a.port = *p;
  a.https = https;
  return a;
}

milliseconds parse_timeout(const std::string& text) {
  const auto seconds = parse_number<double>(text);
  if (!seconds || !(*seconds > 0) || *seconds > kMaxTimeoutSeconds) {
    usage_error("--timeout: expected seconds, more than 0 and at most a day, got '" + text + "'");
  }
  return milliseconds(std::max<int64_t>(1, std::llround(*seconds * kMsPerSecond)));
}

// Takes the global options out of `args`; the rest (noun, verb, the verb's
// words) is returned in order.
std::vector<std::string> take_globals(const std::vector<std::string>& args, Globals& g) {
  Parsed p;
  std::vector<std::string> rest;
  take_options(args, kGlobalOptions, false, {}, p, rest);
  const std::string api = p.value("--api").value_or(env(kEnvApi));
  g.api = parse_api(api.empty() ? kDefaultApi : api);
  g.token_file = p.value("--token-file");
  if (auto t = p.value("--timeout")) g.timeout = parse_timeout(*t);
  g.json = p.has("--json");
  g.help = p.has("--help") || p.has("-h");
  g.cacert = p.value("--cacert");
  if (!g.cacert && !env(kEnvCacert).empty()) g.cacert = env(kEnvCacert);
  if (g.cacert && g.cacert->empty()) usage_error("--cacert: expected a file");
  if (g.cacert && api.starts_with(kHttpScheme)) usage_error("--cacert is for HTTPS, but --api says http://");
  return rest;
}

// $APIARY_TOKEN, else the first line of --token-file, $APIARY_TOKEN_FILE or
// ./apiary.token (which, like the controller, we refuse when others can
// read it: api/token_file.hpp).
std::string load_token(const Globals& g) {
  if (auto t = env(kEnvToken); !t.empty()) return t;
  std::string path = g.token_file.value_or(env(kEnvTokenFile));
  if (path.empty()) path = kDefaultTokenFile;
  try {
    return read_token_file(path);
  } catch (const TokenFileError& e) {
    fail(kExitUnreachable, std::string("cannot use the API token: ") + e.what() +
                               " (the controller writes it on its first start; set --token-file, " +
                               kEnvTokenFile + " or " + kEnvToken + ")");
  }
}

// --- the command's context ----------------------------------------------------

class Ctl {
 public:
  explicit Ctl(Globals g) : globals_(std::move(g)), started_(Clock::now()) {}

  bool json() const { return globals_.json; }
  milliseconds timeout() const { return globals_.timeout.value_or(kDefaultTimeout); }
  bool timeout_given() const { return globals_.timeout.has_value(); }
  Clock::time_point deadline() const { return started_ + timeout(); }
  double elapsed_seconds() const {
    return std::chrono::duration<double>(Clock::now() - started_).count();
  }
  // Progress of a --wait: stdout, or stderr when stdout is for JSON.
  std::ostream& progress() const { return json() ? std::cerr : std::cout; }

  // Created on first use, so usage errors come before the token is read.
  HttpClient& client() {
    if (!client_) {
      client_.emplace(globals_.api.host, globals_.api.port, load_token(globals_), deadline());
      // --cacert implies HTTPS; https:// without it trusts the system's CAs.
      if (globals_.api.https || globals_.cacert) client_->use_tls(globals_.cacert.value_or(""));
    }
    return *client_;
  }

 private:
  Globals globals_;
  Clock::time_point started_;
  std::optional<HttpClient> client_;
};

std::string seconds_text(milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%gs", static_cast<double>(d.count()) / kMsPerSecond);
  return buf;
}

// --- JSON ---------------------------------------------------------------------

// snake_case names; `all_fields` prints zero values too (as the server does).
std::string to_json(const google::protobuf::Message& m, bool all_fields) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = all_fields;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(m, &out, options);
  if (!status.ok()) {
    fail(kExitUsage, "cannot encode as JSON (invalid UTF-8 in an argument?): " + std::string(status.message()));
  }
  return out;
}

// An answer; fields this client does not know are ignored.
template <class M>
M parse_answer(const HttpReply& reply, const std::string& what) {
  M m;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(reply.body, &m, options);
  if (!status.ok()) fail(kExitApiError, "unreadable answer to " + what + ": " + std::string(status.message()));
  return m;
}

void print_body(const std::string& body) {
  std::cout << body;
  if (body.empty() || body.back() != '\n') std::cout << '\n';
}

// --- requests -----------------------------------------------------------------

// Exit 124 once the command's deadline has passed (whatever failed), else
// 3 for a missing connection.
[[noreturn]] void fail_no_answer(const Ctl& ctl, const HttpError& e) {
  if (e.kind == HttpFailure::timeout || Clock::now() >= ctl.deadline()) {
    fail(kExitTimeout, "timed out after " + seconds_text(ctl.timeout()) + ": " + e.message);
  }
  std::string hint;
  if (e.message.find("TLS handshake") != std::string::npos) {
    hint = std::string(" (does --cacert or ") + kEnvCacert + " name the CA that signed the API's certificate, "
           "and does that certificate name the host in --api?)";
  } else if (e.kind == HttpFailure::connect || e.kind == HttpFailure::resolve) {
    hint = std::string(" (is the controller running? set --api or ") + kEnvApi + ")";
  }
  fail(kExitUnreachable, e.message + hint);
}

// "<code> <title>: <message>" and one line per field problem; a body that
// is not an ApiError is quoted.
[[noreturn]] void fail_api(const HttpReply& reply) {
  v1::ApiError e;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const bool parsed = google::protobuf::util::JsonStringToMessage(reply.body, &e, options).ok() && e.code() != 0;
  if (!parsed) {
    fail(kExitApiError, "HTTP " + std::to_string(reply.status) + ": " + reply.body.substr(0, kMaxQuotedBody));
  }
  std::string text = std::to_string(e.code()) + " " + e.title() + ": " + e.message();
  for (const auto& p : e.problems()) text += "\n  " + (p.path().empty() ? p.message() : p.path() + ": " + p.message());
  fail(kExitApiError, text);
}

// One request; no answer or an error status ends the command, except 404
// when `not_found_ok`.
HttpReply call(Ctl& ctl, HttpMethod method, const std::string& target, const std::string& body = {},
               bool not_found_ok = false) {
  auto outcome = ctl.client().request(method, target, body);
  if (!outcome.ok()) fail_no_answer(ctl, outcome.error());
  const HttpReply& reply = outcome.reply();
  if (reply.status >= kMinHttpError && !(not_found_ok && reply.status == kHttpNotFound)) fail_api(reply);
  return reply;
}

template <class M>
M get_as(Ctl& ctl, const std::string& target) {
  return parse_answer<M>(call(ctl, HttpMethod::get, target), "GET " + target);
}

// A path segment, percent-encoded.
std::string segment(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::string instance_path(const std::string& id) { return "/v1/instances/" + segment(id); }
std::string actions_path(const std::string& id) { return instance_path(id) + "/actions"; }
std::string network_path(const std::string& id) { return "/v1/networks/" + segment(id); }
constexpr const char* kInstancesPath = "/v1/instances";
constexpr const char* kNodesPath = "/v1/nodes";
constexpr const char* kNetworksPath = "/v1/networks";

// --- output -------------------------------------------------------------------

// Left-aligned columns; a row may carry detail lines printed under it.
class Table {
 public:
  explicit Table(std::vector<std::string> header = {}) {
    if (!header.empty()) rows_.push_back({std::move(header), {}});
  }
  void add(std::vector<std::string> cells, std::vector<std::string> details = {}) {
    rows_.push_back({std::move(cells), std::move(details)});
  }
  void print(std::ostream& out) const {
    std::vector<std::size_t> width;
    for (const auto& r : rows_) {
      width.resize(std::max(width.size(), r.cells.size()));
      for (std::size_t c = 0; c < r.cells.size(); ++c) width[c] = std::max(width[c], r.cells[c].size());
    }
    for (const auto& r : rows_) {
      std::string line;
      for (std::size_t c = 0; c < r.cells.size(); ++c) {
        line += r.cells[c];
        if (c + 1 < r.cells.size()) line += std::string(width[c] - r.cells[c].size() + kColumnGap, ' ');
      }
      out << line << '\n';
      for (const auto& d : r.details) out << "    " << d << '\n';
    }
  }

 private:
  struct Row {
    std::vector<std::string> cells;
    std::vector<std::string> details;
  };
  std::vector<Row> rows_;
};

std::string dash(const std::string& s) { return s.empty() ? "-" : s; }

// No task in flight: the API documents "" and the controller says "none".
std::string task_text(const std::string& task_state) {
  return task_state == kTaskNone ? "-" : dash(task_state);
}

// Unix milliseconds as UTC, e.g. 2024-05-01T12:00:00Z; "-" for 0.
std::string format_time(int64_t unix_ms) {
  const std::string s = api::utc_iso8601(unix_ms);
  return s.empty() ? "-" : s;
}

// 4ms, 12.0s, 3m07s, 2h05m.
std::string format_duration(int64_t ms) {
  char buf[32];
  const int64_t s = ms / kMsPerSecond;
  if (ms < kMsPerSecond) {
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  } else if (s < kSecondsPerMinute) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / kMsPerSecond);
  } else if (s < kSecondsPerHour) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / kSecondsPerMinute),
                  static_cast<long long>(s % kSecondsPerMinute));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / kSecondsPerHour),
                  static_cast<long long>(s % kSecondsPerHour / kSecondsPerMinute));
  }
  return buf;
}

const std::vector<std::string> kInstanceHeader = {"ID", "NAME", "NODE", "VM_STATE", "TASK_STATE", "RECORD"};

std::vector<std::string> instance_row(const v1::Instance& i) {
  return {i.id(), i.name(), dash(i.node()), dash(i.vm_state()), task_text(i.task_state()), dash(i.record_state())};
}

void print_instances(const std::vector<const v1::Instance*>& instances) {
  Table t(kInstanceHeader);
  for (const auto* i : instances) t.add(instance_row(*i));
  t.print(std::cout);
}

std::string boot_text(const v1::Boot& b) {
  std::string text = b.has_kernel_path() ? "kernel " + b.kernel_path() : "embedded " + dash(b.embedded_guest());
  if (!b.cmdline().empty()) text += ", cmdline \"" + b.cmdline() + "\"";
  if (b.has_initrd_path()) text += ", initrd " + b.initrd_path();
  return text;
}

std::string disks_text(const v1::Devices& d) {
  std::string text;
  for (const auto& b : d.block()) {
    if (!text.empty()) text += ", ";
    text += b.id() + " " + b.path() + (b.read_only() ? " (ro)" : "");
  }
  return dash(text);
}

std::string nics_text(const v1::Devices& d) {
  std::string text;
  for (const auto& n : d.nics()) {
    if (!text.empty()) text += ", ";
    text += n.network() + (n.mac().empty() ? "" : " " + n.mac());
  }
  return dash(text);
}

// The spec's rows, when the server sent the spec.
void add_spec_rows(Table& t, const v1::InstanceSpec& s) {
  t.add({"vcpus", std::to_string(s.board().vcpus())});
  t.add({"memory", std::to_string(s.board().memory_mib()) + " MiB"});
  t.add({"boot", boot_text(s.boot())});
  t.add({"disks", disks_text(s.devices())});
  t.add({"nics", nics_text(s.devices())});
}

void print_instance_details(const v1::Instance& i) {
  Table t;
  t.add({"id", i.id()});
  t.add({"name", i.name()});
  t.add({"node", dash(i.node())});
  t.add({"vm_state", dash(i.vm_state())});
  t.add({"task_state", task_text(i.task_state())});
  t.add({"record", dash(i.record_state())});
  t.add({"power_state", dash(i.power_state())});
  if (i.has_spec()) add_spec_rows(t, i.spec());
  t.add({"created", format_time(i.created_at())});
  t.add({"updated", format_time(i.updated_at())});
  t.print(std::cout);
}

void print_nodes(const std::vector<const v1::Node*>& nodes) {
  Table t({"NAME", "STATE", "CONNECTED", "VCPUS", "MEMORY", "INSTANCES", "CHECKIN_AGE", "CAN_RUN"});
  for (const auto* n : nodes) {
    t.add({n->name(), dash(n->state()), n->connected() ? "yes" : "no", std::to_string(n->vcpus()), std::to_string(n->memory_mib()) + " MiB",
           std::to_string(n->instances()), n->last_checkin() > 0 ? format_duration(n->checkin_age_ms()) : "-",
           n->cannot_run().empty() ? "yes" : "no: " + n->cannot_run()});
  }
  t.print(std::cout);
}

void print_networks(const std::vector<const v1::Network*>& networks) {
  Table t({"ID", "NAME", "CIDR", "STATE", "INSTANCES"});
  for (const auto* n : networks) {
    t.add({n->id(), n->name(), dash(n->cidr()), dash(n->state()), std::to_string(n->instances_size())});
  }
  t.print(std::cout);
}

void print_action_log(const v1::ActionLog& log) {
  Table t({"REQUEST_ID", "ACTION", "RESULT", "START", "DURATION"});
  for (const auto& a : log.actions()) {
    const std::string duration = a.finish() > 0 ? format_duration(a.finish() - a.start()) : "-";
    t.add({a.request_id(), a.action(), a.result(), format_time(a.start()), duration},
          {a.events().begin(), a.events().end()});
  }
  t.print(std::cout);
}

void print_accepted(const v1::ActionAccepted& a) {
  std::cout << a.action() << " accepted for instance " << a.instance_id() << ": request " << a.request_id() << '\n';
}

template <class M>
std::vector<const M*> pointers(const google::protobuf::RepeatedPtrField<M>& items) {
  std::vector<const M*> out;
  for (const auto& i : items) out.push_back(&i);
  return out;
}

// Writes all of `data` to `fd`; false when it can't (e.g. a closed pipe).
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// --- waiting ------------------------------------------------------------------

// Progress lines of a --wait: "[  1.2s] task_state: pausing"; a value is
// printed when it changes, an event once.
class Progress {
 public:
  explicit Progress(const Ctl& ctl) : ctl_(ctl) {}

  void line(const std::string& text) const {
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "[%6.1fs] ", ctl_.elapsed_seconds());
    ctl_.progress() << stamp << text << std::endl;
  }
  // What `key` is known to be already: no line until it changes.
  void seed(const std::string& key, const std::string& v) { last_[key] = v; }
  void value(const std::string& key, const std::string& v) {
    auto [it, added] = last_.try_emplace(key, v);
    if (!added && it->second == v) return;
    it->second = v;
    line(key + ": " + v);
  }
  void events(const google::protobuf::RepeatedPtrField<std::string>& all) {
    for (int i = events_seen_; i < all.size(); ++i) line("event: " + all[i]);
    events_seen_ = std::max(events_seen_, all.size());
  }

 private:
  const Ctl& ctl_;
  std::map<std::string, std::string> last_;
  int events_seen_ = 0;
};

// Sleeps until the next poll; exit 124 if the deadline has passed.
void before_next_poll(const Ctl& ctl, const std::string& waiting_for) {
  const auto timed_out = [&] {
    fail(kExitTimeout, "timed out after " + seconds_text(ctl.timeout()) + " waiting for " + waiting_for);
  };
  const auto now = Clock::now();
  if (now >= ctl.deadline()) timed_out();
  std::this_thread::sleep_for(std::min<Clock::duration>(kPollInterval, ctl.deadline() - now));
  if (Clock::now() >= ctl.deadline()) timed_out();
}

const v1::ActionRecord* find_action(const v1::ActionLog& log, std::string_view request_id, std::string_view action) {
  for (const auto& a : log.actions()) {
    if (!request_id.empty() && a.request_id() == request_id) return &a;
    if (request_id.empty() && a.action() == action) return &a;
  }
  return nullptr;
}

std::string last_event(const v1::ActionRecord& r) {
  return r.events().empty() ? "" : " (" + r.events(r.events_size() - 1) + ")";
}

int finish_action(const Ctl& ctl, const Progress& progress, const v1::ActionRecord& record,
                  const v1::Instance& instance) {
  progress.line(record.action() + " " + record.result() + ", vm_state " + dash(instance.vm_state()));
  if (ctl.json()) std::cout << to_json(record, true) << '\n';
  if (record.result() == kResultSuccess) return kExitOk;
  std::cerr << kProgram << ": " << record.action() << " " << record.request_id() << " on " << instance.id()
            << " ended " << record.result() << last_event(record) << '\n';
  return kExitApiError;
}

// Polls the action log (then the instance, so its state is at least as new)
// until the action with `accepted.request_id` is no longer running. With
// `gone_ok` (delete), an instance that no longer exists counts as done.
int wait_for_action(Ctl& ctl, const std::string& id, const v1::ActionAccepted& accepted, bool gone_ok) {
  const std::string what = accepted.action() + " " + accepted.request_id() + " on " + id;
  Progress progress(ctl);
  progress.seed("task_state", task_text({}));
  for (;;) {
    const HttpReply log_reply = call(ctl, HttpMethod::get, actions_path(id), {}, gone_ok);
    const HttpReply instance_reply = call(ctl, HttpMethod::get, instance_path(id), {}, gone_ok);
    if (log_reply.status == kHttpNotFound || instance_reply.status == kHttpNotFound) {
      progress.line("instance " + id + " no longer exists");
      return kExitOk;
    }
    const auto log = parse_answer<v1::ActionLog>(log_reply, "GET " + actions_path(id));
    const auto instance = parse_answer<v1::Instance>(instance_reply, "GET " + instance_path(id));
    const v1::ActionRecord* record = find_action(log, accepted.request_id(), {});
    progress.value("task_state", task_text(instance.task_state()));
    if (record) progress.events(record->events());
    if (record && record->result() != kResultRunning) return finish_action(ctl, progress, *record, instance);
    before_next_poll(ctl, what + " (task_state " + task_text(instance.task_state()) + ")");
  }
}

// Polls until the new instance leaves vm_state building; 0 if it is active.
int wait_for_build(Ctl& ctl, const std::string& id) {
  Progress progress(ctl);
  for (;;) {
    const auto log = get_as<v1::ActionLog>(ctl, actions_path(id));
    const auto instance = get_as<v1::Instance>(ctl, instance_path(id));
    const v1::ActionRecord* create = find_action(log, {}, kActionCreate);
    progress.value("task_state", task_text(instance.task_state()));
    if (create) progress.events(create->events());
    if (instance.vm_state() != kVmBuilding) {
      progress.line("vm_state " + dash(instance.vm_state()) + " on " + dash(instance.node()));
      if (ctl.json()) std::cout << to_json(instance, true) << '\n';
      if (instance.vm_state() == kVmActive) return kExitOk;
      std::cerr << kProgram << ": instance " << id << " ended in vm_state " << dash(instance.vm_state())
                << (create ? last_event(*create) : "") << '\n';
      return kExitApiError;
    }
    before_next_poll(ctl, "instance " + id + " to leave vm_state building (task_state " +
                              task_text(instance.task_state()) + ")");
  }
}

std::optional<v1::Node> find_node(Ctl& ctl, const std::string& name) {
  const auto list = get_as<v1::NodeList>(ctl, kNodesPath);
  for (const auto& n : list.nodes())
    if (n.name() == name) return n;
  return std::nullopt;
}

// Polls until the node is stopped (0), or in a state it can't stop from (1).
int wait_for_node_stop(Ctl& ctl, const std::string& name) {
  Progress progress(ctl);
  for (;;) {
    const auto node = find_node(ctl, name);
    if (!node) fail(kExitApiError, "node " + name + " is no longer listed by " + std::string(kNodesPath));
    progress.value("state", dash(node->state()));
    progress.value("instances", std::to_string(node->instances()));
    const bool failed = std::find(std::begin(kNodeFailedStates), std::end(kNodeFailedStates), node->state()) !=
                        std::end(kNodeFailedStates);
    if (node->state() == kNodeStopped || failed) {
      if (ctl.json()) std::cout << to_json(*node, true) << '\n';
      if (!failed) return kExitOk;
      std::cerr << kProgram << ": node " << name << " ended in state " << node->state() << '\n';
      return kExitApiError;
    }
    before_next_poll(ctl, "node " + name + " to stop (state " + dash(node->state()) + ")");
  }
}

// --- instance -----------------------------------------------------------------

constexpr std::string_view kInstance = "instance";

v1::InstanceSpec load_spec_file(const std::string& path) {
  auto r = spec::load_file(path);
  if (r.spec) return *r.spec;
  std::string text = "--spec " + path + ": not a valid InstanceSpec";
  for (const auto& p : r.problems) text += "\n  " + spec::to_string(p);
  fail(kExitUsage, text);
}

void apply_board_flags(v1::InstanceSpec& s, const Parsed& p) {
  const auto vcpus = p.value("--vcpus");
  const auto memory = p.value("--memory");
  if (!vcpus && !memory) return;
  if (!s.has_board()) {  // a present board needs both values
    s.mutable_board()->set_vcpus(spec::kDefaultVcpus);
    s.mutable_board()->set_memory_mib(spec::kDefaultMemoryMib);
  }
  if (vcpus) s.mutable_board()->set_vcpus(positive_number<uint32_t>("--vcpus", *vcpus, kInstance));
  if (memory) s.mutable_board()->set_memory_mib(positive_number<uint64_t>("--memory", *memory, kInstance));
}

// --guest or --kernel (host paths on the node), with --initrd and --cmdline.
void apply_boot_flags(v1::InstanceSpec& s, const Parsed& p) {
  auto* boot = s.mutable_boot();
  const auto guest = p.value("--guest");
  const auto kernel = p.value("--kernel");
  if (guest && kernel) usage_error("--guest and --kernel: choose one boot source", kInstance);
  if (guest) {
    if (guest->empty()) usage_error("--guest: expected the name of an embedded guest", kInstance);
    boot->set_embedded_guest(*guest);
  } else if (kernel) {
    if (kernel->empty()) usage_error("--kernel: expected a path on the node", kInstance);
    boot->set_kernel_path(*kernel);
  } else if (boot->kernel_case() == v1::Boot::KERNEL_NOT_SET) {
    boot->set_embedded_guest(spec::kDefaultEmbeddedGuest);
  }
  if (auto initrd = p.value("--initrd")) {
    if (initrd->empty()) usage_error("--initrd: expected a path on the node", kInstance);
    if (!boot->has_kernel_path()) usage_error("--initrd needs --kernel (an embedded guest takes no initrd)", kInstance);
    boot->set_initrd_path(*initrd);
  }
  if (auto cmdline = p.value("--cmdline")) boot->set_cmdline(*cmdline);
}

// --disk flags replace the spec's disks: disk0, disk1, ... in order.
void apply_disk_flags(v1::InstanceSpec& s, const Parsed& p) {
  const auto disks = p.all("--disk");
  if (disks.empty()) return;
  auto* block = s.mutable_devices()->mutable_block();
  block->Clear();
  for (std::size_t i = 0; i < disks.size(); ++i) {
    std::string path = disks[i];
    bool read_only = false;
    if (path.ends_with(kReadOnlySuffix) || path.ends_with(kReadWriteSuffix)) {
      read_only = path.ends_with(kReadOnlySuffix);
      path.resize(path.size() - kReadOnlySuffix.size());
    }
    if (path.empty()) usage_error("--disk: expected PATH or PATH:ro, got '" + disks[i] + "'", kInstance);
    auto* d = block->Add();
    d->set_id(kDiskIdPrefix + std::to_string(i));
    d->set_path(path);
    d->set_read_only(read_only);
  }
}

// --network flags replace the spec's NICs (the controller picks their MACs
// and addresses).
void apply_network_flags(v1::InstanceSpec& s, const Parsed& p) {
  const auto networks = p.all("--network");
  if (networks.empty()) return;
  auto* nics = s.mutable_devices()->mutable_nics();
  nics->Clear();
  for (const auto& n : networks) {
    if (n.empty()) usage_error("--network: expected a network id or name", kInstance);
    nics->Add()->set_network(n);
  }
}

// --spec first, then the flags (and NAME) on top.
v1::InstanceSpec build_spec(const Parsed& p) {
  v1::InstanceSpec s;
  if (auto file = p.value("--spec")) s = load_spec_file(*file);
  if (!p.positional.empty()) s.set_name(p.positional[0]);
  if (s.name().empty()) usage_error("instance create: NAME is required (or a name in the --spec file)", kInstance);
  apply_board_flags(s, p);
  apply_boot_flags(s, p);
  apply_disk_flags(s, p);
  apply_network_flags(s, p);
  return s;
}

int instance_create(Ctl& ctl, const Parsed& p) {
  v1::CreateInstanceRequest req;
  *req.mutable_spec() = build_spec(p);
  if (auto id = p.value("--request-id")) req.set_request_id(*id);
  const auto reply = call(ctl, HttpMethod::post, kInstancesPath, to_json(req, false));
  const auto instance = parse_answer<v1::Instance>(reply, std::string("POST ") + kInstancesPath);
  const bool wait = p.has("--wait");
  if (ctl.json() && !wait) print_body(reply.body);
  if (!ctl.json()) print_instances({&instance});
  return wait ? wait_for_build(ctl, instance.id()) : kExitOk;
}

int instance_list(Ctl& ctl, const Parsed&) {
  const auto reply = call(ctl, HttpMethod::get, kInstancesPath);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  print_instances(pointers(parse_answer<v1::InstanceList>(reply, kInstancesPath).instances()));
  return kExitOk;
}

int instance_show(Ctl& ctl, const Parsed& p) {
  const std::string target = instance_path(p.positional[0]);
  const auto reply = call(ctl, HttpMethod::get, target);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  print_instance_details(parse_answer<v1::Instance>(reply, "GET " + target));
  return kExitOk;
}

// Prints the 202 answer, then waits if asked.
int accepted(Ctl& ctl, const Parsed& p, const HttpReply& reply, const std::string& what, bool gone_ok) {
  auto a = parse_answer<v1::ActionAccepted>(reply, what);
  const std::string& id = p.positional[0];
  if (a.instance_id().empty()) a.set_instance_id(id);
  const bool wait = p.has("--wait");
  if (ctl.json() && !wait) print_body(reply.body);
  if (!ctl.json()) print_accepted(a);
  return wait ? wait_for_action(ctl, id, a, gone_ok) : kExitOk;
}

v1::ActionRequest build_action(const Parsed& p) {
  v1::ActionRequest req;
  req.set_action(p.positional[1]);
  if (auto type = p.value("--type")) {
    std::string upper = *type;
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    if (upper != kRebootSoft && upper != kRebootHard) {
      usage_error("--type: expected SOFT or HARD, got '" + *type + "'", kInstance);
    }
    req.set_type(upper);
  }
  for (const auto& kv : p.all("--arg")) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) usage_error("--arg: expected KEY=VALUE, got '" + kv + "'", kInstance);
    const std::string key = kv.substr(0, eq);
    if (req.args().count(key) > 0) usage_error("--arg " + key + " given twice", kInstance);
    (*req.mutable_args())[key] = kv.substr(eq + 1);
  }
  return req;
}

int instance_action(Ctl& ctl, const Parsed& p) {
  const auto req = build_action(p);
  const std::string target = actions_path(p.positional[0]);
  const auto reply = call(ctl, HttpMethod::post, target, to_json(req, false));
  return accepted(ctl, p, reply, "POST " + target, false);
}

int instance_delete(Ctl& ctl, const Parsed& p) {
  const std::string target = instance_path(p.positional[0]);
  const auto reply = call(ctl, HttpMethod::del, target);
  return accepted(ctl, p, reply, "DELETE " + target, true);
}

int instance_log(Ctl& ctl, const Parsed& p) {
  const std::string target = actions_path(p.positional[0]);
  const auto reply = call(ctl, HttpMethod::get, target);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  print_action_log(parse_answer<v1::ActionLog>(reply, "GET " + target));
  return kExitOk;
}

// How a followed console ended: the server's close is fine when it is a
// normal one (e.g. 1001, the server stopping), anything else is reported.
int console_end(const WebSocketEnd& end) {
  if (end.how != WebSocketEnd::How::server_closed) return kExitOk;
  const bool normal = end.close_code == kCloseNormal || end.close_code == kCloseGoingAway;
  std::cerr << kProgram << ": the server closed the console: " << end.close_code
            << (end.close_reason.empty() ? "" : " " + end.close_reason) << '\n';
  return normal ? kExitOk : kExitApiError;
}

// The websocket: history, then live output, to stdout as raw bytes; stdin
// goes to the guest. Until Ctrl-C, or --timeout when one was given.
int follow_console(Ctl& ctl, const std::string& id) {
  WebSocketOptions o;
  o.on_frame = [](std::string_view data) { return write_all(STDOUT_FILENO, data); };
  o.input_fd = STDIN_FILENO;
  if (ctl.timeout_given()) o.stream_until = ctl.deadline();
  o.stop_signals = {SIGINT, SIGTERM};
  const auto outcome = ctl.client().stream_websocket(instance_path(id) + "/console", o);
  if (const auto* e = std::get_if<HttpError>(&outcome)) fail_no_answer(ctl, *e);
  if (const auto* refused = std::get_if<WebSocketRefused>(&outcome)) fail_api(*refused);
  return console_end(std::get<WebSocketEnd>(outcome));
}

int instance_console(Ctl& ctl, const Parsed& p) {
  const std::string& id = p.positional[0];
  if (p.has("--follow")) return follow_console(ctl, id);
  const std::string target = instance_path(id) + "/console/history";
  const auto reply = call(ctl, HttpMethod::get, target);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  const auto history = parse_answer<v1::ConsoleHistory>(reply, "GET " + target);
  if (history.dropped() > 0) {
    std::cerr << kProgram << ": " << history.dropped() << " older bytes no longer fit in the history\n";
  }
  std::cout << history.data() << std::flush;
  return kExitOk;
}

// --- node ---------------------------------------------------------------------

int node_list(Ctl& ctl, const Parsed&) {
  const auto reply = call(ctl, HttpMethod::get, kNodesPath);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  print_nodes(pointers(parse_answer<v1::NodeList>(reply, kNodesPath).nodes()));
  return kExitOk;
}

int node_stop(Ctl& ctl, const Parsed& p) {
  const std::string& name = p.positional[0];
  const std::string target = std::string(kNodesPath) + "/" + segment(name) + "/stop";
  const auto reply = call(ctl, HttpMethod::post, target, "{}");
  const auto node = parse_answer<v1::Node>(reply, "POST " + target);
  const bool wait = p.has("--wait");
  if (ctl.json() && !wait) print_body(reply.body);
  if (!ctl.json()) print_nodes({&node});
  return wait ? wait_for_node_stop(ctl, name) : kExitOk;
}

// --- network ------------------------------------------------------------------

int network_create(Ctl& ctl, const Parsed& p) {
  v1::CreateNetworkRequest req;
  req.set_name(p.positional[0]);
  req.set_cidr(p.value("--cidr").value_or(""));
  const auto reply = call(ctl, HttpMethod::post, kNetworksPath, to_json(req, false));
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  const auto n = parse_answer<v1::Network>(reply, std::string("POST ") + kNetworksPath);
  print_networks({&n});
  return kExitOk;
}

int network_list(Ctl& ctl, const Parsed&) {
  const auto reply = call(ctl, HttpMethod::get, kNetworksPath);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  print_networks(pointers(parse_answer<v1::NetworkList>(reply, kNetworksPath).networks()));
  return kExitOk;
}

// The record, then one line per port and per VTEP.
int network_show(Ctl& ctl, const Parsed& p) {
  const std::string target = network_path(p.positional[0]);
  const auto reply = call(ctl, HttpMethod::get, target);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  const auto n = parse_answer<v1::Network>(reply, "GET " + target);
  print_networks({&n});
  std::cout << "\nVNI " << n.vni() << " (host tap on nodes run with --taps: " << net::tap_name(n.vni()) << ")\n";
  if (!n.error().empty()) std::cout << "Error: " << n.error() << "\n";
  std::cout << '\n';
  Table ports({"INSTANCE", "NIC", "MAC", "IPV4", "NODE"});
  for (const auto& port : n.ports())
    ports.add({port.instance(), std::to_string(port.nic()), port.mac(), dash(port.ipv4()), dash(port.node())});
  ports.print(std::cout);
  std::cout << '\n';
  Table peers({"NODE", "VTEP"});
  std::map<std::string, std::string> sorted(n.vteps().begin(), n.vteps().end());
  for (const auto& [node, vtep] : sorted) peers.add({node, vtep.empty() ? "- (no overlay)" : vtep});
  peers.print(std::cout);
  return kExitOk;
}

int network_delete(Ctl& ctl, const Parsed& p) {
  const std::string target = network_path(p.positional[0]);
  const auto reply = call(ctl, HttpMethod::del, target);
  if (ctl.json()) {
    print_body(reply.body);
    return kExitOk;
  }
  const auto n = parse_answer<v1::Network>(reply, "DELETE " + target);
  print_networks({&n});
  return kExitOk;
}

// --- help ---------------------------------------------------------------------

constexpr const char* kGlobalHelp = R"(Usage: apiary ctl [global options] <noun> <verb> [arguments] [options]

The command-line client of the control plane's HTTP API (apiary cluster,
apiary controller).

Commands:
  instance create NAME [--vcpus N] [--memory MIB] [--guest NAME]
                  [--kernel PATH [--initrd PATH]] [--cmdline TEXT]
                  [--disk PATH[:ro]]... [--network NET]... [--spec FILE]
                  [--request-id ID] [--wait]
  instance list
  instance show ID
  instance action ID ACTION [--type SOFT|HARD] [--arg KEY=VALUE]... [--wait]
  instance console ID [--follow]
  instance log ID
  instance delete ID [--wait]
  node list
  node stop NAME [--wait]
  network create NAME [--cidr CIDR]
  network list
  network show ID
  network delete ID

Global options (before or after the noun and verb):
  --api HOST:PORT     the API (default $APIARY_API, else 127.0.0.1:8080);
                      https://HOST:PORT for a controller started with
                      --https-cert (its certificate must name HOST)
  --cacert FILE       HTTPS, trusting the CA certificate(s) in FILE instead
                      of the system's (default $APIARY_CACERT)
  --token-file FILE   the bearer token, one line (default $APIARY_TOKEN_FILE,
                      else ./apiary.token); $APIARY_TOKEN, if set, is the
                      token itself and wins
  --json              print the server's JSON instead of a table
  --timeout SECONDS   deadline for the whole command, waits included
                      (default 120)
  -h, --help          this text; `apiary ctl <noun> --help` for a noun

Exit status: 0 ok; 1 the API answered an error, or a waited-for action
failed; 2 usage error; 3 cannot connect, or the token file is unreadable;
124 timeout.
)";

constexpr const char* kInstanceHelp = R"(Usage: apiary ctl instance <verb> ...

  create NAME [options]   create an instance (202: vm_state building)
      --vcpus N           vCPUs (default 1)
      --memory MIB        guest RAM in MiB (default 64)
      --guest NAME        embedded guest to boot (default demo)
      --kernel PATH       boot this kernel instead (a bzImage, ELF or
                          multiboot image; a path on the node that runs it)
      --initrd PATH       its initramfs (a path on the node)
      --cmdline TEXT      the kernel command line, e.g. "console=ttyS0"
      --disk PATH[:ro]    a virtio disk backed by a host file on the node;
                          repeat for more (ids disk0, disk1, ...)
      --network NET       a NIC on network NET (id or name); repeatable
      --spec FILE         a JSON (or text format) InstanceSpec; NAME and the
                          flags above override its fields
      --request-id ID     idempotency key: a retry with the same ID answers
                          the instance the first create made
      --wait              wait until the instance leaves vm_state building;
                          exit 0 if it became active, 1 otherwise
  list                    ID NAME NODE VM_STATE TASK_STATE RECORD
  show ID                 one instance in detail
  action ID ACTION        a Nova action: pause, unpause, stop, start, reboot,
                          resize, snapshot, backup, rescue, ... (202, or the
                          server's 409/501 refusal, exit 1)
      --type SOFT|HARD    the reboot type (required for reboot)
      --arg KEY=VALUE     an action argument, e.g. --arg vcpus=2; repeatable
      --wait              poll until the action finishes, printing task_state
                          and event changes; exit 0 on success, 1 on error,
                          reverted or superseded
  console ID              the console history (raw bytes)
      --follow            stream the console over the websocket: history,
                          then live output; stdin goes to the guest; until
                          Ctrl-C, the server closing, or --timeout if given
  log ID                  the action log: every action with its events
  delete ID [--wait]      delete the instance (the "delete" action)

--wait polls every 200 ms; exit 124 if --timeout (default 120 s) passes.
)";

constexpr const char* kNodeHelp = R"(Usage: apiary ctl node <verb> ...

  list                    NAME STATE VCPUS MEMORY INSTANCES CHECKIN_AGE
  stop NAME [--wait]      drain the node and stop it (202); --wait polls
                          until its state is stopped (exit 0), error or
                          deleted (exit 1), or --timeout (exit 124)
)";

constexpr const char* kNetworkHelp = R"(Usage: apiary ctl network <verb> ...

  create NAME [--cidr CIDR]  create a network (CIDR as a.b.c.d/n)
  list                       ID NAME CIDR STATE INSTANCES
  show ID                    the record, its VNI, its ports (instance, NIC,
                             MAC, address, node) and the nodes' VTEPs
  delete ID                  delete a network (delete_wait while instances
                             are attached to it)
)";

struct Noun {
  std::string_view name;
  const char* help;
};

constexpr Noun kNouns[] = {{"instance", kInstanceHelp}, {"node", kNodeHelp}, {"network", kNetworkHelp}};

const Noun* find_noun(std::string_view name) {
  for (const auto& n : kNouns)
    if (n.name == name) return &n;
  return nullptr;
}

// --- dispatch -----------------------------------------------------------------

using Handler = int (*)(Ctl&, const Parsed&);

struct Verb {
  std::string_view noun;
  std::string_view name;
  std::vector<std::string_view> arguments;  // positional names
  std::size_t required;                     // how many of them must be given
  std::vector<OptionSpec> options;
  Handler run;
};

const std::vector<Verb>& verbs() {
  static const std::vector<Verb> all = {
      {"instance", "create", {"NAME"}, 0,
       {{"--vcpus", true}, {"--memory", true}, {"--guest", true}, {"--kernel", true}, {"--initrd", true},
        {"--cmdline", true}, {"--disk", true, true},
        {"--network", true, true}, {"--spec", true}, {"--request-id", true}, {"--wait"}},
       instance_create},
      {"instance", "list", {}, 0, {}, instance_list},
      {"instance", "show", {"ID"}, 1, {}, instance_show},
      {"instance", "action", {"ID", "ACTION"}, 2,
       {{"--type", true}, {"--arg", true, true}, {"--wait"}}, instance_action},
      {"instance", "console", {"ID"}, 1, {{"--follow"}}, instance_console},
      {"instance", "log", {"ID"}, 1, {}, instance_log},
      {"instance", "delete", {"ID"}, 1, {{"--wait"}}, instance_delete},
      {"node", "list", {}, 0, {}, node_list},
      {"node", "stop", {"NAME"}, 1, {{"--wait"}}, node_stop},
      {"network", "create", {"NAME"}, 1, {{"--cidr", true}}, network_create},
      {"network", "list", {}, 0, {}, network_list},
      {"network", "show", {"ID"}, 1, {}, network_show},
      {"network", "delete", {"ID"}, 1, {}, network_delete},
  };
  return all;
}

const Verb* find_verb(std::string_view noun, std::string_view name) {
  for (const auto& v : verbs())
    if (v.noun == noun && v.name == name) return &v;
  return nullptr;
}

Parsed parse_verb(const Verb& verb, const std::vector<std::string>& words) {
  Parsed p;
  take_options(words, verb.options, true, verb.noun, p, p.positional);
  const std::string cmd = std::string(verb.noun) + " " + std::string(verb.name);
  if (p.positional.size() < verb.required) {
    usage_error(cmd + ": missing " + std::string(verb.arguments[p.positional.size()]), verb.noun);
  }
  if (p.positional.size() > verb.arguments.size()) {
    usage_error(cmd + ": unexpected argument '" + p.positional[verb.arguments.size()] + "'", verb.noun);
  }
  for (const auto& a : p.positional)
    if (a.empty()) usage_error(cmd + ": an argument is empty", verb.noun);
  return p;
}

// `apiary ctl [noun] --help` to stdout (0); a missing noun or verb prints
// the same help to stderr (2).
int help(const Noun* noun, bool asked) {
  const char* text = noun ? noun->help : kGlobalHelp;
  (asked ? std::cout : std::cerr) << text;
  return asked ? kExitOk : kExitUsage;
}

int run_ctl(const std::vector<std::string>& args) {
  Globals globals;
  std::vector<std::string> words = take_globals(args, globals);
  if (!words.empty() && words[0] == "help") {
    words.erase(words.begin());
    globals.help = true;
  }
  if (words.empty()) return help(nullptr, globals.help);
  const Noun* noun = find_noun(words[0]);
  if (!noun) {
    if (globals.help) return help(nullptr, true);
    usage_error("unknown noun '" + words[0] + "'");
  }
  if (globals.help || words.size() == 1 || words[1] == "help") return help(noun, globals.help || words.size() > 1);
  const Verb* verb = find_verb(noun->name, words[1]);
  if (!verb) usage_error("unknown " + std::string(noun->name) + " verb '" + words[1] + "'", noun->name);
  const Parsed parsed = parse_verb(*verb, {words.begin() + 2, words.end()});
  Ctl ctl(std::move(globals));
  return verb->run(ctl, parsed);
}

}  // namespace

void print_ctl_help() { std::cout << kGlobalHelp; }

int ctl_command(const std::vector<std::string>& args) {
  try {
    return run_ctl(args);
  } catch (const CtlFailure& f) {
    std::cout << std::flush;
    std::cerr << kProgram << ": " << f.message << '\n';
    return f.code;
  } catch (const std::exception& e) {
    std::cout << std::flush;
    std::cerr << kProgram << ": internal error: " << e.what() << '\n';
    return kExitApiError;
  }
}

}  // namespace apiary::apps
