// A Linux instance through the control plane, as an operator starts one:
// `apiary ctl instance create --kernel --initrd --cmdline` against a real
// `apiary cluster` on KVM (host paths on the node: Debian's kernel and the
// busybox initramfs the build makes). The guest answers on the API's
// WebSocket console, its own `reboot` brings the kernel up a second time in
// the same instance (still ACTIVE), and Nova's `stop` shuts it down cleanly
// through the ACPI power button (busybox init's shutdown runs) to SHUTOFF.
#define BOOST_TEST_MODULE linux_cluster
#include <google/protobuf/util/json_util.h>

#include "proto/apiary/v1/api.pb.h"
#include "tests/support/e2e.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary::test;
namespace utf = boost::unit_test;
namespace v1 = apiary::v1;

namespace {
const std::string kReady = "apiary-linux: ready kernel=";

std::string vm_state(int port, const std::string& id) {
  return json_field(http_call(port, http::verb::get, "/v1/instances/" + id).body, "vm_state");
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_linux_instance_from_ctl_answers_reboots_and_stops_cleanly,
                     *utf::precondition(apiary::test::kvm_available) * utf::label("kvm")) {
  const std::string store = "/tmp/apiary-e2e-linux-" + std::to_string(::getpid()) + ".sqlite";
  const std::string token = store + ".token";
  ApiaryProcess cluster({"cluster", "--nodes", "1", "--port", "0", "--store", store, "--token-file", token});
  const int port = cluster.http_port();

  const auto created = run_process({APIARY_BINARY, "ctl", "--api", "127.0.0.1:" + std::to_string(port), "--token-file",
                                    token, "--timeout", "120", "instance", "create", "linux-1", "--vcpus", "2",
                                    "--memory", "256", "--kernel", guest_path("linux-vmlinuz"), "--initrd",
                                    guest_path("linux-initramfs.cpio"), "--cmdline", "console=ttyS0 quiet", "--wait",
                                    "--json"},
                                   "", 150s);
  BOOST_TEST_MESSAGE("ctl create: " << created.exit_code << "\n" << created.out << created.err);
  BOOST_REQUIRE_EQUAL(created.exit_code, 0);
  v1::Instance instance;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  BOOST_REQUIRE(google::protobuf::util::JsonStringToMessage(created.out, &instance, options).ok());
  const std::string id = instance.id();
  BOOST_TEST(instance.vm_state() == "active");

  // The guest's own shell, through the API's console.
  ConsoleClient console(port, id);
  BOOST_REQUIRE_MESSAGE(console.wait_for(kReady, 180s), "no ready marker; console:\n" << console.received);
  BOOST_TEST(console.wait_for("cpus=2", 5s));
  BOOST_REQUIRE(console.wait_for("# ", 60s));
  BOOST_TEST(console.command("nproc", "\r\n2\r\n", 60s), console.received);

  // `reboot` in the guest: a reset, the instance reboots, the kernel comes
  // up again; Nova still reports ACTIVE.
  const size_t before = console.received.size();
  console.send("reboot\r");
  BOOST_TEST(console.wait_for(kReady, 180s, before), console.received.substr(before));
  BOOST_TEST(console.wait_for("# ", 60s, console.received.rfind(kReady)));
  BOOST_TEST(vm_state(port, id) == "active");
  const auto log = http_call(port, http::verb::get, "/v1/instances/" + id + "/actions").body;
  BOOST_TEST_MESSAGE("action log: " << log);

  // Nova stop: the power button, the guest's clean shutdown, then SHUTOFF.
  const size_t at_stop = console.received.size();
  auto r = http_call(port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"stop"})");
  BOOST_TEST(r.status == 202, r.body);
  // The console keeps being read, as a user's terminal would.
  const bool stopped = eventually(
      [&] {
        console.idle(100ms);
        return vm_state(port, id) == "stopped";
      },
      60s);
  BOOST_TEST(stopped);
  if (!stopped)
    BOOST_TEST_MESSAGE("not stopped; action log: "
                       << http_call(port, http::verb::get, "/v1/instances/" + id + "/actions").body
                       << "\nconsole since the stop:\n" << console.received.substr(at_stop));
  BOOST_TEST(console.wait_for("The system is going down NOW!", 5s, at_stop), console.received.substr(at_stop));
  BOOST_TEST(console.received.find("reboot: Power down", at_stop) != std::string::npos,
             console.received.substr(at_stop));

  BOOST_TEST(http_call(port, http::verb::delete_, "/v1/instances/" + id).status == 202);
  BOOST_TEST(eventually([&] { return vm_state(port, id) == "deleted"; }, 30s));
  BOOST_TEST(cluster.stop(SIGTERM) == 0);
  for (const char* suffix : {"", "-wal", "-shm", ".token"}) std::remove((store + suffix).c_str());
}
