#include "net/tap.hpp"

#include <fcntl.h>
#include <net/if.h>  // before linux/if_tun.h: ifreq, IFF_UP, if_nametoindex
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <system_error>
#include <vector>

#include "vmm-core/layout.hpp"

namespace apiary::net {

namespace {

// Larger than any frame a tap hands out without offloads, so an oversized
// one arrives whole and is counted by the switch rather than cut short.
constexpr size_t kReadBufferBytes = 65536;
constexpr int kPollStop = 0, kPollTap = 1;
constexpr size_t kReadBatch = 64;  // frames read per wake-up

[[noreturn]] void fail(int err, const std::string& what) {
  const char* code = "tap_failed";
  if (err == EPERM || err == EACCES) code = "tap_not_permitted";
  if (err == ENOENT || err == ENODEV || err == ENXIO) code = "tap_unavailable";
  throw std::system_error(err, std::generic_category(), std::string(code) + ": " + what);
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() >= IFNAMSIZ) return false;
  for (char c : n)
    if (c == '/' || c == ':' || c <= ' ' || c == 0x7f) return false;
  return n != "." && n != "..";
}

bool interface_exists(const std::string& n) { return ::if_nametoindex(n.c_str()) != 0; }

// The device's MTU and IFF_UP, through an ordinary socket's ioctls.
void configure(const std::string& name) {
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) fail(errno, "socket for " + name);
  ifreq req{};
  std::memcpy(req.ifr_name, name.data(), name.size());
  req.ifr_mtu = layout::kNetMtu;
  int err = 0;
  if (::ioctl(s, SIOCSIFMTU, &req) != 0) err = errno;
  if (err == 0 && ::ioctl(s, SIOCGIFFLAGS, &req) != 0) err = errno;
  if (err == 0) {
    req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
    if (::ioctl(s, SIOCSIFFLAGS, &req) != 0) err = errno;
  }
  ::close(s);
  if (err != 0) fail(err, "configuring " + name);
}

}  // namespace

std::string tap_name(uint32_t vni) {
  char buf[IFNAMSIZ];
  std::snprintf(buf, sizeof buf, "apiary-%06x", vni & 0xffffffu);
  return buf;
}

// The switch's side of the tap: writes what the switch sends the port.
// Owns the descriptor so that a forwarding pass still running when the port
// is removed writes to this device or to nothing, never to a reused number.
struct TapPort::Sink final : PortSink {
  explicit Sink(int fd) : fd(fd) {}
  ~Sink() override { close(); }
  bool emit(std::span<const uint8_t> frame) noexcept override {
    std::lock_guard lk(mutex);
    // Non-blocking: a host that does not read (device down, full queue)
    // costs a drop on this port, never the switch's thread.
    return fd >= 0 && ::write(fd, frame.data(), frame.size()) == static_cast<ssize_t>(frame.size());
  }
  void close() noexcept {
    std::lock_guard lk(mutex);
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  std::mutex mutex;
  int fd;
};

TapPort::TapPort(std::shared_ptr<Switch> sw, std::string ifname) : sw_(std::move(sw)), ifname_(std::move(ifname)) {
  if (!valid_name(ifname_))
    throw std::system_error(EINVAL, std::generic_category(),
                            "tap_bad_name: '" + ifname_ + "' (1 to 15 bytes, no '/', ':' or spaces)");
  // TUNSETIFF on an existing tap would attach to it: refuse instead.
  if (interface_exists(ifname_))
    throw std::system_error(EEXIST, std::generic_category(), "tap_name_in_use: " + ifname_);
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(errno, "/dev/net/tun");
  sink_ = std::make_shared<Sink>(fd);  // closes fd on every throw below
  ifreq req{};
  std::memcpy(req.ifr_name, ifname_.data(), ifname_.size());
  // IFF_TUN_EXCL: if someone made the name between the check above and
  // here, EBUSY instead of attaching to their device.
  req.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL;
  if (::ioctl(fd, TUNSETIFF, &req) != 0) {
    const int e = errno;
    if (e == EBUSY || e == EEXIST) throw std::system_error(e, std::generic_category(), "tap_name_in_use: " + ifname_);
    fail(e, "TUNSETIFF " + ifname_);
  }
  configure(ifname_);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) fail(errno, "eventfd");
  port_ = sw_->add_port(ifname_, "tap", sink_);
  try {
    thread_ = std::thread([this] { read_loop(); });
  } catch (const std::system_error& e) {
    sw_->remove_port(port_);
    ::close(stop_fd_);
    fail(e.code().value(), "reader thread");
  }
}

TapPort::~TapPort() {
  const uint64_t one = 1;
  if (::write(stop_fd_, &one, sizeof one) < 0) {
    // The eventfd cannot be full after one write; nothing else to do.
  }
  thread_.join();
  sw_->remove_port(port_);
  sink_->close();  // the device goes with its last descriptor
  ::close(stop_fd_);
}

void TapPort::read_loop() {
  std::vector<uint8_t> buf(kReadBufferBytes);
  pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {sink_->fd, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      read_errors_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (fds[kPollStop].revents) return;
    if (fds[kPollTap].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      read_errors_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Drain what is there; each frame goes through the switch's checks
    // (size, the port's queue) like any other port's.
    // At most a batch, then poll again: a host that never stops sending
    // cannot keep the reader from seeing the stop request.
    for (size_t taken = 0; taken < kReadBatch; ++taken) {
      const ssize_t n = ::read(fds[kPollTap].fd, buf.data(), buf.size());
      if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) read_errors_.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      sw_->ingress(port_, std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    }
  }
}

}  // namespace apiary::net
