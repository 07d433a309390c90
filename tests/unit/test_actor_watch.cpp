// A process's main actor that stops by itself ends the process
// (apps/actor_watch.hpp): a node actor whose handler throws stops with
// `crashed`, naming itself and what was thrown; the watch records that
// reason and raises SIGTERM, which `apiary node` takes in its sigwait and
// turns into exit status kActorFailedStatus. A user_shutdown (the command's
// own, at the end) is no failure and raises nothing.
//
// What throws here is the node's log callback (NodeConfig::on_log), the one
// piece of code a node actor runs that the test supplies: its first check-in
// fails (the controller it was given has gone), the node logs that, and the
// callback throws.
#define BOOST_TEST_MODULE actor_watch
#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <caf/all.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "apps/actor_watch.hpp"
#include "cluster/node_actor.hpp"

using namespace apiary;
using namespace std::chrono_literals;

namespace {

// SIGTERM blocked in every thread of the test (CAF's threads inherit the
// mask of the thread that starts the actor system), taken with a deadline.
struct SigtermBlocked {
  sigset_t set;
  SigtermBlocked() {
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  ~SigtermBlocked() {
    while (taken(0ms)) {
    }
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }
  bool taken(std::chrono::milliseconds within) {
    timespec ts{static_cast<time_t>(within.count() / 1000), static_cast<long>(within.count() % 1000) * 1000000};
    return sigtimedwait(&set, nullptr, &ts) == SIGTERM;
  }
};

struct System {
  SigtermBlocked sigterm;  // before the actor system's threads start
  caf::actor_system_config cfg;
  caf::actor_system sys;
  static caf::actor_system_config& quiet(caf::actor_system_config& c) {
    c.set("logger.verbosity", caf::atom("quiet"));
    return c;
  }
  System() : sys(quiet(cfg)) {}
};

struct Log {
  std::mutex mutex;
  std::vector<std::string> lines;
  void add(const std::string& s) {
    std::lock_guard lock(mutex);
    lines.push_back(s);
  }
  bool has(const std::string& part) {
    std::lock_guard lock(mutex);
    for (const auto& l : lines)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }
};

caf::actor gone_controller(caf::actor_system& sys) {
  auto c = sys.spawn([](caf::event_based_actor*) -> caf::behavior { return {[](int) {}}; });
  caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
  return c;
}

actors::NodeConfig node_config(caf::actor_system& sys, std::shared_ptr<Log> log, bool throw_once) {
  actors::NodeConfig n;
  n.name = "n-watch";
  n.vcpus = 2;
  n.memory_mib = 256;
  n.simulated = true;
  n.controller = gone_controller(sys);
  n.checkin_interval = 100ms;
  auto thrown = std::make_shared<std::atomic<bool>>(!throw_once);
  n.on_log = [log, thrown](const std::string& line) {
    log->add(line);
    if (line.rfind("check-in failed", 0) == 0 && !thrown->exchange(true)) throw std::runtime_error("boom");
  };
  return n;
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_node_whose_handler_throws_ends_the_process_with_the_reason, System) {
  auto log = std::make_shared<Log>();
  auto node = actors::spawn_node(sys, node_config(sys, log, true));
  apps::ActorWatch watch(sys, caf::actor_cast<caf::actor>(node));
  BOOST_REQUIRE(sigterm.taken(10s));  // the process's sigwait would wake now
  const std::string why = watch.failure();
  BOOST_TEST(why.find("crashed") != std::string::npos, why);
  BOOST_TEST(why.find("node n-watch: a handler threw: boom") != std::string::npos, why);
  BOOST_TEST(log->has("stopping: crashed: node n-watch: a handler threw: boom"));
  BOOST_TEST(apps::kActorFailedStatus == 5);
}

BOOST_FIXTURE_TEST_CASE(a_node_told_to_shut_down_is_no_failure, System) {
  auto log = std::make_shared<Log>();
  auto node = actors::spawn_node(sys, node_config(sys, log, false));
  apps::ActorWatch watch(sys, caf::actor_cast<caf::actor>(node));
  for (int i = 0; i < 50 && !log->has("check-in failed"); ++i) std::this_thread::sleep_for(20ms);
  BOOST_TEST(log->has("check-in failed"));  // it runs on, logging
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
  BOOST_TEST(!sigterm.taken(1s));
  BOOST_TEST(watch.failure().empty());
}
