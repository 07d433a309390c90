// The PCI host bridge as a guest's PCI probe sees it: configuration
// mechanism #1 answers (Linux's type-1 check reads back 0x80000000), the host
// bridge is at 00:00.0 with the host-bridge class, every other function is an
// empty slot (all-ones), and hostile accesses (narrow CONFIG_ADDRESS, data
// without the enable bit, writes to the read-only header, accesses crossing
// the dword) change nothing.
#define BOOST_TEST_MODULE pci_host
#include <boost/test/unit_test.hpp>

#include "devices/pci_host.hpp"

using namespace apiary::devices;

namespace {
uint32_t address(unsigned bus, unsigned dev, unsigned fn, unsigned reg) {
  return 0x80000000u | bus << 16 | dev << 11 | fn << 8 | reg;
}
struct Bridge {
  PciHostBridge pci{"pci-host"};
  uint64_t read(unsigned bus, unsigned dev, unsigned fn, unsigned reg, unsigned size = 4) {
    pci.address_port().io_write(0, 4, address(bus, dev, fn, reg & ~3u));
    return pci.data_port().io_read(reg & 3u, size);
  }
  uint64_t counter(const std::string& name) { return pci.export_state().counters().at(name); }
};
}  // namespace

BOOST_FIXTURE_TEST_CASE(the_type1_probe_reads_back_the_enable_bit, Bridge) {
  pci.address_port().io_write(0, 4, 0x80000000u);
  BOOST_TEST(pci.address_port().io_read(0, 4) == 0x80000000u);
  // Reserved bits (30:24, 1:0) are not kept.
  pci.address_port().io_write(0, 4, 0xffffffffu);
  BOOST_TEST(pci.address_port().io_read(0, 4) == 0x80fffffcu);
}

BOOST_FIXTURE_TEST_CASE(the_host_bridge_is_at_00_00_0_and_other_slots_are_empty, Bridge) {
  BOOST_TEST(read(0, 0, 0, 0x00) == 0x00081b36u);           // vendor 1b36, device 0008
  BOOST_TEST(read(0, 0, 0, 0x0a, 2) == 0x0600u);            // class: bridge, host
  BOOST_TEST(read(0, 0, 0, 0x0e, 1) == 0x00u);              // header type 0, one function
  BOOST_TEST(read(0, 0, 0, 0x10) == 0u);                    // no BAR
  BOOST_TEST(read(0, 0, 0, 0x2c) == 0x11001af4u);           // subsystem
  BOOST_TEST(read(0, 1, 0, 0x00) == 0xffffffffu);           // empty slot
  BOOST_TEST(read(0, 0, 1, 0x00, 2) == 0xffffu);            // no function 1
  BOOST_TEST(read(1, 0, 0, 0x00) == 0xffffffffu);           // no bus 1
  BOOST_TEST(read(0, 0, 0, 0x02, 2) == 0x0008u);            // device id through a word at 0xcfe
}

BOOST_FIXTURE_TEST_CASE(hostile_accesses_change_nothing, Bridge) {
  // Data reads without the enable bit are all-ones.
  pci.address_port().io_write(0, 4, 0x00000000u);
  BOOST_TEST(pci.data_port().io_read(0, 4) == 0xffffffffu);
  // A byte or word write at 0xcf8 is not CONFIG_ADDRESS.
  pci.address_port().io_write(0, 4, address(0, 0, 0, 0));
  pci.address_port().io_write(0, 1, 0x55);
  pci.address_port().io_write(0, 2, 0x5555);
  BOOST_TEST(pci.address_port().io_read(0, 4) == address(0, 0, 0, 0));
  BOOST_TEST(pci.address_port().io_read(0, 1) == 0xffu);
  // The header is read-only: a write to the vendor id or a BAR changes nothing.
  pci.data_port().io_write(0, 4, 0xdeadbeef);
  pci.address_port().io_write(0, 4, address(0, 0, 0, 0x10));
  pci.data_port().io_write(0, 4, 0xffffffffu);  // BAR sizing
  BOOST_TEST(pci.data_port().io_read(0, 4) == 0u);
  BOOST_TEST(read(0, 0, 0, 0) == 0x00081b36u);
  BOOST_TEST(counter("config_writes") == 2u);
  // A dword at 0xcfd would cross CONFIG_DATA's end: refused, all-ones.
  pci.address_port().io_write(0, 4, address(0, 0, 0, 0));
  BOOST_TEST(pci.data_port().io_read(1, 4) == 0xffffffffu);
  pci.data_port().io_write(3, 2, 0x1234);
  BOOST_TEST(counter("ignored_accesses") >= 4u);
  pci.reset();
  BOOST_TEST(pci.address_port().io_read(0, 4) == 0u);
}
