// Each platform device exercised by a real guest on KVM, asserting on what
// the guest reports over COM1 (or its debug-exit status) and, where the
// device has a host side, on what the host saw.
#define BOOST_TEST_MODULE devices_kvm
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <regex>

#include "devices/machine.hpp"
#include "devices/machine_runner.hpp"
#include "tests/support/test_support.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using namespace std::chrono_literals;
using devices::Machine;
using devices::MachineConfig;
using devices::MachineRunner;
using devices::RunOutcome;
namespace utf = boost::unit_test;

namespace {
struct Session {
  std::unique_ptr<Machine> machine;
  RunOutcome outcome;
  std::string console;
};

// Boots `image`, types `script` (lines ending in \n), runs until the machine stops.
Session run_demo(const std::string& script, MachineConfig c = {}) {
  if (c.kernel.empty()) c.kernel = test::guest_image("demo.elf");
  if (c.memory_mib == 64) c.memory_mib = 32;
  Session s;
  s.machine = std::make_unique<Machine>(std::move(c));
  s.machine->com1().input({reinterpret_cast<const uint8_t*>(script.data()), script.size()});
  MachineRunner runner(*s.machine);
  s.outcome = runner.run(60s);
  s.console = s.machine->console().history();
  BOOST_TEST_MESSAGE("outcome: " << devices::to_string(s.outcome.kind) << " " << s.outcome.detail);
  BOOST_TEST_MESSAGE("console:\n" << s.console);
  return s;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(devices_on_kvm, *utf::precondition(test::kvm_available))

BOOST_AUTO_TEST_CASE(uart_interrupt_driven_output_and_input_echo) {
  // The uart_irq guest talks to COM1 only through THRE/RDA interrupts (8259
  // IRQ 4 via the in-kernel irqchip): the host types, the guest echoes.
  MachineConfig c;
  c.kernel = test::guest_image("uart_irq.elf");
  c.vcpus = 2;
  auto s = run_demo("hello\nworld\nquit\n", std::move(c));
  BOOST_TEST(s.outcome.status == 1, s.outcome.detail);
  BOOST_TEST(s.console.find("uart-irq: ready") != std::string::npos);
  BOOST_TEST(s.console.find("echo: hello\r\necho: world\r\n") != std::string::npos);
  BOOST_TEST(s.console.find("interrupts, bye") != std::string::npos);
  auto st = s.machine->com1().export_state();
  BOOST_TEST(st.counters().at("irqs") >= 2u);  // RDA and THRE edges reached the irqchip
  BOOST_TEST(st.counters().at("rx_bytes") == 17u);
}

BOOST_AUTO_TEST_CASE(i8042_reset_request_is_seen_by_the_host) {
  auto s = run_demo("reboot\n");
  BOOST_TEST(to_string(s.outcome.kind) == "reset");
  BOOST_TEST(s.outcome.detail == "reset requested by i8042");
}

BOOST_AUTO_TEST_CASE(reset_control_0xcf9_is_seen_by_the_host) {
  auto s = run_demo("reset\n");
  BOOST_TEST(to_string(s.outcome.kind) == "reset");
  BOOST_TEST(s.outcome.detail == "reset requested by reset-control");
}

BOOST_AUTO_TEST_CASE(acpi_soft_off_is_seen_by_the_host) {
  auto s = run_demo("poweroff\n");
  BOOST_TEST(to_string(s.outcome.kind) == "poweroff");
  BOOST_TEST(s.outcome.detail == "poweroff requested by acpi-pm");
}

BOOST_AUTO_TEST_CASE(rtc_matches_host_time_within_two_seconds) {
  auto s = run_demo("time\nexit 0\n");
  BOOST_TEST(s.outcome.status == 1);
  std::smatch m;
  static const std::regex re("([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z");
  BOOST_REQUIRE(std::regex_search(s.console, m, re));
  std::tm tm{};
  tm.tm_year = std::stoi(m[1]) - 1900;
  tm.tm_mon = std::stoi(m[2]) - 1;
  tm.tm_mday = std::stoi(m[3]);
  tm.tm_hour = std::stoi(m[4]);
  tm.tm_min = std::stoi(m[5]);
  tm.tm_sec = std::stoi(m[6]);
  const std::time_t guest = timegm(&tm);
  const std::time_t host = std::time(nullptr);
  BOOST_TEST(std::abs(static_cast<long>(host - guest)) <= 2, "guest " << guest << " host " << host);
}

BOOST_AUTO_TEST_CASE(fw_cfg_signature_cpu_count_and_cmdline) {
  MachineConfig c;
  c.vcpus = 3;
  c.cmdline = "apiary.fwcfg=yes console=ttyS0";
  auto s = run_demo("fwcfg\nexit 0\n", std::move(c));
  BOOST_TEST(s.outcome.status == 1);
  BOOST_TEST(s.console.find("fw_cfg: QEMU cpus=3 cmdline=apiary.fwcfg=yes console=ttyS0") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(post_codes_are_timestamped_in_order) {
  MachineConfig c;
  c.kernel = test::guest_image("hello.elf");
  auto s = run_demo("", std::move(c));
  auto recs = s.machine->post().records();
  BOOST_REQUIRE(recs.size() == 3u);
  BOOST_TEST(recs[0].code == 1);
  BOOST_TEST((recs[0].at <= recs[1].at && recs[1].at <= recs[2].at));
}

BOOST_AUTO_TEST_CASE(unclaimed_ports_read_all_ones_and_are_counted) {
  // The demo probes for devices; the board leaves most ports unclaimed.
  auto s = run_demo("exit 0\n");
  BOOST_TEST(s.outcome.status == 1);
  uint64_t v = 0;
  BOOST_TEST(!s.machine->bus().read(vmm::AddressSpace::pio, 0x3e8, 1, v));  // COM3: absent
  BOOST_TEST(v == 0xffu);
  BOOST_TEST(s.machine->bus().unclaimed_reads() >= 1u);
}

namespace {
uint32_t fnv1a(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}
std::string hex32(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}
// A fresh 1 MiB disk image whose sector s holds "old-s".
std::string make_disk(const std::string& name) {
  std::string path = "/tmp/apiary-test-" + name + "-" + std::to_string(::getpid()) + ".img";
  std::vector<uint8_t> img(1 << 20, 0);
  for (size_t s = 0; s < img.size() / 512; ++s) {
    const std::string t = "old-" + std::to_string(s);
    std::copy(t.begin(), t.end(), img.begin() + s * 512);
  }
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(img.data(), 1, img.size(), f);
  std::fclose(f);
  return path;
}
std::vector<uint8_t> sector_of(const std::string& path, size_t s) {
  std::vector<uint8_t> all = vmm::read_file(path);
  return {all.begin() + s * 512, all.begin() + (s + 1) * 512};
}
}  // namespace

BOOST_AUTO_TEST_CASE(virtio_blk_write_flush_read_back_and_host_file) {
  const std::string path = make_disk("rw");
  MachineConfig c;
  c.disks.push_back({"apiary-disk0", path, false});
  auto s = run_demo("disk info\ndisk write 7 hello from the guest\ndisk flush\ndisk read 7\ndisk read 3\nexit 0\n",
                    std::move(c));
  BOOST_TEST(s.outcome.status == 1);
  BOOST_TEST(s.console.find("disk: capacity=2048 sectors id=apiary-disk0") != std::string::npos);
  // What the host file holds now, and its checksum, must be what the guest wrote and read.
  auto sec7 = sector_of(path, 7);
  const std::string text = "hello from the guest";
  BOOST_TEST(std::string(sec7.begin(), sec7.begin() + text.size()) == text);
  BOOST_TEST(std::all_of(sec7.begin() + text.size(), sec7.end(), [](uint8_t b) { return b == 0; }));
  const std::string fnv = hex32(fnv1a(sec7.data(), sec7.size()));
  BOOST_TEST(s.console.find("wrote sector 7 fnv=" + fnv) != std::string::npos);
  BOOST_TEST(s.console.find("disk: flushed") != std::string::npos);
  BOOST_TEST(s.console.find("sector 7 fnv=" + fnv + ": hello from the guest") != std::string::npos);
  auto sec3 = sector_of(path, 3);
  BOOST_TEST(s.console.find("sector 3 fnv=" + hex32(fnv1a(sec3.data(), 512)) + ": old-3") != std::string::npos);
  // Counters on the host side agree.
  auto st = s.machine->virtio().at(0)->export_state();
  BOOST_TEST_MESSAGE(st.DebugString());
  std::remove(path.c_str());
}

BOOST_AUTO_TEST_CASE(virtio_blk_read_only_disk_refuses_writes) {
  const std::string path = make_disk("ro");
  const auto before = vmm::read_file(path);
  MachineConfig c;
  c.disks.push_back({"ro-disk", path, true});
  auto s = run_demo("disk info\ndisk write 2 must not land\ndisk read 2\nexit 0\n", std::move(c));
  BOOST_TEST(s.outcome.status == 1);
  BOOST_TEST(s.console.find("(read-only)") != std::string::npos);
  BOOST_TEST(s.console.find("disk: error status 1 (IOERR)") != std::string::npos);
  BOOST_TEST(s.console.find(": old-2") != std::string::npos);
  BOOST_TEST((vmm::read_file(path) == before));
  std::remove(path.c_str());
}

BOOST_AUTO_TEST_CASE(virtio_rng_bytes_arrive) {
  MachineConfig c;
  c.rng = true;
  auto s = run_demo("rng 16\nrng 16\nexit 0\n", std::move(c));
  BOOST_TEST(s.outcome.status == 1);
  static const std::regex re("rng: ([0-9a-f]{32})");
  std::vector<std::string> got;
  for (auto it = std::sregex_iterator(s.console.begin(), s.console.end(), re); it != std::sregex_iterator(); ++it)
    got.push_back((*it)[1]);
  BOOST_REQUIRE(got.size() == 2u);
  BOOST_TEST(got[0] != got[1]);
  BOOST_TEST(got[0] != std::string(32, '0'));
}

BOOST_AUTO_TEST_CASE(disk_and_rng_share_the_board) {
  const std::string path = make_disk("both");
  MachineConfig c;
  c.disks.push_back({"d0", path, false});
  c.rng = true;
  auto s = run_demo("disk read 1\nrng 4\nexit 0\n", std::move(c));
  BOOST_TEST(s.outcome.status == 1);
  BOOST_TEST(s.console.find(": old-1") != std::string::npos);
  BOOST_TEST(s.console.find("rng: ") != std::string::npos);
  std::remove(path.c_str());
}

BOOST_AUTO_TEST_SUITE_END()
