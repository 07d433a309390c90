// ACPI PM1a registers (devices/acpi_pm.cpp) and the 0xCF9 reset control
// register (devices/reset_control.cpp), no KVM needed.
//
// Checks the register semantics a guest OS relies on (W1C status, enable
// bits, SCI level on the right GSI, SLP_TYP/SLP_EN soft-off), the power
// button path, the reset requests from 0xCF9, both ways of registering the
// PM blocks on the bus, and that random port traffic of every size never
// faults and never powers off or resets by accident of width.
#define BOOST_TEST_MODULE acpi_pm
#include <boost/test/unit_test.hpp>

#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "devices/acpi_pm.hpp"
#include "devices/reset_control.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/layout.hpp"

namespace layout = apiary::layout;
namespace vmm = apiary::vmm;
using namespace apiary::devices;
using namespace apiary::devices::acpi_pm;

namespace {

struct IrqRecorder : IrqLine {
  std::vector<std::pair<uint32_t, bool>> edges;
  void set_level(uint32_t gsi, bool level) override { edges.emplace_back(gsi, level); }
  bool level() const { return !edges.empty() && edges.back().second; }
};

struct EventRecorder : DeviceEvents {
  std::vector<std::string> resets, poweroffs;
  void reset_requested(std::string_view d) override { resets.emplace_back(d); }
  void poweroff_requested(std::string_view d) override { poweroffs.emplace_back(d); }
  void debug_exit(std::string_view, int) override {}
  void progress(std::string_view, uint8_t) override {}
};

struct Fixture {
  IrqRecorder irq;
  EventRecorder events;
  AcpiPm pm{"acpi-pm", irq, events};
  ResetControl rc{"reset-control", events};
  vmm::Bus bus;
  Fixture() {
    bus.add(vmm::AddressSpace::pio, layout::kAcpiPm1aEvt, layout::kAcpiPm1aEvtLen, &pm.event_block(),
            "acpi-pm1a-evt");
    bus.add(vmm::AddressSpace::pio, layout::kAcpiPm1aCnt, layout::kAcpiPm1aCntLen, &pm.control_block(),
            "acpi-pm1a-cnt");
    bus.add(vmm::AddressSpace::pio, layout::kResetControl, layout::kResetControlLen, &rc, "reset-control");
    bus.freeze();
  }
  uint64_t in(uint16_t port, unsigned size) {
    uint64_t v = 0;
    bus.read(vmm::AddressSpace::pio, port, size, v);
    return v;
  }
  void out(uint16_t port, unsigned size, uint64_t v) { bus.write(vmm::AddressSpace::pio, port, size, v); }
  uint16_t sts() { return static_cast<uint16_t>(in(layout::kAcpiPm1aEvt, 2)); }
  uint16_t en() { return static_cast<uint16_t>(in(layout::kAcpiPm1aEvt + 2, 2)); }
  uint16_t cnt() { return static_cast<uint16_t>(in(layout::kAcpiPm1aCnt, 2)); }
  static uint16_t slp(uint16_t typ) { return static_cast<uint16_t>((typ << kSlpTypShift) | kSlpEn); }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(power_on_state, Fixture) {
  BOOST_TEST(sts() == 0);
  BOOST_TEST(en() == 0);
  BOOST_TEST(cnt() == kSciEn);  // always in ACPI mode: no SMI_CMD
  BOOST_TEST(irq.edges.empty());
  BOOST_TEST(std::string(pm.kind()) == "acpi-pm");
}

BOOST_FIXTURE_TEST_CASE(soft_off_requests_poweroff, Fixture) {
  out(layout::kAcpiPm1aCnt, 2, kSciEn | slp(layout::kAcpiSlpTypSoftOff));
  BOOST_TEST(events.poweroffs == std::vector<std::string>{"acpi-pm"});
  BOOST_TEST(events.resets.empty());
  // SLP_EN is write-only; SLP_TYP stays.
  BOOST_TEST(cnt() == (kSciEn | (layout::kAcpiSlpTypSoftOff << kSlpTypShift)));
  BOOST_TEST(pm.export_state().counters().at("poweroff_requests") == 1u);
}

BOOST_FIXTURE_TEST_CASE(soft_off_by_byte_writes, Fixture) {
  // SLP_TYP first (high byte without SLP_EN), then the byte with SLP_EN.
  const auto hi = static_cast<uint8_t>(slp(layout::kAcpiSlpTypSoftOff) >> 8);
  out(layout::kAcpiPm1aCnt + 1, 1, hi & ~(kSlpEn >> 8));
  BOOST_TEST(events.poweroffs.empty());
  out(layout::kAcpiPm1aCnt + 1, 1, hi);
  BOOST_TEST(events.poweroffs.size() == 1u);
  // A 32-bit write at the start of the control block: only its 2 bytes count.
  out(layout::kAcpiPm1aCnt, 4, 0xffff0000u | slp(layout::kAcpiSlpTypSoftOff));
  BOOST_TEST(events.poweroffs.size() == 2u);
}

BOOST_FIXTURE_TEST_CASE(other_sleep_types_and_slp_typ_without_slp_en_do_nothing, Fixture) {
  for (uint16_t typ = 0; typ < 8; ++typ) {
    out(layout::kAcpiPm1aCnt, 2, kSciEn | (typ << kSlpTypShift));  // no SLP_EN
    if (typ != layout::kAcpiSlpTypSoftOff) out(layout::kAcpiPm1aCnt, 2, kSciEn | slp(typ));
  }
  BOOST_TEST(events.poweroffs.empty());
  BOOST_TEST(pm.export_state().counters().at("sleep_refused") == 7u);
}

BOOST_FIXTURE_TEST_CASE(power_button_raises_sci_when_enabled, Fixture) {
  pm.press_power_button();
  BOOST_TEST((sts() & kPwrBtnSts) != 0);
  BOOST_TEST(irq.edges.empty());  // PWRBTN_EN clear: status only
  out(layout::kAcpiPm1aEvt + 2, 2, kPwrBtnEn);
  BOOST_TEST(en() == kPwrBtnEn);
  BOOST_TEST(irq.level());  // enabling with the status set raises it
  BOOST_TEST(irq.edges.back().first == layout::kAcpiSciIrq);
  // Write 1 to clear: writing 0 leaves it, writing the bit clears it.
  out(layout::kAcpiPm1aEvt, 2, 0);
  BOOST_TEST((sts() & kPwrBtnSts) != 0);
  BOOST_TEST(irq.level());
  out(layout::kAcpiPm1aEvt, 2, kPwrBtnSts);
  BOOST_TEST(sts() == 0);
  BOOST_TEST(!irq.level());
  // Pressed again with PWRBTN_EN set: straight to the SCI.
  pm.press_power_button();
  BOOST_TEST(irq.level());
  // Clearing the enable drops the line, the status stays.
  out(layout::kAcpiPm1aEvt + 2, 2, 0);
  BOOST_TEST(!irq.level());
  BOOST_TEST((sts() & kPwrBtnSts) != 0);
  BOOST_TEST(irq.edges.size() == 4u);
  for (auto& e : irq.edges) BOOST_TEST(e.first == layout::kAcpiSciIrq);
  BOOST_TEST(pm.export_state().counters().at("power_button_presses") == 2u);
  BOOST_TEST(pm.export_state().counters().at("sci_irqs") == 2u);
}

BOOST_FIXTURE_TEST_CASE(sci_en_gates_the_sci, Fixture) {
  out(layout::kAcpiPm1aEvt + 2, 2, kPwrBtnEn);
  out(layout::kAcpiPm1aCnt, 2, 0);  // SCI_EN off
  pm.press_power_button();
  BOOST_TEST(irq.edges.empty());
  out(layout::kAcpiPm1aCnt, 2, kSciEn);
  BOOST_TEST(irq.level());
}

BOOST_FIXTURE_TEST_CASE(event_block_byte_and_dword_access, Fixture) {
  pm.press_power_button();
  // 32-bit read of the event block: PM1_STS low, PM1_EN high.
  out(layout::kAcpiPm1aEvt + 3, 1, kPwrBtnEn >> 8);
  BOOST_TEST(in(layout::kAcpiPm1aEvt, 4) == ((uint64_t{kPwrBtnEn} << 16) | kPwrBtnSts));
  BOOST_TEST(in(layout::kAcpiPm1aEvt + 1, 1) == (kPwrBtnSts >> 8));
  // A dword write of ones clears every status bit and sets every enable bit modelled.
  out(layout::kAcpiPm1aEvt, 4, 0xffffffffu);
  BOOST_TEST(sts() == 0);
  BOOST_TEST(en() == kEnMask);
  // Reads past a block read as all-ones, writes past it are dropped.
  BOOST_TEST(in(layout::kAcpiPm1aCnt, 4) == (0xffff0000u | cnt()));
  BOOST_TEST(pm.event_block().io_read(4, 1) == 0xffu);
  pm.event_block().io_write(4, 2, 0);
  BOOST_TEST(cnt() == kSciEn);
}

BOOST_FIXTURE_TEST_CASE(unimplemented_bits_read_zero, Fixture) {
  out(layout::kAcpiPm1aEvt + 2, 2, 0xffff);
  BOOST_TEST(en() == kEnMask);
  out(layout::kAcpiPm1aCnt, 2, 0xffff & ~kSlpEn);
  BOOST_TEST(cnt() == kCntStored);
}

BOOST_AUTO_TEST_CASE(the_device_itself_covers_the_combined_window) {
  IrqRecorder irq;
  EventRecorder events;
  AcpiPm pm("pm", irq, events);
  vmm::Bus bus;
  bus.add(vmm::AddressSpace::pio, layout::kAcpiPm1aEvt, layout::kAcpiPm1aEvtLen + layout::kAcpiPm1aCntLen, &pm,
          "acpi-pm");
  bus.write(vmm::AddressSpace::pio, layout::kAcpiPm1aEvt + 2, 2, kPwrBtnEn);
  pm.press_power_button();
  BOOST_TEST(irq.level());
  bus.write(vmm::AddressSpace::pio, layout::kAcpiPm1aCnt, 2,
            kSciEn | (layout::kAcpiSlpTypSoftOff << kSlpTypShift) | kSlpEn);
  BOOST_TEST(events.poweroffs.size() == 1u);
  BOOST_TEST(pm.io_read(6, 2) == 0xffffu);
}

BOOST_FIXTURE_TEST_CASE(reset_restores_power_on_state, Fixture) {
  out(layout::kAcpiPm1aEvt + 2, 2, kPwrBtnEn);
  pm.press_power_button();
  out(layout::kAcpiPm1aCnt, 2, kSciEn | (3u << kSlpTypShift));
  BOOST_TEST(irq.level());
  pm.reset();
  BOOST_TEST(!irq.level());
  BOOST_TEST(sts() == 0);
  BOOST_TEST(en() == 0);
  BOOST_TEST(cnt() == kSciEn);
  const auto s = pm.export_state();
  BOOST_TEST(s.registers().at("pm1_cnt") == kSciEn);
}

BOOST_FIXTURE_TEST_CASE(reset_control_register, Fixture) {
  using namespace apiary::devices::reset_control;
  out(layout::kResetControl, 1, kSysRst);  // Linux: 0x02 first...
  BOOST_TEST(events.resets.empty());
  BOOST_TEST(in(layout::kResetControl, 1) == kSysRst);
  out(layout::kResetControl, 1, kSysRst | kRstCpu);  // ...then 0x06
  BOOST_TEST(events.resets == std::vector<std::string>{"reset-control"});
  BOOST_TEST(in(layout::kResetControl, 1) == kSysRst);  // RST_CPU self-clears
  out(layout::kResetControl, 1, kFullRst | kSysRst | kRstCpu);  // 0x0E
  BOOST_TEST(events.resets.size() == 2u);
  BOOST_TEST(in(layout::kResetControl, 1) == (kFullRst | kSysRst));
  out(layout::kResetControl, 1, kFullRst);
  BOOST_TEST(events.resets.size() == 2u);
  BOOST_TEST(events.poweroffs.empty());
  // Wide accesses: only the low byte is this register.
  BOOST_TEST(in(layout::kResetControl, 2) == (0xff00u | kFullRst));
  out(layout::kResetControl, 2, kRstCpu << 8);
  BOOST_TEST(events.resets.size() == 2u);
  auto s = rc.export_state();
  BOOST_TEST(s.counters().at("reset_requests") == 2u);
  rc.reset();
  BOOST_TEST(in(layout::kResetControl, 1) == 0u);
  BOOST_TEST(std::string(rc.kind()) == "reset-control");
}

BOOST_AUTO_TEST_CASE(hostile_port_traffic_never_faults) {
  IrqRecorder irq;
  EventRecorder events;
  AcpiPm pm("pm", irq, events);
  ResetControl rc("rc", events);
  std::mt19937_64 rng(0xacb1);
  const unsigned sizes[] = {1, 2, 4};
  size_t expected_poweroffs = 0, expected_resets = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t offset = rng() % 8;
    const unsigned size = sizes[rng() % 3];
    const uint64_t value = rng() & vmm::all_ones(size);
    switch (rng() % 6) {
      case 0: pm.io_read(offset, size); break;
      case 1: pm.io_write(offset, size, value); break;
      case 2: pm.event_block().io_write(offset, size, value); break;
      case 3: pm.control_block().io_write(offset, size, value); break;
      case 4: pm.press_power_button(); break;
      case 5:
        rc.io_write(offset, size, value);
        if (offset == 0 && (value & reset_control::kRstCpu)) ++expected_resets;
        break;
    }
    if (i % 40000 == 0) pm.reset();
  }
  for (auto& e : irq.edges) BOOST_TEST_REQUIRE(e.first == layout::kAcpiSciIrq);
  for (size_t i = 1; i < irq.edges.size(); ++i) BOOST_TEST_REQUIRE(irq.edges[i].second != irq.edges[i - 1].second);
  expected_poweroffs = pm.export_state().counters().at("poweroff_requests");
  BOOST_TEST(events.poweroffs.size() == expected_poweroffs);
  BOOST_TEST(events.resets.size() == expected_resets);
  for (auto& r : events.resets) BOOST_TEST_REQUIRE(r == "rc");
}

BOOST_AUTO_TEST_CASE(concurrent_power_button_and_guest_io) {
  // The host presses the button while vCPUs clear status and write the
  // control block; the line the irqchip sees still alternates.
  struct LockedIrq : IrqLine {
    std::mutex m;
    std::vector<bool> levels;
    void set_level(uint32_t, bool level) override {
      std::lock_guard l(m);
      levels.push_back(level);
    }
  } irq;
  EventRecorder events;  // only touched under the poweroff path below, never hit
  AcpiPm pm("pm", irq, events);
  pm.io_write(kEn, 2, kPwrBtnEn);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&pm] {
      for (int i = 0; i < 20000; ++i) {
        pm.io_write(kSts, 2, kPwrBtnSts);
        pm.io_write(kCnt, 2, kSciEn | (1u << kSlpTypShift));  // no SLP_EN
        pm.io_read(kSts, 4);
      }
    });
  }
  threads.emplace_back([&pm] {
    for (int i = 0; i < 20000; ++i) pm.press_power_button();
  });
  for (auto& th : threads) th.join();
  BOOST_TEST(events.poweroffs.empty());
  for (size_t i = 1; i < irq.levels.size(); ++i) BOOST_TEST_REQUIRE(irq.levels[i] != irq.levels[i - 1]);
}
