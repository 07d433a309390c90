#include "vmm-core/acpi.hpp"

#include <cstring>
#include <string_view>

#include "vmm-core/error.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::vmm::acpi {

namespace {

// ACPI 6.x structure sizes, revisions and flags used below.
constexpr size_t kHeaderSize = 36;
constexpr size_t kRsdpSize = 36;
constexpr size_t kFacsSize = 64;
constexpr size_t kFadtSize = 276;
constexpr uint8_t kRsdpRevision = 2;  // ACPI 2.0+: XSDT
constexpr uint8_t kXsdtRevision = 1, kFadtRevision = 6, kFadtMinor = 4, kMadtRevision = 5, kDsdtRevision = 2;
constexpr char kOemId[] = "APIARY";
constexpr char kOemTableId[] = "APIARYVM";
constexpr char kCreatorId[] = "APRY";

// FADT flags (ACPI 6.4, table 5.10).
constexpr uint32_t kFadtWbinvd = 1u << 0, kFadtProcC1 = 1u << 2, kFadtSlpButton = 1u << 5,
                   kFadtResetRegSup = 1u << 10;
// IAPC_BOOT_ARCH: legacy devices (COM1, RTC), an 8042, no VGA.
constexpr uint16_t kBootArchLegacyDevices = 1u << 0, kBootArch8042 = 1u << 1, kBootArchNoVga = 1u << 2;
constexpr uint8_t kGasSystemIo = 1, kGasAccessByte = 1;
constexpr uint8_t kResetValue = 0x06;  // SYS_RST | RST_CPU at 0xCF9
constexpr uint16_t kNoC2Latency = 101, kNoC3Latency = 1001;  // above the limits: C2/C3 unsupported

// MADT (ACPI 6.4, 5.2.12).
constexpr uint32_t kMadtPcatCompat = 1;  // dual 8259s present
constexpr uint8_t kMadtLocalApic = 0, kMadtIoApic = 1, kMadtSourceOverride = 2, kMadtLocalApicNmi = 4;
constexpr uint32_t kLocalApicEnabled = 1;
constexpr uint16_t kIntiActiveHighLevel = 0x1 | (0x3 << 2);  // polarity 01, trigger 11
constexpr uint8_t kAllProcessors = 0xff, kLint1 = 1;
constexpr uint8_t kIoApicId = 0;

// AML opcodes (ACPI 6.4, chapter 20).
constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08, kBytePrefix = 0x0a, kWordPrefix = 0x0b,
                  kDWordPrefix = 0x0c, kStringPrefix = 0x0d, kScopeOp = 0x10, kBufferOp = 0x11,
                  kPackageOp = 0x12, kExtOpPrefix = 0x5b, kDeviceOp = 0x82, kRootChar = '\\';
// Resource descriptors (ACPI 6.4, 6.4).
constexpr uint8_t kIoPortDescriptor = 0x47, kIrqNoFlagsDescriptor = 0x22, kEndTag = 0x79,
                  kMemory32FixedDescriptor = 0x86, kExtendedInterruptDescriptor = 0x89;
constexpr uint8_t kIoDecode16 = 1, kMemoryReadWrite = 1;
constexpr uint8_t kExtIrqConsumerLevelHighExclusive = 0x01;  // consumer, level, active high, exclusive

using Bytes = std::vector<uint8_t>;

void put(Bytes& b, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}
void u8(Bytes& b, uint8_t v) { b.push_back(v); }
void u16(Bytes& b, uint16_t v) { put(b, &v, 2); }
void u32(Bytes& b, uint32_t v) { put(b, &v, 4); }
void u64(Bytes& b, uint64_t v) { put(b, &v, 8); }
void text(Bytes& b, std::string_view s, size_t n) {
  for (size_t i = 0; i < n; ++i) b.push_back(i < s.size() ? static_cast<uint8_t>(s[i]) : ' ');
}
template <class T>
void patch(Bytes& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}

// A system description table header; length and checksum are fixed by finish().
Bytes header(const char* signature, uint8_t revision) {
  Bytes b;
  text(b, signature, 4);
  u32(b, 0);  // length
  u8(b, revision);
  u8(b, 0);  // checksum
  text(b, kOemId, 6);
  text(b, kOemTableId, 8);
  u32(b, 1);  // OEM revision
  text(b, kCreatorId, 4);
  u32(b, 1);  // creator revision
  return b;
}
Bytes finish(Bytes b) {
  patch<uint32_t>(b, 4, static_cast<uint32_t>(b.size()));
  b[9] = static_cast<uint8_t>(-checksum(b.data(), b.size()));
  return b;
}

// Generic address structure (12 bytes).
void gas(Bytes& b, uint8_t space, uint8_t bit_width, uint8_t access, uint64_t address) {
  u8(b, space);
  u8(b, bit_width);
  u8(b, 0);
  u8(b, access);
  u64(b, address);
}

// ---- AML -------------------------------------------------------------------

// PkgLength (20.2.4): the encoded length counts itself.
Bytes pkg_length(size_t payload) {
  Bytes b;
  if (payload + 1 <= 0x3f) {
    u8(b, static_cast<uint8_t>(payload + 1));
  } else if (payload + 2 <= 0xfff) {
    const size_t n = payload + 2;
    u8(b, static_cast<uint8_t>((1u << 6) | (n & 0xf)));
    u8(b, static_cast<uint8_t>(n >> 4));
  } else {
    const size_t n = payload + 3;
    if (n > 0xfffff) throw Error(Errc::invalid_argument, "ACPI: AML package too large");
    u8(b, static_cast<uint8_t>((2u << 6) | (n & 0xf)));
    u8(b, static_cast<uint8_t>(n >> 4));
    u8(b, static_cast<uint8_t>(n >> 12));
  }
  return b;
}
Bytes with_length(uint8_t op, const Bytes& body) {
  Bytes b{op};
  Bytes len = pkg_length(body.size());
  b.insert(b.end(), len.begin(), len.end());
  b.insert(b.end(), body.begin(), body.end());
  return b;
}
void name_seg(Bytes& b, std::string_view seg) { text(b, seg, 4); }  // 4 chars, '_'-padded by the caller
Bytes integer(uint64_t v) {
  Bytes b;
  if (v == 0) {
    u8(b, kZeroOp);
  } else if (v == 1) {
    u8(b, kOneOp);
  } else if (v <= 0xff) {
    u8(b, kBytePrefix);
    u8(b, static_cast<uint8_t>(v));
  } else if (v <= 0xffff) {
    u8(b, kWordPrefix);
    u16(b, static_cast<uint16_t>(v));
  } else {
    u8(b, kDWordPrefix);
    u32(b, static_cast<uint32_t>(v));
  }
  return b;
}
Bytes string(std::string_view s) {
  Bytes b{kStringPrefix};
  put(b, s.data(), s.size());
  u8(b, 0);
  return b;
}
// EisaId("PNP0501") as the DWORD ACPI defines: compressed vendor letters, then the product id.
Bytes eisa_id(std::string_view id) {
  const uint32_t v = ((id[0] - '@') << 26) | ((id[1] - '@') << 21) | ((id[2] - '@') << 16) |
                     static_cast<uint32_t>(std::stoul(std::string(id.substr(3)), nullptr, 16));
  const uint32_t be = __builtin_bswap32(v);
  Bytes b{kDWordPrefix};
  u32(b, be);
  return b;
}
Bytes name(std::string_view seg, const Bytes& value) {
  Bytes b{kNameOp};
  name_seg(b, seg);
  b.insert(b.end(), value.begin(), value.end());
  return b;
}
Bytes buffer(const Bytes& data) {
  Bytes body = integer(data.size());
  body.insert(body.end(), data.begin(), data.end());
  return with_length(kBufferOp, body);
}
Bytes package(const std::vector<Bytes>& elements) {
  Bytes body{static_cast<uint8_t>(elements.size())};
  for (const auto& e : elements) body.insert(body.end(), e.begin(), e.end());
  return with_length(kPackageOp, body);
}
Bytes device(std::string_view seg, const std::vector<Bytes>& terms) {
  Bytes body;
  name_seg(body, seg);
  for (const auto& t : terms) body.insert(body.end(), t.begin(), t.end());
  Bytes b{kExtOpPrefix};
  Bytes d = with_length(kDeviceOp, body);
  b.insert(b.end(), d.begin(), d.end());
  return b;
}
Bytes root_scope(std::string_view seg, const std::vector<Bytes>& terms) {
  Bytes body{static_cast<uint8_t>(kRootChar)};
  name_seg(body, seg);
  for (const auto& t : terms) body.insert(body.end(), t.begin(), t.end());
  return with_length(kScopeOp, body);
}
// A resource template's bytes, ended by the end tag (checksum 0: none).
Bytes resources(Bytes descriptors) {
  u8(descriptors, kEndTag);
  u8(descriptors, 0);
  return buffer(descriptors);
}

// An IO(Decode16, base, base, 1, length) descriptor.
void io_ports(Bytes& crs, uint16_t base, uint8_t length) {
  u8(crs, kIoPortDescriptor);
  u8(crs, kIoDecode16);
  u16(crs, base);
  u16(crs, base);
  u8(crs, 1);  // alignment
  u8(crs, length);
}
// An IRQNoFlags(){irq} descriptor (edge, active high: the ISA default).
void isa_irq(Bytes& crs, uint8_t irq) {
  u8(crs, kIrqNoFlagsDescriptor);
  u16(crs, static_cast<uint16_t>(1u << irq));
}

Bytes com1_device() {
  Bytes crs;
  io_ports(crs, layout::kCom1Base, static_cast<uint8_t>(layout::kCom1Size));
  isa_irq(crs, layout::kCom1Irq);
  return device("COM1", {name("_HID", eisa_id("PNP0501")), name("_UID", integer(1)), name("_CRS", resources(crs))});
}

// The i8042 with its keyboard (no PS/2 mouse: the controller has no aux port).
Bytes keyboard_device() {
  Bytes crs;
  io_ports(crs, layout::kI8042Data, 1);
  io_ports(crs, layout::kI8042Command, 1);
  isa_irq(crs, layout::kI8042Irq);
  return device("KBD_", {name("_HID", eisa_id("PNP0303")), name("_CRS", resources(crs))});
}

// The CMOS RTC, without an interrupt: Apiary's RTC raises none (devices/cmos_rtc.hpp).
Bytes rtc_device() {
  Bytes crs;
  io_ports(crs, layout::kRtcIndex, static_cast<uint8_t>(layout::kRtcPorts));
  return device("RTC_", {name("_HID", eisa_id("PNP0B00")), name("_CRS", resources(crs))});
}

Bytes virtio_device(size_t index, const VirtioSlot& slot) {
  Bytes crs;
  u8(crs, kMemory32FixedDescriptor);
  u16(crs, 9);  // length of the rest
  u8(crs, kMemoryReadWrite);
  u32(crs, static_cast<uint32_t>(slot.base));
  u32(crs, static_cast<uint32_t>(layout::kVirtioMmioStride));
  u8(crs, kExtendedInterruptDescriptor);
  u16(crs, 6);  // length of the rest
  u8(crs, kExtIrqConsumerLevelHighExclusive);
  u8(crs, 1);  // one interrupt
  u32(crs, slot.gsi);
  const char seg[5] = {'V', 'R', static_cast<char>('0' + index / 10), static_cast<char>('0' + index % 10), 0};
  return device(seg, {name("_HID", string("LNRO0005")), name("_UID", integer(index)), name("_CRS", resources(crs))});
}

Bytes dsdt(const Config& c) {
  Bytes b = header("DSDT", kDsdtRevision);
  // \_S5: SLP_TYPa, SLP_TYPb, reserved, reserved.
  Bytes s5 = name("_S5_", package({integer(layout::kAcpiSlpTypSoftOff), integer(layout::kAcpiSlpTypSoftOff),
                                   integer(0), integer(0)}));
  b.insert(b.end(), s5.begin(), s5.end());
  std::vector<Bytes> devices{com1_device(), keyboard_device(), rtc_device()};
  for (size_t i = 0; i < c.virtio.size(); ++i) devices.push_back(virtio_device(i, c.virtio[i]));
  Bytes sb = root_scope("_SB_", devices);
  b.insert(b.end(), sb.begin(), sb.end());
  return finish(std::move(b));
}

Bytes madt(const Config& c) {
  Bytes b = header("APIC", kMadtRevision);
  u32(b, static_cast<uint32_t>(layout::kLapicBase));
  u32(b, kMadtPcatCompat);
  for (uint32_t i = 0; i < c.vcpus; ++i) {
    u8(b, kMadtLocalApic);
    u8(b, 8);
    u8(b, static_cast<uint8_t>(i));  // ACPI processor UID
    u8(b, static_cast<uint8_t>(i));  // APIC id (x86::vcpu_cpuid reports the same)
    u32(b, kLocalApicEnabled);
  }
  u8(b, kMadtIoApic);
  u8(b, 12);
  u8(b, kIoApicId);
  u8(b, 0);
  u32(b, static_cast<uint32_t>(layout::kIoapicBase));
  u32(b, 0);  // GSI base
  // Level-triggered, active-high ISA lines: the SCI and the virtio slots below 16.
  std::vector<uint32_t> level = {layout::kAcpiSciIrq};
  for (const auto& v : c.virtio)
    if (v.gsi < 16) level.push_back(v.gsi);
  for (uint32_t irq : level) {
    u8(b, kMadtSourceOverride);
    u8(b, 10);
    u8(b, 0);  // ISA bus
    u8(b, static_cast<uint8_t>(irq));
    u32(b, irq);
    u16(b, kIntiActiveHighLevel);
  }
  u8(b, kMadtLocalApicNmi);
  u8(b, 6);
  u8(b, kAllProcessors);
  u16(b, 0);
  u8(b, kLint1);
  return finish(std::move(b));
}

Bytes fadt(uint64_t facs, uint64_t dsdt_addr) {
  Bytes b = header("FACP", kFadtRevision);
  u32(b, 0);  // FIRMWARE_CTRL: the 64-bit field below is used
  u32(b, 0);  // DSDT: likewise
  u8(b, 0);   // reserved
  u8(b, 0);   // preferred PM profile: unspecified
  u16(b, layout::kAcpiSciIrq);
  u32(b, 0);  // SMI_CMD: none, the machine is always in ACPI mode
  u8(b, 0);   // ACPI_ENABLE
  u8(b, 0);   // ACPI_DISABLE
  u8(b, 0);   // S4BIOS_REQ
  u8(b, 0);   // PSTATE_CNT
  u32(b, layout::kAcpiPm1aEvt);
  u32(b, 0);  // PM1b_EVT_BLK
  u32(b, layout::kAcpiPm1aCnt);
  u32(b, 0);  // PM1b_CNT_BLK
  u32(b, 0);  // PM2_CNT_BLK
  u32(b, 0);  // PM_TMR_BLK: no PM timer
  u32(b, 0);  // GPE0_BLK
  u32(b, 0);  // GPE1_BLK
  u8(b, static_cast<uint8_t>(layout::kAcpiPm1aEvtLen));
  u8(b, static_cast<uint8_t>(layout::kAcpiPm1aCntLen));
  u8(b, 0);  // PM2_CNT_LEN
  u8(b, 0);  // PM_TMR_LEN
  u8(b, 0);  // GPE0_BLK_LEN
  u8(b, 0);  // GPE1_BLK_LEN
  u8(b, 0);  // GPE1_BASE
  u8(b, 0);  // CST_CNT
  u16(b, kNoC2Latency);
  u16(b, kNoC3Latency);
  u16(b, 0);  // FLUSH_SIZE
  u16(b, 0);  // FLUSH_STRIDE
  u8(b, 0);   // DUTY_OFFSET
  u8(b, 0);   // DUTY_WIDTH
  u8(b, 0);   // DAY_ALRM
  u8(b, 0);   // MON_ALRM
  u8(b, 0);   // CENTURY: not advertised
  u16(b, kBootArchLegacyDevices | kBootArch8042 | kBootArchNoVga);
  u8(b, 0);  // reserved
  // The power button is a fixed feature (PWR_BUTTON clear): PWRBTN_STS in PM1.
  u32(b, kFadtWbinvd | kFadtProcC1 | kFadtSlpButton | kFadtResetRegSup);
  gas(b, kGasSystemIo, 8, kGasAccessByte, layout::kResetControl);
  u8(b, kResetValue);
  u16(b, 0);  // ARM_BOOT_ARCH
  u8(b, kFadtMinor);
  u64(b, facs);       // X_FIRMWARE_CTRL
  u64(b, dsdt_addr);  // X_DSDT
  for (int i = 0; i < 8; ++i) gas(b, 0, 0, 0, 0);  // X_PM1a_EVT ... X_GPE1: from the 32-bit fields
  gas(b, 0, 0, 0, 0);                             // SLEEP_CONTROL_REG (hardware-reduced only)
  gas(b, 0, 0, 0, 0);                             // SLEEP_STATUS_REG
  text(b, "APIARY", 8);                           // hypervisor vendor identity
  if (b.size() != kFadtSize) throw Error(Errc::invalid_argument, "ACPI: FADT layout");
  return finish(std::move(b));
}

Bytes facs_table() {
  Bytes b;
  text(b, "FACS", 4);
  u32(b, kFacsSize);
  b.resize(kFacsSize, 0);
  b[32] = 2;  // version
  return b;
}

Bytes xsdt(const std::vector<uint64_t>& tables) {
  Bytes b = header("XSDT", kXsdtRevision);
  for (uint64_t t : tables) u64(b, t);
  return finish(std::move(b));
}

Bytes rsdp(uint64_t xsdt_addr) {
  Bytes b;
  text(b, "RSD PTR ", 8);
  u8(b, 0);  // checksum of the first 20 bytes
  text(b, kOemId, 6);
  u8(b, kRsdpRevision);
  u32(b, 0);  // RSDT: none, the XSDT is used
  u32(b, kRsdpSize);
  u64(b, xsdt_addr);
  u8(b, 0);  // extended checksum
  u8(b, 0);
  u8(b, 0);
  u8(b, 0);
  b[8] = static_cast<uint8_t>(-checksum(b.data(), 20));
  b[32] = static_cast<uint8_t>(-checksum(b.data(), kRsdpSize));
  return b;
}

}  // namespace

uint8_t checksum(const uint8_t* p, size_t len) {
  uint8_t sum = 0;
  for (size_t i = 0; i < len; ++i) sum = static_cast<uint8_t>(sum + p[i]);
  return sum;
}

std::vector<uint8_t> build(const Config& config, Placement* placement) {
  if (config.vcpus == 0 || config.vcpus > layout::kMaxVcpus)
    throw Error(Errc::invalid_argument, "ACPI: " + std::to_string(config.vcpus) + " vCPUs");
  if (config.virtio.size() > 99) throw Error(Errc::invalid_argument, "ACPI: too many virtio devices");
  // Fixed order and alignment: RSDP, XSDT, FACS (64-byte aligned), FADT, MADT, DSDT.
  Placement p;
  const uint64_t base = layout::kAcpiTables;
  auto align = [](uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); };
  p.rsdp = base;
  p.xsdt = align(p.rsdp + kRsdpSize, 16);
  const size_t xsdt_size = kHeaderSize + 2 * 8;
  p.facs = align(p.xsdt + xsdt_size, 64);
  p.fadt = align(p.facs + kFacsSize, 16);
  p.madt = align(p.fadt + kFadtSize, 16);
  const Bytes m = madt(config);
  p.dsdt = align(p.madt + m.size(), 16);
  const Bytes d = dsdt(config);
  p.end = p.dsdt + d.size();
  if (p.end - base > layout::kAcpiTablesMax)
    throw Error(Errc::invalid_argument, "ACPI: tables of " + std::to_string(p.end - base) + " bytes do not fit");

  Bytes image(p.end - base, 0);
  auto place = [&](uint64_t at, const Bytes& t) { std::memcpy(image.data() + (at - base), t.data(), t.size()); };
  place(p.rsdp, rsdp(p.xsdt));
  place(p.xsdt, xsdt({p.fadt, p.madt}));
  place(p.facs, facs_table());
  place(p.fadt, fadt(p.facs, p.dsdt));
  place(p.madt, m);
  place(p.dsdt, d);
  if (placement) *placement = p;
  return image;
}

uint64_t write(GuestMemory& mem, const Config& config) {
  const std::vector<uint8_t> image = build(config);
  mem.write(layout::kAcpiTables, std::span<const uint8_t>(image));
  return layout::kAcpiTables;
}

}  // namespace apiary::vmm::acpi
