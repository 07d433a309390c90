// Save and restore on KVM, checked through what the guests themselves show:
// a counting guest counts on from where it was saved instead of starting
// again (1 and 2 vCPUs); the demo guest's shell session, its disk and its
// rng carry on after a restore; Debian's Linux keeps running a shell loop
// that sleeps on its timers and finds the files it wrote; the instance
// actor refuses to save a running VM, resumes the source after a save
// (and after a failed one); damaged files are refused by name.
//
// ctest: one VM per test case
#define BOOST_TEST_MODULE snapshot_kvm
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include "apps/run_command.hpp"
#include "devices/machine_snapshot.hpp"
#include "tests/support/counter_output.hpp"
#include "tests/support/instance_driver.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

using test::TempDir;

test::ProcessResult apiary_run(std::vector<std::string> args, const std::string& input = {},
                               std::chrono::seconds deadline = 120s) {
  args.insert(args.begin(), {APIARY_BINARY, "run"});
  auto r = test::run_process(args, input, deadline);
  BOOST_TEST_MESSAGE("stdout (tail):\n" << r.out.substr(r.out.size() > 2000 ? r.out.size() - 2000 : 0)
                                        << "\nstderr:\n" << r.err);
  BOOST_TEST(!r.timed_out);
  return r;
}
bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

using test::consecutive_from_1;
using test::numbers_after;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void counter_survives(const std::string& vcpus) {
  TempDir dir;
  const std::string snap = dir.file("spin.snap");
  auto r = apiary_run({"--guest", "spin", "--vcpus", vcpus, "--cmdline", "iters=20000000", "--save", snap,
                       "--save-after", "3"});
  BOOST_TEST(r.exit_code == apps::kExitSaved);
  BOOST_TEST(has(r.err, "saved to " + snap));
  const auto before = numbers_after(r.out, "tick");
  BOOST_TEST_REQUIRE(before.size() >= 3u);
  BOOST_TEST(consecutive_from_1(before));

  auto s = apiary_run({"--restore", snap, "--timeout", "3"});
  BOOST_TEST(s.exit_code == apps::kExitTimeout);
  BOOST_TEST(has(s.err, "restored 'run' (" + vcpus + " vCPU, 64 MiB) from " + snap));
  // The console shows the saved history, then the guest goes on counting:
  // no "tick 1" again, no gap, and well past where it was saved.
  const auto after = numbers_after(s.out, "tick");
  BOOST_TEST(consecutive_from_1(after), "restored output: " << s.out.substr(0, 400));
  BOOST_TEST(after.size() >= before.size() + 5, before.size() << " ticks before, " << after.size() << " after");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(snapshot_kvm)

BOOST_AUTO_TEST_CASE(a_counting_guest_counts_on_after_restore) { counter_survives("1"); }

BOOST_AUTO_TEST_CASE(a_two_vcpu_guest_counts_on_after_restore) { counter_survives("2"); }

BOOST_AUTO_TEST_CASE(the_demo_session_its_disk_and_rng_carry_on) {
  TempDir dir;
  const std::string disk = dir.file("disk.img"), snap = dir.file("demo.snap");
  { std::ofstream(disk) << std::string(64 * 1024, '\0'); }
  auto r = apiary_run({"--disk", disk, "--rng", "--save", snap, "--save-after", "4"},
                      "disk write 1 before-save\nrng 4\n");
  BOOST_TEST(r.exit_code == apps::kExitSaved);
  BOOST_TEST(has(r.out, "rng: "));
  auto s = apiary_run({"--restore", snap}, "disk read 1\ndisk write 2 after-restore\nrng 8\ninfo\nexit 5\n");
  BOOST_TEST(s.exit_code == 11);  // (5 << 1) | 1: the same shell, answering
  BOOST_TEST(has(s.out, ": before-save"));
  // The banner once (in the saved history): the guest did not boot again.
  BOOST_TEST(s.out.find("Apiary demo guest") == s.out.rfind("Apiary demo guest"));
  BOOST_TEST_REQUIRE(has(s.out, "rng 8"));
  BOOST_TEST(has(s.out.substr(s.out.find("rng 8")), "rng: "));
  BOOST_TEST(has(s.out, "memory: 64 MiB"));
  const std::string content = slurp(disk);
  BOOST_TEST(content.substr(512, 11) == "before-save");
  BOOST_TEST(content.substr(1024, 13) == "after-restore");
}

BOOST_AUTO_TEST_CASE(linux_keeps_running_and_finds_its_files) {
  TempDir dir;
  const std::string disk = dir.file("linux.ext4"), snap = dir.file("linux.snap");
  std::filesystem::copy_file(test::guest_path("linux-disk.ext4"), disk);
  actors::InstanceConfig c;
  c.name = "linux";
  c.machine.kernel = test::guest_image("linux-vmlinuz");
  c.machine.initrd = test::guest_image("linux-initramfs.cpio");
  c.machine.cmdline = "console=ttyS0 quiet";
  c.machine.memory_mib = 256;
  c.machine.disks.push_back({"disk0", disk, false});
  c.phase_deadline = 20000ms;
  long saved_at = 0;
  {
    test::InstanceDriver d(c);
    BOOST_TEST(d.call(actors::start_atom::value) == "");
    BOOST_TEST_REQUIRE(d.wait_state("boot"));
    d.attach_console();
    BOOST_TEST_REQUIRE(d.wait_output("apiary-linux: ready", 150s));
    BOOST_TEST_REQUIRE(d.wait_output("/ # ", 30s));
    // The guest's rc mounted the disk on /mnt. Markers are computed by the
    // shell ($((...))) so that the echo of the typed line never matches.
    d.type("echo before-save > /mnt/before && sync && echo written-$((1+1))\n");
    BOOST_TEST_REQUIRE(d.wait_output("written-2", 30s));
    // The counting loop sleeps on the guest's timers: a restore that lost
    // the LAPIC timer or the clock would leave it asleep for good. It runs
    // in the background so that the restored shell still reads commands.
    d.type("(i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo count $i; sleep 0.1; done) &\n");
    BOOST_TEST_REQUIRE(d.wait_output("count 5\r\n", 30s));
    BOOST_TEST(d.call(actors::pause_atom::value) == "");
    BOOST_TEST_REQUIRE(d.wait_state("quiesce"));
    std::string err = "no reply";
    d.self->request(d.inst, 120s, actors::save_atom::value, snap)
        .receive([&](uint64_t, uint64_t, uint64_t) { err.clear(); }, [&](caf::error& e) { err = actors::describe(e); });
    BOOST_TEST_REQUIRE(err == "");
    d.wait_until([] { return false; }, 300ms);
    saved_at = numbers_after(d.output, "count").back();
    BOOST_TEST(d.call(actors::poweroff_atom::value) == "");  // the source is gone, as after a suspend
    BOOST_TEST(d.wait_state("destroy"));
  }
  actors::InstanceConfig rc;
  rc.name = "linux-restored";
  rc.machine = devices::snapshot::restore_config(devices::snapshot::read_header(snap));
  rc.phase_deadline = 20000ms;
  test::InstanceDriver r(rc);
  BOOST_TEST(r.call(actors::start_atom::value) == "");
  BOOST_TEST_REQUIRE(r.wait_state("boot"));
  r.attach_console();
  // It counts on from where it was saved, with no gap and no restart.
  BOOST_TEST_REQUIRE(r.wait_output("count " + std::to_string(saved_at + 20) + "\r\n", 60s));
  BOOST_TEST(consecutive_from_1(numbers_after(r.output, "count")));
  r.type("kill $!; cat /mnt/before; echo after-restore > /mnt/after; umount /mnt && echo unmounted-$((2+2))\n");
  BOOST_TEST(r.wait_output("unmounted-4", 30s));
  BOOST_TEST(has(r.output.substr(r.output.rfind("kill $!")), "\nbefore-save"), r.output.substr(r.output.rfind("kill $!")));
  // Booted once: the only ready marker is the one in the saved history.
  BOOST_TEST(r.output.find("apiary-linux: ready") == r.output.rfind("apiary-linux: ready"));
  r.type("poweroff -f\n");
  BOOST_TEST(r.wait_state("destroy", 60s));
  // The bytes on disk, read on the host.
  auto cat = [&](const std::string& file) {
    return test::run_process({"/sbin/debugfs", "-R", "cat " + file, disk}, "", 30s).out;
  };
  BOOST_TEST(has(cat("/before"), "before-save"));
  BOOST_TEST(has(cat("/after"), "after-restore"));
}

BOOST_AUTO_TEST_CASE(the_instance_actor_saves_only_when_paused_and_the_source_resumes) {
  TempDir dir;
  actors::InstanceConfig c;
  c.name = "saver";
  c.machine.kernel = test::guest_image("spin.elf");
  c.machine.cmdline = "iters=20000000";
  c.machine.memory_mib = 32;
  c.phase_deadline = 10000ms;
  test::InstanceDriver d(c);
  BOOST_TEST(d.call(actors::start_atom::value) == "");
  BOOST_TEST(d.wait_state("boot"));
  d.attach_console();
  BOOST_TEST(d.wait_output("tick 2\r\n"));
  auto save = [&](const std::string& path) {
    std::string err;
    uint64_t bytes = 0;
    d.self->request(d.inst, 60s, actors::save_atom::value, path)
        .receive([&](uint64_t b, uint64_t, uint64_t) { bytes = b; }, [&](caf::error& e) { err = actors::describe(e); });
    return std::make_pair(bytes, err);
  };
  // Running: refused, nothing written.
  auto [b0, e0] = save(dir.file("running.snap"));
  BOOST_TEST(has(e0, "wrong_state"), e0);
  BOOST_TEST(!std::filesystem::exists(dir.file("running.snap")));
  BOOST_TEST(d.call(actors::pause_atom::value) == "");
  BOOST_TEST(d.wait_state("quiesce"));
  // A save that fails is named and leaves the instance paused, able to resume.
  auto [b1, e1] = save("/nonexistent/dir/x.snap");
  BOOST_TEST(has(e1, "save_failed: file_unwritable"), e1);
  auto [b2, e2] = save(dir.file("paused.snap"));
  BOOST_TEST(e2 == "");
  BOOST_TEST(b2 == std::filesystem::file_size(dir.file("paused.snap")));
  d.wait_until([] { return false; }, 300ms);
  const long at_save = numbers_after(d.output, "tick").back();
  BOOST_TEST(d.call(actors::resume_atom::value) == "");
  BOOST_TEST(d.wait_state("run"));
  BOOST_TEST(d.wait_output("tick " + std::to_string(at_save + 2) + "\r\n"));
  BOOST_TEST(d.call(actors::poweroff_atom::value) == "");
  BOOST_TEST(d.wait_state("destroy"));

  // A second instance from the file continues from the saved tick.
  actors::InstanceConfig rc;
  rc.name = "restored";
  rc.machine = devices::snapshot::restore_config(devices::snapshot::read_header(dir.file("paused.snap")));
  rc.phase_deadline = 10000ms;
  test::InstanceDriver r(rc);
  BOOST_TEST(r.call(actors::start_atom::value) == "");
  BOOST_TEST(r.wait_state("boot"));
  r.attach_console();
  BOOST_TEST(r.wait_output("tick " + std::to_string(at_save + 2) + "\r\n"));
  BOOST_TEST(consecutive_from_1(numbers_after(r.output, "tick")));
  BOOST_TEST(r.call(actors::poweroff_atom::value) == "");
  BOOST_TEST(r.wait_state("destroy"));
}

BOOST_AUTO_TEST_CASE(damaged_snapshots_are_refused_by_name) {
  TempDir dir;
  const std::string snap = dir.file("spin.snap");
  auto r = apiary_run({"--guest", "spin", "--cmdline", "iters=20000000", "--save", snap, "--save-after", "1"});
  BOOST_TEST_REQUIRE(r.exit_code == apps::kExitSaved);
  const std::string good = slurp(snap);
  const std::string bad = dir.file("bad.snap");
  auto refused = [&](const std::string& bytes, const std::string& name) {
    std::ofstream(bad, std::ios::binary) << bytes;
    auto s = apiary_run({"--restore", bad, "--timeout", "5"});
    BOOST_TEST(s.exit_code == apps::kExitBadSpec, name);
    BOOST_TEST(has(s.err, name), s.err);
    BOOST_TEST(!has(s.out, "tick"));  // nothing ran
  };
  std::string flipped = good;
  flipped[good.size() - 4096] ^= 0x40;
  refused(flipped, "snapshot_corrupt");
  refused(good.substr(0, good.size() - 5000), "snapshot_truncated");
  std::string v9 = good;
  v9[8] = 9;
  refused(v9, "snapshot_version");
  auto s = apiary_run({"--restore", dir.file("missing.snap")});
  BOOST_TEST(s.exit_code == apps::kExitBadSpec);
  BOOST_TEST(has(s.err, "file_not_found"));
  s = apiary_run({"--restore", snap, "--guest", "demo"});
  BOOST_TEST(s.exit_code == apps::kExitUsage);
  s = apiary_run({"--save-after", "3"});
  BOOST_TEST(s.exit_code == apps::kExitUsage);
}

BOOST_AUTO_TEST_SUITE_END()
