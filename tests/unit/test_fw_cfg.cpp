// fw_cfg (devices/fw_cfg.cpp), no KVM needed.
//
// Reads every standard item through the data port and through DMA the way
// SeaBIOS / Linux's qemu_fw_cfg do (big-endian DMA address halves, high then
// low, FWCfgDmaAccess in guest RAM), checks the file directory byte by byte,
// and throws hostile DMA at it: descriptors and buffers outside RAM, lengths
// that wrap or run past the end, WRITE, and random traffic of every size on
// every port offset. Under ASan/UBSan this also proves nothing strays
// outside guest RAM.
#define BOOST_TEST_MODULE fw_cfg
#include <boost/test/unit_test.hpp>

#include <byteswap.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "devices/fw_cfg.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/layout.hpp"

namespace layout = apiary::layout;
namespace vmm = apiary::vmm;
using namespace apiary::devices;
using namespace apiary::devices::fw_cfg;
using Bytes = std::vector<uint8_t>;

namespace {

constexpr uint64_t kRam = 64ull << 20;
constexpr uint64_t kDesc = 0x1000, kBuf = 0x2000;

Bytes be(uint64_t v, unsigned n) {
  Bytes out(n);
  for (unsigned i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
  return out;
}
uint64_t le_of(const Bytes& b) {
  uint64_t v = 0;
  for (size_t i = b.size(); i-- > 0;) v = (v << 8) | b[i];
  return v;
}
uint64_t be_of(const uint8_t* p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

struct Fixture {
  vmm::GuestMemory mem{kRam};
  const Bytes kernel = Bytes(5000, 0xab);
  const Bytes initrd = {1, 2, 3, 4, 5, 6, 7};
  FwCfg fw{"fw_cfg", mem, 4, kRam, kernel, initrd, "console=ttyS0 quiet"};
  vmm::Bus bus;
  Fixture() { bus.add(vmm::AddressSpace::pio, layout::kFwCfgSelector, layout::kFwCfgPorts, &fw, "fw_cfg"); }

  void select(uint16_t key) { bus.write(vmm::AddressSpace::pio, layout::kFwCfgSelector, 2, key); }
  Bytes read_data(size_t n) {
    Bytes out;
    for (size_t i = 0; i < n; ++i) {
      uint64_t v = 0;
      bus.read(vmm::AddressSpace::pio, layout::kFwCfgData, 1, v);
      out.push_back(static_cast<uint8_t>(v));
    }
    return out;
  }
  Bytes item(uint16_t key, size_t n) {
    select(key);
    return read_data(n);
  }
  // The guest's side of a DMA transfer: descriptor at `desc`, trigger, and
  // the control word the device wrote back.
  void trigger(uint64_t desc) {
    bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma, 4, bswap_32(static_cast<uint32_t>(desc >> 32)));
    bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma + 4, 4, bswap_32(static_cast<uint32_t>(desc)));
  }
  uint32_t dma(uint32_t control, uint32_t length, uint64_t address, uint64_t desc = kDesc) {
    Bytes d = be(control, 4);
    for (uint8_t b : be(length, 4)) d.push_back(b);
    for (uint8_t b : be(address, 8)) d.push_back(b);
    mem.write(desc, d);
    trigger(desc);
    return static_cast<uint32_t>(be_of(mem.host_range(desc, 4), 4));
  }
  Bytes ram(uint64_t gpa, size_t n) {
    Bytes out(n);
    mem.read(gpa, out);
    return out;
  }
  uint64_t counter(const std::string& k) const { return fw.export_state().counters().at(k); }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(signature_and_id_via_data_port, Fixture) {
  BOOST_TEST(item(kSignature, 4) == (Bytes{'Q', 'E', 'M', 'U'}));
  BOOST_TEST(read_data(2) == (Bytes{0, 0}));  // past the end: 0
  BOOST_TEST(le_of(item(kId, 4)) == (kIdTraditional | kIdDma));
  // The power-on selector is the signature.
  fw.reset();
  BOOST_TEST(read_data(4) == (Bytes{'Q', 'E', 'M', 'U'}));
}

BOOST_FIXTURE_TEST_CASE(machine_items_via_data_port, Fixture) {
  BOOST_TEST(le_of(item(kNbCpus, 2)) == 4u);
  BOOST_TEST(le_of(item(kRamSize, 8)) == kRam);
  BOOST_TEST(le_of(item(kKernelSize, 4)) == kernel.size());
  BOOST_TEST(item(kKernelData, kernel.size()) == kernel);
  BOOST_TEST(le_of(item(kInitrdSize, 4)) == initrd.size());
  BOOST_TEST(item(kInitrdData, initrd.size() + 1) == (Bytes{1, 2, 3, 4, 5, 6, 7, 0}));
  const std::string cmd = "console=ttyS0 quiet";
  BOOST_TEST(le_of(item(kCmdlineSize, 4)) == cmd.size() + 1);
  Bytes want(cmd.begin(), cmd.end());
  want.push_back(0);
  BOOST_TEST(item(kCmdlineData, cmd.size() + 1) == want);
}

BOOST_FIXTURE_TEST_CASE(selection_rewinds_and_missing_items_read_zero, Fixture) {
  select(kSignature);
  read_data(2);
  select(kSignature);
  BOOST_TEST(read_data(1) == Bytes{'Q'});
  BOOST_TEST(item(0x3fff, 4) == (Bytes{0, 0, 0, 0}));
  BOOST_TEST(item(0x8000, 2) == (Bytes{0, 0}));   // no arch-local items
  BOOST_TEST(item(kWriteChannel | kSignature, 1) == Bytes{'Q'});  // write flag ignored
  uint64_t v = 0;
  bus.read(vmm::AddressSpace::pio, layout::kFwCfgSelector, 2, v);
  BOOST_TEST(v == kSignature);
  // Wide data reads: consecutive bytes, first in the low bits.
  select(kSignature);
  bus.read(vmm::AddressSpace::pio, layout::kFwCfgData, 4, v);
  BOOST_TEST(v == 0x554d4551u);
}

BOOST_FIXTURE_TEST_CASE(writes_that_are_not_supported_change_nothing, Fixture) {
  select(kCmdlineData);
  read_data(3);
  bus.write(vmm::AddressSpace::pio, layout::kFwCfgData, 1, 0x41);  // data-port writes ignored
  bus.write(vmm::AddressSpace::pio, layout::kFwCfgSelector, 1, kSignature);  // byte write: not a selection
  BOOST_TEST(read_data(2) == (Bytes{'s', 'o'}));
  BOOST_TEST(counter("ignored_writes") == 2u);
  BOOST_TEST(item(kCmdlineData, 1) == Bytes{'c'});
}

BOOST_FIXTURE_TEST_CASE(dma_register_reads_the_signature, Fixture) {
  uint64_t hi = 0, lo = 0;
  bus.read(vmm::AddressSpace::pio, layout::kFwCfgDma, 4, hi);
  bus.read(vmm::AddressSpace::pio, layout::kFwCfgDma + 4, 4, lo);
  const uint64_t sig = (uint64_t{bswap_32(static_cast<uint32_t>(hi))} << 32) | bswap_32(static_cast<uint32_t>(lo));
  BOOST_TEST(sig == kDmaSignature);
  BOOST_TEST(sig == 0x51454d5520434647ull);  // "QEMU CFG"
  uint64_t b = 0;
  bus.read(vmm::AddressSpace::pio, layout::kFwCfgDma + 7, 1, b);
  BOOST_TEST(b == 'G');
}

BOOST_FIXTURE_TEST_CASE(dma_select_and_read, Fixture) {
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kSignature} << kDmaSelectShift), 4, kBuf) == 0u);
  BOOST_TEST(ram(kBuf, 4) == (Bytes{'Q', 'E', 'M', 'U'}));
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kId} << kDmaSelectShift), 4, kBuf) == 0u);
  BOOST_TEST(le_of(ram(kBuf, 4)) == 3u);
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kNbCpus} << kDmaSelectShift), 2, kBuf) == 0u);
  BOOST_TEST(le_of(ram(kBuf, 2)) == 4u);
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kCmdlineSize} << kDmaSelectShift), 4, kBuf) == 0u);
  const uint64_t n = le_of(ram(kBuf, 4));
  BOOST_TEST(n == 20u);
  mem.fill(kBuf, 64, 0xee);
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kCmdlineData} << kDmaSelectShift), static_cast<uint32_t>(n),
                 kBuf) == 0u);
  const Bytes got = ram(kBuf, n + 1);
  BOOST_TEST(std::string(got.begin(), got.begin() + n - 1) == "console=ttyS0 quiet");
  BOOST_TEST(got[n - 1] == 0);
  BOOST_TEST(got[n] == 0xee);  // nothing past `length`
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kKernelData} << kDmaSelectShift),
                 static_cast<uint32_t>(kernel.size()), 0x100000) == 0u);
  BOOST_TEST(ram(0x100000, kernel.size()) == kernel);
  BOOST_TEST(counter("dma_bytes") == 4u + 4 + 2 + 4 + n + kernel.size());
  BOOST_TEST(counter("dma_errors") == 0u);
}

BOOST_FIXTURE_TEST_CASE(dma_continues_from_the_data_port_offset_skip_and_zero_fill, Fixture) {
  select(kInitrdData);
  BOOST_TEST(read_data(2) == (Bytes{1, 2}));
  BOOST_TEST(dma(kDmaSkip, 2, 0) == 0u);  // skip 3, 4
  mem.fill(kBuf, 8, 0xee);
  BOOST_TEST(dma(kDmaRead, 6, kBuf) == 0u);  // 5, 6, 7, then zeros
  BOOST_TEST(ram(kBuf, 7) == (Bytes{5, 6, 7, 0, 0, 0, 0xee}));
  BOOST_TEST(read_data(1) == Bytes{0});
  // A control word with none of READ/SKIP/WRITE does nothing, successfully.
  BOOST_TEST(dma(kDmaSelect | (uint32_t{kSignature} << kDmaSelectShift), 4, kBuf) == 0u);
  BOOST_TEST(read_data(1) == Bytes{'Q'});
  // Zero-length read.
  BOOST_TEST(dma(kDmaRead, 0, kBuf) == 0u);
}

BOOST_FIXTURE_TEST_CASE(dma_write_is_an_error, Fixture) {
  mem.fill(kBuf, 4, 0x11);
  BOOST_TEST(dma(kDmaSelect | kDmaWrite | (uint32_t{kCmdlineData} << kDmaSelectShift), 4, kBuf) == kDmaError);
  BOOST_TEST(ram(kBuf, 4) == (Bytes{0x11, 0x11, 0x11, 0x11}));
  BOOST_TEST(item(kCmdlineData, 1) == Bytes{'c'});
  BOOST_TEST(counter("dma_errors") == 1u);
}

BOOST_FIXTURE_TEST_CASE(dma_out_of_range_buffers_set_error, Fixture) {
  const uint32_t read_sig = kDmaSelect | kDmaRead | (uint32_t{kSignature} << kDmaSelectShift);
  BOOST_TEST(dma(read_sig, 4, kRam) == kDmaError);                      // just past RAM
  BOOST_TEST(dma(read_sig, 4, kRam - 2) == kDmaError);                  // straddles the end
  BOOST_TEST(dma(read_sig, 0xffffffffu, 0) == kDmaError);               // longer than RAM
  BOOST_TEST(dma(read_sig, 16, 0xfffffffffffffff8ull) == kDmaError);    // wraps
  BOOST_TEST(dma(read_sig, 4, layout::kMmioHoleStart) == kDmaError);    // MMIO, not RAM
  BOOST_TEST(dma(read_sig, 4, layout::kMmioHoleEnd) == kDmaError);      // no RAM above 4 GiB here
  BOOST_TEST(dma(read_sig, 4, kRam - 4) == 0u);                         // the last 4 bytes are fine
  BOOST_TEST(ram(kRam - 4, 4) == (Bytes{'Q', 'E', 'M', 'U'}));
  BOOST_TEST(counter("dma_errors") == 6u);
}

BOOST_FIXTURE_TEST_CASE(dma_descriptor_outside_ram_is_counted, Fixture) {
  trigger(kRam - 8);  // the 16-byte descriptor straddles the end of RAM
  trigger(kRam);
  trigger(0xfffffffffffffff8ull);
  trigger(layout::kMmioHoleStart);
  BOOST_TEST(counter("dma_bad_descriptor") == 4u);
  BOOST_TEST(counter("dma_errors") == 4u);
  // The device is still usable.
  BOOST_TEST(dma(kDmaSelect | kDmaRead, 4, kBuf) == 0u);
  BOOST_TEST(ram(kBuf, 4) == (Bytes{'Q', 'E', 'M', 'U'}));
}

BOOST_FIXTURE_TEST_CASE(dma_register_halves_and_byte_writes, Fixture) {
  Bytes d = be(kDmaSelect | kDmaRead | (uint32_t{kId} << kDmaSelectShift), 4);
  for (uint8_t b : be(4, 4)) d.push_back(b);
  for (uint8_t b : be(kBuf, 8)) d.push_back(b);
  mem.write(kDesc, d);
  // Only the low half: the high half is 0 (cleared after every transfer).
  bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma, 4, bswap_32(1));
  bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma + 4, 4, bswap_32(static_cast<uint32_t>(kDesc)));
  BOOST_TEST(counter("dma_bad_descriptor") == 1u);  // 0x1_0000_1000 is not RAM
  bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma + 4, 4, bswap_32(static_cast<uint32_t>(kDesc)));
  BOOST_TEST(be_of(mem.host_range(kDesc, 4), 4) == 0u);
  BOOST_TEST(le_of(ram(kBuf, 4)) == 3u);
  // Byte by byte: the write of the last byte starts it.
  mem.write(kDesc, d);
  mem.fill(kBuf, 4, 0);
  const Bytes addr = be(kDesc, 8);
  for (unsigned i = 0; i < 8; ++i) {
    bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma + i, 1, addr[i]);
    if (i < 7) BOOST_TEST(le_of(ram(kBuf, 4)) == 0u);
  }
  BOOST_TEST(le_of(ram(kBuf, 4)) == 3u);
  BOOST_TEST(counter("dma_ops") == 3u);
}

BOOST_FIXTURE_TEST_CASE(file_directory_layout, Fixture) {
  const Bytes a = {1, 2, 3};
  const Bytes b(300, 0x5a);
  BOOST_TEST(fw.add_file("etc/apiary/a", a) == kFileFirst);
  BOOST_TEST(fw.add_file("opt/org.apiary/b", b) == kFileFirst + 1);
  const Bytes dir = item(kFileDir, 4 + 2 * kFileEntrySize + 4);
  BOOST_TEST(be_of(dir.data(), 4) == 2u);
  const uint8_t* e0 = dir.data() + 4;
  BOOST_TEST(be_of(e0, 4) == 3u);
  BOOST_TEST(be_of(e0 + 4, 2) == kFileFirst);
  BOOST_TEST(be_of(e0 + 6, 2) == 0u);
  BOOST_TEST(std::string(reinterpret_cast<const char*>(e0 + 8)) == "etc/apiary/a");
  for (size_t i = 8 + 12; i < kFileEntrySize; ++i) BOOST_TEST(e0[i] == 0);
  const uint8_t* e1 = e0 + kFileEntrySize;
  BOOST_TEST(be_of(e1, 4) == 300u);
  BOOST_TEST(be_of(e1 + 4, 2) == kFileFirst + 1u);
  BOOST_TEST(std::string(reinterpret_cast<const char*>(e1 + 8)) == "opt/org.apiary/b");
  BOOST_TEST(be_of(dir.data() + 4 + 2 * kFileEntrySize, 4) == 0u);  // past the end
  // The files themselves, by data port and by DMA.
  BOOST_TEST(item(kFileFirst, 4) == (Bytes{1, 2, 3, 0}));
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kFileFirst + 1} << kDmaSelectShift), 300, kBuf) == 0u);
  BOOST_TEST(ram(kBuf, 300) == b);
  // The directory by DMA matches the data port.
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kFileDir} << kDmaSelectShift),
                 static_cast<uint32_t>(4 + 2 * kFileEntrySize), kBuf) == 0u);
  BOOST_TEST(ram(kBuf, 4 + 2 * kFileEntrySize) == Bytes(dir.begin(), dir.begin() + 4 + 2 * kFileEntrySize));
  BOOST_TEST(counter("files") == 2u);
}

BOOST_FIXTURE_TEST_CASE(empty_directory_and_bad_file_names, Fixture) {
  BOOST_TEST(item(kFileDir, 4) == (Bytes{0, 0, 0, 0}));
  auto code = [&](std::string name) {
    try {
      fw.add_file(name, {});
    } catch (const vmm::Error& e) {
      return e.code();
    }
    return vmm::Errc::bus_overlap;  // "no error": any code but the expected one
  };
  BOOST_TEST((code("") == vmm::Errc::invalid_argument));
  BOOST_TEST((code(std::string(kFileNameLen, 'x')) == vmm::Errc::invalid_argument));
  BOOST_TEST((code(std::string("a\0b", 3)) == vmm::Errc::invalid_argument));
  BOOST_TEST(fw.add_file(std::string(kFileNameLen - 1, 'x'), {9}) == kFileFirst);
  BOOST_TEST((code(std::string(kFileNameLen - 1, 'x')) == vmm::Errc::invalid_argument));  // duplicate
  const Bytes dir = item(kFileDir, 4 + kFileEntrySize);
  BOOST_TEST(be_of(dir.data(), 4) == 1u);
  BOOST_TEST(dir.back() == 0);  // the longest name still ends in NUL
}

BOOST_FIXTURE_TEST_CASE(empty_kernel_initrd_and_cmdline, Fixture) {
  FwCfg empty("fw", mem, 1, kRam, {}, {}, "");
  auto rd = [&](uint16_t key, size_t n) {
    empty.io_write(kSelectorOffset, 2, key);
    Bytes out;
    for (size_t i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(empty.io_read(kDataOffset, 1)));
    return out;
  };
  BOOST_TEST(le_of(rd(kKernelSize, 4)) == 0u);
  BOOST_TEST(le_of(rd(kInitrdSize, 4)) == 0u);
  BOOST_TEST(le_of(rd(kCmdlineSize, 4)) == 1u);
  BOOST_TEST(rd(kCmdlineData, 2) == (Bytes{0, 0}));
  BOOST_TEST(le_of(rd(kNbCpus, 2)) == 1u);
}

BOOST_FIXTURE_TEST_CASE(export_and_reset, Fixture) {
  select(kCmdlineData);
  read_data(3);
  bus.write(vmm::AddressSpace::pio, layout::kFwCfgDma, 4, bswap_32(0x12345678));
  auto s = fw.export_state();
  BOOST_TEST(s.kind() == "fw_cfg");
  BOOST_TEST(s.registers().at("selector") == kCmdlineData);
  BOOST_TEST(s.registers().at("offset") == 3u);
  BOOST_TEST(s.registers().at("dma_address") == 0x1234567800000000ull);
  fw.reset();
  s = fw.export_state();
  BOOST_TEST(s.registers().at("selector") == kSignature);
  BOOST_TEST(s.registers().at("offset") == 0u);
  BOOST_TEST(s.registers().at("dma_address") == 0u);
}

BOOST_FIXTURE_TEST_CASE(hostile_port_traffic_never_faults, Fixture) {
  fw.add_file("etc/x", Bytes(1000, 7));
  std::mt19937_64 rng(0xf3cf6);
  const unsigned sizes[] = {1, 2, 4};
  for (int i = 0; i < 100000; ++i) {
    const uint64_t offset = rng() % 16;
    const unsigned size = sizes[rng() % 3];
    const uint64_t value = rng() & vmm::all_ones(size);
    switch (rng() % 5) {
      case 0: fw.io_read(offset, size); break;
      case 1:
      case 2: fw.io_write(offset, size, value); break;
      case 3: {
        // A random descriptor somewhere in RAM (or straddling its end), with
        // random control, length and address, mostly near or inside RAM.
        const uint64_t desc = rng() % (kRam + 64);
        const uint32_t control = static_cast<uint32_t>(rng());
        const uint32_t length = (rng() % 4) ? static_cast<uint32_t>(rng() % 8192) : static_cast<uint32_t>(rng());
        const uint64_t address = (rng() % 4) ? rng() % (kRam + 8192) : rng();
        if (uint8_t* p = mem.host_range(desc, 16)) {
          Bytes d = be(control, 4);
          for (uint8_t b : be(length, 4)) d.push_back(b);
          for (uint8_t b : be(address, 8)) d.push_back(b);
          std::memcpy(p, d.data(), d.size());
        }
        trigger(desc);
        break;
      }
      case 4: fw.reset(); break;
    }
  }
  const auto s = fw.export_state();
  BOOST_TEST(s.counters().at("dma_ops") > 0u);
  // Still answers correctly afterwards.
  BOOST_TEST(item(kSignature, 4) == (Bytes{'Q', 'E', 'M', 'U'}));
  BOOST_TEST(dma(kDmaSelect | kDmaRead | (uint32_t{kNbCpus} << kDmaSelectShift), 2, kBuf) == 0u);
  BOOST_TEST(le_of(ram(kBuf, 2)) == 4u);
}
