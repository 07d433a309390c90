// QEMU's pc-testdev (devices/pc_testdev.cpp), driven through a Bus laid out
// as the Machine lays it out, no KVM needed: IRQ-line writes reach the
// IrqLine, the scratch register and the MMIO buffer read back what was
// written at every size and offset, and hostile accesses change nothing they
// should not and are counted.
#define BOOST_TEST_MODULE pc_testdev
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "devices/pc_testdev.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using devices::PcTestdev;
using vmm::AddressSpace;
namespace layout = apiary::layout;

namespace {

struct IrqRecorder : devices::IrqLine {
  std::vector<std::pair<uint32_t, bool>> calls;
  void set_level(uint32_t gsi, bool level) override { calls.emplace_back(gsi, level); }
};

// The device on a bus at QEMU's addresses, as devices/machine.cpp registers it.
struct Board {
  IrqRecorder irq;
  PcTestdev dev{"pc-testdev", irq};
  vmm::Bus bus;
  Board() {
    bus.add(AddressSpace::pio, layout::kPcTestdevIoport, layout::kPcTestdevIoportLen, &dev, "ioport");
    bus.add(AddressSpace::pio, layout::kPcTestdevIoportByte, layout::kPcTestdevIoportLen, &dev.byte_window(),
            "ioport-byte");
    bus.add(AddressSpace::pio, layout::kPcTestdevIrqLines, layout::kPcTestdevIrqLineCount, &dev.irq_lines(), "irq");
    bus.add(AddressSpace::mmio, layout::kPcTestdevIomem, layout::kPcTestdevIomemLen, &dev.iomem(), "iomem");
    bus.freeze();
  }
  void out(uint16_t port, unsigned size, uint64_t v) { BOOST_REQUIRE(bus.write(AddressSpace::pio, port, size, v)); }
  uint64_t in(uint16_t port, unsigned size) {
    uint64_t v = 0;
    BOOST_REQUIRE(bus.read(AddressSpace::pio, port, size, v));
    return v;
  }
  void store(uint64_t addr, unsigned size, uint64_t v) { BOOST_REQUIRE(bus.write(AddressSpace::mmio, addr, size, v)); }
  uint64_t load(uint64_t addr, unsigned size) {
    uint64_t v = 0;
    BOOST_REQUIRE(bus.read(AddressSpace::mmio, addr, size, v));
    return v;
  }
};

}  // namespace

// ------------------------------------------------------------ IRQ lines --

BOOST_AUTO_TEST_CASE(a_byte_write_sets_the_level_of_its_gsi) {
  Board b;
  b.out(layout::kPcTestdevIrqLines + 10, 1, 1);
  b.out(layout::kPcTestdevIrqLines + 10, 1, 0);
  b.out(layout::kPcTestdevIrqLines + 0, 1, 0xff);  // any non-zero byte is "high"
  b.out(layout::kPcTestdevIrqLines + 23, 1, 0x80);
  const std::vector<std::pair<uint32_t, bool>> want = {{10, true}, {10, false}, {0, true}, {23, true}};
  BOOST_TEST((b.irq.calls == want));
  BOOST_TEST(b.dev.irq_levels() == ((1u << 0) | (1u << 23)));
  BOOST_TEST(b.in(layout::kPcTestdevIrqLines + 10, 1) == 0u);  // reads as 0, like QEMU
  BOOST_TEST(b.dev.refused_accesses() == 0u);
  const auto s = b.dev.export_state();
  BOOST_TEST(s.counters().at("irq_line_writes") == 4u);
  BOOST_TEST(s.registers().at("irq_levels") == ((1u << 0) | (1u << 23)));
}

BOOST_AUTO_TEST_CASE(wide_or_out_of_range_irq_accesses_are_refused_and_counted) {
  Board b;
  for (unsigned size : {2u, 4u, 8u, 3u, 0u}) b.dev.irq_lines().io_write(5, size, 1);
  b.out(layout::kPcTestdevIrqLines + 22, 2, 0xffff);  // would span lines 22 and 23
  b.out(layout::kPcTestdevIrqLines, 4, 0x01010101);
  for (uint64_t line : {24ull, 25ull, 0xffffull, ~0ull}) b.dev.irq_lines().io_write(line, 1, 1);
  BOOST_TEST(b.irq.calls.empty());
  BOOST_TEST(b.dev.irq_levels() == 0u);
  BOOST_TEST(b.dev.refused_accesses() == 11u);
  BOOST_TEST(b.in(layout::kPcTestdevIrqLines, 2) == 0xffffu);  // a refused read: all-ones, counted
  BOOST_TEST(b.dev.irq_lines().io_read(24, 1) == 0xffu);
  BOOST_TEST(b.dev.refused_accesses() == 13u);
  // Ports past the 24 lines belong to nobody.
  uint64_t v = 0;
  BOOST_TEST(!b.bus.write(AddressSpace::pio, layout::kPcTestdevIrqLines + layout::kPcTestdevIrqLineCount, 1, 1));
  BOOST_TEST(!b.bus.read(AddressSpace::pio, layout::kPcTestdevIrqLines + layout::kPcTestdevIrqLineCount, 1, v));
}

BOOST_AUTO_TEST_CASE(reset_lowers_the_lines_the_device_raised) {
  Board b;
  b.out(layout::kPcTestdevIrqLines + 3, 1, 1);
  b.out(layout::kPcTestdevIrqLines + 16, 1, 1);
  b.out(layout::kPcTestdevIrqLines + 7, 1, 0);
  b.irq.calls.clear();
  b.dev.reset();
  const std::vector<std::pair<uint32_t, bool>> want = {{3, false}, {16, false}};
  BOOST_TEST((b.irq.calls == want));
  BOOST_TEST(b.dev.irq_levels() == 0u);
}

// ------------------------------------------------- the scratch register --

BOOST_AUTO_TEST_CASE(the_register_round_trips_at_each_size) {
  for (uint16_t base : {layout::kPcTestdevIoport, layout::kPcTestdevIoportByte}) {
    BOOST_TEST_CONTEXT("window " << std::hex << base) {
      Board b;
      b.out(base, 4, 0x12345678);
      BOOST_TEST(b.in(base, 4) == 0x12345678u);
      BOOST_TEST(b.in(base, 2) == 0x5678u);
      BOOST_TEST(b.in(base + 2, 2) == 0x1234u);
      BOOST_TEST(b.in(base + 1, 1) == 0x56u);
      BOOST_TEST(b.in(base + 3, 1) == 0x12u);
      b.out(base + 1, 1, 0xab);
      BOOST_TEST(b.in(base, 4) == 0x1234ab78u);
      b.out(base + 2, 2, 0xcdef);
      BOOST_TEST(b.in(base, 4) == 0xcdefab78u);
      b.out(base, 2, 0x0102);
      BOOST_TEST(b.in(base, 4) == 0xcdef0102u);
      // Both windows are one register (as in QEMU).
      const uint16_t other = base == layout::kPcTestdevIoport ? layout::kPcTestdevIoportByte
                                                               : layout::kPcTestdevIoport;
      BOOST_TEST(b.in(other, 4) == 0xcdef0102u);
      BOOST_TEST(b.dev.export_state().registers().at("scratch") == 0xcdef0102u);
      BOOST_TEST(b.dev.refused_accesses() == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(accesses_running_past_the_register_keep_only_its_bytes) {
  Board b;
  b.out(layout::kPcTestdevIoport, 4, 0x11223344);
  b.out(layout::kPcTestdevIoport + 3, 4, 0xaabbccdd);  // only 0xdd lands, in byte 3
  BOOST_TEST(b.dev.scratch() == 0xdd223344u);
  BOOST_TEST(b.in(layout::kPcTestdevIoport + 3, 4) == 0xddu);
  b.out(layout::kPcTestdevIoport + 2, 4, 0x99887766);  // bytes 2, 3
  BOOST_TEST(b.dev.scratch() == 0x77663344u);
  BOOST_TEST(b.in(layout::kPcTestdevIoport + 1, 4) == 0x776633u);
  BOOST_TEST(b.dev.refused_accesses() == 0u);
}

BOOST_AUTO_TEST_CASE(hostile_register_accesses_change_nothing) {
  Board b;
  b.out(layout::kPcTestdevIoport, 4, 0xcafef00d);
  for (unsigned size : {0u, 3u, 8u, 16u, 1000u}) b.dev.io_write(0, size, ~0ull);
  for (uint64_t off : {4ull, 8ull, 1ull << 40, ~0ull}) b.dev.io_write(off, 1, 0);
  BOOST_TEST(b.dev.scratch() == 0xcafef00du);
  BOOST_TEST(b.dev.refused_accesses() == 9u);
  BOOST_TEST(b.dev.io_read(0, 8) == ~0ull);
  BOOST_TEST(b.dev.io_read(7, 1) == 0xffu);
  BOOST_TEST(b.dev.refused_accesses() == 11u);
  b.out(layout::kPcTestdevIoport, 1, 0x1ff);  // the bus masks the value to the access size
  BOOST_TEST(b.dev.scratch() == 0xcafef0ffu);
  b.dev.reset();
  BOOST_TEST(b.dev.scratch() == 0u);
}

// --------------------------------------------------------------- iomem --

BOOST_AUTO_TEST_CASE(the_mmio_buffer_round_trips_at_each_size_and_offset) {
  Board b;
  const uint64_t base = layout::kPcTestdevIomem;
  b.store(base + 0x10, 8, 0x0102030405060708ull);
  BOOST_TEST(b.load(base + 0x10, 8) == 0x0102030405060708ull);
  BOOST_TEST(b.load(base + 0x11, 4) == 0x04050607u);
  BOOST_TEST(b.load(base + 0x13, 2) == 0x0405u);
  BOOST_TEST(b.load(base + 0x17, 1) == 0x01u);
  b.store(base + 0x12, 2, 0xbeef);
  BOOST_TEST(b.load(base + 0x10, 8) == 0x01020304beef0708ull);
  // The last bytes; an access running past the end keeps what fits.
  const uint64_t last = base + layout::kPcTestdevIomemLen - 2;
  b.store(last, 8, 0x1122334455667788ull);
  BOOST_TEST(b.load(last, 8) == 0x7788u);
  BOOST_TEST(b.load(last + 1, 1) == 0x77u);
  // Refused: sizes other than 1/2/4/8, offsets outside.
  b.dev.iomem().io_write(0x10, 3, ~0ull);
  b.dev.iomem().io_write(layout::kPcTestdevIomemLen, 1, 0xff);
  BOOST_TEST(b.load(base + 0x10, 8) == 0x01020304beef0708ull);
  BOOST_TEST(b.dev.iomem().io_read(0x10, 16) == ~0ull);
  BOOST_TEST(b.dev.refused_accesses() == 3u);
  b.dev.reset();
  BOOST_TEST(b.load(base + 0x10, 8) == 0u);
}

BOOST_AUTO_TEST_CASE(random_garbage_never_escapes_the_windows) {
  // Random accesses of every size and offset through the raw handlers: no
  // crash (ASan builds check the bounds), no line outside 0..23 ever driven.
  Board b;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t off = rng() % 3 == 0 ? rng() : rng() % 0x10010;
    const auto size = static_cast<unsigned>(rng() % 10);
    const uint64_t v = rng();
    switch (rng() % 3) {
      case 0: b.dev.io_write(off, size, v); (void)b.dev.io_read(off, size); break;
      case 1: b.dev.irq_lines().io_write(off, size, v); (void)b.dev.irq_lines().io_read(off, size); break;
      default: b.dev.iomem().io_write(off, size, v); (void)b.dev.iomem().io_read(off, size); break;
    }
  }
  for (const auto& [gsi, level] : b.irq.calls) BOOST_REQUIRE(gsi < layout::kPcTestdevIrqLineCount);
  BOOST_TEST(b.dev.refused_accesses() > 0u);
}
