// Live migration on KVM, checked through what the guests themselves show:
// a counting guest (2 vCPUs) moves from one `apiary run` process to another
// and counts on without restarting; Debian's Linux, rewriting a quarter of
// its RAM in a loop, migrates (pre-copy rounds, then stop-and-copy) with its
// downtime reported, keeps its loop and shell, and the files it wrote to its
// disk before and after are in the image; a destination killed in the middle
// leaves the source running; memload, rewriting its memory at 16 MiB/s and
// checking every page it rewrites, finds its memory intact on the
// destination, and while it migrates pause, resume, reset, save and a second
// migration are refused by name; `--timeout` ends a migration still
// streaming, and the source; garbage on the migration port and a destination
// that is not there are refused by name, and the source runs on.
//
// ctest: one VM per test case
#define BOOST_TEST_MODULE migration_kvm
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>

#include "apps/run_command.hpp"
#include "proto/apiary/v1/snapshot.pb.h"
#include "tests/support/counter_output.hpp"
#include "tests/support/instance_driver.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace std::chrono_literals;

namespace {

using test::TempDir;

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

using test::consecutive_from_1;
using test::numbers_after;
// A log with stdout and stderr in one file, without the status lines that
// may land in the middle of a console line ("t[apiary] ...\nick 11").
std::string console_only(std::string out) {
  for (const char* tag : {"[apiary] ", "apiary: "}) {
    for (size_t p = out.find(tag); p != std::string::npos; p = out.find(tag, p)) {
      const size_t end = out.find('\n', p);
      out.erase(p, end == std::string::npos ? std::string::npos : end + 1 - p);
    }
  }
  return out;
}
std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}
// Waits for a spawned process; its exit status (-1 after the deadline, when it is killed).
int reap(pid_t pid, std::chrono::milliseconds d) {
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + d;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(50ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}
// The destination: `apiary run --incoming 127.0.0.1:PORT`, its output in `log`.
pid_t spawn_destination(int port, const std::string& log, const std::string& timeout_s) {
  return test::spawn_logged({APIARY_BINARY, "run", "--incoming", "127.0.0.1:" + std::to_string(port), "--timeout",
                             timeout_s},
                            log, false);
}

// An instance actor waiting for a migration on a free port of 127.0.0.1;
// its machine comes from the source.
actors::InstanceConfig destination_config(const std::string& name) {
  actors::InstanceConfig dc;
  dc.name = name;
  dc.phase_deadline = 20000ms;
  dc.incoming = std::make_shared<actors::IncomingMigration>();
  dc.incoming->listener = std::make_shared<devices::migration::Listener>("127.0.0.1", 0);
  return dc;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(migration_kvm)

BOOST_AUTO_TEST_CASE(a_counting_guest_counts_on_in_another_process) {
  TempDir dir;
  const int port = test::free_port();
  const std::string dst_log = dir.file("dst.log");
  const pid_t dst = spawn_destination(port, dst_log, "12");
  BOOST_TEST_REQUIRE(dst > 0);
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "waiting for a migration"); }, 30s));
  auto src = test::run_process({APIARY_BINARY, "run", "--guest", "spin", "--vcpus", "2", "--cmdline",
                                "iters=20000000", "--migrate-to", "127.0.0.1:" + std::to_string(port),
                                "--migrate-after", "3"},
                               "", 120s);
  BOOST_TEST_MESSAGE("source stderr:\n" << src.err);
  BOOST_TEST(src.exit_code == apps::kExitMigrated);
  BOOST_TEST(has(src.err, "apiary: migrated to 127.0.0.1:" + std::to_string(port) + ": total "), src.err);
  BOOST_TEST(has(src.err, " ms, downtime "), src.err);
  const auto before = numbers_after(src.out, "tick");
  BOOST_TEST_REQUIRE(before.size() >= 3u);
  BOOST_TEST(consecutive_from_1(before));
  // The destination runs until its --timeout: 124.
  BOOST_TEST(reap(dst, 60s) == apps::kExitTimeout);
  const std::string out = slurp(dst_log);
  BOOST_TEST_MESSAGE("destination (tail):\n" << out.substr(out.size() > 1500 ? out.size() - 1500 : 0));
  BOOST_TEST(has(out, "migration source connected"));
  // The console history came along; then the guest goes on counting: no
  // "tick 1" again, no gap, well past where the source stopped.
  const auto after = numbers_after(console_only(out), "tick");
  BOOST_TEST(consecutive_from_1(after));
  BOOST_TEST(after.size() >= before.size() + 5, before.size() << " ticks at the source, " << after.size() << " after");
}

// memload rewrites 16 MiB of its 64 MiB at 16 MiB/s (every page once a
// second, so a round's dirty pages depend on how long the round took: with
// ASan on one vCPU several rounds, 256 MiB/s did not converge there) and
// compares every page with what it wrote there before rewriting it, and
// reads the whole region back every second: a page the dirty log missed, or
// one sent stale, is seen by the guest itself.
BOOST_AUTO_TEST_CASE(a_guest_rewriting_its_memory_finds_every_page_intact_after_migration) {
  TempDir dir;
  const int port = test::free_port();
  const std::string dst_log = dir.file("dst.log");
  const pid_t dst = spawn_destination(port, dst_log, "40");  // room for a slow source (ASan, one vCPU)
  BOOST_TEST_REQUIRE(dst > 0);
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "waiting for a migration"); }, 30s));
  auto src = test::run_process({APIARY_BINARY, "run", "--kernel", test::guest_path("memload.elf"), "--memory", "64",
                                "--cmdline", "mib_per_s=16 check_every=1", "--migrate-to",
                                "127.0.0.1:" + std::to_string(port), "--migrate-after", "3", "--timeout", "60"},
                               "", 120s);
  BOOST_TEST_MESSAGE("source stderr:\n" << src.err);
  BOOST_TEST(src.exit_code == apps::kExitMigrated);
  BOOST_TEST(has(src.out, "memload: ready, 16 MiB"), src.out);
  BOOST_TEST(reap(dst, 60s) == apps::kExitTimeout);
  const std::string out = console_only(slurp(dst_log));
  BOOST_TEST_MESSAGE("destination (tail):\n" << out.substr(out.size() > 1500 ? out.size() - 1500 : 0));
  BOOST_TEST(!has(out, "corrupt"), out);
  BOOST_TEST(!has(out, "FAILED"), out);
  // The checks' positions ("pass P, page C"): the destination's history
  // holds the source's, then its own, further on.
  const auto passes = [](const std::string& text) {
    std::vector<long> v;
    const std::regex re("memload: check auto ok: [0-9]+ pages, pass ([0-9]+),");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
      v.push_back(std::stol((*it)[1]));
    return v;
  };
  const auto before = passes(src.out), after = passes(out);
  BOOST_TEST_REQUIRE(!before.empty());
  BOOST_TEST_REQUIRE(after.size() >= before.size() + 3, before.size() << " checks at the source, " << after.size()
                                                                          << " in the destination's history");
  BOOST_TEST(after.back() > before.back());
  const auto ticks = numbers_after(out, "tick");
  BOOST_TEST(consecutive_from_1(ticks));
}

BOOST_AUTO_TEST_CASE(linux_dirtying_its_memory_migrates_with_its_disk) {
  TempDir dir;
  const std::string disk = dir.file("linux.ext4");
  std::filesystem::copy_file(test::guest_path("linux-disk.ext4"), disk);
  actors::InstanceConfig c;
  c.name = "linux";
  c.machine.kernel = test::guest_image("linux-vmlinuz");
  c.machine.initrd = test::guest_image("linux-initramfs.cpio");
  c.machine.cmdline = "console=ttyS0 quiet";
  c.machine.memory_mib = 256;
  c.machine.disks.push_back({"disk0", disk, false});
  c.phase_deadline = 20000ms;
  actors::InstanceConfig dc = destination_config("linux-destination");
  const uint32_t port = dc.incoming->listener->port();

  test::InstanceDriver s(c);
  BOOST_TEST(s.call(actors::start_atom::value) == "");
  BOOST_TEST_REQUIRE(s.wait_state("boot"));
  s.attach_console();
  BOOST_TEST_REQUIRE(s.wait_output("apiary-linux: ready", 150s));
  BOOST_TEST_REQUIRE(s.wait_output("/ # ", 30s));
  s.type("echo before-migration > /mnt/before && sync && echo written-$((1+1))\n");
  BOOST_TEST_REQUIRE(s.wait_output("written-2", 30s));
  // 64 MiB of tmpfs rewritten in place over and over (each pass shifts it
  // by 64 KiB: every page changes), counting passes in /tmp/pass.
  s.type("yes $(printf %0500d 0) | dd of=/tmp/dirty bs=64k count=1024 iflag=fullblock 2>/dev/null; "
         "echo filled-$((5+5))\n");
  BOOST_TEST_REQUIRE(s.wait_output("filled-10", 120s), s.output.substr(s.output.size() > 800 ? s.output.size() - 800 : 0));
  s.type("(p=0; while :; do dd if=/tmp/dirty of=/tmp/dirty bs=64k skip=1 conv=notrunc 2>/dev/null; "
         "p=$((p+1)); echo $p > /tmp/pass; done) & echo dirtying-$((3+3))\n");
  BOOST_TEST_REQUIRE(s.wait_output("dirtying-6", 60s));
  // Migrate only once a pass has been counted: on a slow day in the nested
  // VM a pass of 64 MiB takes longer than a fixed sleep (2026-12-05: the
  // first pass was not done after 2 s, and the check on the destination
  // then had no count to compare).
  s.type("while [ ! -s /tmp/pass ]; do sleep 1; done; echo passes-$(cat /tmp/pass)-so-far\n");
  BOOST_TEST_REQUIRE(s.wait_output("-so-far", 120s), s.output.substr(s.output.size() > 800 ? s.output.size() - 800 : 0));

  test::InstanceDriver d(dc);
  BOOST_TEST(d.call(actors::start_atom::value) == "");
  std::string err = "no reply";
  v1::MigrationStats stats;
  s.self->request(s.inst, 600s, actors::migrate_atom::value, std::string("127.0.0.1"), port)
      .receive(
          [&](const std::string& bytes) {
            err.clear();
            stats.ParseFromString(bytes);
          },
          [&](caf::error& e) { err = actors::describe(e); });
  BOOST_TEST_REQUIRE(err == "");
  BOOST_TEST_MESSAGE("migration: " << stats.ShortDebugString());
  // Pre-copy sent at least the dirtied 64 MiB, and the downtime is reported.
  BOOST_TEST(stats.pages() >= 16384u);
  BOOST_TEST(stats.rounds() >= 2u);
  BOOST_TEST(stats.downtime_ms() > 0);
  BOOST_TEST(stats.total_ms() >= stats.downtime_ms());
  BOOST_TEST(stats.destination() == "127.0.0.1:" + std::to_string(port));
  // The source is gone; the destination runs the guest.
  BOOST_TEST(s.wait_state("destroy", 60s));
  BOOST_TEST_REQUIRE(d.wait_state("run", 60s));
  d.attach_console();
  // The loop runs on: another pass is counted here (however long one takes).
  d.type("p1=$(cat /tmp/pass); while [ $(cat /tmp/pass) -le $p1 ]; do sleep 1; done; echo still-dirty-$((4+4))\n");
  BOOST_TEST(d.wait_output("still-dirty-8", 120s), d.output.substr(d.output.size() > 800 ? d.output.size() - 800 : 0));
  d.type("kill %1; cat /mnt/before; echo after-migration > /mnt/after; umount /mnt && echo unmounted-$((2+2))\n");
  BOOST_TEST(d.wait_output("unmounted-4", 60s));
  BOOST_TEST(has(d.output.substr(d.output.rfind("kill %1")), "\nbefore-migration"));
  // Booted once: the only ready marker is the one in the carried history.
  BOOST_TEST(d.output.find("apiary-linux: ready") == d.output.rfind("apiary-linux: ready"));
  d.type("poweroff -f\n");
  BOOST_TEST(d.wait_state("destroy", 60s));
  auto cat = [&](const std::string& file) {
    return test::run_process({"/sbin/debugfs", "-R", "cat " + file, disk}, "", 30s).out;
  };
  BOOST_TEST(has(cat("/before"), "before-migration"));
  BOOST_TEST(has(cat("/after"), "after-migration"));
}

// While an instance migrates, what would change it under the migration is
// refused by name (pause, resume, reset, save, a second migration) and
// changes nothing: the migration goes on to the end, and memload finds its
// memory intact on the destination. The stream is held to 4 MiB/s, so the
// first round alone (its 16 MiB) lasts about 4 s.
BOOST_AUTO_TEST_CASE(a_migrating_instance_refuses_what_would_change_it_and_completes) {
  TempDir dir;
  actors::InstanceConfig c;
  c.name = "memload";
  c.machine.kernel = test::guest_image("memload.elf");
  c.machine.cmdline = "mib_per_s=1 check_every=1";  // slower than the stream: it converges
  c.machine.memory_mib = 64;
  c.phase_deadline = 20000ms;
  c.migration_policy.max_bytes_per_second = 4u << 20;
  actors::InstanceConfig dc = destination_config("memload-destination");
  const uint32_t port = dc.incoming->listener->port();

  test::InstanceDriver s(c);
  BOOST_TEST(s.call(actors::start_atom::value) == "");
  s.attach_console();
  BOOST_TEST_REQUIRE(s.wait_output("memload: check auto ok", 60s), s.output);
  test::InstanceDriver d(dc);
  BOOST_TEST(d.call(actors::start_atom::value) == "");

  auto migration = s.self->request(s.inst, 120s, actors::migrate_atom::value, std::string("127.0.0.1"), port);
  const std::string during = "during a migration to 127.0.0.1:" + std::to_string(port);
  const std::string snap = dir.file("during.snap");
  std::string save_err = "accepted";
  s.self->request(s.inst, 10s, actors::save_atom::value, snap)
      .receive([](uint64_t, uint64_t, uint64_t) {}, [&](caf::error& e) { save_err = actors::describe(e); });
  for (const auto& [what, err] : std::vector<std::pair<std::string, std::string>>{
           {"pause", s.call(actors::pause_atom::value)},
           {"resume", s.call(actors::resume_atom::value)},
           {"reset", s.call(actors::hard_reset_atom::value)},
           {"save", save_err}}) {
    BOOST_TEST(has(err, "wrong_state"), what << ": " << err);
    BOOST_TEST(has(err, "cannot " + what), what << ": " << err);
    BOOST_TEST(has(err, during), what << ": " << err);
  }
  std::string again = "accepted";
  s.self->request(s.inst, 10s, actors::migrate_atom::value, std::string("127.0.0.1"), port)
      .receive([](const std::string&) {}, [&](caf::error& e) { again = actors::describe(e); });
  BOOST_TEST(has(again, "a migration of 'memload' is under way"), again);
  BOOST_TEST(!std::filesystem::exists(snap));

  std::string err = "no reply";
  v1::MigrationStats stats;
  migration.receive(
      [&](const std::string& bytes) {
        err.clear();
        stats.ParseFromString(bytes);
      },
      [&](caf::error& e) { err = actors::describe(e); });
  BOOST_TEST_REQUIRE(err == "");
  BOOST_TEST_MESSAGE("migration: " << stats.ShortDebugString());
  BOOST_TEST(stats.total_ms() >= 3000u);  // the limit held the stream back
  BOOST_TEST(s.wait_state("destroy", 60s));
  // Pause, resume and reset never happened: the source ran until the
  // stop-and-copy (one quiesce at most) and went from there to destroy.
  BOOST_TEST(s.count_state("quiesce") <= 1u);
  BOOST_TEST(s.count_state("reboot") == 0u);
  BOOST_TEST_REQUIRE(d.wait_state("run", 60s));
  d.attach_console();
  const auto checks = [&] {
    size_t n = 0;
    for (size_t p = d.output.find("memload: check auto ok"); p != std::string::npos;
         p = d.output.find("memload: check auto ok", p + 1))
      ++n;
    return n;
  };
  const size_t carried = checks();
  BOOST_TEST(d.wait_until([&] { return checks() >= carried + 2; }, 30s), d.output);
  BOOST_TEST(!has(d.output, "corrupt"), d.output);
  BOOST_TEST(!has(d.output, "FAILED"), d.output);
  BOOST_TEST(d.output.find("memload: ready") == d.output.rfind("memload: ready"));
}

// A disk the destination does not see (its directory is an empty tmpfs in
// the destination's own mount namespace, as on another host with local
// disks) is created there and copied during the stop-and-copy; a disk it
// does see is shared (the tests above).
BOOST_AUTO_TEST_CASE(a_local_disk_is_copied_to_a_destination_without_it) {
  TempDir dir, out_dir;
  const std::string disk = dir.file("disk.img"), copy = out_dir.file("copy.img");
  { std::ofstream(disk) << std::string(64 * 1024, '\0'); }
  const int port = test::free_port();
  const std::string dst_log = out_dir.file("dst.log");
  // The demo shell's commands reach the destination once the guest runs there.
  const std::string script = "mount -t tmpfs none '" + dir.path.string() + "' && "
                             "(sleep 14; printf 'disk read 1\\ndisk write 2 after-migration\\nexit 5\\n') | '" +
                             std::string(APIARY_BINARY) + "' run --incoming 127.0.0.1:" + std::to_string(port) +
                             " --timeout 60; s=$?; cp '" + disk + "' '" + copy + "'; exit $s";
  const pid_t dst = test::spawn_logged({"/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script},
                                       dst_log, false);
  BOOST_TEST_REQUIRE(dst > 0);
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "waiting for a migration"); }, 30s), slurp(dst_log));
  auto src = test::run_process({APIARY_BINARY, "run", "--disk", disk, "--migrate-to",
                                "127.0.0.1:" + std::to_string(port), "--migrate-after", "4"},
                               "disk write 1 before-migration\n", 120s);
  BOOST_TEST_MESSAGE("source stderr:\n" << src.err);
  BOOST_TEST(src.exit_code == apps::kExitMigrated);
  BOOST_TEST(has(src.err, "KiB of disk copied"), src.err);
  BOOST_TEST(reap(dst, 90s) == 11);  // (5 << 1) | 1: the same shell answering at the destination
  const std::string out = slurp(dst_log);
  BOOST_TEST_MESSAGE("destination:\n" << out.substr(out.size() > 1500 ? out.size() - 1500 : 0));
  BOOST_TEST(has(out, ": before-migration"));
  BOOST_TEST(out.find("Apiary demo guest") == out.rfind("Apiary demo guest"));  // no second boot
  // The destination's copy has both writes; the source's file only its own.
  const std::string copied = slurp(copy), original = slurp(disk);
  BOOST_TEST_REQUIRE(copied.size() == 64u * 1024);
  BOOST_TEST(copied.substr(512, 16) == "before-migration");
  BOOST_TEST(copied.substr(1024, 15) == "after-migration");
  BOOST_TEST(original.substr(512, 16) == "before-migration");
  BOOST_TEST(original.substr(1024, 15) != "after-migration");
}

// `apiary run --timeout` bounds a migration too: one still streaming (at
// 32 KiB/s memload's 16 MiB would take minutes) when the timeout passes is
// cancelled, the source stops with status 124, and the destination never
// runs the guest.
BOOST_AUTO_TEST_CASE(a_migration_still_streaming_at_the_timeout_is_cancelled) {
  TempDir dir;
  const int port = test::free_port();
  const std::string dst_log = dir.file("dst.log"), src_log = dir.file("src.log");
  const pid_t dst = spawn_destination(port, dst_log, "60");
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "waiting for a migration"); }, 30s));
  const auto start = std::chrono::steady_clock::now();
  // memload's 16 MiB of pattern at 32 KiB/s: over eight minutes of stream.
  const pid_t src = test::spawn_logged({APIARY_BINARY, "run", "--kernel", test::guest_path("memload.elf"), "--memory",
                                        "64", "--migrate-to", "127.0.0.1:" + std::to_string(port), "--migrate-after",
                                        "2", "--migrate-kib-per-s", "32", "--timeout", "10"},
                                       src_log, false);
  BOOST_TEST(reap(src, 60s) == apps::kExitTimeout);
  const auto took = std::chrono::steady_clock::now() - start;
  BOOST_TEST(took < 40s, std::chrono::duration_cast<std::chrono::seconds>(took).count() << " s");
  const std::string out = slurp(src_log);
  BOOST_TEST_MESSAGE("source (tail):\n" << out.substr(out.size() > 1500 ? out.size() - 1500 : 0));
  BOOST_TEST(has(out, "apiary: migration not done when --timeout passed; stopping the VM"), out);
  // The destination saw the source go; it never ran the guest: no tick.
  const std::string dst_out = slurp(dst_log);
  ::kill(dst, SIGKILL);
  reap(dst, 10s);
  BOOST_TEST_MESSAGE("destination:\n" << dst_out);
  BOOST_TEST(numbers_after(console_only(dst_out), "tick").empty(), dst_out);
}

BOOST_AUTO_TEST_CASE(killing_the_destination_leaves_the_source_running) {
  TempDir dir;
  const int port = test::free_port();
  const std::string dst_log = dir.file("dst.log"), src_log = dir.file("src.log");
  const pid_t dst = spawn_destination(port, dst_log, "60");
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "waiting for a migration"); }, 30s));
  // 32 KiB/s: the migration takes long enough to be interrupted.
  const pid_t src = test::spawn_logged({APIARY_BINARY, "run", "--guest", "spin", "--cmdline", "iters=20000000",
                                        "--migrate-to", "127.0.0.1:" + std::to_string(port), "--migrate-after", "2",
                                        "--migrate-kib-per-s", "32", "--timeout", "20"},
                                       src_log, false);
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "migration source connected"); }, 30s));
  ::kill(dst, SIGKILL);
  BOOST_TEST(reap(dst, 10s) == -SIGKILL);
  const size_t ticks_at_kill = numbers_after(console_only(slurp(src_log)), "tick").size();
  // The source says why, resumes, and runs until its --timeout.
  BOOST_TEST(reap(src, 60s) == apps::kExitTimeout);
  const std::string out = slurp(src_log);
  BOOST_TEST_MESSAGE("source (tail):\n" << out.substr(out.size() > 1500 ? out.size() - 1500 : 0));
  BOOST_TEST(has(out, "apiary: migration failed: migrate_failed: migration_"), out.substr(0, 2000));
  BOOST_TEST(has(out, "the VM continues"));
  const auto ticks = numbers_after(console_only(out), "tick");
  BOOST_TEST(consecutive_from_1(ticks));
  BOOST_TEST(ticks.size() >= ticks_at_kill + 3, ticks_at_kill << " ticks at the kill, " << ticks.size() << " at the end");
}

BOOST_AUTO_TEST_CASE(garbage_and_absent_peers_are_refused_by_name) {
  TempDir dir;
  // Garbage on the destination's port: refused as migration_protocol, and
  // the destination ends without running anything.
  const int port = test::free_port();
  const std::string dst_log = dir.file("dst.log");
  const pid_t dst = spawn_destination(port, dst_log, "30");
  BOOST_TEST_REQUIRE(wait_for([&] { return has(slurp(dst_log), "waiting for a migration"); }, 30s));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  const std::string junk = "GET / HTTP/1.0\r\n\r\n";
  BOOST_TEST(::write(fd, junk.data(), junk.size()) == static_cast<ssize_t>(junk.size()));
  BOOST_TEST(reap(dst, 30s) == apps::kExitBadSpec);
  ::close(fd);
  BOOST_TEST(has(slurp(dst_log), "migration_protocol"), slurp(dst_log));

  // Nobody listening: migration_unreachable, and the VM runs on.
  auto src = test::run_process({APIARY_BINARY, "run", "--guest", "spin", "--cmdline", "iters=20000000",
                                "--migrate-to", "127.0.0.1:" + std::to_string(test::free_port()), "--migrate-after",
                                "1", "--timeout", "5"},
                               "", 60s);
  BOOST_TEST(src.exit_code == apps::kExitTimeout);
  BOOST_TEST(has(src.err, "apiary: migration failed: migrate_failed: migration_unreachable"), src.err);
  BOOST_TEST(consecutive_from_1(numbers_after(src.out, "tick")));

  // Bad command lines are usage errors.
  auto bad = test::run_process({APIARY_BINARY, "run", "--incoming", "127.0.0.1:0", "--guest", "spin"}, "", 30s);
  BOOST_TEST(bad.exit_code == apps::kExitUsage);
  BOOST_TEST(has(bad.err, "--incoming takes the whole machine from the migration source"));
  bad = test::run_process({APIARY_BINARY, "run", "--migrate-to", "nowhere"}, "", 30s);
  BOOST_TEST(bad.exit_code == apps::kExitUsage);
}

BOOST_AUTO_TEST_SUITE_END()
