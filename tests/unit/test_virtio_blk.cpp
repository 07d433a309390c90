// virtio-blk over a temp file, driven exactly as a guest driver would: MMIO
// register accesses for negotiation and queue setup, descriptor chains and
// rings built in guest RAM, QueueNotify, then a bounded wait for the used
// ring. Covers the status state machine, I/O round trips checked against the
// host file, read-only and range refusals, injected I/O errors, pause/reset
// draining, malformed queues, a hostile register fuzzer and halt().
#define BOOST_TEST_MODULE virtio_blk
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio_blk.hpp"
#include "devices/virtio_mmio.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/guest_memory.hpp"

using namespace apiary::devices;
using namespace std::chrono_literals;
using apiary::vmm::GuestMemory;
namespace mmio = apiary::devices::virtio_mmio;
namespace blk = apiary::devices::virtio_blk;

namespace {

constexpr uint64_t kRam = 1 << 20;
constexpr uint64_t kVersion1 = 1ull << virtio::kFeatureVersion1;
constexpr uint64_t kIndirect = 1ull << virtq::kFeatureIndirectDesc;
constexpr uint64_t kEventIdx = 1ull << virtq::kFeatureEventIdx;
constexpr uint32_t kSectors = 64;
constexpr uint32_t kAck = virtio::kStatusAcknowledge, kDrv = virtio::kStatusDriver, kFeatOk = virtio::kStatusFeaturesOk,
                   kDrvOk = virtio::kStatusDriverOk, kNeedsReset = virtio::kStatusNeedsReset;

uint8_t pattern(uint64_t byte_offset, uint8_t seed) {
  return static_cast<uint8_t>(byte_offset / 512 * 31 + byte_offset * 7 + seed);
}

// A backing file in the temp directory, removed by the test (never by the device).
struct TempFile {
  std::string path;
  explicit TempFile(uint64_t bytes, uint8_t seed = 1) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "apiary-blk-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    BOOST_REQUIRE(fd >= 0);
    std::vector<uint8_t> data(bytes);
    for (uint64_t i = 0; i < bytes; ++i) data[i] = pattern(i, seed);
    BOOST_REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    ::close(fd);
    path = tmpl;
  }
  ~TempFile() { ::unlink(path.c_str()); }
  std::vector<uint8_t> contents() const {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
};

struct FakeIrq final : IrqLine {
  std::atomic<bool> level{false};
  std::atomic<int> raises{0};
  void set_level(uint32_t, bool l) override {
    if (l && !level.load()) ++raises;
    level = l;
  }
};

struct RawDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

std::atomic_ref<uint16_t> guest_u16(GuestMemory& mem, uint64_t gpa) {
  return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem.host_range(gpa, 2)));
}

enum class Layout { separate, merged, indirect };

struct Request {
  uint16_t head;
  uint64_t in_gpa;
  uint32_t in_len;
  uint64_t status_gpa;
};

struct Result {
  uint8_t status;
  uint32_t used_len;
  std::vector<uint8_t> in;
};

// The guest: a virtio-mmio driver for one block device with one queue.
struct Guest {
  GuestMemory mem{kRam};
  FakeIrq irq;
  VirtioBlk* blk = nullptr;
  std::unique_ptr<VirtioMmio> dev;
  uint16_t qsize = 16;
  uint64_t desc = 0x1000, avail = 0x2000, used = 0x3000;
  uint64_t data = 0x10000;  // request buffers from here
  uint16_t avail_idx = 0;

  explicit Guest(const std::string& path, bool read_only = false, std::string serial = "disk-0") {
    auto b = std::make_unique<VirtioBlk>(VirtioBlkConfig{path, read_only, std::move(serial)});
    blk = b.get();
    dev = std::make_unique<VirtioMmio>("virtio-blk-0", mem, 5, irq, std::move(b));
    dev->start();
  }

  uint32_t rd(uint64_t off) { return static_cast<uint32_t>(dev->io_read(off, 4)); }
  void wr(uint64_t off, uint32_t v) { dev->io_write(off, 4, v); }
  uint32_t status() { return rd(mmio::kStatus); }
  uint64_t device_features() {
    wr(mmio::kDeviceFeaturesSel, 0);
    uint64_t f = rd(mmio::kDeviceFeatures);
    wr(mmio::kDeviceFeaturesSel, 1);
    return f | uint64_t{rd(mmio::kDeviceFeatures)} << 32;
  }
  void write_driver_features(uint64_t f) {
    wr(mmio::kDriverFeaturesSel, 0);
    wr(mmio::kDriverFeatures, static_cast<uint32_t>(f));
    wr(mmio::kDriverFeaturesSel, 1);
    wr(mmio::kDriverFeatures, static_cast<uint32_t>(f >> 32));
  }
  // §3.1.1 steps 1-6. Returns whether the device accepted the features.
  bool negotiate(uint64_t features) {
    wr(mmio::kStatus, 0);
    wr(mmio::kStatus, kAck);
    wr(mmio::kStatus, kAck | kDrv);
    write_driver_features(features);
    wr(mmio::kStatus, kAck | kDrv | kFeatOk);
    return status() & kFeatOk;
  }
  void setup_queue() {
    mem.fill(desc, 16 * qsize, 0);
    mem.fill(avail, 6 + 2 * qsize, 0);
    mem.fill(used, 6 + 8 * qsize, 0);
    avail_idx = 0;
    wr(mmio::kQueueSel, 0);
    BOOST_REQUIRE(rd(mmio::kQueueNumMax) >= qsize);
    wr(mmio::kQueueNum, qsize);
    wr(mmio::kQueueDescLow, static_cast<uint32_t>(desc));
    wr(mmio::kQueueDescHigh, static_cast<uint32_t>(desc >> 32));
    wr(mmio::kQueueDriverLow, static_cast<uint32_t>(avail));
    wr(mmio::kQueueDriverHigh, static_cast<uint32_t>(avail >> 32));
    wr(mmio::kQueueDeviceLow, static_cast<uint32_t>(used));
    wr(mmio::kQueueDeviceHigh, static_cast<uint32_t>(used >> 32));
    wr(mmio::kQueueReady, 1);
    BOOST_REQUIRE_EQUAL(rd(mmio::kQueueReady), 1u);
  }
  void bring_up(uint64_t features = kVersion1 | kIndirect | (1ull << blk::kFFlush)) {
    BOOST_REQUIRE(negotiate(features));
    setup_queue();
    wr(mmio::kStatus, status() | kDrvOk);
    BOOST_REQUIRE(status() & kDrvOk);
  }

  void set_desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    mem.write_obj(table + 16 * uint64_t{i}, RawDesc{addr, len, flags, next});
  }
  void offer(uint16_t head) {
    mem.write_obj<uint16_t>(avail + 4 + 2 * uint64_t{static_cast<uint16_t>(avail_idx % qsize)}, head);
    guest_u16(mem, avail + 2).store(++avail_idx, std::memory_order_release);
  }
  void kick() { wr(mmio::kQueueNotify, 0); }
  uint16_t used_idx() { return guest_u16(mem, used + 2).load(std::memory_order_acquire); }
  uint32_t used_len(uint16_t i) {
    return mem.read_obj<uint32_t>(used + 8 + 8 * uint64_t{static_cast<uint16_t>(i % qsize)});
  }
  uint32_t used_id(uint16_t i) {
    return mem.read_obj<uint32_t>(used + 4 + 8 * uint64_t{static_cast<uint16_t>(i % qsize)});
  }
  bool wait_used(uint16_t target, std::chrono::milliseconds timeout = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (static_cast<int16_t>(used_idx() - target) < 0) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  // Lays out a request: header, driver->device data, device->driver space,
  // status byte, at descriptors [first, ...) and buffers from `area`.
  Request build(uint16_t first, uint64_t area, uint32_t type, uint64_t sector, std::span<const uint8_t> out,
                uint32_t in_len, Layout layout = Layout::separate) {
    uint8_t header[16] = {};
    std::memcpy(header, &type, 4);
    std::memcpy(header + 8, &sector, 8);
    const uint64_t hdr = area, out_gpa = area + 16, in_gpa = out_gpa + out.size(), st = in_gpa + in_len;
    mem.write(hdr, std::span<const uint8_t>(header, 16));
    if (!out.empty()) mem.write(out_gpa, out);
    mem.fill(in_gpa, in_len + 1, 0xee);
    struct Piece {
      uint64_t addr;
      uint32_t len;
      bool w;
    };
    std::vector<Piece> pieces;
    if (layout == Layout::merged) {
      pieces.push_back({hdr, static_cast<uint32_t>(16 + out.size()), false});
      pieces.push_back({in_gpa, in_len + 1, true});
    } else {
      pieces.push_back({hdr, 16, false});
      if (!out.empty()) pieces.push_back({out_gpa, static_cast<uint32_t>(out.size()), false});
      if (in_len) pieces.push_back({in_gpa, in_len, true});
      pieces.push_back({st, 1, true});
    }
    const uint64_t table = layout == Layout::indirect ? area + 0x8000 : desc;
    const uint16_t base = layout == Layout::indirect ? 0 : first;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const bool last = i + 1 == pieces.size();
      const uint16_t flags =
          static_cast<uint16_t>((pieces[i].w ? virtq::kDescFWrite : 0) | (last ? 0 : virtq::kDescFNext));
      set_desc(table, static_cast<uint16_t>(base + i), pieces[i].addr, pieces[i].len, flags,
               static_cast<uint16_t>(base + i + 1));
    }
    if (layout == Layout::indirect)
      set_desc(desc, first, table, static_cast<uint32_t>(16 * pieces.size()), virtq::kDescFIndirect);
    return {first, in_gpa, in_len, st};
  }

  Result collect(const Request& r, uint16_t used_slot) {
    Result res{mem.read_obj<uint8_t>(r.status_gpa), used_len(used_slot), std::vector<uint8_t>(r.in_len)};
    if (r.in_len) mem.read(r.in_gpa, res.in);
    return res;
  }

  Result run(uint32_t type, uint64_t sector, std::span<const uint8_t> out = {}, uint32_t in_len = 0,
             Layout layout = Layout::separate) {
    const Request r = build(0, data, type, sector, out, in_len, layout);
    offer(r.head);
    kick();
    BOOST_REQUIRE(wait_used(avail_idx));
    BOOST_TEST(used_id(static_cast<uint16_t>(avail_idx - 1)) == r.head);
    return collect(r, static_cast<uint16_t>(avail_idx - 1));
  }
  Result read(uint64_t sector, uint32_t sectors, Layout layout = Layout::separate) {
    return run(blk::kTIn, sector, {}, sectors * 512, layout);
  }
  Result write(uint64_t sector, std::span<const uint8_t> bytes, Layout layout = Layout::separate) {
    return run(blk::kTOut, sector, bytes, 0, layout);
  }
  uint64_t config64(uint64_t off) { return dev->io_read(mmio::kConfig + off, 8); }
  uint32_t config32(uint64_t off) { return static_cast<uint32_t>(dev->io_read(mmio::kConfig + off, 4)); }
};

std::vector<uint8_t> filled(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 3 + seed);
  return v;
}

std::vector<uint8_t> file_slice(const std::vector<uint8_t>& f, uint64_t sector, uint32_t sectors) {
  return {f.begin() + static_cast<long>(sector * 512), f.begin() + static_cast<long>((sector + sectors) * 512)};
}

}  // namespace

// --------------------------------------------------------------- status --

BOOST_AUTO_TEST_CASE(identity_registers_and_config_space) {
  TempFile file(kSectors * 512 + 100);  // a partial last sector is not exposed
  Guest g(file.path);
  BOOST_TEST(g.rd(mmio::kMagicValue) == 0x74726976u);
  BOOST_TEST(g.rd(mmio::kVersion) == 2u);
  BOOST_TEST(g.rd(mmio::kDeviceId) == 2u);
  BOOST_TEST(g.rd(mmio::kVendorId) == mmio::kVendor);
  const uint64_t f = g.device_features();
  BOOST_TEST((f & kVersion1) != 0u);
  BOOST_TEST((f & (1ull << blk::kFFlush)) != 0u);
  BOOST_TEST((f & (1ull << blk::kFSegMax)) != 0u);
  BOOST_TEST((f & (1ull << blk::kFBlkSize)) != 0u);
  BOOST_TEST((f & (1ull << blk::kFRo)) == 0u);
  BOOST_TEST(g.config64(blk::kCfgCapacity) == kSectors);
  BOOST_TEST(g.config32(blk::kCfgCapacity) == kSectors);  // low half
  BOOST_TEST(g.config32(blk::kCfgCapacity + 4) == 0u);
  BOOST_TEST(g.config32(blk::kCfgSegMax) == blk::kSegMax);
  BOOST_TEST(g.config32(blk::kCfgBlkSize) == 512u);
  BOOST_TEST(g.dev->io_read(mmio::kConfig + blk::kCfgBlkSize + 1, 1) == 2u);  // byte access
  BOOST_TEST(g.dev->io_read(mmio::kConfig + blk::kCfgSize, 4) == 0u);         // beyond config
  BOOST_TEST(g.dev->io_read(mmio::kConfig + blk::kCfgSize - 2, 4) == 0u);     // straddles the end
  BOOST_TEST(g.rd(mmio::kQueueNumMax) == blk::kQueueSize);
  g.wr(mmio::kQueueSel, 1);
  BOOST_TEST(g.rd(mmio::kQueueNumMax) == 0u);  // no such queue
  BOOST_TEST(g.rd(mmio::kShmLenLow) == 0xffffffffu);
  BOOST_TEST(g.dev->io_read(mmio::kMagicValue, 2) == 0u);  // registers are 32-bit only
  BOOST_TEST(g.blk->capacity_sectors() == kSectors);
}

BOOST_AUTO_TEST_CASE(status_state_machine) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  BOOST_TEST(g.status() == 0u);
  // Bits out of order are not latched.
  g.wr(mmio::kStatus, kDrv);
  BOOST_TEST(g.status() == 0u);
  g.wr(mmio::kStatus, kAck);
  BOOST_TEST(g.status() == kAck);
  g.wr(mmio::kStatus, kAck | kFeatOk);  // FEATURES_OK before DRIVER
  BOOST_TEST(g.status() == kAck);
  g.wr(mmio::kStatus, kAck | kDrv);
  BOOST_TEST(g.status() == (kAck | kDrv));
  g.wr(mmio::kStatus, kAck | kDrv | kDrvOk);  // DRIVER_OK before FEATURES_OK
  BOOST_TEST(g.status() == (kAck | kDrv));
  // The driver cannot clear bits, nor set NEEDS_RESET.
  g.wr(mmio::kStatus, kAck);
  BOOST_TEST(g.status() == (kAck | kDrv));
  g.wr(mmio::kStatus, kAck | kDrv | kNeedsReset);
  BOOST_TEST(g.status() == (kAck | kDrv));

  // FEATURES_OK is refused for features the device did not offer...
  g.write_driver_features(kVersion1 | (1ull << blk::kFRo));
  g.wr(mmio::kStatus, kAck | kDrv | kFeatOk);
  BOOST_TEST(g.status() == (kAck | kDrv));
  g.write_driver_features(kVersion1 | (1ull << 40));
  g.wr(mmio::kStatus, kAck | kDrv | kFeatOk);
  BOOST_TEST(g.status() == (kAck | kDrv));
  // ... and without VERSION_1 (a legacy driver).
  g.write_driver_features(1ull << blk::kFFlush);
  g.wr(mmio::kStatus, kAck | kDrv | kFeatOk);
  BOOST_TEST(g.status() == (kAck | kDrv));
  BOOST_TEST(g.dev->export_state().counters().at("features_ok_refused") == 3u);
  // A valid subset is accepted, and then the features are frozen.
  g.write_driver_features(kVersion1 | (1ull << blk::kFFlush));
  g.wr(mmio::kStatus, kAck | kDrv | kFeatOk);
  BOOST_TEST(g.status() == (kAck | kDrv | kFeatOk));
  g.write_driver_features(kVersion1 | (1ull << 40));
  BOOST_TEST(g.dev->export_state().registers().at("driver_features") == (kVersion1 | (1ull << blk::kFFlush)));
  g.setup_queue();
  g.wr(mmio::kStatus, kAck | kDrv | kFeatOk | kDrvOk);
  BOOST_TEST(g.status() == (kAck | kDrv | kFeatOk | kDrvOk));
  BOOST_TEST(g.read(0, 1).status == blk::kSOk);

  // Writing 0 resets everything.
  g.wr(mmio::kStatus, 0);
  BOOST_TEST(g.status() == 0u);
  BOOST_TEST(g.rd(mmio::kQueueReady) == 0u);
  BOOST_TEST(g.rd(mmio::kInterruptStatus) == 0u);
  BOOST_TEST(!g.irq.level.load());
  BOOST_TEST(g.dev->export_state().registers().at("driver_features") == 0u);
  // Notifies before DRIVER_OK are ignored.
  BOOST_TEST(g.negotiate(kVersion1));
  g.setup_queue();
  g.build(0, g.data, blk::kTIn, 0, {}, 512);
  g.offer(0);
  g.kick();
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(g.used_idx() == 0);
  // The lifecycle reset does the same as the driver's.
  g.dev->reset();
  BOOST_TEST(g.status() == 0u);
  BOOST_TEST(g.rd(mmio::kQueueReady) == 0u);
}

// ------------------------------------------------------------------- I/O --

BOOST_AUTO_TEST_CASE(read_write_flush_get_id_round_trip) {
  TempFile file(kSectors * 512);
  Guest g(file.path, false, "serial-number-0123456789");  // longer than 20 bytes
  g.bring_up();
  const std::vector<uint8_t> before = file.contents();

  // IN: sector 3.
  Result r = g.read(3, 1);
  BOOST_TEST(r.status == blk::kSOk);
  BOOST_TEST(r.used_len == 513u);
  BOOST_TEST(r.in == file_slice(before, 3, 1));
  BOOST_TEST(g.rd(mmio::kInterruptStatus) == virtio::kIntUsedBuffer);
  BOOST_TEST(g.irq.level.load());
  g.wr(mmio::kInterruptAck, virtio::kIntUsedBuffer);
  BOOST_TEST(!g.irq.level.load());

  // OUT: sectors 10-11; FLUSH; then check the host file.
  const std::vector<uint8_t> payload = filled(1024, 0x40);
  r = g.write(10, payload);
  BOOST_TEST(r.status == blk::kSOk);
  BOOST_TEST(r.used_len == 1u);
  BOOST_TEST(g.run(blk::kTFlush, 0).status == blk::kSOk);
  std::vector<uint8_t> after = file.contents();
  BOOST_REQUIRE(after.size() == before.size());
  BOOST_TEST(file_slice(after, 10, 2) == payload);
  BOOST_TEST(file_slice(after, 9, 1) == file_slice(before, 9, 1));
  BOOST_TEST(file_slice(after, 12, 1) == file_slice(before, 12, 1));

  // Read it back through the device, across the boundary, in every layout.
  for (Layout l : {Layout::separate, Layout::merged, Layout::indirect}) {
    r = g.read(9, 4, l);
    BOOST_TEST(r.status == blk::kSOk);
    BOOST_TEST(r.in == file_slice(after, 9, 4));
  }
  // Writes with header and data in one descriptor, and through an indirect table.
  const std::vector<uint8_t> p2 = filled(512, 0x99), p3 = filled(1536, 0x11);
  BOOST_TEST(g.write(20, p2, Layout::merged).status == blk::kSOk);
  BOOST_TEST(g.write(30, p3, Layout::indirect).status == blk::kSOk);
  after = file.contents();
  BOOST_TEST(file_slice(after, 20, 1) == p2);
  BOOST_TEST(file_slice(after, 30, 3) == p3);

  // GET_ID: the first 20 bytes of the serial.
  r = g.run(blk::kTGetId, 0, {}, 20);
  BOOST_TEST(r.status == blk::kSOk);
  BOOST_TEST(std::string(r.in.begin(), r.in.end()) == "serial-number-012345");
  BOOST_TEST(r.used_len == 21u);

  const auto c = g.blk->counters();
  BOOST_TEST(c.reads == 4u);
  BOOST_TEST(c.writes == 3u);
  BOOST_TEST(c.flushes == 1u);
  BOOST_TEST(c.get_ids == 1u);
  BOOST_TEST(c.bytes_read == 512u + 3 * 2048u);
  BOOST_TEST(c.bytes_written == 1024u + 512u + 1536u);
  BOOST_TEST(c.io_errors == 0u);
  BOOST_TEST(c.invalid_requests == 0u);
  const auto state = g.dev->export_state();
  BOOST_TEST(state.kind() == "virtio-blk");
  BOOST_TEST(state.counters().at("writes") == 3u);
}

BOOST_AUTO_TEST_CASE(short_serial_is_nul_padded) {
  TempFile file(kSectors * 512);
  Guest g(file.path, false, "vda");
  g.bring_up();
  const Result r = g.run(blk::kTGetId, 0, {}, 20);
  BOOST_TEST(r.status == blk::kSOk);
  std::vector<uint8_t> expect(20, 0);
  std::memcpy(expect.data(), "vda", 3);
  BOOST_TEST(r.in == expect);
}

BOOST_AUTO_TEST_CASE(many_requests_in_flight_at_once) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  g.bring_up(kVersion1 | kEventIdx);
  std::vector<Request> reqs;
  std::vector<std::vector<uint8_t>> payloads;
  for (uint16_t i = 0; i < 5; ++i) {  // 5 chains x 3 descriptors = 15 of 16
    payloads.push_back(filled(512, static_cast<uint8_t>(i)));
    reqs.push_back(g.build(static_cast<uint16_t>(3 * i), g.data + 0x1000 * i, blk::kTOut, 40 + i, payloads.back(), 0));
  }
  for (const Request& r : reqs) g.offer(r.head);
  g.kick();
  BOOST_REQUIRE(g.wait_used(5));
  for (const Request& r : reqs) BOOST_TEST(g.mem.read_obj<uint8_t>(r.status_gpa) == blk::kSOk);
  const auto after = file.contents();
  for (uint16_t i = 0; i < 5; ++i) BOOST_TEST(file_slice(after, 40 + i, 1) == payloads[i]);
}

// --------------------------------------------------------------- refusals --

BOOST_AUTO_TEST_CASE(read_only_refuses_writes_and_never_opens_for_writing) {
  TempFile file(kSectors * 512);
  Guest g(file.path, true);
  BOOST_TEST((g.device_features() & (1ull << blk::kFRo)) != 0u);
  g.bring_up(kVersion1 | (1ull << blk::kFRo) | (1ull << blk::kFFlush));
  const std::vector<uint8_t> before = file.contents();

  // The device's descriptor for the file is read-only.
  bool found = false;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec) != std::filesystem::path(file.path)) continue;
    std::ifstream info("/proc/self/fdinfo/" + e.path().filename().string());
    std::string key;
    unsigned long flags = 0;
    while (info >> key) {
      if (key == "flags:") {
        info >> std::oct >> flags;
        break;
      }
    }
    BOOST_TEST((flags & O_ACCMODE) == static_cast<unsigned long>(O_RDONLY));
    found = true;
  }
  BOOST_TEST(found);

  const std::vector<uint8_t> payload = filled(512, 7);
  BOOST_TEST(g.write(5, payload).status == blk::kSIoErr);
  BOOST_TEST(g.write(5, payload, Layout::merged).status == blk::kSIoErr);
  BOOST_TEST(file.contents() == before);
  Result r = g.read(5, 1);
  BOOST_TEST(r.status == blk::kSOk);
  BOOST_TEST(r.in == file_slice(before, 5, 1));
  BOOST_TEST(g.run(blk::kTFlush, 0).status == blk::kSOk);
  BOOST_TEST(g.blk->counters().writes == 0u);
  BOOST_TEST(g.blk->counters().invalid_requests == 2u);
}

BOOST_AUTO_TEST_CASE(out_of_range_and_malformed_requests_get_ioerr) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  g.bring_up();
  const std::vector<uint8_t> before = file.contents();
  const std::vector<uint8_t> one = filled(512, 3);
  BOOST_TEST(g.read(kSectors - 1, 1).status == blk::kSOk);  // the last sector is fine
  BOOST_TEST(g.read(kSectors, 1).status == blk::kSIoErr);
  BOOST_TEST(g.read(kSectors - 1, 2).status == blk::kSIoErr);
  BOOST_TEST(g.read(~0ull, 1).status == blk::kSIoErr);
  BOOST_TEST(g.read(~0ull - 1, 4).status == blk::kSIoErr);
  BOOST_TEST(g.write(kSectors, one).status == blk::kSIoErr);
  BOOST_TEST(g.write(~0ull, one).status == blk::kSIoErr);
  // Data not a multiple of 512.
  BOOST_TEST(g.run(blk::kTIn, 0, {}, 100).status == blk::kSIoErr);
  BOOST_TEST(g.run(blk::kTOut, 0, std::vector<uint8_t>(100, 1)).status == blk::kSIoErr);
  // Data in the wrong direction.
  BOOST_TEST(g.run(blk::kTIn, 0, one, 512).status == blk::kSIoErr);
  BOOST_TEST(g.run(blk::kTOut, 0, one, 512).status == blk::kSIoErr);
  BOOST_TEST(g.run(blk::kTFlush, 0, one, 0).status == blk::kSIoErr);
  // Unknown request type.
  BOOST_TEST(g.run(0xff, 0, {}, 0).status == blk::kSUnsupp);
  BOOST_TEST(g.blk->counters().unsupported == 1u);
  BOOST_TEST(g.blk->counters().invalid_requests == 11u);
  BOOST_TEST(file.contents() == before);
  BOOST_TEST(file.contents().size() == kSectors * 512u);

  // A header shorter than 16 bytes.
  g.set_desc(g.desc, 0, g.data, 8, virtq::kDescFNext, 1);
  g.set_desc(g.desc, 1, g.data + 0x100, 1, virtq::kDescFWrite);
  g.mem.write_obj<uint8_t>(g.data + 0x100, 0xee);
  g.offer(0);
  g.kick();
  BOOST_REQUIRE(g.wait_used(g.avail_idx));
  BOOST_TEST(g.mem.read_obj<uint8_t>(g.data + 0x100) == blk::kSIoErr);
  // No writable byte for the status: completed with length 0.
  g.set_desc(g.desc, 0, g.data, 16, 0);
  g.offer(0);
  g.kick();
  BOOST_REQUIRE(g.wait_used(g.avail_idx));
  BOOST_TEST(g.used_len(static_cast<uint16_t>(g.avail_idx - 1)) == 0u);
  BOOST_TEST(g.blk->counters().invalid_requests == 13u);
  // The device is still healthy.
  BOOST_TEST((g.status() & kNeedsReset) == 0u);
  BOOST_TEST(g.read(0, 1).status == blk::kSOk);
}

BOOST_AUTO_TEST_CASE(injected_io_errors_reach_the_guest_as_ioerr) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  g.bring_up();
  const std::vector<uint8_t> before = file.contents();
  std::atomic<int> calls{0};
  g.blk->set_fault_injection([&](BlkOp op, uint64_t sector) {
    ++calls;
    if (op == BlkOp::write && sector == 7) return EIO;
    if (op == BlkOp::read && sector == 8) return ENOSPC;
    if (op == BlkOp::flush) return EIO;
    return 0;
  });
  BOOST_TEST(g.write(7, filled(512, 1)).status == blk::kSIoErr);
  BOOST_TEST(g.read(8, 1).status == blk::kSIoErr);
  BOOST_TEST(g.run(blk::kTFlush, 0).status == blk::kSIoErr);
  BOOST_TEST(g.write(9, filled(512, 2)).status == blk::kSOk);  // other sectors unaffected
  BOOST_TEST(calls.load() == 4);
  auto c = g.blk->counters();
  BOOST_TEST(c.io_errors == 3u);
  BOOST_TEST(c.writes == 1u);
  const auto after = file.contents();
  BOOST_TEST(file_slice(after, 7, 1) == file_slice(before, 7, 1));  // the failed write did nothing
  BOOST_TEST(file_slice(after, 9, 1) == filled(512, 2));
  BOOST_TEST(g.dev->export_state().counters().at("io_errors") == 3u);
  // A throwing hook is an I/O error too, not a dead worker.
  g.blk->set_fault_injection([](BlkOp, uint64_t) -> int { throw std::runtime_error("boom"); });
  BOOST_TEST(g.read(0, 1).status == blk::kSIoErr);
  g.blk->set_fault_injection(nullptr);
  BOOST_TEST(g.read(8, 1).status == blk::kSOk);
  BOOST_TEST(g.blk->counters().io_errors == 4u);
}

// ------------------------------------------------------------- lifecycle --

BOOST_AUTO_TEST_CASE(pause_waits_for_in_flight_requests_and_resume_serves_the_backlog) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  g.bring_up();
  std::atomic<bool> entered{false};
  g.blk->set_fault_injection([&](BlkOp op, uint64_t) {
    if (op == BlkOp::read) {
      entered = true;
      std::this_thread::sleep_for(300ms);  // hold the request in flight
    }
    return 0;
  });
  const Request r = g.build(0, g.data, blk::kTIn, 2, {}, 512);
  g.offer(r.head);
  g.kick();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!entered && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  BOOST_REQUIRE(entered.load());
  BOOST_TEST(g.used_idx() == 0);
  const auto t0 = std::chrono::steady_clock::now();
  g.dev->pause();
  const auto waited = std::chrono::steady_clock::now() - t0;
  // pause() returned only after the request completed.
  BOOST_TEST(g.used_idx() == 1);
  BOOST_TEST(g.blk->in_flight() == 0u);
  BOOST_TEST(g.mem.read_obj<uint8_t>(r.status_gpa) == blk::kSOk);
  BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() >= 100);
  BOOST_TEST((g.dev->run_state() == DeviceRunState::paused));

  // While paused, new requests are not taken...
  const std::vector<uint8_t> payload = filled(512, 0x5a);
  const Request w = g.build(4, g.data + 0x2000, blk::kTOut, 12, payload, 0);
  g.offer(w.head);
  g.kick();
  std::this_thread::sleep_for(100ms);
  BOOST_TEST(g.used_idx() == 1);
  BOOST_TEST((file_slice(file.contents(), 12, 1) != payload));
  // ... until resume.
  g.dev->resume();
  BOOST_REQUIRE(g.wait_used(2));
  BOOST_TEST(g.mem.read_obj<uint8_t>(w.status_gpa) == blk::kSOk);
  BOOST_TEST(file_slice(file.contents(), 12, 1) == payload);
}

BOOST_AUTO_TEST_CASE(driver_reset_drains_in_flight_requests) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  g.bring_up();
  std::atomic<bool> entered{false};
  g.blk->set_fault_injection([&](BlkOp, uint64_t) {
    entered = true;
    std::this_thread::sleep_for(200ms);
    return 0;
  });
  const std::vector<uint8_t> payload = filled(512, 0x77);
  g.build(0, g.data, blk::kTOut, 3, payload, 0);
  g.offer(0);
  g.kick();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!entered && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  BOOST_REQUIRE(entered.load());
  g.wr(mmio::kStatus, 0);  // returns once the write is done
  BOOST_TEST(g.blk->in_flight() == 0u);
  BOOST_TEST(g.used_idx() == 1);
  BOOST_TEST(file_slice(file.contents(), 3, 1) == payload);
  BOOST_TEST(g.status() == 0u);
  BOOST_TEST(!g.irq.level.load());  // the completion interrupt was wiped by the reset
  // And it comes back up.
  g.blk->set_fault_injection(nullptr);
  g.bring_up();
  BOOST_TEST(g.read(3, 1).in == payload);
}

BOOST_AUTO_TEST_CASE(halt_detaches_and_leaves_the_backing_file) {
  TempFile file(kSectors * 512);
  {
    Guest g(file.path);
    g.bring_up();
    const std::vector<uint8_t> payload = filled(512, 0x31);
    BOOST_TEST(g.write(1, payload).status == blk::kSOk);
    g.dev->halt();
    BOOST_TEST((g.dev->run_state() == DeviceRunState::halted));
    BOOST_TEST(std::filesystem::exists(file.path));
    BOOST_TEST(std::filesystem::file_size(file.path) == kSectors * 512u);
    BOOST_TEST(file_slice(file.contents(), 1, 1) == payload);
    // Notifies after halt are ignored; registers still answer.
    g.build(0, g.data, blk::kTIn, 0, {}, 512);
    g.offer(0);
    g.kick();
    std::this_thread::sleep_for(50ms);
    BOOST_TEST(g.used_idx() == 1);
    BOOST_TEST(g.rd(mmio::kMagicValue) == mmio::kMagic);
    (void)g.dev->export_state();
  }  // destruction after halt
  BOOST_TEST(std::filesystem::exists(file.path));
}

BOOST_AUTO_TEST_CASE(opening_refuses_missing_files_and_directories) {
  auto code = [](const std::string& path) {
    try {
      VirtioBlk b(VirtioBlkConfig{path, true, ""});
    } catch (const apiary::vmm::Error& e) {
      return e.code();
    }
    BOOST_FAIL("opened " << path);
    return apiary::vmm::Errc::invalid_argument;
  };
  BOOST_TEST((code("/nonexistent/apiary/disk.img") == apiary::vmm::Errc::file_not_found));
  BOOST_TEST((code(std::filesystem::temp_directory_path().string()) == apiary::vmm::Errc::file_unreadable));
}

// ---------------------------------------------------------------- hostile --

BOOST_AUTO_TEST_CASE(malformed_queue_sets_needs_reset) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  g.bring_up();
  g.set_desc(g.desc, 0, g.data, 16, virtq::kDescFNext, 1);
  g.set_desc(g.desc, 1, g.data, 16, virtq::kDescFNext, 0);  // loop
  g.offer(0);
  g.kick();
  BOOST_TEST((g.status() & kNeedsReset) != 0u);
  BOOST_TEST((g.rd(mmio::kInterruptStatus) & virtio::kIntConfigChange) != 0u);
  BOOST_TEST(g.irq.level.load());
  BOOST_TEST(g.dev->export_state().counters().at("last_queue_error") ==
             static_cast<uint64_t>(QueueError::chain_too_long));
  g.set_desc(g.desc, 2, g.data, 16, 0);
  g.offer(2);  // a fine chain, but the device waits for a reset first
  g.kick();
  BOOST_TEST(g.blk->counters().reads == 0u);
  g.bring_up();
  BOOST_TEST(g.read(0, 1).status == blk::kSOk);
}

// Random values at every register offset from two vCPU threads, with the
// control plane pausing and resuming meanwhile, over guest RAM full of noise.
// Nothing may crash, hang or leak; the file must stay in place.
BOOST_AUTO_TEST_CASE(hostile_register_fuzzing) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  {
    std::mt19937_64 noise(42);
    std::vector<uint8_t> junk(kRam);
    for (auto& b : junk) b = static_cast<uint8_t>(noise());
    g.mem.write(0, junk);
  }
  auto vcpu = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    static constexpr unsigned sizes[] = {1, 2, 4, 8};
    for (int i = 0; i < 60000; ++i) {
      const uint64_t r = rng();
      uint64_t off = r % 4 == 0 ? rng() % mmio::kRegionSize : (rng() % 0x48) * 4;  // bias to registers
      if (r % 16 == 1) off = mmio::kStatus;
      if (r % 16 == 2) off = mmio::kQueueNotify;
      const unsigned size = r % 8 < 6 ? 4 : sizes[rng() % 4];
      uint64_t v = rng();
      if (r % 3 == 0) v &= 0xffff;  // small values land in RAM / in queue range
      if (off == mmio::kStatus && r % 5 == 0) v = 0;
      if ((r >> 8) % 2) {
        g.dev->io_write(off, size, v);
      } else {
        (void)g.dev->io_read(off, size);
      }
    }
  };
  std::atomic<bool> done{false};
  std::thread control([&] {
    while (!done) {
      g.dev->pause();
      (void)g.dev->export_state();
      g.dev->resume();
      std::this_thread::sleep_for(1ms);
    }
  });
  std::thread a(vcpu, 1), b(vcpu, 2);
  a.join();
  b.join();
  done = true;
  control.join();
  const auto state = g.dev->export_state();
  BOOST_TEST_MESSAGE("register fuzz: bad accesses " << state.counters().at("bad_accesses") << " resets "
                                                    << state.counters().at("resets") << " queue errors "
                                                    << state.counters().at("queue_errors"));
  g.dev->halt();
  BOOST_TEST(std::filesystem::exists(file.path));
  BOOST_TEST(std::filesystem::file_size(file.path) == kSectors * 512u);
}

// A plausible driver that corrupts what it hands over now and then (random
// sizes, addresses, lengths, flags, sectors, request types), while a second
// vCPU pokes random registers and the control plane pauses and resumes.
// Every outcome is allowed except a crash, a hang or a touched host file
// beyond its size.
BOOST_AUTO_TEST_CASE(hostile_driver_fuzzing) {
  TempFile file(kSectors * 512);
  Guest g(file.path);
  std::atomic<bool> done{false};
  std::thread poker([&] {
    std::mt19937_64 rng(7);
    while (!done) {
      const uint64_t off = (rng() % 0x48) * 4;
      if (off == mmio::kStatus && rng() % 4) continue;  // resets only occasionally
      g.dev->io_write(off, 4, rng() % 2 ? rng() : rng() % 64);
      std::this_thread::sleep_for(200us);
    }
  });
  std::thread control([&] {
    while (!done) {
      g.dev->pause();
      g.dev->resume();
      std::this_thread::sleep_for(3ms);
    }
  });
  std::mt19937_64 rng(1234);
  auto chance = [&](unsigned percent) { return rng() % 100 < percent; };
  for (int cycle = 0; cycle < 150; ++cycle) {
    uint64_t features = kVersion1 | (1ull << blk::kFFlush);
    if (chance(50)) features |= kIndirect;
    if (chance(30)) features |= kEventIdx;
    if (chance(5)) features = rng();
    g.qsize = chance(90) ? 16 : static_cast<uint16_t>(rng() % 300);
    if (!g.negotiate(features)) continue;
    g.avail_idx = 0;
    g.mem.fill(g.desc, 16 * 16, 0);
    g.mem.fill(g.avail, 6 + 2 * 16, 0);
    g.mem.fill(g.used, 6 + 8 * 16, 0);
    g.wr(mmio::kQueueSel, 0);
    g.wr(mmio::kQueueNum, g.qsize);
    g.wr(mmio::kQueueDescLow, chance(95) ? static_cast<uint32_t>(g.desc) : static_cast<uint32_t>(rng()));
    g.wr(mmio::kQueueDriverLow, chance(95) ? static_cast<uint32_t>(g.avail) : static_cast<uint32_t>(rng()));
    g.wr(mmio::kQueueDeviceLow, chance(95) ? static_cast<uint32_t>(g.used) : static_cast<uint32_t>(rng()));
    g.wr(mmio::kQueueReady, 1);
    g.wr(mmio::kStatus, g.status() | kDrvOk);
    if (g.qsize != 16) continue;
    for (int req = 0; req < 20; ++req) {
      static constexpr uint32_t types[] = {blk::kTIn, blk::kTOut, blk::kTFlush, blk::kTGetId, 3, 0xffffffff};
      const uint32_t type = types[rng() % 6];
      const uint64_t sector = chance(80) ? rng() % (kSectors + 4) : rng();
      const uint32_t bytes = chance(85) ? 512 * static_cast<uint32_t>(rng() % 4) : static_cast<uint32_t>(rng() % 2000);
      std::vector<uint8_t> out(type == blk::kTOut ? bytes : 0, static_cast<uint8_t>(rng()));
      const Layout layout = static_cast<Layout>(rng() % 3);
      const Request r = g.build(0, g.data, type, sector, out, type == blk::kTOut ? 0 : bytes, layout);
      if (chance(15)) {  // corrupt one descriptor field
        const uint64_t table = layout == Layout::indirect && chance(50) ? g.data + 0x8000 : g.desc;
        const uint64_t at = table + 16 * (rng() % 4) + (rng() % 4) * 4;
        g.mem.write_obj<uint32_t>(at, static_cast<uint32_t>(chance(50) ? rng() : rng() % 32));
      }
      g.offer(chance(97) ? r.head : static_cast<uint16_t>(rng()));
      g.kick();
      // Reuse the buffers only once the device is done with them; give up
      // (and reset in the next cycle) if it never answers.
      if ((g.status() & kNeedsReset) || !g.wait_used(g.avail_idx, 100ms)) break;
    }
    g.wr(mmio::kStatus, 0);  // drains whatever is still in flight
  }
  done = true;
  poker.join();
  control.join();
  const auto c = g.blk->counters();
  const auto state = g.dev->export_state();
  BOOST_TEST_MESSAGE("driver fuzz: reads " << c.reads << " writes " << c.writes << " invalid " << c.invalid_requests
                                           << " unsupported " << c.unsupported << " queue errors "
                                           << state.counters().at("queue_errors") << " resets "
                                           << state.counters().at("resets"));
  BOOST_TEST(state.counters().at("notifies") > 0u);
  BOOST_TEST(c.reads + c.writes > 0u);
  BOOST_TEST(c.invalid_requests > 0u);
  BOOST_TEST(state.counters().at("queue_errors") > 0u);
  g.dev->halt();
  BOOST_TEST(std::filesystem::exists(file.path));
  BOOST_TEST(std::filesystem::file_size(file.path) == kSectors * 512u);
}
