// virtio-blk (device id 2, virtio 1.x §5.2) over a host file.
//
// Why a worker thread: file I/O can take milliseconds (or hang on a sick
// disk); doing it on the vCPU thread that wrote QueueNotify would stall that
// vCPU and everything waiting on the transport lock. So the notify handler
// only pops and validates chains (cheap, bounded by the queue size) and
// queues them; a worker owned by the device performs pread/pwrite/fdatasync
// straight into/out of guest RAM, writes the status byte, pushes the used
// element and raises the interrupt.
//
// Requests are treated as a byte stream over the chain (VERSION_1 implies
// any framing): a 16-byte readable header {type, reserved, sector}, the data
// (readable for OUT, writable for IN/GET_ID) and a final writable status
// byte. Malformed requests (short header, data not a multiple of 512, extra
// bytes in the wrong direction, no room for the status byte) and sector
// ranges beyond the capacity complete with VIRTIO_BLK_S_IOERR and are counted
// as invalid; unknown types with VIRTIO_BLK_S_UNSUPP; host I/O errors with
// IOERR, counted as io_errors. A read-only device opens its file O_RDONLY and
// refuses OUT with IOERR.
//
// Lifecycle: pause() stops taking new requests (notifies are remembered) and
// returns only when nothing is in flight; resume() serves what was notified
// meanwhile; reset() drains and forgets; halt() drains, joins the worker and
// closes the file. The backing file is never deleted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "devices/virtio_mmio.hpp"

namespace apiary::devices {

namespace virtio_blk {
// Feature bits (§5.2.3).
inline constexpr unsigned kFSizeMax = 1, kFSegMax = 2, kFGeometry = 4, kFRo = 5, kFBlkSize = 6, kFFlush = 9;
// Request types.
inline constexpr uint32_t kTIn = 0, kTOut = 1, kTFlush = 4, kTGetId = 8;
// Status byte values.
inline constexpr uint8_t kSOk = 0, kSIoErr = 1, kSUnsupp = 2;
inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint32_t kHeaderSize = 16;
inline constexpr uint32_t kIdBytes = 20;
inline constexpr uint16_t kQueueSize = 256;
// Data segments per request: the queue size minus header and status.
inline constexpr uint32_t kSegMax = kQueueSize - 2;
// Configuration space (struct virtio_blk_config) offsets; we expose up to and
// including the topology block.
inline constexpr uint32_t kCfgCapacity = 0x00, kCfgSizeMax = 0x08, kCfgSegMax = 0x0c, kCfgGeometry = 0x10,
                          kCfgBlkSize = 0x14, kCfgTopology = 0x18, kCfgSize = 0x20;
}  // namespace virtio_blk

enum class BlkOp { read, write, flush };

struct VirtioBlkConfig {
  std::string path;        // backing file (or block device)
  bool read_only = false;  // VIRTIO_BLK_F_RO; the file is opened O_RDONLY
  std::string serial;      // GET_ID answer, truncated to 20 bytes
};

class VirtioBlk final : public VirtioDevice {
 public:
  // Opens the backing file and starts the worker. Throws vmm::Error
  // (file_not_found, file_unreadable).
  explicit VirtioBlk(VirtioBlkConfig config);
  ~VirtioBlk() override;
  VirtioBlk(const VirtioBlk&) = delete;
  VirtioBlk& operator=(const VirtioBlk&) = delete;

  // Test hook, called on the worker before every read/write/flush: a
  // non-zero return is an errno the operation fails with (not performed).
  // It may block (e.g. to hold a request in flight). Empty = no injection.
  using FaultHook = std::function<int(BlkOp op, uint64_t sector)>;
  void set_fault_injection(FaultHook hook);

  uint64_t capacity_sectors() const noexcept { return capacity_; }
  bool read_only() const noexcept { return config_.read_only; }

  struct Counters {
    uint64_t reads, writes, flushes, get_ids, bytes_read, bytes_written, io_errors, invalid_requests, unsupported;
  };
  Counters counters() const noexcept;
  // Requests popped but not completed yet.
  uint32_t in_flight() const;

  // VirtioDevice
  const char* kind() const noexcept override { return "virtio-blk"; }
  uint32_t device_id() const noexcept override { return virtio::kDeviceIdBlock; }
  uint64_t device_features() const noexcept override;
  uint16_t num_queues() const noexcept override { return 1; }
  uint16_t queue_max_size(uint16_t) const noexcept override { return virtio_blk::kQueueSize; }
  uint32_t config_size() const noexcept override { return virtio_blk::kCfgSize; }
  void read_config(uint32_t offset, std::span<uint8_t> out) const noexcept override;
  void attach(VirtioContext& ctx) override { ctx_ = &ctx; }
  void on_notify(uint16_t queue) noexcept override;
  void reset() noexcept override;
  void pause() override;
  void resume() override;
  void halt() override;
  void export_state(v1::DeviceState& state) const override;

 private:
  struct Outcome {
    uint8_t status;
    uint32_t written;  // data bytes written into the chain (status byte excluded)
  };
  void worker_loop();
  void take_requests();  // with mutex_ held
  void drain(std::unique_lock<std::mutex>& lock);
  void complete(const VirtqChain& chain);
  Outcome execute(const VirtqChain& chain, const FaultHook& hook);
  int do_io(bool write, const VirtqChain& chain, uint64_t chain_offset, uint64_t len, uint64_t sector);

  const VirtioBlkConfig config_;
  int fd_ = -1;
  uint64_t capacity_ = 0;  // sectors
  VirtioContext* ctx_ = nullptr;

  mutable std::mutex mutex_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<VirtqChain> pending_;
  uint32_t in_flight_ = 0;  // queued + executing
  bool paused_ = false, halted_ = false, stop_ = false, notify_pending_ = false;
  FaultHook hook_;
  std::thread worker_;

  std::atomic<uint64_t> reads_{0}, writes_{0}, flushes_{0}, get_ids_{0}, bytes_read_{0}, bytes_written_{0},
      io_errors_{0}, invalid_{0}, unsupported_{0};
};

}  // namespace apiary::devices
