// The I/O bus: range maps, overlap refusal, dispatch offsets, unclaimed
// accesses; and the simulated vCPU backend driving devices through it.
#define BOOST_TEST_MODULE bus
#include <boost/test/unit_test.hpp>

#include "vmm-core/bus.hpp"
#include "vmm-core/sim_vcpu.hpp"

using namespace apiary::vmm;

namespace {
struct Recorder : IoHandler {
  uint64_t last_offset = ~0ull, last_value = 0;
  unsigned last_size = 0, reads = 0, writes = 0;
  uint64_t io_read(uint64_t offset, unsigned size) override {
    ++reads;
    last_offset = offset;
    last_size = size;
    return 0x1122334455667788ull;
  }
  void io_write(uint64_t offset, unsigned size, uint64_t value) override {
    ++writes;
    last_offset = offset;
    last_size = size;
    last_value = value;
  }
};

Errc code_of(auto&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  BOOST_FAIL("expected a vmm::Error");
  return Errc::invalid_argument;
}
}  // namespace

BOOST_AUTO_TEST_CASE(dispatch_passes_offset_relative_to_base) {
  Bus bus;
  Recorder a;
  bus.add(AddressSpace::pio, 0x3f8, 8, &a, "com1");
  BOOST_TEST(bus.write(AddressSpace::pio, 0x3fb, 1, 0x83));
  BOOST_TEST(a.last_offset == 3u);
  BOOST_TEST(a.last_value == 0x83u);
  uint64_t v = 0;
  BOOST_TEST(bus.read(AddressSpace::pio, 0x3f8, 2, v));
  BOOST_TEST(v == 0x7788u);  // truncated to the access size
  BOOST_TEST(a.last_size == 2u);
}

BOOST_AUTO_TEST_CASE(overlaps_are_refused_naming_both_devices) {
  Bus bus;
  Recorder a, b;
  bus.add(AddressSpace::pio, 0x60, 1, &a, "kbd-data");
  bus.add(AddressSpace::pio, 0x64, 1, &a, "kbd-cmd");
  // Exact, inside, straddling the start, straddling the end, covering.
  for (auto [base, size] : std::vector<std::pair<uint64_t, uint64_t>>{{0x60, 1}, {0x5f, 2}, {0x64, 4}, {0x50, 0x20}}) {
    try {
      bus.add(AddressSpace::pio, base, size, &b, "intruder");
      BOOST_FAIL("overlap accepted");
    } catch (const Error& e) {
      BOOST_TEST((e.code() == Errc::bus_overlap));
      BOOST_TEST(std::string(e.what()).find("intruder") != std::string::npos);
      BOOST_TEST(std::string(e.what()).find("kbd-") != std::string::npos);
    }
  }
  // Adjacent ranges are fine, and the same range in the other space too.
  bus.add(AddressSpace::pio, 0x61, 3, &b, "between");
  bus.add(AddressSpace::mmio, 0x60, 1, &b, "mmio-60");
  BOOST_TEST(bus.ranges(AddressSpace::pio).size() == 3u);
}

BOOST_AUTO_TEST_CASE(bad_ranges_are_refused) {
  Bus bus;
  Recorder a;
  BOOST_TEST((code_of([&] { bus.add(AddressSpace::pio, 0x10, 0, &a, "empty"); }) == Errc::bus_bad_range));
  BOOST_TEST((code_of([&] { bus.add(AddressSpace::mmio, ~0ull - 1, 4, &a, "wraps"); }) == Errc::bus_bad_range));
  BOOST_TEST((code_of([&] { bus.add(AddressSpace::pio, 0xfffe, 4, &a, "beyond"); }) == Errc::bus_bad_range));
  BOOST_TEST((code_of([&] { bus.add(AddressSpace::pio, 0x10, 1, nullptr, "null"); }) == Errc::invalid_argument));
  bus.freeze();
  BOOST_TEST((code_of([&] { bus.add(AddressSpace::pio, 0x10, 1, &a, "late"); }) == Errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(unclaimed_reads_are_all_ones_and_counted) {
  Bus bus;
  Recorder a;
  bus.add(AddressSpace::mmio, 0xd0000000, 0x1000, &a, "virtio0");
  uint64_t v = 0;
  BOOST_TEST(!bus.read(AddressSpace::pio, 0x1234, 1, v));
  BOOST_TEST(v == 0xffu);
  BOOST_TEST(!bus.read(AddressSpace::pio, 0x1234, 4, v));
  BOOST_TEST(v == 0xffffffffu);
  BOOST_TEST(!bus.read(AddressSpace::mmio, 0xd0001000, 8, v));
  BOOST_TEST(v == ~0ull);
  BOOST_TEST(!bus.write(AddressSpace::mmio, 0xcfffffff, 1, 0));
  BOOST_TEST(bus.unclaimed_reads() == 3u);
  BOOST_TEST(bus.unclaimed_writes() == 1u);
  BOOST_TEST(a.reads == 0u);
  BOOST_TEST(bus.find(AddressSpace::mmio, 0xd0000fff) != nullptr);
  BOOST_TEST(bus.find(AddressSpace::mmio, 0xd0001000) == nullptr);
}

BOOST_AUTO_TEST_CASE(sim_vcpu_replays_its_program_through_the_bus) {
  Bus bus;
  Recorder dev;
  bus.add(AddressSpace::pio, 0x80, 1, &dev, "post");
  SimVcpuBackend v(0, bus,
                   {{SimStep::Kind::pio_write, 0x80, 1, 0x42},
                    {SimStep::Kind::pio_read, 0x80, 1, 0},
                    {SimStep::Kind::pio_read, 0x99, 1, 0},
                    {SimStep::Kind::shutdown},
                    {SimStep::Kind::internal_error}});
  Exit e = v.run();
  BOOST_TEST(std::holds_alternative<ExitShutdown>(e));
  BOOST_TEST(dev.writes == 1u);
  BOOST_TEST(dev.last_value == 0x42u);
  BOOST_TEST((v.reads() == std::vector<uint64_t>{0x88, 0xff}));
  BOOST_TEST(std::holds_alternative<ExitInternalError>(v.run()));
  BOOST_TEST(std::holds_alternative<ExitHlt>(v.run()));  // program exhausted: idle
  BOOST_TEST(v.counters().pio_exits == 3u);
}

BOOST_AUTO_TEST_CASE(sim_vcpu_kick_interrupts_unless_ignored) {
  Bus bus;
  SimVcpuBackend v(1, bus, {{SimStep::Kind::hlt}});
  v.kick();
  BOOST_TEST(std::holds_alternative<ExitInterrupted>(v.run()));
  BOOST_TEST(std::holds_alternative<ExitHlt>(v.run()));
  v.reset(nullptr);
  v.set_ignore_kicks(true);
  v.kick();
  BOOST_TEST(std::holds_alternative<ExitHlt>(v.run()));
  BOOST_TEST(v.counters().kicks == 2u);
  BOOST_TEST(v.dump().mp_state == static_cast<uint32_t>(KVM_MP_STATE_UNINITIALIZED));
}
