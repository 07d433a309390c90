// Loading, defaulting and validating an InstanceSpec; see spec.hpp for why.
//
// Design notes:
//  * Parsing is delegated to protobuf (JSON and text format) so the accepted
//    syntax is exactly the documented proto3 one. We only translate their
//    errors into Problems, recovering a field path where the parser gives one.
//  * validate() never stops at the first error and never trusts sizes or
//    contents: every string may be empty, huge or contain NUL bytes.
#include "proto/spec.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

namespace apiary::spec {

namespace {

using apiary::v1::InstanceSpec;

// Spec files are a few hundred bytes; anything this large is a mistake
// (or /dev/zero) and is refused rather than read into memory.
constexpr std::size_t kMaxFileBytes = 16 * 1024 * 1024;

bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

// Printable description of a byte for messages: 'x' or \xNN.
std::string describe_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", u);
  return buf;
}

// Checks s against [a-z0-9-]{1,max_len}; returns "" when fine, else why not.
std::string check_ident(const std::string& s, std::size_t max_len) {
  if (s.empty()) return "is required";
  if (s.size() > max_len) {
    return "must be at most " + std::to_string(max_len) + " characters (got " +
           std::to_string(s.size()) + ")";
  }
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!is_ident_char(s[i])) {
      return "may only contain a-z, 0-9 and '-' (found " + describe_char(s[i]) +
             " at offset " + std::to_string(i) + ")";
    }
  }
  return "";
}

// A host path given in the spec: must be non-empty and NUL-free (a NUL would
// silently truncate it when handed to open()).
void check_host_path(std::vector<Problem>& out, const std::string& path,
                     const std::string& value) {
  if (value.empty()) {
    out.push_back({path, "is required"});
  } else if (value.find('\0') != std::string::npos) {
    out.push_back({path, "must not contain NUL characters"});
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string indexed(const char* base, int i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

// JsonStringToMessage reports errors as one of
//   "name: Cannot find field."                 (unknown field at the root)
//   "(a.b[1]) name: Cannot find field."        (unknown field below the root)
//   "(a.b): invalid value ... for type ..."    (wrong type)
//   "Some syntax error.\n<excerpt>\n   ^"      (malformed JSON, no path)
// Recover the field path when the message has one of the first three shapes;
// the path is whatever the parser printed (snake_case for known fields, the
// spelling from the document for unknown ones).
Problem json_problem(const std::string& raw) {
  auto is_path_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '[' || c == ']';
  };
  auto all_path_chars = [&](std::string_view s) {
    return std::all_of(s.begin(), s.end(), is_path_char);
  };
  std::string path;
  std::string_view rest = raw;
  if (!rest.empty() && rest.front() == '(') {
    auto close = rest.find(')');
    if (close != std::string_view::npos && all_path_chars(rest.substr(1, close - 1))) {
      path = std::string(rest.substr(1, close - 1));
      rest.remove_prefix(close + 1);
      if (rest.starts_with(" ")) rest.remove_prefix(1);
    }
  }
  // Optional "field: " naming the (unknown) field itself.
  auto colon = rest.find(':');
  if (colon != std::string_view::npos && colon + 1 < rest.size() && rest[colon + 1] == ' ' &&
      all_path_chars(rest.substr(0, colon))) {
    std::string_view field = rest.substr(0, colon);
    if (!field.empty()) path = path.empty() ? std::string(field) : path + "." + std::string(field);
    rest.remove_prefix(colon + 2);
  } else if (rest.starts_with(": ")) {
    rest.remove_prefix(2);  // "(board): invalid value ..." or ": Root element ..."
  }
  std::string message(rest);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return {path, "invalid JSON: " + message};
}

class TextErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    // protobuf counts from 0; editors count from 1.
    problems.push_back({"", "text format " + std::to_string(line + 1) + ":" +
                                std::to_string(column + 1) + ": " + message});
  }
  std::vector<Problem> problems;
};

bool ends_with_ci(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  auto tail = s.substr(s.size() - suffix.size());
  for (std::size_t i = 0; i < suffix.size(); ++i) {
    char c = tail[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != suffix[i]) return false;
  }
  return true;
}

// strerror() is not thread-safe; the generic category's message() is.
std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

ParseResult fail(std::string path, std::string message) {
  ParseResult r;
  r.problems.push_back({std::move(path), std::move(message)});
  return r;
}

}  // namespace

std::optional<std::array<uint8_t, 6>> parse_mac(const std::string& s) {
  if (s.size() != 17) return std::nullopt;
  std::array<uint8_t, 6> mac{};
  for (std::size_t i = 0; i < 6; ++i) {
    int hi = hex_value(s[i * 3]);
    int lo = hex_value(s[i * 3 + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    if (i < 5 && s[i * 3 + 2] != ':') return std::nullopt;
    mac[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return mac;
}

std::string format_mac(const std::array<uint8_t, 6>& m) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

std::optional<Ipv4Prefix> parse_ipv4_prefix(const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789./") != std::string::npos) return std::nullopt;
  unsigned a, b, c, d, n;
  char tail;
  if (std::sscanf(s.c_str(), "%3u.%3u.%3u.%3u/%2u%c", &a, &b, &c, &d, &n, &tail) != 5) return std::nullopt;
  if (a > 255 || b > 255 || c > 255 || d > 255 || n > 32) return std::nullopt;
  return Ipv4Prefix{(a << 24) | (b << 16) | (c << 8) | d, n};
}

std::string to_string(const Ipv4Prefix& p) {
  return std::to_string(p.addr >> 24) + "." + std::to_string((p.addr >> 16) & 0xff) + "." +
         std::to_string((p.addr >> 8) & 0xff) + "." + std::to_string(p.addr & 0xff) + "/" + std::to_string(p.len);
}

std::string to_string(const Problem& p) {
  if (p.path.empty()) return p.message;
  return p.path + ": " + p.message;
}

ParseResult parse_json(std::string_view text) {
  InstanceSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(text.data(), text.size()), &spec, options);
  if (!status.ok()) {
    ParseResult r;
    r.problems.push_back(json_problem(std::string(status.message())));
    return r;
  }
  ParseResult r;
  r.spec = std::move(spec);
  return r;
}

ParseResult parse_text(std::string_view text) {
  InstanceSpec spec;
  TextErrors errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.AllowUnknownField(false);
  bool ok = parser.ParseFromString(std::string(text), &spec);
  if (!ok) {
    ParseResult r;
    r.problems = std::move(errors.problems);
    if (r.problems.empty()) r.problems.push_back({"", "text format: parse failed"});
    return r;
  }
  ParseResult r;
  r.spec = std::move(spec);
  return r;
}

ParseResult load_file(const std::string& path) {
  const std::string where = "'" + path + "'";
  if (path.empty()) return fail("", "no spec file given");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail("", "cannot open " + where + ": " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fail("", "cannot stat " + where + ": " + errno_text(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return fail("", "cannot read " + where + ": is a directory");
  }
  // Read to EOF rather than trusting st_size, so pipes (<(...), /dev/stdin)
  // work too; stop at kMaxFileBytes.
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return fail("", "cannot read " + where + ": " + errno_text(err));
    }
    if (n == 0) break;
    if (text.size() + static_cast<std::size_t>(n) > kMaxFileBytes) {
      ::close(fd);
      return fail("", "cannot read " + where + ": larger than " +
                          std::to_string(kMaxFileBytes / (1024 * 1024)) + " MiB");
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);

  bool json;
  if (ends_with_ci(path, ".json")) {
    json = true;
  } else if (ends_with_ci(path, ".textproto") || ends_with_ci(path, ".txtpb") ||
             ends_with_ci(path, ".pb.txt")) {
    json = false;
  } else {
    auto first = text.find_first_not_of(" \t\r\n");
    json = first != std::string::npos && text[first] == '{';
  }
  return json ? parse_json(text) : parse_text(text);
}

void apply_defaults(InstanceSpec& spec) {
  if (!spec.has_board()) {
    auto* board = spec.mutable_board();
    board->set_vcpus(kDefaultVcpus);
    board->set_memory_mib(kDefaultMemoryMib);
  }
  if (spec.boot().kernel_case() == v1::Boot::KERNEL_NOT_SET) {
    spec.mutable_boot()->set_embedded_guest(kDefaultEmbeddedGuest);
  }
  if (!spec.devices().has_serial()) {
    spec.mutable_devices()->mutable_serial()->set_enabled(true);
  }
  if (spec.devices().serial().history_bytes() == 0) {
    spec.mutable_devices()->mutable_serial()->set_history_bytes(kDefaultHistoryBytes);
  }
  if (spec.boot_conditions().wait_for_console() &&
      spec.boot_conditions().console_wait_timeout_ms() == 0) {
    spec.mutable_boot_conditions()->set_console_wait_timeout_ms(kDefaultConsoleWaitMs);
  }
}

Limits host_limits() {
  Limits limits;
  limits.max_vcpus = layout::kMaxVcpus;
  limits.max_memory_mib = layout::kMaxMemoryMib;
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    // "MemTotal:       16318472 kB"
    if (!line.starts_with("MemTotal:")) continue;
    std::istringstream fields(line.substr(9));
    uint64_t kib = 0;
    std::string unit;
    if (fields >> kib >> unit && unit == "kB" && kib > 0) {
      limits.max_memory_mib = std::min<uint64_t>(kib / 1024, layout::kMaxMemoryMib);
    }
    break;
  }
  return limits;
}

std::vector<Problem> validate(const InstanceSpec& spec, const Limits& limits) {
  std::vector<Problem> out;

  // ---------------------------------------------------------------- name --
  if (auto why = check_ident(spec.name(), kMaxNameLength); !why.empty()) {
    out.push_back({"name", why});
  }

  // --------------------------------------------------------------- board --
  const uint32_t max_vcpus = std::min<uint32_t>(limits.max_vcpus, layout::kMaxVcpus);
  const uint32_t vcpus = spec.board().vcpus();
  if (vcpus < 1 || vcpus > max_vcpus) {
    out.push_back({"board.vcpus", "must be 1.." + std::to_string(max_vcpus) + " (got " +
                                      std::to_string(vcpus) + ")"});
  }
  const uint64_t max_mib = std::min<uint64_t>(limits.max_memory_mib, layout::kMaxMemoryMib);
  const uint64_t mib = spec.board().memory_mib();
  if (mib < layout::kMinMemoryMib) {
    out.push_back({"board.memory_mib", "must be at least " + std::to_string(layout::kMinMemoryMib) +
                                           " MiB (got " + std::to_string(mib) + ")"});
  } else if (mib > max_mib) {
    out.push_back({"board.memory_mib", "must be at most " + std::to_string(max_mib) +
                                           " MiB, the host limit (got " + std::to_string(mib) +
                                           ")"});
  }

  // ---------------------------------------------------------------- boot --
  const auto& boot = spec.boot();
  switch (boot.kernel_case()) {
    case v1::Boot::KERNEL_NOT_SET:
      out.push_back({"boot", "exactly one of kernel_path or embedded_guest must be set"});
      break;
    case v1::Boot::kKernelPath:
      check_host_path(out, "boot.kernel_path", boot.kernel_path());
      break;
    case v1::Boot::kEmbeddedGuest:
      if (boot.embedded_guest().empty()) {
        out.push_back({"boot.embedded_guest", "is required"});
      }
      break;
  }
  if (boot.cmdline().size() >= layout::kCmdlineMax) {
    out.push_back({"boot.cmdline", "must be shorter than " + std::to_string(layout::kCmdlineMax) +
                                       " bytes (got " + std::to_string(boot.cmdline().size()) +
                                       ")"});
  }
  if (boot.cmdline().find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
    out.push_back({"boot.cmdline", "must not contain NUL or newline characters"});
  }
  if (boot.has_initrd_path()) {
    if (boot.kernel_case() != v1::Boot::kKernelPath) {
      out.push_back({"boot.initrd_path", "requires boot.kernel_path"});
    }
    check_host_path(out, "boot.initrd_path", boot.initrd_path());
  }

  // ------------------------------------------------------------- devices --
  const auto& devices = spec.devices();
  std::map<std::string, int> block_ids;
  for (int i = 0; i < devices.block_size(); ++i) {
    const auto& block = devices.block(i);
    const std::string base = indexed("devices.block", i);
    if (auto why = check_ident(block.id(), kMaxNameLength); !why.empty()) {
      out.push_back({base + ".id", why});
    } else if (auto [it, fresh] = block_ids.emplace(block.id(), i); !fresh) {
      out.push_back({base + ".id", "duplicates devices.block[" + std::to_string(it->second) +
                                       "].id \"" + block.id() + "\""});
    }
    check_host_path(out, base + ".path", block.path());
  }

  std::map<std::array<uint8_t, 6>, int> macs;
  for (int i = 0; i < devices.nics_size(); ++i) {
    const auto& nic = devices.nics(i);
    const std::string base = indexed("devices.nics", i);
    if (nic.network().empty()) out.push_back({base + ".network", "is required"});
    if (nic.mac().empty()) continue;  // the VMM picks one
    auto mac = parse_mac(nic.mac());
    if (!mac) {
      out.push_back({base + ".mac", "must be six hex octets like 52:54:00:12:34:56"});
    } else if ((*mac)[0] & 0x01) {
      out.push_back({base + ".mac", "must be a unicast address (multicast bit set)"});
    } else if (*mac == std::array<uint8_t, 6>{}) {
      out.push_back({base + ".mac", "must not be all zeros"});
    } else if (auto [it, fresh] = macs.emplace(*mac, i); !fresh) {
      out.push_back({base + ".mac", "duplicates devices.nics[" + std::to_string(it->second) +
                                        "].mac"});
    }
  }

  const std::size_t virtio = static_cast<std::size_t>(devices.block_size()) +
                             static_cast<std::size_t>(devices.nics_size()) +
                             (devices.rng().enabled() ? 1u : 0u);
  if (virtio > layout::kVirtioMmioSlots) {
    out.push_back({"devices", "needs " + std::to_string(virtio) +
                                  " virtio devices (block + nics + rng) but the board has " +
                                  std::to_string(layout::kVirtioMmioSlots) + " slots"});
  }

  // ----------------------------------------------------- boot conditions --
  const auto& cond = spec.boot_conditions();
  if (cond.wait_for_console()) {
    if (!devices.serial().enabled()) {
      out.push_back({"boot_conditions.wait_for_console", "requires devices.serial.enabled"});
    }
    const uint32_t ms = cond.console_wait_timeout_ms();
    if (ms < 1 || ms > kMaxConsoleWaitMs) {
      out.push_back({"boot_conditions.console_wait_timeout_ms",
                     "must be 1.." + std::to_string(kMaxConsoleWaitMs) +
                         " ms when wait_for_console is set (got " + std::to_string(ms) + ")"});
    }
  }

  return out;
}

}  // namespace apiary::spec
