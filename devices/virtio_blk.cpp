// virtio-blk over a host file: request parsing and validation, the worker
// thread that does the I/O, drain-on-pause. See virtio_blk.hpp.
#include "devices/virtio_blk.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "vmm-core/error.hpp"

namespace apiary::devices {

using namespace virtio_blk;

VirtioBlk::VirtioBlk(VirtioBlkConfig config) : config_(std::move(config)) {
  const int flags = (config_.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  fd_ = ::open(config_.path.c_str(), flags);
  if (fd_ < 0) {
    const int err = errno;
    throw vmm::Error(err == ENOENT ? vmm::Errc::file_not_found : vmm::Errc::file_unreadable,
                     "virtio-blk: " + config_.path + ": " + std::strerror(err));
  }
  struct stat st {};
  const off_t end =
      (::fstat(fd_, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) ? ::lseek(fd_, 0, SEEK_END) : off_t{-1};
  if (end < 0) {
    ::close(fd_);
    fd_ = -1;
    throw vmm::Error(vmm::Errc::file_unreadable,
                     "virtio-blk: " + config_.path + ": not a regular file or block device");
  }
  // A partial last sector is not addressable.
  capacity_ = static_cast<uint64_t>(end) / kSectorSize;
  worker_ = std::thread([this] { worker_loop(); });
}

VirtioBlk::~VirtioBlk() { halt(); }

uint64_t VirtioBlk::device_features() const noexcept {
  uint64_t f = virtio::feature_bit(kFSegMax) | virtio::feature_bit(kFBlkSize) | virtio::feature_bit(kFFlush);
  if (config_.read_only) f |= virtio::feature_bit(kFRo);
  return f;
}

void VirtioBlk::read_config(uint32_t offset, std::span<uint8_t> out) const noexcept {
  uint8_t cfg[kCfgSize] = {};
  const uint32_t seg_max = kSegMax, blk_size = kSectorSize;
  std::memcpy(cfg + kCfgCapacity, &capacity_, 8);
  std::memcpy(cfg + kCfgSegMax, &seg_max, 4);
  std::memcpy(cfg + kCfgBlkSize, &blk_size, 4);
  // size_max, geometry and topology stay 0 (features not offered).
  for (size_t i = 0; i < out.size(); ++i) out[i] = offset + i < kCfgSize ? cfg[offset + i] : 0;
}

void VirtioBlk::set_fault_injection(FaultHook hook) {
  std::lock_guard lock(mutex_);
  hook_ = std::move(hook);
}

VirtioBlk::Counters VirtioBlk::counters() const noexcept {
  Counters c{};
  c.reads = reads_.load();
  c.writes = writes_.load();
  c.flushes = flushes_.load();
  c.get_ids = get_ids_.load();
  c.bytes_read = bytes_read_.load();
  c.bytes_written = bytes_written_.load();
  c.io_errors = io_errors_.load();
  c.invalid_requests = invalid_.load();
  c.unsupported = unsupported_.load();
  return c;
}

uint32_t VirtioBlk::in_flight() const {
  std::lock_guard lock(mutex_);
  return in_flight_;
}

// ---------------------------------------------------------- notify path --

void VirtioBlk::take_requests() {
  if (!ctx_) return;
  Virtqueue& q = ctx_->queue(0);
  bool any = false;
  // Bounded: a queue holds at most kQueueSize outstanding chains.
  for (;;) {
    VirtqPop r = q.pop();
    if (r.error != QueueError::none) {
      ctx_->queue_failed(0, r.error);
      break;
    }
    if (!r) break;
    pending_.push_back(std::move(*r.chain));
    ++in_flight_;
    any = true;
  }
  if (any) work_cv_.notify_one();
}

void VirtioBlk::on_notify(uint16_t queue) noexcept {
  if (queue != 0) return;
  std::lock_guard lock(mutex_);
  if (halted_) return;
  if (paused_) {
    notify_pending_ = true;  // served by resume()
    return;
  }
  take_requests();
}

void VirtioBlk::drain(std::unique_lock<std::mutex>& lock) {
  idle_cv_.wait(lock, [this] { return in_flight_ == 0; });
}

void VirtioBlk::pause() {
  std::unique_lock lock(mutex_);
  paused_ = true;
  drain(lock);
}

void VirtioBlk::resume() {
  std::lock_guard lock(mutex_);
  paused_ = false;
  if (notify_pending_ && !halted_) {
    notify_pending_ = false;
    take_requests();
  }
}

void VirtioBlk::reset() noexcept {
  std::unique_lock lock(mutex_);
  drain(lock);
  notify_pending_ = false;
}

void VirtioBlk::halt() {
  {
    std::unique_lock lock(mutex_);
    halted_ = true;
    drain(lock);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (fd_ >= 0) {
    ::close(fd_);  // detach only: the backing file stays where it is
    fd_ = -1;
  }
}

// ---------------------------------------------------------------- worker --

void VirtioBlk::worker_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stop_ and nothing left
    VirtqChain chain = std::move(pending_.front());
    pending_.pop_front();
    FaultHook hook = hook_;
    lock.unlock();
    const Outcome o = execute(chain, hook);
    vmm::GuestMemory& mem = ctx_->memory();
    uint32_t used_len = 0;
    if (chain.writable_bytes > 0) {
      // The status byte is the last byte of the chain (writable part last).
      const uint8_t status[1] = {o.status};
      chain.write(mem, chain.writable_bytes - 1, status);
      used_len = o.written + 1;
    }
    ctx_->queue(0).push_used(chain, used_len);
    ctx_->notify_used(0);
    lock.lock();
    if (--in_flight_ == 0) idle_cv_.notify_all();
  }
}

VirtioBlk::Outcome VirtioBlk::execute(const VirtqChain& chain, const FaultHook& hook) {
  const Outcome invalid{kSIoErr, 0}, ioerr{kSIoErr, 0}, ok{kSOk, 0};
  const vmm::GuestMemory& mem = ctx_->memory();
  const uint32_t readable = chain.readable_bytes, writable = chain.writable_bytes;
  if (writable == 0 || readable < kHeaderSize) {
    ++invalid_;
    return invalid;
  }
  uint8_t header[kHeaderSize];
  chain.read(mem, 0, header);
  uint32_t type;
  uint64_t sector;
  std::memcpy(&type, header, 4);
  std::memcpy(&sector, header + 8, 8);
  const uint32_t out_bytes = readable - kHeaderSize;  // driver -> device data
  const uint32_t in_bytes = writable - 1;             // device -> driver data
  auto in_range = [&](uint64_t bytes) { return sector <= capacity_ && bytes / kSectorSize <= capacity_ - sector; };
  auto injected = [&](BlkOp op) {
    if (!hook) return 0;
    try {
      return hook(op, sector);
    } catch (...) {
      return EIO;  // a throwing hook must not take the worker down
    }
  };

  switch (type) {
    case kTIn: {
      if (out_bytes != 0 || in_bytes % kSectorSize || !in_range(in_bytes)) {
        ++invalid_;
        return invalid;
      }
      int err = injected(BlkOp::read);
      if (!err) err = do_io(false, chain, 0, in_bytes, sector);
      if (err) {
        ++io_errors_;
        return ioerr;
      }
      ++reads_;
      bytes_read_ += in_bytes;
      return {kSOk, in_bytes};
    }
    case kTOut: {
      if (config_.read_only || in_bytes != 0 || out_bytes % kSectorSize || !in_range(out_bytes)) {
        ++invalid_;
        return invalid;
      }
      int err = injected(BlkOp::write);
      if (!err) err = do_io(true, chain, kHeaderSize, out_bytes, sector);
      if (err) {
        ++io_errors_;
        return ioerr;
      }
      ++writes_;
      bytes_written_ += out_bytes;
      return ok;
    }
    case kTFlush: {
      if (out_bytes != 0 || in_bytes != 0) {
        ++invalid_;
        return invalid;
      }
      int err = injected(BlkOp::flush);
      if (!err && ::fdatasync(fd_) != 0) err = errno;
      if (err) {
        ++io_errors_;
        return ioerr;
      }
      ++flushes_;
      return ok;
    }
    case kTGetId: {
      if (out_bytes != 0 || in_bytes == 0) {
        ++invalid_;
        return invalid;
      }
      // Up to 20 bytes, NUL-padded, not necessarily NUL-terminated.
      uint8_t id[kIdBytes] = {};
      std::memcpy(id, config_.serial.data(), std::min<size_t>(config_.serial.size(), kIdBytes));
      const uint32_t n = std::min(in_bytes, kIdBytes);
      chain.write(mem, 0, std::span<const uint8_t>(id, n));
      ++get_ids_;
      return {kSOk, n};
    }
  }
  ++unsupported_;
  return {kSUnsupp, 0};
}

int VirtioBlk::do_io(bool write, const VirtqChain& chain, uint64_t chain_offset, uint64_t len, uint64_t sector) {
  std::vector<iovec> iov;
  try {
    if (chain.iovecs(ctx_->memory(), !write, chain_offset, len, iov) != len) return EFAULT;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
  // sector + len is within the capacity, which is within the file: no overflow.
  auto pos = static_cast<off_t>(sector * kSectorSize);
  for (const iovec& v : iov) {
    auto* p = static_cast<uint8_t*>(v.iov_base);
    size_t left = v.iov_len;
    while (left > 0) {
      const ssize_t n = write ? ::pwrite(fd_, p, left, pos) : ::pread(fd_, p, left, pos);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) return EIO;  // the file shrank under us
      p += n;
      pos += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (!write) chain.note_written(ctx_->memory(), chain_offset, len);
  return 0;
}

void VirtioBlk::export_state(v1::DeviceState& state) const {
  auto& r = *state.mutable_registers();
  r["capacity"] = capacity_;
  r["read_only"] = config_.read_only;
  const Counters c = counters();
  auto& m = *state.mutable_counters();
  m["reads"] = c.reads;
  m["writes"] = c.writes;
  m["flushes"] = c.flushes;
  m["get_ids"] = c.get_ids;
  m["bytes_read"] = c.bytes_read;
  m["bytes_written"] = c.bytes_written;
  m["io_errors"] = c.io_errors;
  m["invalid_requests"] = c.invalid_requests;
  m["unsupported"] = c.unsupported;
  m["in_flight"] = in_flight();
}

}  // namespace apiary::devices
