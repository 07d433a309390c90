#include "net/vxlan.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <unordered_map>

namespace apiary::net {

const char* to_string(VxlanError e) noexcept {
  switch (e) {
    case VxlanError::too_short: return "too_short";
    case VxlanError::no_vni_flag: return "no_vni_flag";
    case VxlanError::bad_inner_frame: return "bad_inner_frame";
  }
  return "unknown";
}

std::array<uint8_t, vxlan::kHeaderBytes> vxlan_header(uint32_t vni) noexcept {
  return {vxlan::kFlagVniValid, 0, 0, 0, static_cast<uint8_t>(vni >> 16), static_cast<uint8_t>(vni >> 8),
          static_cast<uint8_t>(vni), 0};
}

std::variant<VxlanFrame, VxlanError> parse_vxlan(std::span<const uint8_t> d) noexcept {
  if (d.size() < vxlan::kHeaderBytes) return VxlanError::too_short;
  if ((d[0] & vxlan::kFlagVniValid) == 0) return VxlanError::no_vni_flag;
  const uint32_t vni = (uint32_t{d[4]} << 16) | (uint32_t{d[5]} << 8) | d[6];
  auto frame = d.subspan(vxlan::kHeaderBytes);
  if (!frame_size_ok(frame.size())) return VxlanError::bad_inner_frame;
  return VxlanFrame{vni, frame};
}

std::optional<Endpoint> parse_endpoint(const std::string& text) {
  std::string host = text;
  uint16_t port = layout::kVxlanUdpPort;
  if (auto colon = text.rfind(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    const std::string p = text.substr(colon + 1);
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    const unsigned long v = std::stoul(p);
    if (v == 0 || v > 65535) return std::nullopt;
    port = static_cast<uint16_t>(v);
  }
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) != 1) return std::nullopt;
  return Endpoint{a.s_addr, port};
}

std::string to_string(const Endpoint& e) {
  char buf[INET_ADDRSTRLEN] = {};
  in_addr a{};
  a.s_addr = e.addr;
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(e.port);
}

uint32_t vni_of(const std::string& id) noexcept {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : id) h = (h ^ c) * 16777619u;
  return 1 + h % (vxlan::kMaxVni - 1);
}

namespace {
sockaddr_in to_sockaddr(const Endpoint& e) {
  sockaddr_in s{};
  s.sin_family = AF_INET;
  s.sin_addr.s_addr = e.addr;
  s.sin_port = htons(e.port);
  return s;
}
}  // namespace

// One VNI's uplink: the switch port and what it knows about remote MACs.
struct VxlanTunnel::Uplink {
  uint32_t vni = 0;
  std::array<uint8_t, vxlan::kHeaderBytes> header{};
  std::shared_ptr<Switch> sw;
  PortId port = 0;
  std::mutex mutex;  // everything below; held while sending so detach can wait out a send
  bool live = true;
  std::set<Endpoint> peers;
  struct Remote {
    Endpoint vtep;
    Clock::time_point seen;
  };
  std::unordered_map<Mac, Remote, MacHash> remotes;
};

namespace {
class UplinkSink final : public PortSink {
 public:
  using SendFn = std::function<bool(std::span<const uint8_t>)>;
  explicit UplinkSink(SendFn fn) : fn_(std::move(fn)) {}
  bool emit(std::span<const uint8_t> frame) noexcept override { return fn_(frame); }

 private:
  SendFn fn_;
};
}  // namespace

VxlanTunnel::VxlanTunnel(Endpoint local) : local_(local) {
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "vxlan: socket");
  const int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const int buf = vxlan::kSocketBufferBytes;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  auto sa = to_sockaddr(local);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int e = errno;
    ::close(fd_);
    throw std::system_error(e, std::generic_category(), "vxlan: bind_failed: " + to_string(local));
  }
  socklen_t len = sizeof sa;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) == 0) local_.port = ntohs(sa.sin_port);  // port 0: the one the kernel picked
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) {
    const int e = errno;
    ::close(fd_);
    throw std::system_error(e, std::generic_category(), "vxlan: eventfd");
  }
  thread_ = std::thread([this] { receive_loop(); });
}

VxlanTunnel::~VxlanTunnel() {
  std::vector<uint32_t> vnis;
  {
    std::lock_guard lk(mutex_);
    for (auto& [vni, up] : uplinks_) vnis.push_back(vni);
  }
  for (auto vni : vnis) detach(vni);
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  ::close(stop_fd_);
  ::close(fd_);
}

bool VxlanTunnel::attach(uint32_t vni, std::shared_ptr<Switch> sw) {
  auto up = std::make_shared<Uplink>();
  up->vni = vni;
  up->header = vxlan_header(vni);
  up->sw = sw;
  {
    std::lock_guard lk(mutex_);
    if (uplinks_.count(vni)) return false;
    uplinks_[vni] = up;
  }
  std::weak_ptr<Uplink> weak = up;
  auto sink = std::make_shared<UplinkSink>([this, weak](std::span<const uint8_t> frame) {
    auto u = weak.lock();
    if (!u) return false;
    std::lock_guard lk(u->mutex);
    if (!u->live || u->peers.empty()) return false;
    const Mac dst = destination(frame);
    if (!is_group(dst)) {
      auto it = u->remotes.find(dst);
      if (it != u->remotes.end() && Clock::now() - it->second.seen <= switch_defaults::kMacAgeing &&
          u->peers.count(it->second.vtep))
        return send(*u, frame, it->second.vtep);
    }
    bool any = false;
    for (const auto& p : u->peers) any = send(*u, frame, p) || any;
    return any;
  });
  const PortId port = sw->add_port("vxlan " + std::to_string(vni), "uplink", sink);
  std::lock_guard lk(up->mutex);
  up->port = port;
  return true;
}

void VxlanTunnel::detach(uint32_t vni, const Switch* owner) {
  std::shared_ptr<Uplink> up;
  {
    std::lock_guard lk(mutex_);
    auto it = uplinks_.find(vni);
    if (it == uplinks_.end() || (owner && it->second->sw.get() != owner)) return;
    up = it->second;
    uplinks_.erase(it);
  }
  PortId port;
  {
    std::lock_guard lk(up->mutex);
    up->live = false;
    port = up->port;
  }
  up->sw->remove_port(port);
}

void VxlanTunnel::set_peers(uint32_t vni, const std::vector<Endpoint>& peers) {
  std::shared_ptr<Uplink> up;
  {
    std::lock_guard lk(mutex_);
    auto it = uplinks_.find(vni);
    if (it == uplinks_.end()) return;
    up = it->second;
  }
  std::lock_guard lk(up->mutex);
  up->peers.clear();
  for (const auto& p : peers)
    if (p != local_) up->peers.insert(p);
  std::erase_if(up->remotes, [&](const auto& kv) { return !up->peers.count(kv.second.vtep); });
}

std::vector<Endpoint> VxlanTunnel::peers(uint32_t vni) const {
  std::shared_ptr<Uplink> up;
  {
    std::lock_guard lk(mutex_);
    auto it = uplinks_.find(vni);
    if (it == uplinks_.end()) return {};
    up = it->second;
  }
  std::lock_guard lk(up->mutex);
  return {up->peers.begin(), up->peers.end()};
}

// With up.mutex held.
bool VxlanTunnel::send(const Uplink& up, std::span<const uint8_t> frame, const Endpoint& to) noexcept {
  auto sa = to_sockaddr(to);
  iovec iov[2] = {{const_cast<uint8_t*>(up.header.data()), up.header.size()},
                  {const_cast<uint8_t*>(frame.data()), frame.size()}};
  msghdr msg{};
  msg.msg_name = &sa;
  msg.msg_namelen = sizeof sa;
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  if (::sendmsg(fd_, &msg, MSG_DONTWAIT) < 0) {
    tx_errors_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  tx_datagrams_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void VxlanTunnel::receive_loop() {
  std::vector<uint8_t> buf(vxlan::kMaxDatagram);
  pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    // At most a batch per wake-up, then poll again: a peer that never stops
    // sending cannot keep the thread from seeing the stop request.
    for (size_t taken = 0; taken < vxlan::kReceiveBatch; ++taken) {
      sockaddr_in from{};
      socklen_t from_len = sizeof from;
      const ssize_t n =
          ::recvfrom(fd_, buf.data(), buf.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n < 0) break;
      rx_datagrams_.fetch_add(1, std::memory_order_relaxed);
      auto parsed = parse_vxlan({buf.data(), static_cast<size_t>(n)});
      if (std::holds_alternative<VxlanError>(parsed)) {
        rx_garbage_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const auto& vf = std::get<VxlanFrame>(parsed);
      std::shared_ptr<Uplink> up;
      {
        std::lock_guard lk(mutex_);
        auto it = uplinks_.find(vf.vni);
        if (it != uplinks_.end()) up = it->second;
      }
      if (!up) {
        rx_unknown_vni_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const Endpoint src{from.sin_addr.s_addr, ntohs(from.sin_port)};
      PortId port;
      {
        std::lock_guard lk(up->mutex);
        if (!up->live || !up->peers.count(src)) {
          rx_unknown_peer_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        const Mac smac = source(vf.frame);
        if (!is_group(smac) && (up->remotes.size() < switch_defaults::kMacCapacity || up->remotes.count(smac)))
          up->remotes[smac] = {src, Clock::now()};
        port = up->port;
      }
      up->sw->ingress(port, vf.frame);
    }
  }
}

TunnelStats VxlanTunnel::stats() const {
  return {rx_datagrams_.load(), tx_datagrams_.load(),   tx_errors_.load(),
          rx_garbage_.load(),   rx_unknown_vni_.load(), rx_unknown_peer_.load()};
}

}  // namespace apiary::net
