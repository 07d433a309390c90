// The controller's SQLite store: CRUD for every record type, state changes
// validated against the machines (a refused one leaves the row untouched),
// Nova actions through begin/finish with their action log, cleanup, reopen,
// and durability: a child process that is SIGKILLed at a random point never
// loses a write it acknowledged. Damaged or foreign files are named errors.
#define BOOST_TEST_MODULE state_store
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cluster/state_store.hpp"
#include "tests/support/failing_sync_vfs.hpp"

using namespace apiary::control;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// A scratch directory and a clock the test moves by hand.
struct Fixture {
  fs::path dir;
  std::shared_ptr<UnixMillis> clock = std::make_shared<UnixMillis>(1'700'000'000'000);

  Fixture() {
    std::string tmpl = (fs::temp_directory_path() / "apiary-store-XXXXXX").string();
    BOOST_REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const char* name = "state.db") const { return (dir / name).string(); }
  StoreOptions options() const {
    auto c = clock;
    StoreOptions o;
    o.clock = [c] { return *c; };
    return o;
  }
  StateStore open(const char* name = "state.db") const { return StateStore::open(path(name), options()); }
  void advance(std::chrono::milliseconds d) { *clock += d.count(); }
};

InstanceRecord new_instance(const std::string& id, const std::string& node = "") {
  InstanceRecord r;
  r.id = id;
  r.name = "vm-" + id;
  r.spec.set_name("vm-" + id);
  r.spec.mutable_board()->set_vcpus(2);
  r.spec.mutable_board()->set_memory_mib(256);
  r.spec.mutable_boot()->set_embedded_guest("demo");
  r.node = node;
  return r;
}

// Runs fn, which must throw StoreError with `code`; returns it.
template <typename Fn>
StoreError expect_error(StoreErrc code, Fn&& fn) {
  try {
    fn();
  } catch (const StoreError& e) {
    BOOST_TEST(std::string(to_string(e.code())) == to_string(code), e.what());
    return e;
  }
  BOOST_FAIL("no StoreError " << to_string(code));
  throw std::logic_error("unreachable");
}

bool same(const InstanceRecord& a, const InstanceRecord& b) {
  return a.id == b.id && a.name == b.name && a.spec.SerializeAsString() == b.spec.SerializeAsString() &&
         a.sf_state == b.sf_state && a.vm_state == b.vm_state && a.task_state == b.task_state && a.node == b.node &&
         a.created_at == b.created_at && a.updated_at == b.updated_at && a.deleted_at == b.deleted_at;
}

// Runs SQL on the file behind the store's back.
void raw_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  BOOST_TEST(rc == SQLITE_OK, (err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(db);
}

std::string raw_query_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  BOOST_REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
  std::string out;
  if (sqlite3_step(s) == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}


// Runs `writer` in a child process that acknowledges each durable write by
// calling ack(i); after between 1 and max_acks acknowledgements and a
// random pause (landing inside a later write), kills it with SIGKILL.
// Returns every acknowledgement the child made.
std::vector<int32_t> kill_writer_midway(std::mt19937& rng, int max_acks,
                                        const std::function<void(const std::function<void(int32_t)>&)>& writer) {
  int fds[2];
  BOOST_REQUIRE(pipe(fds) == 0);
  const pid_t pid = fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    try {
      writer([&](int32_t i) {
        if (write(fds[1], &i, sizeof i) != static_cast<ssize_t>(sizeof i)) _exit(3);
      });
    } catch (...) {
      _exit(2);
    }
    _exit(4);
  }
  close(fds[1]);
  const int target = std::uniform_int_distribution<int>(1, max_acks)(rng);
  std::vector<int32_t> acked;
  int32_t v = 0;
  while (static_cast<int>(acked.size()) < target && read(fds[0], &v, sizeof v) == sizeof v) acked.push_back(v);
  usleep(std::uniform_int_distribution<unsigned>(0, 3000)(rng));  // land somewhere inside a later write
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  BOOST_TEST(WIFSIGNALED(status), "child exited on its own, status " << status);
  while (read(fds[0], &v, sizeof v) == sizeof v) acked.push_back(v);  // acks already in the pipe
  close(fds[0]);
  return acked;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(store, Fixture)

BOOST_AUTO_TEST_CASE(opens_in_wal_mode_with_a_schema_version) {
  { auto s = open(); }
  BOOST_TEST(raw_query_text(path(), "PRAGMA journal_mode") == "wal");
  BOOST_TEST(raw_query_text(path(), "SELECT version FROM schema_version") == std::to_string(kSchemaVersion));
  auto mem = StateStore::open(":memory:", options());
  mem.put_instance(new_instance("m"));
  BOOST_TEST(mem.get_instance("m").has_value());
}

BOOST_AUTO_TEST_CASE(instance_crud) {
  auto s = open();
  BOOST_TEST(!s.get_instance("a").has_value());
  InstanceRecord a = new_instance("a", "node-1");
  s.put_instance(a);
  auto got = s.get_instance("a");
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(got->name == "vm-a");
  BOOST_TEST(got->spec.board().vcpus() == 2u);
  BOOST_TEST(got->spec.boot().embedded_guest() == "demo");
  BOOST_TEST((got->sf_state == SfInstanceState::initial));
  BOOST_TEST((got->vm_state == VmState::building));
  BOOST_TEST((got->task_state == TaskState::none));
  BOOST_TEST(got->node == "node-1");
  BOOST_TEST(got->created_at == *clock);
  BOOST_TEST(got->updated_at == *clock);
  BOOST_TEST(!got->deleted_at.has_value());

  advance(5s);
  InstanceRecord changed = *got;
  changed.name = "renamed";
  changed.node = "";
  changed.spec.mutable_board()->set_vcpus(4);
  s.put_instance(changed);
  got = s.get_instance("a");
  BOOST_TEST(got->name == "renamed");
  BOOST_TEST(got->node == "");
  BOOST_TEST(got->spec.board().vcpus() == 4u);
  BOOST_TEST(got->updated_at == got->created_at + 5000);

  s.put_instance(new_instance("c", "node-2"));
  s.put_instance(new_instance("b", "node-2"));
  auto all = s.list_instances();
  BOOST_REQUIRE(all.size() == 3u);
  BOOST_TEST(all[0].id == "a");
  BOOST_TEST(all[1].id == "b");
  BOOST_TEST(all[2].id == "c");
  BOOST_TEST(s.list_instances_on_node("node-2").size() == 2u);
  BOOST_TEST(s.delete_instance("b"));
  BOOST_TEST(!s.delete_instance("b"));
  BOOST_TEST(s.list_instances().size() == 2u);

  // A new record starts at the entry states; nothing else.
  InstanceRecord wrong = new_instance("d");
  wrong.sf_state = SfInstanceState::created;
  expect_error(StoreErrc::invalid_record, [&] { s.put_instance(wrong); });
  wrong = new_instance("d");
  wrong.vm_state = VmState::active;
  expect_error(StoreErrc::invalid_record, [&] { s.put_instance(wrong); });
  BOOST_TEST(!s.get_instance("d").has_value());
  expect_error(StoreErrc::invalid_record, [&] { s.put_instance(new_instance("")); });
  // vm_state / task_state change only through actions.
  InstanceRecord sneaky = *s.get_instance("a");
  sneaky.vm_state = VmState::active;
  expect_error(StoreErrc::invalid_record, [&] { s.put_instance(sneaky); });
}

BOOST_AUTO_TEST_CASE(refused_transitions_leave_the_row_unchanged) {
  auto s = open();
  s.put_instance(new_instance("a"));
  const InstanceRecord before = *s.get_instance("a");
  advance(1s);
  auto e = expect_error(StoreErrc::transition_refused, [&] { s.record_transition("a", SfInstanceState::created); });
  BOOST_TEST(std::string(e.what()).find("initial -> created") != std::string::npos, e.what());
  BOOST_TEST(same(*s.get_instance("a"), before));
  // The same through put.
  InstanceRecord jump = before;
  jump.sf_state = SfInstanceState::error;
  jump.name = "changed";
  expect_error(StoreErrc::transition_refused, [&] { s.put_instance(jump); });
  BOOST_TEST(same(*s.get_instance("a"), before));
  expect_error(StoreErrc::not_found, [&] { s.record_transition("nope", SfInstanceState::preflight); });

  // The legal path, then nothing leaves deleted.
  BOOST_TEST((s.record_transition("a", SfInstanceState::preflight) == SfInstanceState::initial));
  s.record_transition("a", SfInstanceState::creating);
  s.record_transition("a", SfInstanceState::created);
  advance(1s);
  s.record_transition("a", SfInstanceState::deleted);
  const InstanceRecord deleted = *s.get_instance("a");
  BOOST_TEST((deleted.deleted_at == *clock));
  for (SfInstanceState to : kAllSfInstanceStates) {
    expect_error(StoreErrc::transition_refused, [&] { s.record_transition("a", to); });
    BOOST_TEST(same(*s.get_instance("a"), deleted));
  }

  // Error path through created-error.
  s.put_instance(new_instance("b"));
  for (auto st : {SfInstanceState::preflight, SfInstanceState::creating, SfInstanceState::created,
                  SfInstanceState::created_error, SfInstanceState::error, SfInstanceState::deleted})
    s.record_transition("b", st);

  // Networks and nodes refuse the same way.
  s.put_network({"n1", "net", NetworkState::initial, "10.0.0.0/24", 0, 0, std::nullopt});
  const NetworkRecord nbefore = *s.get_network("n1");
  expect_error(StoreErrc::transition_refused, [&] { s.record_transition("n1", NetworkState::delete_wait); });
  BOOST_TEST((s.get_network("n1")->state == NetworkState::initial));
  BOOST_TEST(s.get_network("n1")->updated_at == nbefore.updated_at);
  s.node_checkin("node-1", 8, 16384, 0);
  expect_error(StoreErrc::transition_refused, [&] { s.record_transition("node-1", NodeState::stopped); });
  BOOST_TEST((s.get_node("node-1")->state == NodeState::created));
}

BOOST_AUTO_TEST_CASE(actions_follow_nova_and_are_logged) {
  auto s = open();
  s.put_instance(new_instance("i1"));
  const int64_t create = s.begin_action("i1", Action::create, "req-1");
  BOOST_TEST((s.get_instance("i1")->task_state == TaskState::scheduling));
  // A task in flight refuses another action, and writes nothing.
  const auto before = *s.get_instance("i1");
  auto e = expect_error(StoreErrc::action_refused, [&] { s.begin_action("i1", Action::pause, "req-x"); });
  BOOST_REQUIRE(e.refusal().has_value());
  BOOST_TEST(e.refusal()->http_status == 409);
  BOOST_TEST(e.refusal()->message == "Cannot 'pause' instance i1 while it is in vm_state building");
  BOOST_TEST(same(*s.get_instance("i1"), before));
  BOOST_TEST(s.list_actions("i1").size() == 1u);

  advance(2s);
  s.append_action_event(create, {"schedule", *clock - 2000, *clock - 1000, "success", ""});
  s.append_action_event(create, {"spawn \"quoted\" \\ back\nslash \xc3\xa9", *clock - 1000, std::nullopt, "", "tab\t"});
  BOOST_TEST(s.finish_action(create, ActionResult::success));
  auto inst = *s.get_instance("i1");
  BOOST_TEST((inst.vm_state == VmState::active));
  BOOST_TEST((inst.task_state == TaskState::none));
  BOOST_TEST(!s.finish_action(create, ActionResult::success));  // already closed: no-op

  auto log = s.get_action(create);
  BOOST_REQUIRE(log.has_value());
  BOOST_TEST(log->instance_id == "i1");
  BOOST_TEST(log->request_id == "req-1");
  BOOST_TEST((log->action == Action::create));
  BOOST_TEST(log->start == *clock - 2000);
  BOOST_TEST((log->finish == std::optional<UnixMillis>(*clock)));
  BOOST_TEST((log->result == ActionResult::success));
  BOOST_REQUIRE(log->events.size() == 2u);
  BOOST_TEST((log->events[0] == ActionEvent{"schedule", *clock - 2000, *clock - 1000, "success", ""}));
  BOOST_TEST(log->events[1].name == "spawn \"quoted\" \\ back\nslash \xc3\xa9");
  BOOST_TEST(!log->events[1].finish.has_value());
  BOOST_TEST(log->events[1].detail == "tab\t");
  // The head: the same row, its events not read.
  auto head = s.get_action_head(create);
  BOOST_REQUIRE(head.has_value());
  BOOST_TEST(head->id == log->id);
  BOOST_TEST(head->request_id == "req-1");
  BOOST_TEST((head->finish == log->finish));
  BOOST_TEST((head->result == ActionResult::success));
  BOOST_TEST(head->events.empty());
  BOOST_TEST(!s.get_action_head(999).has_value());
  expect_error(StoreErrc::not_found, [&] { s.append_action_event(999, {"x", 0, std::nullopt, "", ""}); });

  // Wrong vm_state: 409 naming it.
  e = expect_error(StoreErrc::action_refused, [&] { s.begin_action("i1", Action::start, "req-2"); });
  BOOST_TEST(e.refusal()->message == "Cannot 'start' instance i1 while it is in vm_state active");
  // Not built yet: 501 naming the capability; with it, accepted.
  e = expect_error(StoreErrc::action_refused, [&] {
    s.begin_action("i1", Action::live_migrate, "req-3", CapabilitySet{true, false});
  });
  BOOST_TEST(e.refusal()->http_status == 501);
  BOOST_TEST(e.refusal()->message.find("needs capability migration") != std::string::npos);
  BOOST_TEST(s.list_actions("i1").size() == 1u);

  // pause -> hard reboot takes over -> the pause is superseded.
  const int64_t pause = s.begin_action("i1", Action::pause, "req-4");
  BOOST_TEST((s.get_instance("i1")->task_state == TaskState::pausing));
  advance(1s);
  const int64_t reboot = s.begin_action("i1", Action::reboot_hard, "req-5");
  BOOST_TEST((s.get_instance("i1")->task_state == TaskState::rebooting_hard));
  BOOST_TEST((s.get_action(pause)->result == ActionResult::superseded));
  BOOST_TEST(!s.finish_action(pause, ActionResult::success));  // too late: nothing changes
  BOOST_TEST((s.get_instance("i1")->task_state == TaskState::rebooting_hard));
  BOOST_TEST(s.finish_action(reboot, ActionResult::success));
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::active));

  // Failures: reverted keeps the vm_state, error moves to ERROR.
  const int64_t p2 = s.begin_action("i1", Action::pause, "req-6");
  BOOST_TEST(s.finish_action(p2, ActionResult::reverted));
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::active));
  BOOST_TEST((s.get_action(p2)->result == ActionResult::reverted));
  // Resize to stopped-or-active: confirm needs the result named.
  const int64_t stop = s.begin_action("i1", Action::stop, "req-7");
  s.finish_action(stop, ActionResult::success);
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::stopped));
  const int64_t resize = s.begin_action("i1", Action::resize, "req-8");
  s.finish_action(resize, ActionResult::success);
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::resized));
  const int64_t confirm = s.begin_action("i1", Action::confirm_resize, "req-9");
  expect_error(StoreErrc::invalid_record, [&] { s.finish_action(confirm, ActionResult::success); });
  expect_error(StoreErrc::invalid_record, [&] { s.finish_action(confirm, ActionResult::success, VmState::paused); });
  BOOST_TEST((s.get_instance("i1")->task_state == TaskState::resize_confirming));  // untouched
  BOOST_TEST(s.finish_action(confirm, ActionResult::success, VmState::stopped));
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::stopped));
  const int64_t rescue = s.begin_action("i1", Action::rescue, "req-10");
  expect_error(StoreErrc::invalid_record, [&] { s.finish_action(rescue, ActionResult::running); });
  s.finish_action(rescue, ActionResult::error);
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::error));
  const int64_t del = s.begin_action("i1", Action::delete_, "req-11");
  s.finish_action(del, ActionResult::success);
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::deleted));
  expect_error(StoreErrc::action_refused, [&] { s.begin_action("i1", Action::delete_, "req-12"); });

  auto actions = s.list_actions("i1");
  std::vector<std::string> names;
  for (auto& a : actions) names.push_back(to_string(a.action));
  const std::vector<std::string> want = {"create", "pause",          "reboot_hard", "pause", "stop",
                                         "resize", "confirm_resize", "rescue",      "delete"};
  BOOST_TEST(names == want, boost::test_tools::per_element());
  for (auto& a : actions) BOOST_TEST(a.finish.has_value());
  expect_error(StoreErrc::not_found, [&] { s.begin_action("ghost", Action::pause, "r"); });
  expect_error(StoreErrc::not_found, [&] { s.finish_action(12345, ActionResult::success); });
}

// An imported instance reads back as one created the long way (put,
// create action, preflight -> creating -> created, finish ACTIVE), and
// anything but a running instance on a node is refused without a write.
BOOST_AUTO_TEST_CASE(an_imported_running_instance_is_what_a_finished_create_leaves) {
  auto s = open();
  s.put_instance(new_instance("long", "node-1"));
  const int64_t create = s.begin_action("long", Action::create, "req-long");
  for (auto to : {SfInstanceState::preflight, SfInstanceState::creating, SfInstanceState::created})
    s.record_transition("long", to);
  s.finish_action(create, ActionResult::success, VmState::active);
  // Read now, so that the import must keep the usage in memory up to date.
  BOOST_TEST(s.node_usage("node-1").instances == 1u);

  auto r = new_instance("imported", "node-1");
  r.sf_state = SfInstanceState::created;
  r.vm_state = VmState::active;
  s.import_running_instance(r, "req-imported");
  const auto a = *s.get_instance("long");
  auto b = *s.get_instance("imported");
  BOOST_TEST((b.sf_state == a.sf_state && b.vm_state == a.vm_state && b.task_state == a.task_state));
  BOOST_TEST(b.node == "node-1");
  BOOST_TEST(b.spec.SerializeAsString() == r.spec.SerializeAsString());
  BOOST_TEST(b.created_at == *clock);
  const auto log = s.list_actions("imported");
  BOOST_REQUIRE(log.size() == 1u);
  BOOST_TEST((log[0].action == Action::create && log[0].result == ActionResult::success));
  BOOST_TEST(log[0].request_id == "req-imported");
  BOOST_TEST((log[0].finish == std::optional<UnixMillis>(*clock)));
  BOOST_TEST(s.node_usage("node-1").instances == 2u);
  BOOST_TEST(s.node_usage("node-1").vcpus == 4u);
  // The next action sees an ACTIVE instance with no task.
  BOOST_TEST(s.begin_action("imported", Action::pause, "req-p") > 0);

  auto refused = [&](InstanceRecord x) {
    expect_error(StoreErrc::invalid_record, [&] { s.import_running_instance(x, "req-x"); });
    BOOST_TEST(!s.get_instance(x.id).has_value());
    BOOST_TEST(s.list_actions(x.id).empty());
  };
  auto x = r;
  x.id = "x1";
  x.node.clear();
  refused(x);  // not on a node
  x.node = "node-1";
  x.vm_state = VmState::building;
  refused(x);
  x.vm_state = VmState::active;
  x.sf_state = SfInstanceState::creating;
  refused(x);
  x.sf_state = SfInstanceState::created;
  x.task_state = TaskState::spawning;
  refused(x);
  // A record that exists is not replaced.
  const auto before = *s.get_instance("imported");
  expect_error(StoreErrc::invalid_record, [&] { s.import_running_instance(r, "req-again"); });
  BOOST_TEST(same(*s.get_instance("imported"), before));
  BOOST_TEST(s.list_actions("imported").size() == 2u);
  BOOST_TEST(s.node_usage("node-1").instances == 2u);
}

// The power sync's forced stop of a PAUSED instance whose VM is gone: one
// finished stop row with its event, vm_state stopped; never under a task.
BOOST_AUTO_TEST_CASE(a_forced_stop_records_a_paused_instance_stopped) {
  auto s = open();
  s.put_instance(new_instance("i1"));
  s.finish_action(s.begin_action("i1", Action::create, "req-1"), ActionResult::success);
  const int64_t pause = s.begin_action("i1", Action::pause, "req-2");
  BOOST_TEST(s.force_stopped("i1", "sync-0", {"power_sync", 1, 1, "success", "busy"}) == 0);  // a task in flight
  s.finish_action(pause, ActionResult::success);
  BOOST_REQUIRE((s.get_instance("i1")->vm_state == VmState::paused));
  expect_error(StoreErrc::action_refused, [&] { s.begin_action("i1", Action::stop, "req-3"); });
  const int64_t id = s.force_stopped("i1", "sync-1", {"power_sync", 5, 5, "success", "node n1 runs no VM"});
  BOOST_TEST(id > 0);
  BOOST_TEST((s.get_instance("i1")->vm_state == VmState::stopped));
  BOOST_TEST((s.get_instance("i1")->task_state == TaskState::none));
  auto row = s.get_action(id);
  BOOST_REQUIRE(row);
  BOOST_TEST(row->request_id == "sync-1");
  BOOST_TEST((row->action == Action::stop));
  BOOST_TEST((row->result == ActionResult::success));
  BOOST_TEST(row->finish.has_value());
  BOOST_REQUIRE(row->events.size() == 1u);
  BOOST_TEST(row->events[0].detail == "node n1 runs no VM");
  expect_error(StoreErrc::not_found, [&] { s.force_stopped("ghost", "sync-2", {}); });
}

BOOST_AUTO_TEST_CASE(networks_and_attachments) {
  auto s = open();
  s.put_network({"n1", "front", NetworkState::initial, "10.0.0.0/24", 0, 0, std::nullopt});
  s.put_network({"n2", "back", NetworkState::initial, "", 0, 0, std::nullopt});
  auto n = s.get_network("n1");
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(n->name == "front");
  BOOST_TEST(n->cidr == "10.0.0.0/24");
  BOOST_TEST(n->created_at == *clock);
  BOOST_TEST(s.get_network("n2")->cidr == "");
  expect_error(StoreErrc::invalid_record, [&] {
    s.put_network({"n3", "x", NetworkState::created, "", 0, 0, std::nullopt});
  });
  BOOST_TEST(s.list_networks().size() == 2u);

  s.put_instance(new_instance("a"));
  s.put_instance(new_instance("b"));
  s.attach("n1", "a");
  s.attach("n1", "a");  // no-op
  s.attach("n1", "b");
  s.attach("n2", "a");
  BOOST_TEST(s.attachments_of_network("n1").size() == 2u);
  BOOST_TEST((s.attachments_of_instance("a") == std::vector<NetworkAttachment>{{"n1", "a"}, {"n2", "a"}}));
  expect_error(StoreErrc::not_found, [&] { s.attach("n9", "a"); });
  expect_error(StoreErrc::not_found, [&] { s.attach("n1", "z"); });
  BOOST_TEST(s.detach("n1", "b"));
  BOOST_TEST(!s.detach("n1", "b"));
  // Deleting an instance takes its attachments with it.
  s.delete_instance("a");
  BOOST_TEST(s.attachments_of_network("n1").empty());
  BOOST_TEST(s.attachments_of_network("n2").empty());

  // created -> delete_wait -> deleted, with deleted_at; nothing leaves deleted.
  s.record_transition("n1", NetworkState::created);
  NetworkRecord upd = *s.get_network("n1");
  upd.state = NetworkState::delete_wait;
  upd.name = "front-2";
  s.put_network(upd);
  BOOST_TEST(s.get_network("n1")->name == "front-2");
  advance(1s);
  s.record_transition("n1", NetworkState::deleted);
  BOOST_TEST((s.get_network("n1")->deleted_at == std::optional<UnixMillis>(*clock)));
  expect_error(StoreErrc::transition_refused, [&] { s.record_transition("n1", NetworkState::created); });
  BOOST_TEST(s.delete_network("n2"));
  BOOST_TEST(!s.get_network("n2").has_value());
}

BOOST_AUTO_TEST_CASE(nodes_check_in_go_missing_and_take_their_instances_into_error) {
  auto s = open();
  auto n = s.node_checkin("node-1", 8, 16384, 0);
  BOOST_TEST((n.state == NodeState::created));
  s.node_checkin("node-2", 4, 8192, 0);
  s.put_instance(new_instance("a", "node-1"));
  s.put_instance(new_instance("b", "node-1"));
  s.put_instance(new_instance("c", "node-2"));
  for (auto st : {SfInstanceState::preflight, SfInstanceState::creating, SfInstanceState::created})
    s.record_transition("a", st);
  s.begin_action("a", Action::create, "r-a");  // in flight when the node dies

  advance(120s);
  BOOST_TEST(s.sweep_silent_nodes().empty());  // exactly at the deadline
  advance(1ms);
  auto changes = s.sweep_silent_nodes();
  BOOST_REQUIRE(changes.size() == 2u);
  BOOST_TEST((changes[0].to == NodeState::missing));
  s.node_checkin("node-2", 4, 8192, 1);
  BOOST_TEST((s.get_node("node-2")->state == NodeState::created));
  BOOST_TEST(s.get_node("node-2")->instances == 1u);

  advance(1200s - 120s - 1ms);
  changes = s.sweep_silent_nodes();  // node-1 exactly at 10x: still missing
  BOOST_REQUIRE(changes.size() == 1u);
  BOOST_TEST(changes[0].name == "node-2");  // silent for 1079.999 s since its check-in
  BOOST_TEST((changes[0].to == NodeState::missing));
  BOOST_TEST((s.get_node("node-1")->state == NodeState::missing));
  advance(1ms);
  changes = s.sweep_silent_nodes();
  BOOST_REQUIRE(changes.size() == 1u);
  const auto& err = changes[0];
  BOOST_TEST(err.name == "node-1");
  BOOST_TEST((err.from == NodeState::missing));
  BOOST_TEST((err.to == NodeState::error));
  BOOST_TEST((err.instances_errored == std::vector<std::string>{"a", "b"}));
  auto a = *s.get_instance("a");
  BOOST_TEST((a.sf_state == SfInstanceState::created_error));
  BOOST_TEST((a.vm_state == VmState::error));
  BOOST_TEST((a.task_state == TaskState::none));
  BOOST_TEST((s.list_actions("a").at(0).result == ActionResult::error));
  BOOST_TEST((s.get_instance("b")->sf_state == SfInstanceState::initial_error));
  BOOST_TEST((s.get_instance("c")->vm_state == VmState::building));

  // It can come back; a deleted node cannot.
  BOOST_TEST((s.node_checkin("node-1", 8, 16384, 0).state == NodeState::created));
  s.record_transition("node-1", NodeState::deleted);
  expect_error(StoreErrc::transition_refused, [&] { s.node_checkin("node-1", 8, 16384, 0); });
  BOOST_TEST((s.get_node("node-1")->state == NodeState::deleted));
  // put_node follows the same rules.
  expect_error(StoreErrc::invalid_record, [&] { s.put_node({"node-3", NodeState::missing, 0, 1, 1, 0}); });
  NodeRecord n2 = *s.get_node("node-2");
  n2.state = NodeState::stopping;
  expect_error(StoreErrc::transition_refused, [&] { s.put_node(n2); });  // it is missing
  n2 = s.node_checkin("node-2", 4, 8192, 0);
  n2.state = NodeState::stopping;
  s.put_node(n2);
  n2.state = NodeState::stopped;
  s.put_node(n2);
  BOOST_TEST((s.get_node("node-2")->state == NodeState::stopped));
  advance(100000s);
  BOOST_TEST(s.sweep_silent_nodes().empty());  // stopped nodes are not expected to check in
  BOOST_TEST(s.list_nodes().size() == 2u);
  BOOST_TEST(s.delete_node("node-2"));
}

BOOST_AUTO_TEST_CASE(purge_removes_only_what_sat_deleted_long_enough) {
  auto s = open();
  s.put_instance(new_instance("old"));
  s.put_instance(new_instance("new"));
  s.put_instance(new_instance("live"));
  s.put_network({"net", "n", NetworkState::initial, "", 0, 0, std::nullopt});
  s.attach("net", "old");
  s.begin_action("old", Action::create, "r");
  s.record_transition("old", SfInstanceState::deleted);
  const UnixMillis old_deleted = *clock;
  s.record_transition("net", NetworkState::deleted);
  advance(10s);
  s.record_transition("new", SfInstanceState::deleted);

  auto c = s.purge_deleted(old_deleted - 1);
  BOOST_TEST(c.instances == 0u);
  BOOST_TEST(c.networks == 0u);
  c = s.purge_deleted(old_deleted);
  BOOST_TEST(c.instances == 1u);
  BOOST_TEST(c.networks == 1u);
  BOOST_TEST(!s.get_instance("old").has_value());
  BOOST_TEST(s.list_actions("old").empty());
  BOOST_TEST(s.attachments_of_instance("old").empty());
  BOOST_TEST(s.get_instance("new").has_value());
  BOOST_TEST(s.get_instance("live").has_value());

  advance(Defaults::cleaner_delay - 1s);
  BOOST_TEST(s.purge_deleted_after().instances == 0u);
  advance(1s);
  BOOST_TEST(s.purge_deleted_after().instances == 1u);
  BOOST_TEST(s.list_instances().size() == 1u);
}

BOOST_AUTO_TEST_CASE(transactions_commit_or_roll_back_as_a_whole) {
  auto s = open();
  s.with_transaction([&] {
    s.put_instance(new_instance("a"));
    s.put_instance(new_instance("b"));
  });
  BOOST_TEST(s.list_instances().size() == 2u);
  BOOST_CHECK_THROW(s.with_transaction([&] {
    s.put_instance(new_instance("c"));
    s.record_transition("a", SfInstanceState::preflight);
    throw std::runtime_error("abort");
  }),
                    std::runtime_error);
  BOOST_TEST(!s.get_instance("c").has_value());
  BOOST_TEST((s.get_instance("a")->sf_state == SfInstanceState::initial));
  // A refused step inside rolls back the steps before it too.
  expect_error(StoreErrc::transition_refused, [&] {
    s.with_transaction([&] {
      s.put_instance(new_instance("d"));
      s.record_transition("a", SfInstanceState::created);
    });
  });
  BOOST_TEST(!s.get_instance("d").has_value());
  // Nested: an inner failure caught inside keeps the outer work.
  s.with_transaction([&] {
    s.put_instance(new_instance("e"));
    try {
      s.with_transaction([&] {
        s.put_instance(new_instance("f"));
        throw std::runtime_error("inner");
      });
    } catch (const std::runtime_error&) {
    }
  });
  BOOST_TEST(s.get_instance("e").has_value());
  BOOST_TEST(!s.get_instance("f").has_value());
}

BOOST_AUTO_TEST_CASE(everything_survives_a_reopen) {
  int64_t action = 0;
  {
    auto s = open();
    s.put_instance(new_instance("a", "node-1"));
    action = s.begin_action("a", Action::create, "req");
    s.append_action_event(action, {"spawn", 1, 2, "success", "ok"});
    s.put_network({"n", "net", NetworkState::initial, "192.168.0.0/16", 0, 0, std::nullopt});
    s.attach("n", "a");
    s.node_checkin("node-1", 16, 65536, 1);
  }
  auto s = open();
  auto a = s.get_instance("a");
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(a->spec.board().memory_mib() == 256u);
  BOOST_TEST((a->task_state == TaskState::scheduling));
  BOOST_TEST(s.get_action(action)->events.at(0).detail == "ok");
  BOOST_TEST(s.get_network("n")->cidr == "192.168.0.0/16");
  BOOST_TEST(s.attachments_of_instance("a").size() == 1u);
  auto n = s.get_node("node-1");
  BOOST_TEST(n->memory_mib == 65536u);
  BOOST_TEST(n->instances == 1u);
  BOOST_TEST(n->last_checkin == *clock);
}

BOOST_AUTO_TEST_CASE(acknowledged_writes_survive_sigkill) {
  std::mt19937 rng(20240611);
  for (int round = 0; round < 4; ++round) {
    const std::string db = path(("crash-" + std::to_string(round) + ".db").c_str());
    const auto acked = kill_writer_midway(rng, 150, [&](const auto& ack) {
      auto s = StateStore::open(db);
      for (int32_t i = 0;; ++i) {
        const std::string id = "i-" + std::to_string(i);
        s.with_transaction([&] {
          s.put_instance(new_instance(id));
          s.begin_action(id, Action::create, "req-" + std::to_string(i));
        });
        ack(i);  // only after the commit returned
      }
    });
    BOOST_REQUIRE(!acked.empty());
    BOOST_TEST_MESSAGE("round " << round << ": killed after " << acked.size() << " acknowledged writes");

    BOOST_TEST(raw_query_text(db, "PRAGMA integrity_check") == "ok");
    auto s = StateStore::open(db, options());
    std::set<std::string> present;
    for (auto& r : s.list_instances()) present.insert(r.id);
    for (int32_t i : acked) {
      const std::string id = "i-" + std::to_string(i);
      BOOST_TEST(present.count(id) == 1u, id << " was acknowledged but is gone");
      auto actions = s.list_actions(id);
      BOOST_TEST(actions.size() == 1u, id);
      BOOST_TEST((s.get_instance(id)->task_state == TaskState::scheduling));
    }
    // At most the one write in flight at the kill beyond what was acknowledged,
    // and never half of one (the transaction is all or nothing).
    BOOST_TEST(present.size() <= acked.size() + 1);
    for (auto& id : present) BOOST_TEST(s.list_actions(id).size() == 1u, id);
  }
}

BOOST_AUTO_TEST_CASE(a_file_that_is_not_a_database_is_a_named_error) {
  {
    std::ofstream f(path("junk.db"), std::ios::binary);
    for (int i = 0; i < 200; ++i) f << "this is not an sqlite database, just text. ";
  }
  auto e = expect_error(StoreErrc::not_a_database, [&] { StateStore::open(path("junk.db"), options()); });
  BOOST_TEST(e.sqlite_message().find("not a database") != std::string::npos, e.sqlite_message());
  BOOST_TEST(e.sql().size() > 0u);
  BOOST_TEST(std::string(e.what()).find(path("junk.db")) != std::string::npos, e.what());

  // A directory where the file should be.
  fs::create_directory(dir / "adir");
  expect_error(StoreErrc::open_failed, [&] { StateStore::open(path("adir"), options()); });
}

BOOST_AUTO_TEST_CASE(a_damaged_database_is_a_named_error) {
  {
    auto s = open("damaged.db");
    for (int i = 0; i < 200; ++i) s.put_instance(new_instance("i-" + std::to_string(i)));
  }
  // Overwrite the pages after the header with garbage.
  {
    std::fstream f(path("damaged.db"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    for (int i = 0; i < 64 * 1024; ++i) f.put(static_cast<char>(0xA5));
  }
  try {
    auto s = open("damaged.db");
    s.list_instances();
    BOOST_FAIL("a damaged database read without error");
  } catch (const StoreError& e) {
    const bool named = e.code() == StoreErrc::corrupt || e.code() == StoreErrc::not_a_database ||
                       e.code() == StoreErrc::corrupt_record;
    BOOST_TEST(named, e.what());
  }
}

BOOST_AUTO_TEST_CASE(a_stored_row_that_does_not_decode_is_a_named_error) {
  { open().put_instance(new_instance("a")); }
  raw_exec(path(), "UPDATE instances SET vm_state = 'flying' WHERE id = 'a'");
  auto s = open();
  auto e = expect_error(StoreErrc::corrupt_record, [&] { s.get_instance("a"); });
  BOOST_TEST(std::string(e.what()).find("flying") != std::string::npos, e.what());
}

BOOST_AUTO_TEST_CASE(a_schema_version_mismatch_is_a_named_error) {
  { auto s = open(); }
  raw_exec(path(), "UPDATE schema_version SET version = 99");
  auto e = expect_error(StoreErrc::schema_mismatch, [&] { open(); });
  BOOST_TEST(std::string(e.what()).find("99") != std::string::npos, e.what());
  // Someone else's database.
  raw_exec(path("other.db"), "CREATE TABLE t (x INTEGER)");
  expect_error(StoreErrc::schema_mismatch, [&] { open("other.db"); });
}

BOOST_AUTO_TEST_CASE(a_held_lock_is_busy_with_sql_and_message) {
  auto o = options();
  o.busy_timeout_ms = 50;
  auto s = StateStore::open(path(), o);
  sqlite3* other = nullptr;
  BOOST_REQUIRE(sqlite3_open(path().c_str(), &other) == SQLITE_OK);
  BOOST_REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto e = expect_error(StoreErrc::busy, [&] { s.put_instance(new_instance("a")); });
  BOOST_TEST(e.sql() == "BEGIN IMMEDIATE");
  BOOST_TEST(e.sqlite_message().size() > 0u);
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  s.put_instance(new_instance("a"));  // works again
  BOOST_TEST(s.get_instance("a").has_value());
}

BOOST_AUTO_TEST_CASE(each_commit_names_what_it_changed_and_a_rollback_names_nothing) {
  std::vector<StoreChanges> seen;
  auto o = options();
  o.on_commit = [&](const StoreChanges& c) { seen.push_back(c); };
  auto s = StateStore::open(path(), o);
  BOOST_TEST(seen.empty());  // opening writes the schema, but no record

  s.put_instance(new_instance("a", "n1"));
  BOOST_TEST_REQUIRE(seen.size() == 1u);
  BOOST_TEST(seen[0].instances == std::vector<std::string>{"a"});
  BOOST_TEST(seen[0].nodes.empty());

  // One transaction, many writes: one notice, each key once, sorted.
  seen.clear();
  s.with_transaction([&] {
    s.put_instance(new_instance("c"));
    s.put_instance(new_instance("b"));
    s.record_transition("b", SfInstanceState::preflight);
    s.node_checkin("n1", 4, 4096, 1);
    BOOST_TEST(seen.empty());  // nothing before the commit
  });
  BOOST_TEST_REQUIRE(seen.size() == 1u);
  BOOST_TEST((seen[0].instances == std::vector<std::string>{"b", "c"}));
  BOOST_TEST(seen[0].nodes == std::vector<std::string>{"n1"});
  // Every state entered, in write order, also the ones that did not last
  // past the commit (b: initial, then preflight).
  std::vector<std::string> steps;
  for (const auto& st : seen[0].steps) steps.push_back(std::string(1, st.kind) + " " + st.key + " " + st.field + " " + st.state);
  BOOST_TEST(steps == (std::vector<std::string>{"i c record_state initial", "i c vm_state building",
                                                 "i b record_state initial", "i b vm_state building",
                                                 "i b record_state preflight", "d n1 state created"}),
             boost::test_tools::per_element());

  // A rolled back transaction names nothing; a rolled back savepoint drops
  // only what it wrote.
  seen.clear();
  BOOST_CHECK_THROW(s.with_transaction([&] {
    s.put_instance(new_instance("d"));
    throw std::runtime_error("abandon");
  }),
                    std::runtime_error);
  BOOST_TEST(seen.empty());
  s.with_transaction([&] {
    s.put_instance(new_instance("e"));
    BOOST_CHECK_THROW(s.with_transaction([&] {
      s.put_instance(new_instance("f"));
      throw std::runtime_error("inner");
    }),
                      std::runtime_error);
  });
  BOOST_TEST_REQUIRE(seen.size() == 1u);
  BOOST_TEST(seen[0].instances == std::vector<std::string>{"e"});
  BOOST_TEST(!s.get_instance("f").has_value());

  // The action log and its events count for their instance; a refused
  // write (Nova's 409) names nothing.
  seen.clear();
  const int64_t act = s.begin_action("a", Action::create, "req-1");
  s.append_action_event(act, ActionEvent{"schedule", 1, 2, "success", ""});
  BOOST_TEST_REQUIRE(seen.size() == 2u);
  BOOST_TEST(seen[1].instances == std::vector<std::string>{"a"});
  seen.clear();
  expect_error(StoreErrc::action_refused, [&] { s.begin_action("a", Action::pause, "req-2"); });
  BOOST_TEST(seen.empty());

  // A listener that throws changes nothing: the write stands.
  o.on_commit = [](const StoreChanges&) { throw std::runtime_error("listener on fire"); };
  auto t = StateStore::open(path("other.db"), o);
  t.put_instance(new_instance("g"));
  BOOST_TEST(t.get_instance("g").has_value());
}

BOOST_AUTO_TEST_CASE(a_purge_names_the_records_it_removed) {
  std::vector<StoreChanges> seen;
  auto o = options();
  o.on_commit = [&](const StoreChanges& c) { seen.push_back(c); };
  auto s = StateStore::open(path(), o);
  s.put_instance(new_instance("a"));
  s.put_instance(new_instance("b"));
  s.record_transition("a", SfInstanceState::deleted);
  advance(10s);
  seen.clear();
  const auto counts = s.purge_deleted_after(5s);
  BOOST_TEST(counts.instances == 1u);
  BOOST_TEST_REQUIRE(seen.size() == 1u);
  BOOST_TEST(seen[0].instances == std::vector<std::string>{"a"});
  seen.clear();
  BOOST_TEST(s.purge_deleted_after(5s).instances == 0u);
  BOOST_TEST(seen.empty());  // nothing removed, nothing named
}

BOOST_AUTO_TEST_CASE(attachments_placements_and_cascades_name_both_sides) {
  std::vector<StoreChanges> seen;
  auto o = options();
  o.on_commit = [&](const StoreChanges& c) { seen.push_back(c); };
  auto s = StateStore::open(path(), o);
  NetworkRecord net;
  net.id = "net-1";
  net.name = "blue";
  s.put_network(net);
  s.put_instance(new_instance("a"));
  s.put_instance(new_instance("b"));
  auto last = [&] {
    BOOST_REQUIRE(!seen.empty());
    return seen.back();
  };
  s.attach("net-1", "a");
  BOOST_TEST(last().instances == std::vector<std::string>{"a"});
  BOOST_TEST(last().networks == std::vector<std::string>{"net-1"});
  // A placement moves the network's ports: the network is named too.
  auto placed = *s.get_instance("a");
  placed.node = "n1";
  s.put_instance(placed);
  BOOST_TEST(last().networks == std::vector<std::string>{"net-1"});
  // The same record rewritten without a new node: only the instance.
  s.put_instance(placed);
  BOOST_TEST(last().networks.empty());
  // finish_action and force_stopped name their instance.
  const int64_t act = s.begin_action("b", Action::create, "req-b");
  seen.clear();
  s.finish_action(act, ActionResult::success);
  BOOST_TEST(last().instances == std::vector<std::string>{"b"});
  seen.clear();
  s.force_stopped("b", "req-stop", ActionEvent{"reconcile", 1, 2, "success", ""});
  BOOST_TEST(last().instances == std::vector<std::string>{"b"});
  // A delete cascades to the attachments: the other side is named.
  seen.clear();
  BOOST_TEST(s.delete_instance("a"));
  BOOST_TEST(last().instances == std::vector<std::string>{"a"});
  BOOST_TEST(last().networks == std::vector<std::string>{"net-1"});
  s.attach("net-1", "b");
  seen.clear();
  BOOST_TEST(s.detach("net-1", "b"));
  BOOST_TEST(last().instances == std::vector<std::string>{"b"});
  BOOST_TEST(last().networks == std::vector<std::string>{"net-1"});
  s.attach("net-1", "b");
  seen.clear();
  BOOST_TEST(s.delete_network("net-1"));
  BOOST_TEST(last().networks == std::vector<std::string>{"net-1"});
  BOOST_TEST(last().instances == std::vector<std::string>{"b"});
  // A node's check-in, and the silence rule turning it missing.
  seen.clear();
  s.node_checkin("n1", 2, 1024, 0);
  BOOST_TEST(last().nodes == std::vector<std::string>{"n1"});
  advance(std::chrono::seconds(Defaults::node_checkin_maximum) + 1s);
  seen.clear();
  BOOST_TEST(!s.sweep_silent_nodes().empty());
  BOOST_TEST(last().nodes == std::vector<std::string>{"n1"});
}

// The scheduler's per-node sums, kept in memory, must always equal what the
// records say: after every kind of write, after a rollback (share by share
// and after the sums were first read inside the rolled-back transaction),
// after a node's error takes its instances, and after another connection
// wrote behind this store's back.
NodeUsage usage_from_records(StateStore& s, const std::string& node) {
  NodeUsage u;
  for (const auto& r : s.list_instances_on_node(node)) {
    if (!holds_resources(r.sf_state)) continue;
    ++u.instances;
    u.vcpus += r.spec.board().vcpus();
    u.memory_mib += r.spec.board().memory_mib();
  }
  return u;
}

BOOST_AUTO_TEST_CASE(node_usage_follows_every_write_and_rollback) {
  auto s = open();
  auto check = [&](const std::string& node, uint32_t instances, uint64_t vcpus, uint64_t memory) {
    const NodeUsage u = s.node_usage(node);
    BOOST_TEST(u.instances == instances, node);
    BOOST_TEST(u.vcpus == vcpus, node);
    BOOST_TEST(u.memory_mib == memory, node);
    BOOST_TEST((u == usage_from_records(s, node)), node << ": the sums differ from the records");
  };
  s.node_checkin("node-1", 8, 16384, 0);
  s.node_checkin("node-2", 8, 16384, 0);
  check("node-1", 0, 0, 0);
  s.put_instance(new_instance("a", "node-1"));
  s.put_instance(new_instance("b", "node-1"));
  s.put_instance(new_instance("u"));  // not placed: holds nothing
  check("node-1", 2, 4, 512);

  // Placed, resized and moved by put_instance.
  auto u = *s.get_instance("u");
  u.node = "node-2";
  u.spec.mutable_board()->set_vcpus(4);
  s.put_instance(u);
  check("node-2", 1, 4, 256);
  u.node = "node-1";
  s.put_instance(u);
  check("node-1", 3, 8, 768);
  check("node-2", 0, 0, 0);

  // A deleted record holds nothing; a hard delete takes its share.
  s.record_transition("b", SfInstanceState::deleted);
  check("node-1", 2, 6, 512);
  BOOST_TEST(s.delete_instance("u"));
  check("node-1", 1, 2, 256);

  // A rolled-back transaction gives back what it took, nested or not.
  BOOST_CHECK_THROW(s.with_transaction([&] {
    s.put_instance(new_instance("c", "node-1"));
    BOOST_TEST(s.node_usage("node-1").instances == 2u);  // the open transaction sees its own write
    s.with_transaction([&] { s.put_instance(new_instance("d", "node-1")); });
    BOOST_CHECK_THROW(s.with_transaction([&] {
      s.record_transition("a", SfInstanceState::deleted);
      BOOST_TEST(s.node_usage("node-1").instances == 2u);
      throw std::runtime_error("inner");
    }),
                      std::runtime_error);
    BOOST_TEST(s.node_usage("node-1").instances == 3u);  // the savepoint's share came back
    throw std::runtime_error("outer");
  }),
                    std::runtime_error);
  check("node-1", 1, 2, 256);
  expect_error(StoreErrc::transition_refused, [&] { s.record_transition("a", SfInstanceState::created); });
  check("node-1", 1, 2, 256);

  // Sums first read inside a transaction that rolls back: read again.
  {
    auto t = open();
    BOOST_CHECK_THROW(t.with_transaction([&] {
      t.put_instance(new_instance("e", "node-2"));
      BOOST_TEST(t.node_usage("node-2").instances == 1u);
      throw std::runtime_error("rolled back");
    }),
                      std::runtime_error);
    BOOST_TEST(t.node_usage("node-2").instances == 0u);
  }

  // Another connection's commit (the second store above wrote nothing that
  // stayed; this one does) is seen.
  {
    auto other = open();
    other.put_instance(new_instance("f", "node-2"));
  }
  check("node-2", 1, 2, 256);
  raw_exec(path(), "UPDATE instances SET sf_state = 'deleted' WHERE id = 'f'");
  check("node-2", 0, 0, 0);

  // A node going to error takes its instances' shares.
  for (auto st : {SfInstanceState::preflight, SfInstanceState::creating, SfInstanceState::created})
    s.record_transition("a", st);
  advance(1200s + 1ms);
  s.sweep_silent_nodes();
  BOOST_TEST((s.get_node("node-1")->state == NodeState::error));
  check("node-1", 0, 0, 0);
}

// Group commit: the transactions of a batch are savepoints of one SQLite
// transaction; nothing is visible to another connection (so nothing is
// durable) before commit_batch, which hands on_commit everything at once.
BOOST_AUTO_TEST_CASE(a_batch_commits_many_transactions_at_once) {
  int opened = 0;
  std::vector<StoreChanges> commits;
  auto o = options();
  o.on_batch_open = [&] { ++opened; };
  o.on_commit = [&](const StoreChanges& c) { commits.push_back(c); };
  auto s = StateStore::open(path(), o);
  BOOST_TEST(!s.batch_open());
  s.put_instance(new_instance("a"));
  BOOST_TEST(s.batch_open());
  s.put_instance(new_instance("b"));
  s.with_transaction([&] { s.put_instance(new_instance("c")); });
  // A refused write in the batch undoes only itself.
  expect_error(StoreErrc::transition_refused, [&] { s.record_transition("a", SfInstanceState::created); });
  BOOST_CHECK_THROW(s.with_transaction([&] {
    s.put_instance(new_instance("d"));
    throw std::runtime_error("d fails");
  }),
                    std::runtime_error);
  BOOST_TEST(opened == 1);
  BOOST_TEST(commits.empty());
  BOOST_TEST(s.get_instance("c").has_value());  // the writer sees its batch
  BOOST_TEST(raw_query_text(path(), "SELECT count(*) FROM instances") == "0");  // nobody else does
  s.commit_batch();
  BOOST_TEST(!s.batch_open());
  BOOST_TEST(raw_query_text(path(), "SELECT group_concat(id) FROM (SELECT id FROM instances ORDER BY id)") == "a,b,c");
  BOOST_REQUIRE(commits.size() == 1u);
  BOOST_TEST((commits[0].instances == std::vector<std::string>{"a", "b", "c"}));
  s.commit_batch();  // nothing open: nothing happens
  BOOST_TEST(commits.size() == 1u);
  s.record_transition("a", SfInstanceState::preflight);
  BOOST_TEST(opened == 2);
  s.commit_batch();
  BOOST_TEST(commits.size() == 2u);
}

// A disk that fails the batch's fsync: commit_batch says so with its own
// name, no write of the batch is seen afterwards on this connection, and the
// store refuses writes (its writer's picture is not the file's any more)
// until it is opened again.
BOOST_AUTO_TEST_CASE(a_failed_fsync_fails_the_whole_batch) {
  auto o = options();
  o.on_batch_open = [] {};
  o.vfs = apiary::test::FailingSyncVfs::name();
  {
    auto s = StateStore::open(path(), o);
    s.put_instance(new_instance("kept"));
    s.commit_batch();
    s.put_instance(new_instance("x"));
    s.put_instance(new_instance("y"));
    const int failed_before = apiary::test::FailingSyncVfs::syncs_failed;
    StoreError e = [&] {
      apiary::test::FailingSyncs failing;
      return expect_error(StoreErrc::commit_failed, [&] { s.commit_batch(); });
    }();
    BOOST_TEST(apiary::test::FailingSyncVfs::syncs_failed > failed_before);  // the failure came from the disk
    BOOST_TEST(std::string(e.what()).find("commit") != std::string::npos, e.what());
    BOOST_TEST(!s.batch_open());
    BOOST_TEST(!s.get_instance("x").has_value());
    BOOST_TEST(!s.get_instance("y").has_value());
    BOOST_TEST(s.get_instance("kept").has_value());
    expect_error(StoreErrc::commit_failed, [&] { s.put_instance(new_instance("z")); });
  }
  auto s = StateStore::open(path(), o);  // a new writer starts from the file
  BOOST_TEST(s.get_instance("kept").has_value());
  s.put_instance(new_instance("z"));
  s.commit_batch();
  BOOST_TEST(s.get_instance("z").has_value());
}

// Batches and kill -9: every write acknowledged after its batch committed is
// in the file afterwards; of the batch in flight, all or nothing.
BOOST_AUTO_TEST_CASE(acknowledged_batches_survive_sigkill) {
  std::mt19937 rng(20261204);
  for (int round = 0; round < 3; ++round) {
    const std::string db = path(("batch-crash-" + std::to_string(round) + ".db").c_str());
    const auto acked = kill_writer_midway(rng, 200, [&](const auto& ack) {
      StoreOptions co;
      co.on_batch_open = [] {};
      auto s = StateStore::open(db, co);
      std::mt19937 child_rng(static_cast<unsigned>(round));
      for (int32_t i = 0;;) {
        const int size = std::uniform_int_distribution<int>(1, 8)(child_rng);
        std::vector<int32_t> batch;
        for (int k = 0; k < size; ++k, ++i) {
          const std::string id = "i-" + std::to_string(i);
          s.with_transaction([&] {
            s.put_instance(new_instance(id));
            s.begin_action(id, Action::create, "req-" + std::to_string(i));
          });
          batch.push_back(i);
        }
        s.commit_batch();
        for (int32_t v : batch) ack(v);  // only after the batch's commit returned
      }
    });
    BOOST_REQUIRE(!acked.empty());
    BOOST_TEST_MESSAGE("round " << round << ": killed after " << acked.size() << " acknowledged writes");

    BOOST_TEST(raw_query_text(db, "PRAGMA integrity_check") == "ok");
    auto s = StateStore::open(db, options());
    std::set<std::string> present;
    for (auto& r : s.list_instances()) present.insert(r.id);
    for (int32_t i : acked) {
      const std::string id = "i-" + std::to_string(i);
      BOOST_TEST(present.count(id) == 1u, id << " was acknowledged but is gone");
    }
    // Beyond the acknowledged ones, at most the batch in flight (8), each
    // record with its action (never half a transaction).
    BOOST_TEST(present.size() <= acked.size() + 8);
    for (auto& id : present) BOOST_TEST(s.list_actions(id).size() == 1u, id);
  }
}

// The node usage under group commit: savepoints of a batch roll back share
// by share, sums first read inside a savepoint that rolls back are read
// again, and a batch that fails to commit leaves sums read from the file.
BOOST_AUTO_TEST_CASE(node_usage_holds_across_batches_and_a_lost_batch) {
  auto o = options();
  o.on_batch_open = [] {};
  o.vfs = apiary::test::FailingSyncVfs::name();
  auto s = StateStore::open(path(), o);
  s.node_checkin("node-1", 8, 16384, 0);
  s.commit_batch();
  s.put_instance(new_instance("a", "node-1"));
  BOOST_CHECK_THROW(s.with_transaction([&] {
    s.put_instance(new_instance("b", "node-1"));
    BOOST_TEST(s.node_usage("node-1").instances == 2u);  // first read, inside the savepoint
    throw std::runtime_error("b fails");
  }),
                    std::runtime_error);
  BOOST_TEST(s.node_usage("node-1").instances == 1u);
  BOOST_CHECK_THROW(s.with_transaction([&] {
    s.put_instance(new_instance("c", "node-1"));
    throw std::runtime_error("c fails");
  }),
                    std::runtime_error);
  BOOST_TEST(s.node_usage("node-1").instances == 1u);
  s.commit_batch();
  BOOST_TEST(s.node_usage("node-1").instances == 1u);
  s.put_instance(new_instance("d", "node-1"));
  BOOST_TEST(s.node_usage("node-1").instances == 2u);
  {
    apiary::test::FailingSyncs failing;
    expect_error(StoreErrc::commit_failed, [&] { s.commit_batch(); });
  }
  BOOST_TEST(s.node_usage("node-1").instances == 1u);  // d is not in the file this connection sees
}

// A batch whose opener fails (the controller could not schedule its flush)
// must not stay open: nobody would ever commit it.
// Reads off the writer: a reader connection sees every committed
// transaction and nothing of the writer's open batch, keeps one snapshot
// across the reads of read_snapshot, and refuses writes by name.
BOOST_AUTO_TEST_CASE(a_reader_sees_only_what_is_committed) {
  expect_error(StoreErrc::open_failed, [&] { StateStore::open_reader(path("absent.db"), options()); });
  auto o = options();
  o.on_batch_open = [] {};
  auto w = StateStore::open(path(), o);
  auto r = StateStore::open_reader(path(), options());
  BOOST_TEST(r.read_only());
  BOOST_TEST(!w.read_only());
  w.put_instance(new_instance("a"));
  BOOST_TEST(w.batch_open());
  BOOST_TEST(r.list_instances().empty());  // written, not durable: not shown
  w.commit_batch();
  BOOST_TEST(r.list_instances().size() == 1u);
  BOOST_TEST(r.get_instance("a").has_value());
  // One snapshot: a commit between two reads of the same snapshot is not seen.
  r.read_snapshot([&] {
    BOOST_TEST(r.list_instances().size() == 1u);
    w.put_instance(new_instance("b"));
    w.commit_batch();
    BOOST_TEST(r.list_instances().size() == 1u);
  });
  BOOST_TEST(r.list_instances().size() == 2u);
  auto e = expect_error(StoreErrc::read_only, [&] { r.put_instance(new_instance("c")); });
  BOOST_TEST(std::string(e.what()).find("read-only") != std::string::npos, e.what());
  BOOST_TEST(!w.get_instance("c").has_value());
  // Another schema version is refused as open() refuses it.
  w.commit_batch();
  raw_exec(path(), "UPDATE schema_version SET version = 99");
  expect_error(StoreErrc::schema_mismatch, [&] { StateStore::open_reader(path(), options()); });
}

BOOST_AUTO_TEST_CASE(a_failing_batch_opener_leaves_no_batch_open) {
  bool fail = true;
  auto o = options();
  o.on_batch_open = [&] {
    if (fail) throw std::runtime_error("no flush");
  };
  auto s = StateStore::open(path(), o);
  BOOST_CHECK_THROW(s.put_instance(new_instance("a")), std::runtime_error);
  BOOST_TEST(!s.batch_open());
  BOOST_TEST(!s.get_instance("a").has_value());
  fail = false;
  s.put_instance(new_instance("b"));
  s.commit_batch();
  BOOST_TEST(raw_query_text(path(), "SELECT group_concat(id) FROM instances") == "b");
}

BOOST_AUTO_TEST_SUITE_END()
