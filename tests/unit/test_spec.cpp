// Unit tests for proto/spec.{hpp,cpp}: parsing, defaults and validation of
// InstanceSpec.
//
// Why so many small cases: the validator is the only thing standing between
// user input and the VMM, and its value is in naming the exact field that is
// wrong. So every rule has its own test that pins the field path and the key
// words of the message, and the parsers are fed malformed and truncated input
// to show that bad documents become Problems, never crashes.
#define BOOST_TEST_MODULE spec
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>

#include "proto/apiary/v1/device.pb.h"
#include "proto/apiary/v1/events.pb.h"
#include "proto/apiary/v1/instance.pb.h"
#include "proto/spec.hpp"
#include "vmm-core/layout.hpp"

namespace spec = apiary::spec;
namespace v1 = apiary::v1;
namespace fs = std::filesystem;

namespace {

// A spec using every field, valid against the default Limits.
const char* const kValidJson = R"({
  "name": "web-1",
  "board": { "vcpus": 2, "memoryMib": "256" },
  "boot": {
    "kernelPath": "/var/lib/apiary/vmlinux",
    "cmdline": "console=ttyS0 quiet",
    "initrdPath": "/var/lib/apiary/initrd.img"
  },
  "devices": {
    "serial": { "enabled": true, "historyBytes": 4096 },
    "block": [
      { "id": "root", "path": "/var/lib/apiary/root.img" },
      { "id": "data-2", "path": "data.img", "read_only": true }
    ],
    "nics": [
      { "network": "default", "mac": "52:54:00:12:34:56" },
      { "network": "backend" }
    ],
    "rng": { "enabled": true }
  },
  "bootConditions": { "waitForConsole": true, "consoleWaitTimeoutMs": 5000 }
})";

// The same spec in text format.
const char* const kValidText = R"(# a comment
name: "web-1"
board { vcpus: 2 memory_mib: 256 }
boot {
  kernel_path: "/var/lib/apiary/vmlinux"
  cmdline: "console=ttyS0 quiet"
  initrd_path: "/var/lib/apiary/initrd.img"
}
devices {
  serial { enabled: true history_bytes: 4096 }
  block { id: "root" path: "/var/lib/apiary/root.img" }
  block { id: "data-2" path: "data.img" read_only: true }
  nics { network: "default" mac: "52:54:00:12:34:56" }
  nics { network: "backend" }
  rng { enabled: true }
}
boot_conditions { wait_for_console: true console_wait_timeout_ms: 5000 }
)";

std::string dump(const std::vector<spec::Problem>& problems) {
  std::string s;
  for (const auto& p : problems) s += "\n  " + spec::to_string(p);
  return s.empty() ? " (none)" : s;
}

bool has(const std::vector<spec::Problem>& problems, const std::string& path,
         const std::string& words) {
  for (const auto& p : problems) {
    if (p.path == path && p.message.find(words) != std::string::npos) return true;
  }
  return false;
}

// Asserts that `problems` is exactly one problem at `path` containing `words`.
void expect_only(const std::vector<spec::Problem>& problems, const std::string& path,
                 const std::string& words) {
  BOOST_TEST(problems.size() == 1u, "expected one problem, got:" << dump(problems));
  BOOST_TEST(has(problems, path, words),
             "expected " << path << ": ..." << words << "..., got:" << dump(problems));
}

v1::InstanceSpec valid() {
  auto r = spec::parse_json(kValidJson);
  BOOST_REQUIRE_MESSAGE(r.spec, "valid JSON failed to parse:" << dump(r.problems));
  return *r.spec;
}

// A minimal spec with defaults applied; valid.
v1::InstanceSpec minimal() {
  v1::InstanceSpec s;
  s.set_name("vm");
  spec::apply_defaults(s);
  return s;
}

std::vector<spec::Problem> check(const v1::InstanceSpec& s) { return spec::validate(s, spec::Limits{}); }

// A private scratch directory, removed afterwards.
struct TempDir {
  fs::path dir;
  TempDir() {
    dir = fs::temp_directory_path() / ("apiary-test-spec-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir, ec);
  }
  std::string write(const std::string& name, const std::string& content) {
    auto p = dir / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
};

}  // namespace

// ------------------------------------------------------------ valid input --

BOOST_AUTO_TEST_SUITE(valid_input)

BOOST_AUTO_TEST_CASE(json_spec_parses_and_validates_clean) {
  auto r = spec::parse_json(kValidJson);
  BOOST_REQUIRE_MESSAGE(r.spec, dump(r.problems));
  BOOST_TEST(r.problems.empty());
  const auto& s = *r.spec;
  BOOST_TEST(s.name() == "web-1");
  BOOST_TEST(s.board().vcpus() == 2u);
  BOOST_TEST(s.board().memory_mib() == 256u);
  BOOST_TEST(s.boot().kernel_path() == "/var/lib/apiary/vmlinux");
  BOOST_TEST(s.boot().has_initrd_path());
  BOOST_TEST(s.devices().block_size() == 2);
  BOOST_TEST(s.devices().block(1).read_only());
  BOOST_TEST(s.devices().nics(0).mac() == "52:54:00:12:34:56");
  BOOST_TEST(s.devices().rng().enabled());
  BOOST_TEST(s.boot_conditions().console_wait_timeout_ms() == 5000u);
  auto problems = check(s);
  BOOST_TEST(problems.empty(), dump(problems));
}

BOOST_AUTO_TEST_CASE(text_spec_parses_and_validates_clean) {
  auto r = spec::parse_text(kValidText);
  BOOST_REQUIRE_MESSAGE(r.spec, dump(r.problems));
  auto problems = check(*r.spec);
  BOOST_TEST(problems.empty(), dump(problems));
}

BOOST_AUTO_TEST_CASE(json_and_text_describe_the_same_spec) {
  auto j = spec::parse_json(kValidJson);
  auto t = spec::parse_text(kValidText);
  BOOST_REQUIRE(j.spec);
  BOOST_REQUIRE(t.spec);
  BOOST_TEST(google::protobuf::util::MessageDifferencer::Equals(*j.spec, *t.spec));
}

BOOST_AUTO_TEST_CASE(json_accepts_proto_field_names_too) {
  auto r = spec::parse_json(R"({"name":"a","board":{"vcpus":1,"memory_mib":4},
                                "boot_conditions":{"wait_for_console":false}})");
  BOOST_REQUIRE_MESSAGE(r.spec, dump(r.problems));
  BOOST_TEST(r.spec->board().memory_mib() == 4u);
}

BOOST_AUTO_TEST_CASE(limits_at_their_edges_are_valid) {
  auto s = valid();
  s.mutable_board()->set_vcpus(apiary::layout::kMaxVcpus);
  s.mutable_board()->set_memory_mib(apiary::layout::kMinMemoryMib);
  s.mutable_boot()->set_cmdline(std::string(apiary::layout::kCmdlineMax - 1, 'x'));
  s.set_name(std::string(63, 'a'));
  s.mutable_boot_conditions()->set_console_wait_timeout_ms(3600000);
  auto problems = check(s);
  BOOST_TEST(problems.empty(), dump(problems));
  s.mutable_board()->set_memory_mib(apiary::layout::kMaxMemoryMib);
  BOOST_TEST(check(s).empty(), dump(check(s)));
}

BOOST_AUTO_TEST_CASE(uppercase_mac_is_accepted) {
  auto s = valid();
  s.mutable_devices()->mutable_nics(0)->set_mac("52:54:00:AB:cd:EF");
  BOOST_TEST(check(s).empty(), dump(check(s)));
}

BOOST_AUTO_TEST_CASE(empty_mac_means_vmm_chooses) {
  auto s = valid();
  s.mutable_devices()->mutable_nics(0)->clear_mac();
  BOOST_TEST(check(s).empty(), dump(check(s)));
}

BOOST_AUTO_TEST_CASE(other_protos_are_generated) {
  v1::DeviceState d;
  d.set_device("com1");
  d.set_kind("uart16550a");
  (*d.mutable_registers())["lcr"] = 3;
  (*d.mutable_counters())["tx_bytes"] = 42;
  d.set_opaque(std::string("\0\1", 2));
  v1::DeviceState back;
  BOOST_REQUIRE(back.ParseFromString(d.SerializeAsString()));
  BOOST_TEST(back.registers().at("lcr") == 3u);
  BOOST_TEST(back.opaque().size() == 2u);
  BOOST_TEST(v1::InstanceState_Name(v1::INSTANCE_STATE_QUIESCE) == "INSTANCE_STATE_QUIESCE");
  BOOST_TEST(static_cast<int>(v1::INSTANCE_STATE_UNSPECIFIED) == 0);
  BOOST_TEST(static_cast<int>(v1::INSTANCE_STATE_DESTROY) == 8);
}

BOOST_AUTO_TEST_CASE(problem_to_string) {
  BOOST_TEST(spec::to_string({"board.vcpus", "must be 1..64"}) == "board.vcpus: must be 1..64");
  BOOST_TEST(spec::to_string({"", "no spec file given"}) == "no spec file given");
  v1::InstanceSpec s = minimal();
  s.mutable_board()->set_vcpus(0);
  auto problems = check(s);
  BOOST_REQUIRE_EQUAL(problems.size(), 1u);
  BOOST_TEST(spec::to_string(problems[0]).starts_with("board.vcpus: must be 1..64"));
}

BOOST_AUTO_TEST_CASE(host_limits_are_sane) {
  auto limits = spec::host_limits();
  BOOST_TEST(limits.max_vcpus == apiary::layout::kMaxVcpus);
  BOOST_TEST(limits.max_memory_mib > 0u);
  BOOST_TEST(limits.max_memory_mib <= apiary::layout::kMaxMemoryMib);
}

BOOST_AUTO_TEST_SUITE_END()

// --------------------------------------------------------------- defaults --

BOOST_AUTO_TEST_SUITE(defaults)

BOOST_AUTO_TEST_CASE(empty_spec_gets_every_default) {
  v1::InstanceSpec s;
  s.set_name("vm");
  spec::apply_defaults(s);
  BOOST_TEST(s.board().vcpus() == 1u);
  BOOST_TEST(s.board().memory_mib() == 64u);
  BOOST_TEST(s.boot().embedded_guest() == "demo");
  BOOST_TEST(!s.boot().has_initrd_path());
  BOOST_TEST(s.devices().serial().enabled());
  BOOST_TEST(s.devices().serial().history_bytes() == 64u * 1024u);
  BOOST_TEST(s.devices().block_size() == 0);
  BOOST_TEST(!s.devices().rng().enabled());
  BOOST_TEST(!s.boot_conditions().wait_for_console());
  BOOST_TEST(s.boot_conditions().console_wait_timeout_ms() == 0u);
  BOOST_TEST(check(s).empty(), dump(check(s)));
}

BOOST_AUTO_TEST_CASE(present_board_is_not_defaulted) {
  auto r = spec::parse_json(R"({"name":"vm","board":{"memoryMib":128}})");
  BOOST_REQUIRE(r.spec);
  spec::apply_defaults(*r.spec);
  BOOST_TEST(r.spec->board().vcpus() == 0u);
  BOOST_TEST(r.spec->board().memory_mib() == 128u);
  expect_only(check(*r.spec), "board.vcpus", "must be 1..64");
}

BOOST_AUTO_TEST_CASE(boot_without_source_gets_embedded_demo) {
  auto r = spec::parse_json(R"({"name":"vm","boot":{"cmdline":"x"}})");
  BOOST_REQUIRE(r.spec);
  spec::apply_defaults(*r.spec);
  BOOST_TEST(r.spec->boot().embedded_guest() == "demo");
  BOOST_TEST(r.spec->boot().cmdline() == "x");
}

BOOST_AUTO_TEST_CASE(given_kernel_is_kept) {
  auto s = valid();
  spec::apply_defaults(s);
  BOOST_TEST(s.boot().kernel_path() == "/var/lib/apiary/vmlinux");
  BOOST_TEST(s.devices().serial().history_bytes() == 4096u);
  BOOST_TEST(s.boot_conditions().console_wait_timeout_ms() == 5000u);
}

BOOST_AUTO_TEST_CASE(explicitly_disabled_serial_stays_disabled) {
  auto r = spec::parse_json(R"({"name":"vm","devices":{"serial":{}}})");
  BOOST_REQUIRE(r.spec);
  spec::apply_defaults(*r.spec);
  BOOST_TEST(!r.spec->devices().serial().enabled());
  BOOST_TEST(r.spec->devices().serial().history_bytes() == 64u * 1024u);
}

BOOST_AUTO_TEST_CASE(console_wait_timeout_defaults_when_waiting) {
  auto r = spec::parse_json(R"({"name":"vm","bootConditions":{"waitForConsole":true}})");
  BOOST_REQUIRE(r.spec);
  spec::apply_defaults(*r.spec);
  BOOST_TEST(r.spec->boot_conditions().console_wait_timeout_ms() == 30000u);
  BOOST_TEST(check(*r.spec).empty(), dump(check(*r.spec)));
}

BOOST_AUTO_TEST_CASE(apply_defaults_is_idempotent) {
  auto once = minimal();
  auto twice = once;
  spec::apply_defaults(twice);
  BOOST_TEST(google::protobuf::util::MessageDifferencer::Equals(once, twice));
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------- validation rules --

BOOST_AUTO_TEST_SUITE(validation)

BOOST_AUTO_TEST_CASE(name_required) {
  auto s = valid();
  s.clear_name();
  expect_only(check(s), "name", "required");
}

BOOST_AUTO_TEST_CASE(name_too_long) {
  auto s = valid();
  s.set_name(std::string(64, 'a'));
  expect_only(check(s), "name", "at most 63 characters");
}

BOOST_AUTO_TEST_CASE(name_bad_characters) {
  for (const char* bad : {"Web", "web_1", "web 1", "web.1", "wéb"}) {
    auto s = valid();
    s.set_name(bad);
    expect_only(check(s), "name", "a-z, 0-9 and '-'");
  }
  auto s = valid();
  s.set_name(std::string("a\0b", 3));
  expect_only(check(s), "name", "\\x00");
}

BOOST_AUTO_TEST_CASE(vcpus_zero) {
  auto s = valid();
  s.mutable_board()->set_vcpus(0);
  expect_only(check(s), "board.vcpus", "must be 1..64");
}

BOOST_AUTO_TEST_CASE(vcpus_above_layout_limit) {
  auto s = valid();
  s.mutable_board()->set_vcpus(apiary::layout::kMaxVcpus + 1);
  expect_only(check(s), "board.vcpus", "must be 1..64 (got 65)");
  // A caller cannot raise the limit past the layout's.
  spec::Limits generous;
  generous.max_vcpus = 1000;
  BOOST_TEST(has(spec::validate(s, generous), "board.vcpus", "must be 1..64"));
}

BOOST_AUTO_TEST_CASE(vcpus_above_caller_limit) {
  auto s = valid();
  s.mutable_board()->set_vcpus(8);
  spec::Limits limits;
  limits.max_vcpus = 4;
  expect_only(spec::validate(s, limits), "board.vcpus", "must be 1..4");
}

BOOST_AUTO_TEST_CASE(memory_below_minimum) {
  auto s = valid();
  s.mutable_board()->set_memory_mib(apiary::layout::kMinMemoryMib - 1);
  expect_only(check(s), "board.memory_mib", "at least 4 MiB");
  s.mutable_board()->set_memory_mib(0);
  expect_only(check(s), "board.memory_mib", "at least 4 MiB");
}

BOOST_AUTO_TEST_CASE(memory_above_host_limit) {
  auto s = valid();
  s.mutable_board()->set_memory_mib(1024);
  spec::Limits limits;
  limits.max_memory_mib = 512;
  expect_only(spec::validate(s, limits), "board.memory_mib", "at most 512 MiB, the host limit");
}

BOOST_AUTO_TEST_CASE(memory_above_layout_limit) {
  auto s = valid();
  s.mutable_board()->set_memory_mib(UINT64_MAX);
  spec::Limits limits;
  limits.max_memory_mib = UINT64_MAX;
  expect_only(spec::validate(s, limits), "board.memory_mib", "at most 65536 MiB");
}

BOOST_AUTO_TEST_CASE(boot_without_source) {
  auto s = valid();
  s.mutable_boot()->clear_kernel();
  s.mutable_boot()->clear_initrd_path();
  expect_only(check(s), "boot", "exactly one of kernel_path or embedded_guest");
}

BOOST_AUTO_TEST_CASE(boot_empty_kernel_path) {
  auto s = valid();
  s.mutable_boot()->set_kernel_path("");
  expect_only(check(s), "boot.kernel_path", "required");
}

BOOST_AUTO_TEST_CASE(boot_kernel_path_with_nul) {
  auto s = valid();
  s.mutable_boot()->set_kernel_path(std::string("/k\0x", 4));
  expect_only(check(s), "boot.kernel_path", "NUL");
}

BOOST_AUTO_TEST_CASE(boot_empty_embedded_guest) {
  auto s = minimal();
  s.mutable_boot()->set_embedded_guest("");
  expect_only(check(s), "boot.embedded_guest", "required");
}

BOOST_AUTO_TEST_CASE(both_sources_rejected_by_parsers) {
  // The oneof makes "both" unrepresentable in the message; both parsers
  // refuse documents that try.
  auto j = spec::parse_json(R"({"name":"a","boot":{"kernelPath":"k","embeddedGuest":"demo"}})");
  BOOST_TEST(!j.spec);
  BOOST_TEST(has(j.problems, "boot", "oneof"), dump(j.problems));
  auto t = spec::parse_text(R"(name: "a" boot { kernel_path: "k" embedded_guest: "demo" })");
  BOOST_TEST(!t.spec);
  BOOST_TEST(has(t.problems, "", "oneof"), dump(t.problems));
}

BOOST_AUTO_TEST_CASE(cmdline_too_long) {
  auto s = valid();
  s.mutable_boot()->set_cmdline(std::string(apiary::layout::kCmdlineMax, 'x'));
  expect_only(check(s), "boot.cmdline", "shorter than 4096 bytes (got 4096)");
}

BOOST_AUTO_TEST_CASE(cmdline_with_newline) {
  for (const std::string& bad : {std::string("a\nb"), std::string("a\rb"), std::string("a\0b", 3)}) {
    auto s = valid();
    s.mutable_boot()->set_cmdline(bad);
    expect_only(check(s), "boot.cmdline", "NUL or newline");
  }
}

BOOST_AUTO_TEST_CASE(initrd_without_kernel) {
  auto s = minimal();
  s.mutable_boot()->set_initrd_path("/initrd.img");
  expect_only(check(s), "boot.initrd_path", "requires boot.kernel_path");
}

BOOST_AUTO_TEST_CASE(initrd_empty) {
  auto s = valid();
  s.mutable_boot()->set_initrd_path("");
  expect_only(check(s), "boot.initrd_path", "required");
}

BOOST_AUTO_TEST_CASE(block_path_required) {
  auto s = valid();
  s.mutable_devices()->mutable_block(1)->clear_path();
  expect_only(check(s), "devices.block[1].path", "required");
}

BOOST_AUTO_TEST_CASE(block_id_required) {
  auto s = valid();
  s.mutable_devices()->mutable_block(0)->clear_id();
  expect_only(check(s), "devices.block[0].id", "required");
}

BOOST_AUTO_TEST_CASE(block_id_bad_characters) {
  auto s = valid();
  s.mutable_devices()->mutable_block(0)->set_id("Root/Disk");
  expect_only(check(s), "devices.block[0].id", "a-z, 0-9 and '-' (found 'R' at offset 0)");
}

BOOST_AUTO_TEST_CASE(block_id_duplicate) {
  auto s = valid();
  s.mutable_devices()->mutable_block(1)->set_id("root");
  expect_only(check(s), "devices.block[1].id", "duplicates devices.block[0].id");
}

BOOST_AUTO_TEST_CASE(nic_mac_malformed) {
  for (const char* bad : {"52:54:00:12:34", "52:54:00:12:34:56:78", "52-54-00-12-34-56",
                          "5254.0012.3456", "52:54:00:12:34:5g", "52:54:00:12:34:56 ",
                          "52:54:0:12:34:567", "::::::::::::::::"}) {
    auto s = valid();
    s.mutable_devices()->mutable_nics(0)->set_mac(bad);
    expect_only(check(s), "devices.nics[0].mac", "six hex octets");
  }
}

BOOST_AUTO_TEST_CASE(nic_mac_multicast) {
  for (const char* bad : {"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "53:54:00:12:34:56"}) {
    auto s = valid();
    s.mutable_devices()->mutable_nics(0)->set_mac(bad);
    expect_only(check(s), "devices.nics[0].mac", "unicast");
  }
}

BOOST_AUTO_TEST_CASE(nic_mac_all_zero) {
  auto s = valid();
  s.mutable_devices()->mutable_nics(0)->set_mac("00:00:00:00:00:00");
  expect_only(check(s), "devices.nics[0].mac", "all zeros");
}

BOOST_AUTO_TEST_CASE(nic_mac_duplicate) {
  auto s = valid();
  // Same address, different case: still a duplicate.
  s.mutable_devices()->mutable_nics(1)->set_mac("52:54:00:12:34:56");
  expect_only(check(s), "devices.nics[1].mac", "duplicates devices.nics[0].mac");
  s.mutable_devices()->mutable_nics(0)->set_mac("02:00:00:00:00:AA");
  s.mutable_devices()->mutable_nics(1)->set_mac("02:00:00:00:00:aa");
  expect_only(check(s), "devices.nics[1].mac", "duplicates devices.nics[0].mac");
}

BOOST_AUTO_TEST_CASE(nic_network_required) {
  auto s = valid();
  s.mutable_devices()->mutable_nics(1)->clear_network();
  expect_only(check(s), "devices.nics[1].network", "required");
}

BOOST_AUTO_TEST_CASE(too_many_virtio_devices) {
  auto s = valid();  // 2 block + 2 nics + rng = 5
  for (int i = 0; i < 4; ++i) {
    auto* b = s.mutable_devices()->add_block();
    b->set_id("extra-" + std::to_string(i));
    b->set_path("x.img");
  }
  expect_only(check(s), "devices", "needs 9 virtio devices");
  s.mutable_devices()->mutable_rng()->set_enabled(false);
  BOOST_TEST(check(s).empty(), dump(check(s)));
}

BOOST_AUTO_TEST_CASE(wait_for_console_requires_serial) {
  auto s = valid();
  s.mutable_devices()->mutable_serial()->set_enabled(false);
  expect_only(check(s), "boot_conditions.wait_for_console", "requires devices.serial.enabled");
}

BOOST_AUTO_TEST_CASE(wait_for_console_without_serial_message) {
  // Without apply_defaults an absent serial message means disabled.
  auto s = valid();
  s.mutable_devices()->clear_serial();
  expect_only(check(s), "boot_conditions.wait_for_console", "requires devices.serial.enabled");
}

BOOST_AUTO_TEST_CASE(console_wait_timeout_zero) {
  auto s = valid();
  s.mutable_boot_conditions()->set_console_wait_timeout_ms(0);
  expect_only(check(s), "boot_conditions.console_wait_timeout_ms", "must be 1..3600000 ms");
}

BOOST_AUTO_TEST_CASE(console_wait_timeout_too_long) {
  auto s = valid();
  s.mutable_boot_conditions()->set_console_wait_timeout_ms(3600001);
  expect_only(check(s), "boot_conditions.console_wait_timeout_ms", "(got 3600001)");
}

BOOST_AUTO_TEST_CASE(console_wait_timeout_ignored_when_not_waiting) {
  auto s = valid();
  s.mutable_boot_conditions()->set_wait_for_console(false);
  s.mutable_boot_conditions()->set_console_wait_timeout_ms(0);
  BOOST_TEST(check(s).empty(), dump(check(s)));
}

BOOST_AUTO_TEST_CASE(every_problem_is_reported) {
  auto r = spec::parse_text(R"(
    name: "Bad Name"
    board { vcpus: 0 memory_mib: 1 }
    boot { embedded_guest: "demo" cmdline: "a\nb" initrd_path: "/i" }
    devices {
      serial { enabled: false }
      block { id: "d" path: "" }
      block { id: "d" path: "/x" }
      nics { network: "" mac: "01:02:03:04:05:06" }
      nics { network: "n" mac: "nope" }
    }
    boot_conditions { wait_for_console: true console_wait_timeout_ms: 0 }
  )");
  BOOST_REQUIRE_MESSAGE(r.spec, dump(r.problems));
  auto problems = check(*r.spec);
  BOOST_TEST(has(problems, "name", "a-z"));
  BOOST_TEST(has(problems, "board.vcpus", "1..64"));
  BOOST_TEST(has(problems, "board.memory_mib", "at least"));
  BOOST_TEST(has(problems, "boot.cmdline", "newline"));
  BOOST_TEST(has(problems, "boot.initrd_path", "kernel_path"));
  BOOST_TEST(has(problems, "devices.block[0].path", "required"));
  BOOST_TEST(has(problems, "devices.block[1].id", "duplicates"));
  BOOST_TEST(has(problems, "devices.nics[0].network", "required"));
  BOOST_TEST(has(problems, "devices.nics[0].mac", "unicast"));
  BOOST_TEST(has(problems, "devices.nics[1].mac", "six hex octets"));
  BOOST_TEST(has(problems, "boot_conditions.wait_for_console", "serial"));
  BOOST_TEST(has(problems, "boot_conditions.console_wait_timeout_ms", "1..3600000"));
  BOOST_TEST(problems.size() == 12u, dump(problems));
}

BOOST_AUTO_TEST_CASE(default_message_validates_without_crashing) {
  // Nothing set at all, no defaults: reports, does not crash.
  auto problems = check(v1::InstanceSpec{});
  BOOST_TEST(has(problems, "name", "required"));
  BOOST_TEST(has(problems, "board.vcpus", "1..64"));
  BOOST_TEST(has(problems, "board.memory_mib", "at least"));
  BOOST_TEST(has(problems, "boot", "exactly one"));
  BOOST_TEST(problems.size() == 4u, dump(problems));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------- parse errors --

BOOST_AUTO_TEST_SUITE(parse_errors)

BOOST_AUTO_TEST_CASE(malformed_json) {
  auto r = spec::parse_json(R"({"name": "a",, })");
  BOOST_TEST(!r.spec);
  BOOST_REQUIRE_EQUAL(r.problems.size(), 1u);
  BOOST_TEST(r.problems[0].path == "");
  BOOST_TEST(r.problems[0].message.starts_with("invalid JSON: "), r.problems[0].message);
}

BOOST_AUTO_TEST_CASE(empty_and_non_object_json) {
  for (const char* bad : {"", "   ", "[]", "\"spec\"", "42", "null"}) {
    auto r = spec::parse_json(bad);
    BOOST_TEST(!r.spec, "accepted: '" << bad << "'");
    BOOST_TEST(!r.problems.empty());
  }
}

BOOST_AUTO_TEST_CASE(trailing_garbage_json) {
  auto r = spec::parse_json(R"({"name":"a"} extra)");
  BOOST_TEST(!r.spec);
  BOOST_TEST(has(r.problems, "", "invalid JSON"), dump(r.problems));
}

BOOST_AUTO_TEST_CASE(unknown_json_field_at_root) {
  auto r = spec::parse_json(R"({"name":"a","nmae":"b"})");
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "nmae", "Cannot find field");
}

BOOST_AUTO_TEST_CASE(unknown_json_field_nested) {
  auto r = spec::parse_json(R"({"devices":{"block":[{"id":"a"},{"id":"b","size":1}]}})");
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "devices.block[1].size", "Cannot find field");
}

BOOST_AUTO_TEST_CASE(wrong_json_type) {
  auto r = spec::parse_json(R"({"board":{"vcpus":"two"}})");
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "board.vcpus", "invalid value \"two\"");
  r = spec::parse_json(R"({"board":{"vcpus":-1}})");
  expect_only(r.problems, "board.vcpus", "invalid value -1");
  r = spec::parse_json(R"({"board":{"vcpus":4294967296}})");
  expect_only(r.problems, "board.vcpus", "invalid value");
  r = spec::parse_json(R"({"board":true})");
  expect_only(r.problems, "board", "invalid value");
  r = spec::parse_json(R"({"devices":{"nics":[{"mac":1}]}})");
  expect_only(r.problems, "devices.nics[0].mac", "invalid value");
}

BOOST_AUTO_TEST_CASE(malformed_text_reports_line_and_column) {
  auto r = spec::parse_text("name: \"a\"\nboard {\n  vcpus: two\n}\n");
  BOOST_TEST(!r.spec);
  BOOST_REQUIRE(!r.problems.empty());
  BOOST_TEST(r.problems[0].message.find("3:10") != std::string::npos, dump(r.problems));
  BOOST_TEST(r.problems[0].message.starts_with("text format "), dump(r.problems));
}

BOOST_AUTO_TEST_CASE(unclosed_text_message) {
  auto r = spec::parse_text("board {\n vcpus: 1\n");
  BOOST_TEST(!r.spec);
  BOOST_TEST(has(r.problems, "", "text format 3:"), dump(r.problems));
}

BOOST_AUTO_TEST_CASE(unknown_text_field) {
  auto r = spec::parse_text("name: \"a\"\nboard { cpus: 1 }\n");
  BOOST_TEST(!r.spec);
  // protobuf points just past the name (at the ':'), column 13.
  BOOST_TEST(has(r.problems, "", "text format 2:13: "), dump(r.problems));
  BOOST_TEST(has(r.problems, "", "cpus"), dump(r.problems));
}

BOOST_AUTO_TEST_CASE(empty_text_is_an_empty_spec) {
  // Text format has no outer braces; an empty document is a valid, empty
  // message (which validation then rejects for the missing name).
  auto r = spec::parse_text("");
  BOOST_REQUIRE(r.spec);
  apiary::spec::apply_defaults(*r.spec);
  expect_only(check(*r.spec), "name", "required");
}

BOOST_AUTO_TEST_SUITE_END()

// -------------------------------------------------------------- load_file --

BOOST_AUTO_TEST_SUITE(files)

BOOST_AUTO_TEST_CASE(load_by_extension) {
  TempDir tmp;
  for (const char* name : {"a.json", "A.JSON"}) {
    auto r = spec::load_file(tmp.write(name, kValidJson));
    BOOST_TEST(r.spec.has_value(), name << dump(r.problems));
  }
  for (const char* name : {"a.textproto", "a.txtpb", "a.pb.txt"}) {
    auto r = spec::load_file(tmp.write(name, kValidText));
    BOOST_TEST(r.spec.has_value(), name << dump(r.problems));
  }
  // The extension wins over the content.
  auto r = spec::load_file(tmp.write("wrong.json", kValidText));
  BOOST_TEST(!r.spec);
  BOOST_TEST(has(r.problems, "", "invalid JSON"), dump(r.problems));
  r = spec::load_file(tmp.write("wrong.textproto", kValidJson));
  BOOST_TEST(!r.spec);
  BOOST_TEST(has(r.problems, "", "text format"), dump(r.problems));
}

BOOST_AUTO_TEST_CASE(load_sniffs_unknown_extension) {
  TempDir tmp;
  auto j = spec::load_file(tmp.write("vm.spec", std::string("\n  \t") + kValidJson));
  BOOST_TEST(j.spec.has_value(), dump(j.problems));
  auto t = spec::load_file(tmp.write("vm", kValidText));
  BOOST_TEST(t.spec.has_value(), dump(t.problems));
  BOOST_REQUIRE(j.spec && t.spec);
  BOOST_TEST(google::protobuf::util::MessageDifferencer::Equals(*j.spec, *t.spec));
}

BOOST_AUTO_TEST_CASE(missing_file) {
  auto r = spec::load_file("/nonexistent/apiary/vm.json");
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "", "cannot open '/nonexistent/apiary/vm.json'");
  BOOST_TEST(has(r.problems, "", "No such file"), dump(r.problems));
  r = spec::load_file("");
  expect_only(r.problems, "", "no spec file");
}

BOOST_AUTO_TEST_CASE(directory_is_unreadable) {
  TempDir tmp;
  auto r = spec::load_file(tmp.dir.string());
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "", "is a directory");
}

boost::test_tools::assertion_result not_root(boost::unit_test::test_unit_id) {
  boost::test_tools::assertion_result ok(::geteuid() != 0);
  ok.message() << "root can read mode-000 files";
  return ok;
}

BOOST_AUTO_TEST_CASE(permission_denied, *boost::unit_test::precondition(not_root)) {
  TempDir tmp;
  auto path = tmp.write("secret.json", kValidJson);
  ::chmod(path.c_str(), 0);
  auto r = spec::load_file(path);
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "", "Permission denied");
}

BOOST_AUTO_TEST_CASE(oversized_file) {
  TempDir tmp;
  auto r = spec::load_file(tmp.write("huge.json", std::string(16 * 1024 * 1024 + 1, ' ')));
  BOOST_TEST(!r.spec);
  expect_only(r.problems, "", "larger than 16 MiB");
}

BOOST_AUTO_TEST_SUITE_END()

// --------------------------------------------------------------- fuzz-ish --

BOOST_AUTO_TEST_SUITE(robustness)

// Parse, default and validate; the only requirement is no crash and a
// consistent result (a spec xor problems).
void survive(const spec::ParseResult& r) {
  BOOST_CHECK(r.spec.has_value() != !r.problems.empty());
  if (!r.spec) return;
  auto s = *r.spec;
  (void)check(s);
  spec::apply_defaults(s);
  (void)check(s);
  (void)spec::validate(s, spec::host_limits());
}

BOOST_AUTO_TEST_CASE(json_truncations_never_crash) {
  const std::string doc = kValidJson;
  std::size_t parsed = 0;
  for (std::size_t n = 0; n <= doc.size(); ++n) {
    auto r = spec::parse_json(std::string_view(doc).substr(0, n));
    survive(r);
    parsed += r.spec ? 1 : 0;
  }
  // Only the complete document (plus trailing whitespace variants) parses.
  BOOST_TEST(parsed >= 1u);
  BOOST_TEST(spec::parse_json(doc).spec.has_value());
}

BOOST_AUTO_TEST_CASE(text_truncations_never_crash) {
  const std::string doc = kValidText;
  for (std::size_t n = 0; n <= doc.size(); ++n) {
    survive(spec::parse_text(std::string_view(doc).substr(0, n)));
  }
}

BOOST_AUTO_TEST_CASE(byte_mutations_never_crash) {
  // Deterministic: every position gets a few hostile bytes.
  const std::string json = kValidJson;
  const std::string text = kValidText;
  const char hostile[] = {'\0', '"', '{', '}', '[', ']', ':', ',', '\\', '\n', '\xff', '9', '-'};
  for (std::size_t i = 0; i < json.size(); i += 3) {
    for (char c : hostile) {
      std::string j = json;
      j[i] = c;
      survive(spec::parse_json(j));
    }
  }
  for (std::size_t i = 0; i < text.size(); i += 3) {
    for (char c : hostile) {
      std::string t = text;
      t[i] = c;
      survive(spec::parse_text(t));
    }
  }
}

BOOST_AUTO_TEST_CASE(deep_nesting_never_crashes) {
  std::string deep(100000, '[');
  survive(spec::parse_json(deep));
  std::string deep_obj;
  for (int i = 0; i < 10000; ++i) deep_obj += "{\"board\":";
  survive(spec::parse_json(deep_obj));
  std::string deep_text;
  for (int i = 0; i < 10000; ++i) deep_text += "devices { ";
  survive(spec::parse_text(deep_text));
}

BOOST_AUTO_TEST_SUITE_END()
