// `apiary run` driven through pipes, as a script (or a user) would: banner,
// prompt, an `info` answer, the debug-exit status as the process status; and
// the CLI's refusals, each with a message and a distinct status.
#define BOOST_TEST_MODULE apiary_run
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "apps/run_command.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {
test::ProcessResult apiary_run(std::vector<std::string> args, const std::string& input = {}) {
  args.insert(args.begin(), {APIARY_BINARY, "run"});
  auto r = test::run_process(args, input, 60s);
  BOOST_TEST_MESSAGE("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  BOOST_TEST(!r.timed_out);
  return r;
}
bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }
}  // namespace

BOOST_AUTO_TEST_CASE(demo_session_through_pipes, *utf::precondition(test::kvm_available)) {
  auto r = apiary_run({"--vcpus", "2", "--memory", "96", "--cmdline", "apiary.test=1"}, "info\nexit 3\n");
  BOOST_TEST(r.exit_code == 7);  // (3 << 1) | 1
  BOOST_TEST(has(r.out, "Apiary demo guest"));
  BOOST_TEST(has(r.out, "apiary> "));
  BOOST_TEST(has(r.out, "vcpus: 2"));
  BOOST_TEST(has(r.out, "memory: 96 MiB"));
  BOOST_TEST(has(r.out, "cmdline: apiary.test=1"));
  BOOST_TEST(has(r.err, "booting"));
  BOOST_TEST(has(r.err, "debug exit: status 7"));
}

BOOST_AUTO_TEST_CASE(kernel_file_and_spec_file, *utf::precondition(test::kvm_available)) {
  const std::string spec = "/tmp/apiary-test-spec.json";
  std::ofstream(spec) << R"({"name":"hello-vm","board":{"vcpus":1,"memory_mib":32},
    "boot":{"kernel_path":")" << test::guest_path("hello.mb") << R"(","cmdline":"from-spec"}})";
  auto r = apiary_run({"--spec", spec});
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(has(r.out, "Hello from the Apiary guest (multiboot)"));
  BOOST_TEST(has(r.out, "cmdline: from-spec"));
  BOOST_TEST(has(r.err, "'hello-vm'"));
}

BOOST_AUTO_TEST_CASE(deadline_ends_a_guest_that_never_exits, *utf::precondition(test::kvm_available)) {
  auto r = apiary_run({"--timeout", "1"});  // the demo waits for input forever
  BOOST_TEST(r.exit_code == apps::kExitTimeout);
}

BOOST_AUTO_TEST_CASE(disk_and_rng_from_the_command_line, *utf::precondition(test::kvm_available)) {
  const std::string disk = "/tmp/apiary-run-disk-" + std::to_string(::getpid()) + ".img";
  { std::ofstream(disk) << std::string(64 * 1024, '\0'); }
  auto r = apiary_run({"--disk", disk, "--rng"}, "disk info\ndisk write 1 via-cli\ndisk read 1\nrng 8\nexit 0\n");
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(has(r.out, "disk: capacity=128 sectors id=disk0"));
  BOOST_TEST(has(r.out, ": via-cli"));
  BOOST_TEST(has(r.out, "rng: "));
  std::ifstream in(disk, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  BOOST_TEST(content.substr(512, 7) == "via-cli");
  std::remove(disk.c_str());
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused_with_a_named_error) {
  auto r = apiary_run({"--vcpus", "0"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "board.vcpus"));

  r = apiary_run({"--vcpus", "65"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "board.vcpus"));

  r = apiary_run({"--memory", "99999999"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "board.memory_mib"));

  r = apiary_run({"--kernel", "/nonexistent/vmlinuz"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "file_not_found"));

  r = apiary_run({"--guest", "no-such-guest"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "no-such-guest"));

  r = apiary_run({"--kernel", "/etc/hostname"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "image_"));

  r = apiary_run({"--spec", "/nonexistent/spec.json"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);

  const std::string nic_spec = "/tmp/apiary-test-nic-spec.json";
  std::ofstream(nic_spec) << R"({"name":"n","devices":{"nics":[{"network":"net0","mac":"52:54:00:12:34:56"}]}})";
  r = apiary_run({"--spec", nic_spec});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "devices.nics"));

  r = apiary_run({"--disk", "/nonexistent/disk.img"});
  BOOST_TEST(r.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(r.err, "file_not_found"));

  r = apiary_run({"--bogus"});
  BOOST_TEST(r.exit_code == apps::kExitUsage);
  BOOST_TEST(has(r.err, "unknown option"));
}

BOOST_AUTO_TEST_CASE(help_texts) {
  auto r = test::run_process({APIARY_BINARY, "--help"}, {}, 10s);
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(has(r.out, "run"));
  r = test::run_process({APIARY_BINARY, "run", "--help"}, {}, 10s);
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(has(r.out, "Ctrl-]"));
  r = test::run_process({APIARY_BINARY, "frobnicate"}, {}, 10s);
  BOOST_TEST(r.exit_code == 2);
}
