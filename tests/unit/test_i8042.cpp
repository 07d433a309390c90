// i8042 PS/2 controller + keyboard (devices/i8042.cpp), no KVM needed.
//
// Drives the two ports through a vmm::Bus exactly as a guest would and
// checks every controller and keyboard command, the status bits, the IRQ 1
// edges the irqchip sees, reset requests, host scancode injection (bounded,
// ordered, Ctrl+Alt+Del) and that random port traffic of every size never
// faults (run under ASan/UBSan).
#define BOOST_TEST_MODULE i8042
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "devices/i8042.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/layout.hpp"

namespace layout = apiary::layout;
namespace vmm = apiary::vmm;
using namespace apiary::devices;
using namespace apiary::devices::i8042;

namespace {

struct IrqRecorder : IrqLine {
  std::vector<std::pair<uint32_t, bool>> edges;
  void set_level(uint32_t gsi, bool level) override { edges.emplace_back(gsi, level); }
  size_t rising() const {
    size_t n = 0;
    for (auto& e : edges) n += e.second;
    return n;
  }
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
  I8042 kbd{"kbd", irq, events};
  vmm::Bus bus;
  Fixture() {
    bus.add(vmm::AddressSpace::pio, layout::kI8042Data, 1, &kbd.data_port(), "i8042-data");
    bus.add(vmm::AddressSpace::pio, layout::kI8042Command, 1, &kbd.command_port(), "i8042-cmd");
    bus.freeze();
  }
  uint8_t status() {
    uint64_t v = 0;
    bus.read(vmm::AddressSpace::pio, layout::kI8042Command, 1, v);
    return static_cast<uint8_t>(v);
  }
  uint8_t data() {
    uint64_t v = 0;
    bus.read(vmm::AddressSpace::pio, layout::kI8042Data, 1, v);
    return static_cast<uint8_t>(v);
  }
  void command(uint8_t c) { bus.write(vmm::AddressSpace::pio, layout::kI8042Command, 1, c); }
  void write_data(uint8_t d) { bus.write(vmm::AddressSpace::pio, layout::kI8042Data, 1, d); }
  // Every byte waiting in the output buffer, as a polling guest reads them.
  std::vector<uint8_t> drain() {
    std::vector<uint8_t> out;
    while ((status() & kStatusObf) && out.size() < 1000) out.push_back(data());
    return out;
  }
  uint64_t counter(const std::string& k) const { return kbd.export_state().counters().at(k); }
  uint64_t reg(const std::string& k) const { return kbd.export_state().registers().at(k); }
};

using Bytes = std::vector<uint8_t>;

}  // namespace

BOOST_FIXTURE_TEST_CASE(power_on_state, Fixture) {
  BOOST_TEST(status() == (kStatusUnlocked | kStatusSys));
  BOOST_TEST(!(status() & kStatusIbf));  // commands are processed at once
  BOOST_TEST(reg("config") == kCfgPowerOn);
  BOOST_TEST(reg("output_port") == kOutPowerOn);
  BOOST_TEST(irq.edges.empty());
  BOOST_TEST(std::string(kbd.kind()) == "i8042");
  BOOST_TEST(kbd.export_state().device() == "kbd");
}

BOOST_FIXTURE_TEST_CASE(read_and_write_config_byte, Fixture) {
  command(kCmdReadRamFirst);
  BOOST_TEST((status() & kStatusA2) != 0);  // last write went to the command port
  BOOST_TEST((status() & kStatusObf) != 0);
  BOOST_TEST(data() == kCfgPowerOn);
  BOOST_TEST(!(status() & kStatusObf));

  command(kCmdWriteRamFirst);
  write_data(kCfgKbdInt | kCfgTranslate);  // SYS flag cleared
  BOOST_TEST(!(status() & kStatusA2));
  BOOST_TEST(!(status() & kStatusSys));
  command(kCmdReadRamFirst);
  BOOST_TEST(data() == (kCfgKbdInt | kCfgTranslate));
  command(kCmdWriteRamFirst);
  write_data(0xff);  // reserved bit 7 reads back 0
  command(kCmdReadRamFirst);
  BOOST_TEST(data() == 0x7f);
  BOOST_TEST((status() & kStatusSys) != 0);

  // The rest of the internal RAM, 0x21-0x3f / 0x61-0x7f.
  command(kCmdWriteRamFirst + 5);
  write_data(0xa5);
  command(kCmdReadRamFirst + 5);
  BOOST_TEST(data() == 0xa5);
  BOOST_TEST(reg("config") == 0x7f);
}

BOOST_FIXTURE_TEST_CASE(self_and_interface_tests, Fixture) {
  command(kCmdWriteRamFirst);
  write_data(0);
  BOOST_TEST(!(status() & kStatusSys));
  command(kCmdSelfTest);
  BOOST_TEST(drain() == Bytes{kSelfTestOk});
  BOOST_TEST((status() & kStatusSys) != 0);
  command(kCmdInterfaceTest);
  BOOST_TEST(drain() == Bytes{kInterfaceTestOk});
}

BOOST_FIXTURE_TEST_CASE(disable_and_enable_keyboard, Fixture) {
  command(kCmdDisableKbd);
  command(kCmdReadRamFirst);
  BOOST_TEST(data() == (kCfgPowerOn | kCfgKbdDisable));
  const uint8_t key[] = {0x1e, 0x9e};
  BOOST_TEST(kbd.inject_scancodes(key) == 2u);
  BOOST_TEST(!(status() & kStatusObf));  // held by the keyboard while its clock is inhibited
  // Controller replies still get through.
  command(kCmdInterfaceTest);
  BOOST_TEST(drain() == Bytes{0x00});
  command(kCmdEnableKbd);
  BOOST_TEST(drain() == (Bytes{0x1e, 0x9e}));
  command(kCmdReadRamFirst);
  BOOST_TEST(data() == kCfgPowerOn);
}

BOOST_FIXTURE_TEST_CASE(output_port_and_reset_via_output_port, Fixture) {
  command(kCmdReadOutPort);
  BOOST_TEST(drain() == Bytes{kOutPowerOn});
  command(kCmdWriteOutPort);
  write_data(kOutResetDeasserted);  // A20 off, reset line high: no reset
  BOOST_TEST(events.resets.empty());
  command(kCmdReadOutPort);
  BOOST_TEST(drain() == Bytes{kOutResetDeasserted});
  command(kCmdEnableA20);
  command(kCmdReadOutPort);
  BOOST_TEST(drain() == Bytes{kOutPowerOn});
  command(kCmdDisableA20);
  command(kCmdReadOutPort);
  BOOST_TEST(drain() == Bytes{kOutResetDeasserted});

  command(kCmdWriteOutPort);
  write_data(kOutA20);  // bit 0 clear: pulse reset
  BOOST_TEST(events.resets == std::vector<std::string>{"kbd"});
  command(kCmdReadOutPort);
  BOOST_TEST(drain() == Bytes{kOutPowerOn});  // the line went back high
  BOOST_TEST(counter("reset_requests") == 1u);
}

BOOST_FIXTURE_TEST_CASE(pulse_reset_command, Fixture) {
  command(layout::kI8042ResetCommand);
  BOOST_TEST(events.resets == std::vector<std::string>{"kbd"});
  command(0xff);  // pulses no line
  BOOST_TEST(events.resets.size() == 1u);
  command(0xf0);  // pulses every line, reset included
  BOOST_TEST(events.resets.size() == 2u);
  command(0xf1);  // bit 0 set: reset line not pulsed
  BOOST_TEST(events.resets.size() == 2u);
  BOOST_TEST(events.poweroffs.empty());
}

BOOST_FIXTURE_TEST_CASE(command_waiting_for_data_is_abandoned_by_a_new_command, Fixture) {
  command(kCmdWriteOutPort);
  command(kCmdInterfaceTest);
  BOOST_TEST(drain() == Bytes{0x00});
  write_data(0x00);  // now a keyboard command, not an output-port write
  BOOST_TEST(events.resets.empty());
  BOOST_TEST(drain() == Bytes{kKbdAck});
}

BOOST_FIXTURE_TEST_CASE(write_keyboard_output_buffer, Fixture) {
  command(kCmdWriteKbdBuffer);
  write_data(0x42);
  BOOST_TEST(drain() == Bytes{0x42});
}

BOOST_FIXTURE_TEST_CASE(unknown_commands_are_ignored, Fixture) {
  for (uint8_t c : {0x00, 0x10, 0xc0, 0xe0}) command(c);
  BOOST_TEST(!(status() & kStatusObf));
  BOOST_TEST(counter("unknown_commands") == 4u);
  BOOST_TEST(reg("config") == kCfgPowerOn);
}

BOOST_FIXTURE_TEST_CASE(no_aux_port_is_reported_quickly, Fixture) {
  command(kCmdDisableAux);
  command(kCmdEnableAux);
  BOOST_TEST(!(status() & kStatusObf));
  BOOST_TEST(reg("config") == kCfgPowerOn);
  // Aux loopback: the byte comes back, but not marked as aux data.
  command(kCmdWriteAuxBuffer);
  write_data(0x5a);
  BOOST_TEST((status() & kStatusObf) != 0);
  BOOST_TEST(!(status() & kStatusAuxObf));
  BOOST_TEST(data() == 0x5a);
  command(kCmdAuxTest);
  BOOST_TEST(drain() == Bytes{kAuxTestClockStuckHigh});
  // A byte for the (absent) mouse is consumed, not taken as a keyboard command.
  command(kCmdWriteAux);
  write_data(kKbdReset);
  BOOST_TEST(drain().empty());
  BOOST_TEST(counter("aux_dropped") == 1u);
  BOOST_TEST(counter("unknown_commands") == 0u);
}

BOOST_FIXTURE_TEST_CASE(keyboard_commands, Fixture) {
  write_data(kKbdReset);
  BOOST_TEST(drain() == (Bytes{kKbdAck, kKbdBatOk}));
  write_data(kKbdEnable);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  write_data(kKbdSetLeds);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  write_data(0x07);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  BOOST_TEST(reg("kbd_leds") == 7u);
  write_data(kKbdIdentify);
  BOOST_TEST(drain() == (Bytes{kKbdAck, kKbdId1, kKbdId2}));
  write_data(kKbdEcho);
  BOOST_TEST(drain() == Bytes{kKbdEcho});
  write_data(kKbdScancodeSet);
  write_data(0);  // query
  BOOST_TEST(drain() == (Bytes{kKbdAck, kKbdAck, 2}));
  write_data(kKbdScancodeSet);
  write_data(1);
  BOOST_TEST(drain() == (Bytes{kKbdAck, kKbdAck}));
  BOOST_TEST(reg("kbd_scancode_set") == 1u);
  write_data(kKbdTypematic);
  write_data(0x20);
  BOOST_TEST(drain() == (Bytes{kKbdAck, kKbdAck}));
  BOOST_TEST(reg("kbd_typematic") == 0x20u);
  write_data(kKbdResend);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  write_data(0x01);  // unknown
  BOOST_TEST(drain() == Bytes{kKbdAck});
  write_data(kKbdDefaults);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  BOOST_TEST(reg("kbd_leds") == 0u);
  BOOST_TEST(reg("kbd_scancode_set") == 2u);

  write_data(kKbdDisable);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  BOOST_TEST(reg("kbd_scanning") == 0u);
  const uint8_t key[] = {0x1e};
  BOOST_TEST(kbd.inject_scancodes(key) == 0u);
  BOOST_TEST(counter("input_discarded_disabled") == 1u);
  write_data(kKbdEnable);
  BOOST_TEST(drain() == Bytes{kKbdAck});
  BOOST_TEST(kbd.inject_scancodes(key) == 1u);
  BOOST_TEST(drain() == Bytes{0x1e});
}

BOOST_FIXTURE_TEST_CASE(keyboard_reply_goes_ahead_of_queued_scancodes, Fixture) {
  command(kCmdDisableKbd);
  const uint8_t keys[] = {0x10, 0x90};
  kbd.inject_scancodes(keys);
  write_data(kKbdEcho);
  command(kCmdEnableKbd);
  BOOST_TEST(drain() == (Bytes{kKbdEcho, 0x10, 0x90}));
  // Reset flushes what the keyboard had not sent yet.
  command(kCmdDisableKbd);
  kbd.inject_scancodes(keys);
  write_data(kKbdReset);
  command(kCmdEnableKbd);
  BOOST_TEST(drain() == (Bytes{kKbdAck, kKbdBatOk}));
}

BOOST_FIXTURE_TEST_CASE(ctrl_alt_del_sequence_and_irq_edges, Fixture) {
  BOOST_TEST(kbd.inject_ctrl_alt_del() == 8u);
  BOOST_TEST(irq.level());
  BOOST_TEST(irq.edges.front().first == layout::kI8042Irq);
  // Interrupt-driven guest: one byte per interrupt, each a fresh rising edge.
  Bytes got;
  size_t rising_before = irq.rising();
  BOOST_TEST(rising_before == 1u);
  while (status() & kStatusObf) got.push_back(data());
  BOOST_TEST(got == (Bytes{0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d}));
  BOOST_TEST(irq.rising() == 8u);
  BOOST_TEST(!irq.level());
  for (auto& e : irq.edges) BOOST_TEST(e.first == layout::kI8042Irq);
  // Edges strictly alternate.
  for (size_t i = 1; i < irq.edges.size(); ++i) BOOST_TEST(irq.edges[i].second != irq.edges[i - 1].second);
  BOOST_TEST(counter("irqs") == 8u);
}

BOOST_FIXTURE_TEST_CASE(no_irq_when_keyboard_interrupt_disabled, Fixture) {
  command(kCmdWriteRamFirst);
  write_data(kCfgSys | kCfgTranslate);
  const uint8_t key[] = {0x1e, 0x9e};
  kbd.inject_scancodes(key);
  BOOST_TEST(irq.edges.empty());
  BOOST_TEST((status() & kStatusObf) != 0);  // polling still works
  // Enabling the interrupt with a byte waiting raises the line.
  command(kCmdWriteRamFirst);
  write_data(kCfgPowerOn);
  BOOST_TEST(irq.level());
  BOOST_TEST(drain() == (Bytes{0x1e, 0x9e}));
  BOOST_TEST(!irq.level());
}

BOOST_FIXTURE_TEST_CASE(controller_replies_raise_irq1, Fixture) {
  command(kCmdReadRamFirst);
  BOOST_TEST(irq.level());
  data();
  BOOST_TEST(!irq.level());
  BOOST_TEST(irq.edges.size() == 2u);
}

BOOST_FIXTURE_TEST_CASE(injection_is_bounded_and_drops_are_counted, Fixture) {
  std::vector<uint8_t> many(kKbdQueueSize + 50);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<uint8_t>(i);
  const size_t accepted = kbd.inject_scancodes(many);
  BOOST_TEST(accepted == kKbdQueueSize);
  BOOST_TEST(counter("input_dropped") == many.size() - kKbdQueueSize);
  const Bytes got = drain();
  BOOST_TEST(got.size() == kKbdQueueSize);
  for (size_t i = 0; i < got.size(); ++i) BOOST_TEST(got[i] == static_cast<uint8_t>(i));
}

BOOST_FIXTURE_TEST_CASE(reading_an_empty_buffer_returns_the_last_byte, Fixture) {
  command(kCmdSelfTest);
  BOOST_TEST(data() == kSelfTestOk);
  BOOST_TEST(data() == kSelfTestOk);
  BOOST_TEST(!(status() & kStatusObf));
}

BOOST_FIXTURE_TEST_CASE(wide_accesses_only_use_the_first_byte, Fixture) {
  uint64_t v = 0;
  bus.read(vmm::AddressSpace::pio, layout::kI8042Command, 4, v);
  BOOST_TEST(v == (0xffffff00u | kStatusUnlocked | kStatusSys));
  bus.write(vmm::AddressSpace::pio, layout::kI8042Command, 2, 0xfe00 | kCmdSelfTest);
  BOOST_TEST(events.resets.empty());
  BOOST_TEST(drain() == Bytes{kSelfTestOk});
  // The device's own window: offsets 1-3 are not its ports.
  BOOST_TEST(kbd.io_read(1, 1) == 0xffu);
  kbd.io_write(2, 1, layout::kI8042ResetCommand);
  BOOST_TEST(events.resets.empty());
}

BOOST_FIXTURE_TEST_CASE(reset_returns_to_power_on_state, Fixture) {
  command(kCmdWriteRamFirst);
  write_data(kCfgKbdInt | kCfgKbdDisable);
  command(kCmdWriteOutPort);  // left pending
  write_data(kKbdDisable);    // consumed as output port value 0xf5 (bit 0 set)
  const uint8_t key[] = {0x1e};
  kbd.inject_scancodes(key);
  command(kCmdWriteKbdBuffer);
  write_data(0x99);
  BOOST_TEST(irq.level());
  kbd.reset();
  BOOST_TEST(!irq.level());
  BOOST_TEST(status() == (kStatusUnlocked | kStatusSys));
  BOOST_TEST(reg("config") == kCfgPowerOn);
  BOOST_TEST(reg("output_port") == kOutPowerOn);
  BOOST_TEST(reg("kbd_scanning") == 1u);
  BOOST_TEST(drain().empty());
  BOOST_TEST(counter("kbd_queue") == 0u);
}

BOOST_AUTO_TEST_CASE(hostile_port_traffic_never_faults) {
  IrqRecorder irq;
  EventRecorder events;
  I8042 kbd("kbd", irq, events);
  std::mt19937_64 rng(0x8042);
  const unsigned sizes[] = {1, 2, 4};
  for (int i = 0; i < 200000; ++i) {
    const uint64_t offset = rng() % 8;
    const unsigned size = sizes[rng() % 3];
    const uint64_t value = rng() & vmm::all_ones(size);
    switch (rng() % 4) {
      case 0: kbd.io_read(offset, size); break;
      case 1: {
        const uint8_t b[] = {static_cast<uint8_t>(value)};
        kbd.inject_scancodes(b);
        break;
      }
      default: kbd.io_write(offset, size, value); break;
    }
  }
  // The line the irqchip saw is consistent, and only ever IRQ 1.
  for (auto& e : irq.edges) BOOST_TEST_REQUIRE(e.first == layout::kI8042Irq);
  for (size_t i = 1; i < irq.edges.size(); ++i) BOOST_TEST_REQUIRE(irq.edges[i].second != irq.edges[i - 1].second);
  BOOST_TEST(events.poweroffs.empty());
  const auto s = kbd.export_state();
  BOOST_TEST(s.counters().at("kbd_queue") <= kKbdQueueSize + 2 * kCtrlQueueSize);
  BOOST_TEST(s.counters().at("controller_queue") <= kCtrlQueueSize);
  kbd.reset();
  BOOST_TEST(s.registers().size() > 0u);
}

BOOST_AUTO_TEST_CASE(concurrent_guest_io_and_host_injection) {
  // vCPU threads polling and commanding while the host injects keys: no
  // deadlock (events are raised outside the device lock), no lost bytes
  // beyond what the counters say, clean under ASan.
  struct LockedIrq : IrqLine {
    std::mutex m;
    uint64_t n = 0;
    void set_level(uint32_t, bool) override {
      std::lock_guard l(m);
      ++n;
    }
  } irq;
  struct CountingEvents : DeviceEvents {
    std::atomic<uint64_t> resets{0};
    I8042* dev = nullptr;
    void reset_requested(std::string_view) override {
      ++resets;
      dev->reset();  // an owner that resets synchronously must not deadlock
    }
    void poweroff_requested(std::string_view) override {}
    void debug_exit(std::string_view, int) override {}
    void progress(std::string_view, uint8_t) override {}
  } events;
  I8042 kbd("kbd", irq, events);
  events.dev = &kbd;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&kbd, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < 20000; ++i) {
        if (rng() % 2) kbd.io_read(rng() % 2 ? kDataOffset : kCommandOffset, 1);
        else kbd.io_write(rng() % 2 ? kDataOffset : kCommandOffset, 1, rng() & 0xff);
      }
    });
  }
  threads.emplace_back([&kbd] {
    for (int i = 0; i < 5000; ++i) kbd.inject_ctrl_alt_del();
  });
  for (auto& th : threads) th.join();
  const auto s = kbd.export_state();
  BOOST_TEST(s.counters().at("reset_requests") == events.resets.load());
  BOOST_TEST(s.counters().at("injected") + s.counters().at("input_dropped") +
                 s.counters().at("input_discarded_disabled") ==
             5000u * 8);
}
