// Snapshots without KVM: every device's state survives export -> import ->
// export (devices driven into non-trivial states through their ports, as a
// guest would), a restored virtio queue goes on serving from where it was,
// bad device states are refused by name; and the file layer (header, RAM
// with zero pages skipped, checksum) round-trips and refuses corrupt,
// truncated, foreign-version and foreign-board files. The KVM half (vCPUs,
// irqchip, a guest that keeps running) is tests/kvm/test_snapshot_kvm.cpp.
#define BOOST_TEST_MODULE snapshot
#include <boost/test/unit_test.hpp>

#include <google/protobuf/util/message_differencer.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "devices/machine.hpp"
#include "devices/machine_snapshot.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/virtio_driver.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using vmm::AddressSpace;
using vmm::Errc;

namespace {

using test::TempDir;

devices::MachineConfig sim_config(const std::string& disk) {
  devices::MachineConfig c;
  c.memory_mib = 16;
  c.kernel = test::guest_image("hello.elf");
  c.backend = devices::VcpuBackendKind::simulated;
  c.disks.push_back({"d0", disk, false});
  c.rng = true;
  c.pc_testdev = true;
  return c;
}

void out(devices::Machine& m, uint16_t port, uint8_t v) { m.bus().write(AddressSpace::pio, port, 1, v); }
uint8_t in(devices::Machine& m, uint16_t port) {
  uint64_t v = 0;
  m.bus().read(AddressSpace::pio, port, 1, v);
  return static_cast<uint8_t>(v);
}

// Guest-visible state only: counters are per-process statistics, and the
// RTC's time registers are the host's clock read now (what is saved is the
// guest's offset from it, compared as clock_offset_seconds).
v1::DeviceState without_counters(v1::DeviceState s) {
  s.clear_counters();
  if (s.kind() == "cmos-rtc" || s.device() == "rtc")
    for (const char* r : {"seconds", "minutes", "hours", "day_of_week", "day_of_month", "month", "year", "century"})
      s.mutable_registers()->erase(r);
  return s;
}

std::map<std::string, v1::DeviceState> states(devices::Machine& m) {
  std::map<std::string, v1::DeviceState> out;
  for (devices::Device* d : m.devices()) out[d->name()] = without_counters(d->export_state());
  return out;
}

std::optional<Errc> failure(const std::function<void()>& f, std::string& what) {
  try {
    f();
  } catch (const vmm::Error& e) {
    what = e.what();
    return e.code();
  }
  return std::nullopt;
}

constexpr uint64_t kRing = 0x100000, kBuf = 0x120000;
constexpr uint64_t kVersion1 = 1ull << devices::virtio::kFeatureVersion1;

// Drives every device of `m` away from its power-on state.
void exercise(devices::Machine& m, test::VirtioDriver& rng) {
  using namespace layout;
  out(m, kCom1Base + 3, 0x83);  // DLAB: divisor 12
  out(m, kCom1Base + 0, 12);
  out(m, kCom1Base + 3, 0x03);  // 8N1
  out(m, kCom1Base + 7, 0x5a);  // scratch
  out(m, kCom1Base + 2, 0x01);  // FIFO on
  out(m, kCom1Base + 1, 0x01);  // RX interrupt
  const uint8_t typed[] = {'h', 'i', '!'};
  m.com1().input(typed);
  out(m, kI8042Command, 0x60);  // write the configuration byte
  out(m, kI8042Data, 0x45);
  out(m, kI8042Command, 0x20);  // read it back: a reply waits in the output buffer
  out(m, kRtcIndex, 0x0f);      // CMOS shutdown status byte
  out(m, kRtcData, 0x0a);
  out(m, kRtcIndex, 0x35);      // leave an odd index selected
  m.bus().write(AddressSpace::pio, kAcpiPm1aEvt + 2, 2, 0x0100);  // PWRBTN_EN
  m.bus().write(AddressSpace::pio, kFwCfgSelector, 2, 0x0000);      // signature, partly read
  in(m, kFwCfgData);
  in(m, kFwCfgData);
  m.bus().write(AddressSpace::pio, kPciConfigAddress, 4, 0x80000008);
  out(m, kPostPort, 0x42);
  m.bus().write(AddressSpace::pio, kPcTestdevIoport, 4, 0xdeadbeef);
  m.bus().write(AddressSpace::mmio, kPcTestdevIomem + 16, 4, 0x12345678);
  // virtio-rng: a live queue with one request served.
  BOOST_REQUIRE(rng.negotiate(kVersion1));
  BOOST_REQUIRE(rng.setup_queue(0, 8, kRing));
  BOOST_REQUIRE(rng.driver_ok());
  rng.post(0, 0, {{kBuf, 64, true}});
  rng.kick(0);
  test::VirtioDriver::UsedElem e{};
  BOOST_REQUIRE(rng.next_used(0, e));
}

struct TwoMachines {
  TempDir dir;
  std::string disk = dir.file("disk.img");
  std::unique_ptr<devices::Machine> a, b;
  TwoMachines() {
    std::ofstream(disk, std::ios::binary) << std::string(1 << 20, '\0');
    a = std::make_unique<devices::Machine>(sim_config(disk));
    b = std::make_unique<devices::Machine>(sim_config(disk));
  }
  devices::VirtioMmio& rng(devices::Machine& m) { return *m.virtio().back(); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(every_device_round_trips_its_state) {
  TwoMachines t;
  test::VirtioDriver driver(t.a->memory(), t.rng(*t.a));
  exercise(*t.a, driver);
  const auto saved = states(*t.a);
  // RAM first, as a restore does: a live virtqueue is checked against the
  // rings in it (with empty RAM the queue would rightly be found broken).
  std::vector<uint8_t> ram(t.a->memory().size());
  t.a->memory().read(0, ram);
  t.b->memory().write(0, ram);
  for (devices::Device* d : t.b->devices()) d->import_state(saved.at(d->name()));
  const auto restored = states(*t.b);
  BOOST_TEST(saved.size() == restored.size());
  for (const auto& [name, s] : saved) {
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    BOOST_TEST(d.Compare(s, restored.at(name)), name << ": " << diff);
  }
  // And they were not just equal at power-on: the exercise changed them.
  devices::Machine fresh(sim_config(t.disk));
  const auto power_on = states(fresh);
  for (const char* name : {"com1", "i8042", "rtc", "acpi-pm", "fw-cfg", "pci-host", "post", "pc-testdev", "virtio-rng"}) {
    BOOST_TEST(!google::protobuf::util::MessageDifferencer::Equals(power_on.at(name), saved.at(name)), name);
  }
}

BOOST_AUTO_TEST_CASE(restored_devices_carry_on_where_they_were) {
  TwoMachines t;
  test::VirtioDriver driver(t.a->memory(), t.rng(*t.a));
  exercise(*t.a, driver);
  // Guest RAM travels with the snapshot; here it is copied by hand.
  std::vector<uint8_t> ram(t.a->memory().size());
  t.a->memory().read(0, ram);
  t.b->memory().write(0, ram);
  for (devices::Device* d : t.a->devices())
    for (devices::Device* e : t.b->devices())
      if (e->name() == d->name()) e->import_state(d->export_state());
  // The UART still holds the typed bytes, in order, with its divisor.
  BOOST_TEST(in(*t.b, layout::kCom1Base + 0) == 'h');
  BOOST_TEST(in(*t.b, layout::kCom1Base + 0) == 'i');
  out(*t.b, layout::kCom1Base + 3, 0x83);
  BOOST_TEST(in(*t.b, layout::kCom1Base + 0) == 12);
  out(*t.b, layout::kCom1Base + 3, 0x03);
  BOOST_TEST(in(*t.b, layout::kCom1Base + 0) == '!');
  // The i8042's pending reply is the configuration byte written before.
  BOOST_TEST((in(*t.b, layout::kI8042Command) & 0x01) == 1);
  BOOST_TEST(in(*t.b, layout::kI8042Data) == 0x45);
  // The rng queue goes on: the next request is served into the next used slot.
  test::VirtioDriver driver_b(t.b->memory(), t.rng(*t.b));
  driver_b.adopt(driver);
  driver_b.post(0, 1, {{kBuf + 64, 32, true}});
  driver_b.kick(0);
  test::VirtioDriver::UsedElem e{};
  BOOST_REQUIRE(driver_b.next_used(0, e));
  BOOST_TEST(e.id == 1u);
  BOOST_TEST(e.len == 32u);
  BOOST_TEST(driver_b.used_idx(0) == 2);
}

BOOST_AUTO_TEST_CASE(bad_device_states_are_refused_by_name) {
  TwoMachines t;
  auto& com1 = t.b->com1();
  std::string what;
  // Another device's state.
  auto i8042 = t.a->i8042().export_state();
  BOOST_TEST((failure([&] { com1.import_state(i8042); }, what) == Errc::snapshot_corrupt), what);
  BOOST_TEST(what.find("com1") != std::string::npos, what);
  // A register missing, or out of range.
  auto s = t.a->com1().export_state();
  s.mutable_registers()->erase("lcr");
  BOOST_TEST((failure([&] { com1.import_state(s); }, what) == Errc::snapshot_corrupt), what);
  BOOST_TEST(what.find("'lcr'") != std::string::npos, what);
  s = t.a->com1().export_state();
  (*s.mutable_registers())["divisor"] = 1u << 20;
  BOOST_TEST((failure([&] { com1.import_state(s); }, what) == Errc::snapshot_corrupt), what);
  // A FIFO larger than the UART has, or private state cut short.
  s = t.a->com1().export_state();
  devices::OpaqueWriter w;
  w.bytes(std::string(64, 'x'));
  w.bytes(std::string());
  s.set_opaque(w.take());
  BOOST_TEST((failure([&] { com1.import_state(s); }, what) == Errc::snapshot_corrupt), what);
  s.set_opaque(std::string("\x05\x00", 2));
  BOOST_TEST((failure([&] { com1.import_state(s); }, what) == Errc::snapshot_corrupt), what);
  // Keyboard-controller queues longer than the controller keeps (16 bytes of
  // replies, 256 of scancodes): refused, not taken beyond the device's bound.
  auto kbd = t.a->i8042().export_state();
  for (size_t which = 0; which < 3; ++which) {
    devices::OpaqueWriter kw;
    kw.bytes(std::string(devices::i8042::kRamSize, '\0'));
    for (size_t q = 0; q < 3; ++q) kw.bytes(std::string(q == which ? (q == 2 ? 257 : 17) : 0, 'k'));
    kbd.set_opaque(kw.take());
    BOOST_TEST((failure([&] { t.b->i8042().import_state(kbd); }, what) == Errc::snapshot_corrupt), what);
  }
  // CMOS RAM of the wrong size.
  auto rtc = t.a->rtc().export_state();
  rtc.set_opaque("short");
  BOOST_TEST((failure([&] { t.b->rtc().import_state(rtc); }, what) == Errc::snapshot_corrupt), what);
  // A virtio queue whose rings lie outside guest RAM, and a state for a
  // device with other features.
  test::VirtioDriver driver(t.a->memory(), t.rng(*t.a));
  exercise(*t.a, driver);
  auto v = t.rng(*t.a).export_state();
  (*v.mutable_registers())["q0.desc"] = 1ull << 40;
  BOOST_TEST((failure([&] { t.rng(*t.b).import_state(v); }, what) == Errc::snapshot_corrupt), what);
  BOOST_TEST(what.find("desc_table_out_of_range") != std::string::npos, what);
  v = t.rng(*t.a).export_state();
  (*v.mutable_registers())["device_features"] = 0;
  BOOST_TEST((failure([&] { t.rng(*t.b).import_state(v); }, what) == Errc::snapshot_corrupt), what);
}

// ------------------------------------------------------------ the file --

namespace {

v1::MachineSnapshot header_for(uint64_t memory_bytes) {
  v1::MachineSnapshot s;
  s.set_board(devices::snapshot::board_name());
  s.set_instance("unit");
  auto& m = *s.mutable_machine();
  m.set_vcpus(1);
  m.set_memory_bytes(memory_bytes);
  m.set_kernel("kernel bytes");
  s.add_vcpus()->set_id(0);
  return s;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void spit(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

struct SavedFile {
  TempDir dir;
  std::string path = dir.file("vm.snap");
  vmm::GuestMemory mem{32ull << 20};
  devices::snapshot::SaveStats stats;
  SavedFile() {
    // A few non-zero pages far apart, a touched page that is all zeros, and
    // the rest never touched.
    mem.fill(0x1000, 4096, 0xaa);
    mem.fill(0x2000, 4096, 0x00);
    mem.write(0x7ff000, std::string_view("end of a run"));
    mem.fill(0x1fff000, 4096, 0x55);
    stats = devices::snapshot::write_file(path, header_for(mem.size()), mem);
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(the_file_round_trips_and_skips_zero_pages) {
  SavedFile f;
  BOOST_TEST(f.stats.pages_written == 3u);
  BOOST_TEST(f.stats.pages_skipped == (32ull << 20) / 4096 - 3);
  BOOST_TEST(std::filesystem::file_size(f.path) == f.stats.file_bytes);
  BOOST_TEST(f.stats.file_bytes < 4 * 4096 + 1024);
  BOOST_TEST(!std::filesystem::exists(f.path + ".partial"));
  auto h = devices::snapshot::read_header(f.path);
  BOOST_TEST(h->state.instance() == "unit");
  vmm::GuestMemory back(32ull << 20);
  devices::snapshot::read_memory(*h, back);
  std::vector<uint8_t> a(f.mem.size()), b(back.size());
  f.mem.read(0, a);
  back.read(0, b);
  BOOST_TEST((a == b));
}

BOOST_AUTO_TEST_CASE(corrupt_truncated_and_foreign_files_are_refused) {
  SavedFile f;
  const std::string good = slurp(f.path);
  const std::string bad = f.dir.file("bad.snap");
  std::string what;
  auto load = [&](const std::string& bytes) {
    spit(bad, bytes);
    return failure(
        [&] {
          auto h = devices::snapshot::read_header(bad);
          vmm::GuestMemory mem(32ull << 20);
          devices::snapshot::read_memory(*h, mem);
        },
        what);
  };
  BOOST_TEST(!load(good).has_value(), what);
  // Not a snapshot at all.
  BOOST_TEST((load("hello, world") == Errc::snapshot_truncated), what);
  BOOST_TEST((load(std::string(64, 'x')) == Errc::snapshot_corrupt), what);
  // Every truncation is named as one, wherever the file ends.
  for (size_t cut : {size_t{10}, size_t{17}, good.size() / 2, good.size() - 13, good.size() - 1})
    BOOST_TEST((load(good.substr(0, cut)) == Errc::snapshot_truncated), "cut at " << cut << ": " << what);
  // A header length far beyond the file: refused before anything is
  // allocated for it.
  std::string huge = good.substr(0, 16);
  huge[12] = 0, huge[13] = 0, huge[14] = 0, huge[15] = 0x10;  // 256 MiB
  BOOST_TEST((load(huge + "x") == Errc::snapshot_truncated), what);
  huge[15] = 0x7f;  // above kMaxHeaderBytes
  BOOST_TEST((load(huge + "x") == Errc::snapshot_corrupt), what);
  // One byte changed in guest memory: the checksum catches it.
  std::string flipped = good;
  flipped[good.size() - 100] ^= 0x01;
  BOOST_TEST((load(flipped) == Errc::snapshot_corrupt), what);
  BOOST_TEST(what.find("checksum") != std::string::npos, what);
  // Bytes after the trailer.
  BOOST_TEST((load(good + "x") == Errc::snapshot_corrupt), what);
  // Another format version.
  std::string v2 = good;
  v2[8] = 2;
  BOOST_TEST((load(v2) == Errc::snapshot_version), what);
  // Another board.
  auto foreign = header_for(32ull << 20);
  foreign.set_board("apiary-pc/999/x86_64-kvm");
  devices::snapshot::write_file(bad, foreign, f.mem);
  BOOST_TEST((failure([&] { devices::snapshot::read_header(bad); }, what) == Errc::snapshot_board), what);
  // A header that does not parse, or describes an impossible machine.
  std::string garbage = good;
  for (size_t i = 16; i < 40; ++i) garbage[i] = '\xff';
  BOOST_TEST((load(garbage) == Errc::snapshot_corrupt), what);
  auto no_vcpus = header_for(32ull << 20);
  no_vcpus.clear_vcpus();
  devices::snapshot::write_file(bad, no_vcpus, f.mem);
  BOOST_TEST((failure([&] { devices::snapshot::read_header(bad); }, what) == Errc::snapshot_corrupt), what);
  // RAM of another size.
  auto h = devices::snapshot::read_header(f.path);
  vmm::GuestMemory small(16ull << 20);
  BOOST_TEST((failure([&] { devices::snapshot::read_memory(*h, small); }, what) == Errc::snapshot_board), what);
  // Missing and unwritable files.
  BOOST_TEST((failure([&] { devices::snapshot::read_header(f.dir.file("none")); }, what) == Errc::file_not_found), what);
  BOOST_TEST((failure([&] { devices::snapshot::write_file("/nonexistent/dir/x.snap", header_for(1 << 20), f.mem); },
                      what) == Errc::file_unwritable),
             what);
}

// Nothing of a simulated machine touches its RAM until a device does:
// the mapping is made then (GuestMemory::Backing::on_first_use).
BOOST_AUTO_TEST_CASE(a_simulated_machine_maps_its_ram_only_when_used) {
  TwoMachines t;
  BOOST_TEST(!t.a->memory().mapped());
  t.a->memory().write(0x2000, std::string_view("ram"));
  BOOST_TEST(t.a->memory().mapped());
  std::array<uint8_t, 3> back{};
  t.a->memory().read(0x2000, back);
  BOOST_TEST(std::string(back.begin(), back.end()) == "ram");
  BOOST_TEST(!t.b->memory().mapped());
}

BOOST_AUTO_TEST_CASE(a_simulated_machine_has_no_state_to_save) {
  TwoMachines t;
  std::string what;
  BOOST_TEST((failure([&] { devices::snapshot::save(*t.a, t.dir.file("x.snap"), "sim"); }, what) ==
              Errc::snapshot_unsupported),
             what);
  BOOST_TEST(!std::filesystem::exists(t.dir.file("x.snap")));
}
