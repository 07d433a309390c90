// Loading, defaulting and validating an InstanceSpec (proto/apiary/v1/
// instance.proto).
//
// Why this exists: a spec arrives as user-written JSON or text format, from
// the CLI or the control plane, and everything downstream (memory layout,
// device creation, boot) assumes it is sane. This module is the single gate:
// parse errors and semantic errors both come back as a list of Problems, each
// naming the offending field, so a user sees *all* mistakes at once instead
// of fixing them one run at a time. Nothing here touches KVM or checks that
// files exist; the loaders that open those files report that themselves.
//
// Typical use:
//   auto r = apiary::spec::load_file(path);
//   if (!r.spec) { print r.problems; fail; }
//   apiary::spec::apply_defaults(*r.spec);
//   auto problems = apiary::spec::validate(*r.spec, apiary::spec::host_limits());
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/apiary/v1/instance.pb.h"
#include "vmm-core/layout.hpp"

namespace apiary::spec {

// One thing wrong with a spec. `path` is the proto field path in snake_case
// with indices, e.g. "board.vcpus" or "devices.nics[1].mac"; "" when the
// problem is not about one field (unreadable file, malformed document).
struct Problem {
  std::string path;
  std::string message;
};

// "board.vcpus: must be 1..64 (got 0)", or just the message when path is "".
std::string to_string(const Problem& p);

// The outcome of parsing. `spec` is set iff the document parsed; then
// `problems` is empty. Parsing does not validate or apply defaults.
struct ParseResult {
  std::optional<apiary::v1::InstanceSpec> spec;
  std::vector<Problem> problems;
};

// Proto3 JSON (field names in lowerCamelCase or snake_case). Unknown fields,
// wrong types and trailing garbage are errors.
ParseResult parse_json(std::string_view text);

// Protobuf text format. Unknown fields are errors; messages carry the
// 1-based "line:column" of the error.
ParseResult parse_text(std::string_view text);

// Reads a file and parses it by extension: .json -> JSON; .textproto,
// .txtpb, .pb.txt -> text format; anything else -> JSON if the first
// non-whitespace character is '{', else text format. Missing, unreadable,
// directory and oversized (> 16 MiB) files are reported as problems whose
// message names the file; parse problems are returned exactly as from
// parse_json()/parse_text() (the caller knows which file it asked for).
ParseResult load_file(const std::string& path);

// Fills in defaults for parts of the spec that were left out entirely:
//  * no `board`                      -> 1 vCPU, 64 MiB
//  * no kernel source in `boot`      -> embedded_guest "demo"
//  * no `devices.serial`             -> serial enabled
//  * serial.history_bytes == 0       -> 64 KiB
//  * wait_for_console && timeout == 0 -> 30000 ms
// Zero values inside a present `board` are NOT defaulted: "vcpus: 0" is a
// mistake that validate() reports.
void apply_defaults(apiary::v1::InstanceSpec& spec);

// A NIC's MAC, exactly "xx:xx:xx:xx:xx:xx" (hex, either case), and back
// (lower case).
std::optional<std::array<uint8_t, 6>> parse_mac(const std::string& s);
std::string format_mac(const std::array<uint8_t, 6>& mac);

// "a.b.c.d/n": a network's CIDR or a NIC's address with its prefix. addr in
// host byte order.
struct Ipv4Prefix {
  uint32_t addr = 0;
  unsigned len = 0;
};
std::optional<Ipv4Prefix> parse_ipv4_prefix(const std::string& s);
std::string to_string(const Ipv4Prefix& p);

inline constexpr uint64_t kDefaultMemoryMib = 64;
inline constexpr uint32_t kDefaultVcpus = 1;
inline constexpr const char* kDefaultEmbeddedGuest = "demo";
inline constexpr uint32_t kDefaultHistoryBytes = 64 * 1024;
inline constexpr uint32_t kDefaultConsoleWaitMs = 30000;
inline constexpr uint32_t kMaxConsoleWaitMs = 3600000;  // one hour
inline constexpr std::size_t kMaxNameLength = 63;

// Host-dependent upper bounds for validate(). Both are additionally capped
// by the layout limits (kMaxVcpus, kMaxMemoryMib) inside validate().
struct Limits {
  uint32_t max_vcpus = layout::kMaxVcpus;
  // Host RAM in MiB; the caller fills this (see host_limits()). Defaults to
  // the layout maximum so a default-constructed Limits is usable in tests.
  uint64_t max_memory_mib = layout::kMaxMemoryMib;
};

// max_vcpus = kMaxVcpus; max_memory_mib = min(MemTotal from /proc/meminfo,
// kMaxMemoryMib), or kMaxMemoryMib if /proc/meminfo can't be read.
Limits host_limits();

// Every problem in the spec, in field order; empty means valid. Call after
// apply_defaults() (otherwise e.g. a missing board is reported as vcpus 0).
// Never throws for any message contents.
std::vector<Problem> validate(const apiary::v1::InstanceSpec& spec, const Limits& limits);

}  // namespace apiary::spec
