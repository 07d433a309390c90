// decode_exit() maps every kvm_run exit reason to its variant alternative.
#define BOOST_TEST_MODULE exit_decode
#include <boost/test/unit_test.hpp>

#include "vmm-core/exit.hpp"

using namespace apiary::vmm;

BOOST_AUTO_TEST_CASE(pio_and_mmio) {
  kvm_run run{};
  run.exit_reason = KVM_EXIT_IO;
  run.io.direction = KVM_EXIT_IO_OUT;
  run.io.port = 0x3f8;
  run.io.size = 1;
  run.io.count = 3;
  run.io.data_offset = 0x1000;
  Exit e = decode_exit(run);
  auto* p = std::get_if<ExitPio>(&e);
  BOOST_REQUIRE(p);
  BOOST_TEST(p->port == 0x3f8);
  BOOST_TEST(p->write);
  BOOST_TEST(p->count == 3u);
  BOOST_TEST(p->data_offset == 0x1000u);
  BOOST_TEST(std::string(exit_name(e)) == "pio");

  run.exit_reason = KVM_EXIT_MMIO;
  run.mmio.phys_addr = 0xd0000070;
  run.mmio.len = 4;
  run.mmio.is_write = 0;
  e = decode_exit(run);
  auto* m = std::get_if<ExitMmio>(&e);
  BOOST_REQUIRE(m);
  BOOST_TEST(m->addr == 0xd0000070u);
  BOOST_TEST(m->len == 4);
  BOOST_TEST(!m->write);
}

BOOST_AUTO_TEST_CASE(terminal_exits) {
  kvm_run run{};
  run.exit_reason = KVM_EXIT_SHUTDOWN;
  BOOST_TEST(std::holds_alternative<ExitShutdown>(decode_exit(run)));
  run.exit_reason = KVM_EXIT_HLT;
  BOOST_TEST(std::holds_alternative<ExitHlt>(decode_exit(run)));
  run.exit_reason = KVM_EXIT_INTR;
  BOOST_TEST(std::holds_alternative<ExitInterrupted>(decode_exit(run)));
  run.exit_reason = KVM_EXIT_INTERNAL_ERROR;
  run.internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
  run.internal.ndata = 2;
  run.internal.data[0] = 7;
  Exit e = decode_exit(run);
  BOOST_REQUIRE(std::holds_alternative<ExitInternalError>(e));
  BOOST_TEST(std::get<ExitInternalError>(e).data[0] == 7u);
  BOOST_TEST(describe(e).find("emulation failure") != std::string::npos);
  run.exit_reason = KVM_EXIT_FAIL_ENTRY;
  run.fail_entry.hardware_entry_failure_reason = 0x21;
  BOOST_TEST(std::get<ExitFailEntry>(decode_exit(run)).reason == 0x21u);
  run.exit_reason = KVM_EXIT_SYSTEM_EVENT;
  run.system_event.type = KVM_SYSTEM_EVENT_RESET;
  BOOST_TEST(std::get<ExitSystemEvent>(decode_exit(run)).type == static_cast<uint32_t>(KVM_SYSTEM_EVENT_RESET));
  run.exit_reason = 9999;
  e = decode_exit(run);
  BOOST_TEST(std::get<ExitUnknown>(e).reason == 9999u);
  BOOST_TEST(describe(e).find("9999") != std::string::npos);
}
