// The 16550A register file, register by register, with a recording IRQ line
// and console: DLAB and the divisor, IER/IIR priorities, FIFO control and
// trigger levels, loopback through MCR, LSR/MSR semantics, the THRE and RDA
// interrupts as edges, host-side input pacing, and hostile register writes.
#define BOOST_TEST_MODULE uart16550
#include <boost/test/unit_test.hpp>
#include <random>

#include "devices/uart16550.hpp"

using namespace apiary::devices;
using namespace apiary::devices::uart;

namespace {
struct IrqRecorder : IrqLine {
  std::vector<bool> edges;
  bool level = false;
  void set_level(uint32_t gsi, bool l) override {
    BOOST_TEST(gsi == 4u);
    edges.push_back(l);
    level = l;
  }
};

struct Fixture {
  IrqRecorder irq;
  ConsoleBackend console{256};
  Uart16550 uart{"com1", 4, irq, console};
  uint8_t rd(unsigned reg) { return static_cast<uint8_t>(uart.io_read(reg, 1)); }
  void wr(unsigned reg, uint8_t v) { uart.io_write(reg, 1, v); }
  void type(const std::string& s) { uart.input({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }
};
}  // namespace

BOOST_FIXTURE_TEST_CASE(power_on_state, Fixture) {
  BOOST_TEST(rd(kIerDlm) == 0);
  BOOST_TEST(rd(kIirFcr) == kIirNoInterrupt);
  BOOST_TEST(rd(kLcr) == 0);
  BOOST_TEST(rd(kMcr) == 0);
  BOOST_TEST(rd(kLsr) == (kLsrThre | kLsrTemt));
  BOOST_TEST((rd(kMsr) & 0xf0) == (kMsrCts | kMsrDsr | kMsrDcd));
  BOOST_TEST(irq.edges.empty());
}

BOOST_FIXTURE_TEST_CASE(dlab_selects_the_divisor_latch, Fixture) {
  wr(kLcr, kLcrDlab | 0x03);
  wr(kRbrThrDll, 0x01);
  wr(kIerDlm, 0x02);
  BOOST_TEST(rd(kRbrThrDll) == 0x01);
  BOOST_TEST(rd(kIerDlm) == 0x02);
  BOOST_TEST(console.total_bytes() == 0u);  // DLL writes are not output
  wr(kLcr, 0x03);
  BOOST_TEST(rd(kIerDlm) == 0);  // IER untouched by the DLM write
  BOOST_TEST(uart.export_state().registers().at("divisor") == 0x0201u);
}

BOOST_FIXTURE_TEST_CASE(output_goes_to_the_console_and_scratch_keeps_its_value, Fixture) {
  for (char c : std::string("hi\n")) wr(kRbrThrDll, static_cast<uint8_t>(c));
  BOOST_TEST(console.history() == "hi\n");
  wr(kScr, 0x5a);
  BOOST_TEST(rd(kScr) == 0x5a);
  BOOST_TEST((rd(kLsr) & kLsrThre) != 0);  // transmission is instantaneous
}

BOOST_FIXTURE_TEST_CASE(thre_interrupt_needs_out2_and_is_acked_by_iir_read, Fixture) {
  wr(kIerDlm, kIerThre);  // THR empty: the condition is pending at once...
  BOOST_TEST(irq.edges.empty());  // ...but OUT2 gates the line
  BOOST_TEST((rd(kIirFcr) & 0x0f) == kIirThre);  // reading IIR acknowledges it
  BOOST_TEST((rd(kIirFcr) & 0x0f) == kIirNoInterrupt);
  wr(kMcr, kMcrOut2);
  wr(kRbrThrDll, 'x');  // the byte leaves; THR empty again -> interrupt
  BOOST_TEST(irq.level);
  BOOST_TEST((rd(kIirFcr) & 0x0f) == kIirThre);
  BOOST_TEST(!irq.level);  // acknowledged: the line drops
  wr(kRbrThrDll, 'y');
  BOOST_TEST(irq.level);  // a new rising edge per byte
  const std::vector<bool> expect = {true, false, true};
  BOOST_TEST(irq.edges == expect, boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(rda_interrupt_and_input, Fixture) {
  wr(kMcr, kMcrOut2);
  wr(kIerDlm, kIerRda);
  type("ab");
  BOOST_TEST(irq.level);
  BOOST_TEST((rd(kLsr) & kLsrDataReady) != 0);
  BOOST_TEST((rd(kIirFcr) & 0x0f) == kIirRda);  // non-FIFO mode: one byte triggers
  BOOST_TEST(rd(kRbrThrDll) == 'a');
  BOOST_TEST(irq.level);  // 'b' moved into the holding register
  BOOST_TEST(rd(kRbrThrDll) == 'b');
  BOOST_TEST(!irq.level);
  BOOST_TEST((rd(kLsr) & kLsrDataReady) == 0);
  BOOST_TEST(rd(kRbrThrDll) == 0);  // empty RBR reads 0, harmlessly
}

BOOST_FIXTURE_TEST_CASE(fifo_trigger_levels_and_timeout_interrupt, Fixture) {
  wr(kIirFcr, kFcrEnable | 0x80);  // trigger level 8
  BOOST_TEST((rd(kIirFcr) & kIirFifoEnabled) == kIirFifoEnabled);
  wr(kIerDlm, kIerRda);
  type("1234");
  BOOST_TEST((rd(kIirFcr) & 0x0f) == kIirTimeout);  // below the trigger: character timeout
  type("5678");
  BOOST_TEST((rd(kIirFcr) & 0x0f) == kIirRda);
  wr(kIirFcr, kFcrEnable | kFcrClearRx | 0x80);
  BOOST_TEST((rd(kLsr) & kLsrDataReady) == 0);
  // The FIFO holds 16; the rest waits in the host queue, nothing is lost.
  type(std::string(40, 'z'));
  size_t got = 0;
  while (rd(kLsr) & kLsrDataReady) {
    BOOST_TEST(rd(kRbrThrDll) == 'z');
    ++got;
  }
  BOOST_TEST(got == 40u);
  BOOST_TEST(uart.export_state().counters().at("overruns") == 0u);
}

BOOST_FIXTURE_TEST_CASE(loopback_routes_output_to_input_and_modem_lines, Fixture) {
  wr(kMcr, kMcrLoop | kMcrRts | kMcrOut2);
  wr(kRbrThrDll, 0x42);
  BOOST_TEST(console.total_bytes() == 0u);  // nothing leaves in loopback
  BOOST_TEST(rd(kRbrThrDll) == 0x42);
  const uint8_t msr = rd(kMsr);
  BOOST_TEST((msr & kMsrCts) != 0);   // RTS -> CTS
  BOOST_TEST((msr & kMsrDcd) != 0);   // OUT2 -> DCD
  BOOST_TEST((msr & kMsrDsr) == 0);   // DTR off
  BOOST_TEST((rd(kMsr) & 0x0f) == 0);  // deltas cleared by the read
  // Host input waits while in loopback, then arrives.
  type("q");
  BOOST_TEST((rd(kLsr) & kLsrDataReady) == 0);
  wr(kMcr, 0);
  BOOST_TEST(rd(kRbrThrDll) == 'q');
}

BOOST_FIXTURE_TEST_CASE(overrun_in_loopback_sets_lsr_oe_until_read, Fixture) {
  wr(kMcr, kMcrLoop);
  wr(kRbrThrDll, 1);
  wr(kRbrThrDll, 2);  // non-FIFO: the holding register is full
  BOOST_TEST((rd(kLsr) & kLsrOverrun) != 0);
  BOOST_TEST((rd(kLsr) & kLsrOverrun) == 0);  // cleared by the read
  BOOST_TEST(rd(kRbrThrDll) == 1);
}

BOOST_FIXTURE_TEST_CASE(console_history_is_bounded_drops_oldest_and_counts, Fixture) {
  for (int i = 0; i < 300; ++i) wr(kRbrThrDll, static_cast<uint8_t>('a' + i % 26));
  BOOST_TEST(console.history().size() == 256u);
  BOOST_TEST(console.dropped() == 44u);
  BOOST_TEST(console.total_bytes() == 300u);
  BOOST_TEST(console.history().front() == static_cast<char>('a' + 44 % 26));
}

BOOST_FIXTURE_TEST_CASE(host_queue_is_bounded_and_counts_drops, Fixture) {
  const size_t accepted = uart.input(std::vector<uint8_t>(kHostQueueSize + 100, 'x'));
  BOOST_TEST(accepted == kHostQueueSize);
  BOOST_TEST(uart.export_state().counters().at("input_dropped") == 100u);
}

BOOST_FIXTURE_TEST_CASE(reset_returns_to_power_on, Fixture) {
  wr(kLcr, 0x1b);
  wr(kIerDlm, 0x0f);
  wr(kMcr, kMcrOut2);
  uart.reset();
  BOOST_TEST(rd(kLcr) == 0);
  BOOST_TEST(rd(kIerDlm) == 0);
  BOOST_TEST(!irq.level);
}

BOOST_FIXTURE_TEST_CASE(hostile_register_writes_never_break_it, Fixture) {
  std::mt19937 rng(42);
  for (int i = 0; i < 200000; ++i) {
    const unsigned reg = rng() % 10;  // including offsets past the 8 registers
    const unsigned size = 1u << (rng() % 3);
    if (rng() % 2)
      uart.io_write(reg, size, rng());
    else
      uart.io_read(reg, size);
    if (i % 1000 == 0) type("k");
  }
  uart.reset();
  wr(kMcr, 0);
  wr(kLcr, 0x03);
  wr(kRbrThrDll, 'z');
  BOOST_TEST(console.history().back() == 'z');
}
