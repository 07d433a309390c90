// The ACPI tables Apiary writes for guests without firmware
// (vmm-core/acpi.hpp), walked as a kernel walks them: the RSDP's checksums
// and XSDT pointer, every table's checksum and length, the FADT's power
// management ports, SCI and reset register from layout.hpp, one enabled
// local APIC per vCPU in the MADT, and \_S5 plus the devices in the DSDT.
#define BOOST_TEST_MODULE acpi
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <string>

#include "vmm-core/acpi.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/layout.hpp"

using namespace apiary;
using namespace apiary::vmm;

namespace {

struct Image {
  std::vector<uint8_t> bytes;
  acpi::Placement at;
  const uint8_t* p(uint64_t gpa) const { return bytes.data() + (gpa - layout::kAcpiTables); }
  template <class T>
  T get(uint64_t gpa) const {
    T v;
    std::memcpy(&v, p(gpa), sizeof v);
    return v;
  }
  std::string sig(uint64_t gpa) const { return std::string(reinterpret_cast<const char*>(p(gpa)), 4); }
  uint32_t len(uint64_t gpa) const { return get<uint32_t>(gpa + 4); }
  bool contains(uint64_t gpa, const std::string& needle) const {
    const std::string body(reinterpret_cast<const char*>(p(gpa)), len(gpa));
    return body.find(needle) != std::string::npos;
  }
};

Image build(acpi::Config c) {
  Image i;
  i.bytes = acpi::build(c, &i.at);
  return i;
}

}  // namespace

BOOST_AUTO_TEST_CASE(rsdp_points_at_an_xsdt_listing_the_fadt_and_madt) {
  const Image i = build({2, {}});
  BOOST_TEST(i.at.rsdp == layout::kAcpiTables);
  BOOST_TEST(std::string(reinterpret_cast<const char*>(i.p(i.at.rsdp)), 8) == "RSD PTR ");
  BOOST_TEST(acpi::checksum(i.p(i.at.rsdp), 20) == 0);
  BOOST_TEST(acpi::checksum(i.p(i.at.rsdp), 36) == 0);
  BOOST_TEST(i.get<uint8_t>(i.at.rsdp + 15) == 2);  // revision: XSDT
  BOOST_TEST(i.get<uint64_t>(i.at.rsdp + 24) == i.at.xsdt);
  BOOST_TEST(i.sig(i.at.xsdt) == "XSDT");
  BOOST_TEST(i.len(i.at.xsdt) == 36u + 16u);
  BOOST_TEST(i.get<uint64_t>(i.at.xsdt + 36) == i.at.fadt);
  BOOST_TEST(i.get<uint64_t>(i.at.xsdt + 44) == i.at.madt);
  for (uint64_t t : {i.at.xsdt, i.at.fadt, i.at.madt, i.at.dsdt}) {
    BOOST_TEST(acpi::checksum(i.p(t), i.len(t)) == 0, i.sig(t));
    BOOST_TEST(t + i.len(t) <= i.at.end);
  }
  BOOST_TEST(i.at.end - layout::kAcpiTables <= layout::kAcpiTablesMax);
  BOOST_TEST(i.at.facs % 64 == 0u);
  BOOST_TEST(i.sig(i.at.facs) == "FACS");
}

BOOST_AUTO_TEST_CASE(fadt_names_the_pm_ports_sci_reset_register_facs_and_dsdt) {
  const Image i = build({1, {}});
  const uint64_t f = i.at.fadt;
  BOOST_TEST(i.sig(f) == "FACP");
  BOOST_TEST(i.len(f) == 276u);
  BOOST_TEST(i.get<uint16_t>(f + 46) == layout::kAcpiSciIrq);
  BOOST_TEST(i.get<uint32_t>(f + 48) == 0u);  // no SMI_CMD: always in ACPI mode
  BOOST_TEST(i.get<uint32_t>(f + 56) == layout::kAcpiPm1aEvt);
  BOOST_TEST(i.get<uint32_t>(f + 64) == layout::kAcpiPm1aCnt);
  BOOST_TEST(i.get<uint8_t>(f + 88) == layout::kAcpiPm1aEvtLen);
  BOOST_TEST(i.get<uint8_t>(f + 89) == layout::kAcpiPm1aCntLen);
  const uint32_t flags = i.get<uint32_t>(f + 112);
  BOOST_TEST((flags & (1u << 4)) == 0u);   // PWR_BUTTON clear: the fixed power button exists
  BOOST_TEST((flags & (1u << 10)) != 0u);  // RESET_REG_SUP
  BOOST_TEST(i.get<uint8_t>(f + 116) == 1);  // reset register in I/O space...
  BOOST_TEST(i.get<uint64_t>(f + 120) == layout::kResetControl);  // ...at 0xCF9
  BOOST_TEST(i.get<uint64_t>(f + 132) == i.at.facs);
  BOOST_TEST(i.get<uint64_t>(f + 140) == i.at.dsdt);
}

BOOST_AUTO_TEST_CASE(madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic) {
  for (uint32_t vcpus : {1u, 4u, layout::kMaxVcpus}) {
    const Image i = build({vcpus, {{layout::kVirtioMmioBase, layout::kVirtioIrqs[0]}}});
    const uint64_t m = i.at.madt;
    BOOST_TEST(i.sig(m) == "APIC");
    BOOST_TEST(i.get<uint32_t>(m + 36) == layout::kLapicBase);
    uint32_t lapics = 0, ioapics = 0, overrides = 0;
    bool sci_level = false;
    for (uint64_t e = m + 44; e < m + i.len(m); e += i.get<uint8_t>(e + 1)) {
      const uint8_t type = i.get<uint8_t>(e);
      if (type == 0) {
        BOOST_TEST(i.get<uint8_t>(e + 3) == lapics);  // APIC id = vCPU index
        BOOST_TEST(i.get<uint32_t>(e + 4) == 1u);     // enabled
        ++lapics;
      } else if (type == 1) {
        BOOST_TEST(i.get<uint32_t>(e + 4) == layout::kIoapicBase);
        ++ioapics;
      } else if (type == 2) {
        ++overrides;
        if (i.get<uint8_t>(e + 3) == layout::kAcpiSciIrq) sci_level = i.get<uint16_t>(e + 8) == 0x0d;
      }
      BOOST_REQUIRE(i.get<uint8_t>(e + 1) > 0);
    }
    BOOST_TEST(lapics == vcpus);
    BOOST_TEST(ioapics == 1u);
    BOOST_TEST(overrides == 2u);  // the SCI and the virtio slot's line
    BOOST_TEST(sci_level);
  }
}

BOOST_AUTO_TEST_CASE(dsdt_carries_s5_com1_keyboard_rtc_and_one_device_per_virtio_slot) {
  const Image i = build({1, {{layout::kVirtioMmioBase, 5}, {layout::kVirtioMmioBase + 0x1000, 6}}});
  const uint64_t d = i.at.dsdt;
  BOOST_TEST(i.sig(d) == "DSDT");
  // Name(_S5_, Package(4){5, 5, 0, 0})
  const std::string s5 = {0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00};
  BOOST_TEST(i.contains(d, s5));
  BOOST_TEST(i.contains(d, "COM1"));
  BOOST_TEST(i.contains(d, std::string("\x0c\x41\xd0\x05\x01", 5)));  // EisaId("PNP0501")
  // The i8042 keyboard (PNP0303) at 0x60 and 0x64 with IRQ 1, the RTC (PNP0B00) at 0x70..0x71.
  BOOST_TEST(i.contains(d, "KBD_"));
  BOOST_TEST(i.contains(d, std::string("\x0c\x41\xd0\x03\x03", 5)));
  BOOST_TEST(i.contains(d, std::string("\x47\x01\x60\x00\x60\x00\x01\x01\x47\x01\x64\x00\x64\x00\x01\x01\x22\x02\x00", 19)));
  BOOST_TEST(i.contains(d, "RTC_"));
  BOOST_TEST(i.contains(d, std::string("\x0c\x41\xd0\x0b\x00", 5)));
  BOOST_TEST(i.contains(d, std::string("\x47\x01\x70\x00\x70\x00\x01\x02\x79", 9)));
  BOOST_TEST(i.contains(d, "VR00"));
  BOOST_TEST(i.contains(d, "VR01"));
  BOOST_TEST(i.contains(d, std::string("LNRO0005\0", 9)));
}

BOOST_AUTO_TEST_CASE(bad_configurations_are_refused) {
  BOOST_CHECK_THROW(acpi::build({0, {}}), Error);
  BOOST_CHECK_THROW(acpi::build({layout::kMaxVcpus + 1, {}}), Error);
}
