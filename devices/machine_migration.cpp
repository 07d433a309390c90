#include "devices/machine_migration.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <filesystem>
#include <map>
#include <cstring>
#include <thread>

#include "devices/machine.hpp"
#include "devices/machine_snapshot.hpp"
#include "devices/le_bytes.hpp"
#include "vmm-core/error.hpp"

namespace apiary::devices::migration {

using vmm::Errc;
using vmm::Error;
using Clock = std::chrono::steady_clock;

namespace {

constexpr char kPreface[8] = {'A', 'P', 'I', 'A', 'R', 'Y', 'M', 'G'};
constexpr uint64_t kPage = snapshot::kPageSize;
constexpr uint32_t kZeroPages = 1;
constexpr auto kPollSlice = std::chrono::milliseconds(100);

enum class Kind : uint32_t { hello = 1, built, pages, state, ready, commit, running, error, disk };
constexpr uint64_t kDiskChunk = 1u << 20;

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::hello: return "hello";
    case Kind::built: return "built";
    case Kind::pages: return "pages";
    case Kind::state: return "state";
    case Kind::ready: return "ready";
    case Kind::commit: return "commit";
    case Kind::running: return "running";
    case Kind::error: return "error";
    case Kind::disk: return "disk";
  }
  return "?";
}

// The most a frame of each kind may carry; anything longer is garbage.
uint64_t max_payload(Kind k) {
  switch (k) {
    case Kind::hello: return snapshot::kMaxHeaderBytes;  // kernel and initrd included
    case Kind::state: return 64u << 20;
    case Kind::pages: return kPagesPerFrame * (kPage + 16);
    case Kind::disk: return 16 + kDiskChunk;
    default: return 64u << 10;
  }
}


struct Frame {
  Kind kind;
  std::string payload;
};

// One TCP connection, non-blocking, every wait bounded by the deadline and
// cut short by the owner's cancel flag.
class Stream {
 public:
  Stream(int fd, std::chrono::milliseconds deadline, const std::atomic<bool>* cancelled, std::string peer)
      : fd_(fd), deadline_(deadline), cancelled_(cancelled), peer_(std::move(peer)) {
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Stream() {
    if (fd_ >= 0) ::close(fd_);
  }
  const std::string& peer() const noexcept { return peer_; }
  uint64_t bytes_sent() const noexcept { return sent_; }

  void send_preface() {
    std::string p(kPreface, sizeof kPreface);
    put_le(p, kProtocolVersion, 4);
    write_all(p.data(), p.size());
  }
  void expect_preface() {
    uint8_t p[12];
    read_all(p, sizeof p, deadline_);
    if (std::memcmp(p, kPreface, sizeof kPreface) != 0)
      throw Error(Errc::migration_protocol, peer_ + " does not speak Apiary's migration protocol");
    const uint64_t version = get_le(p + 8, 4);
    if (version != kProtocolVersion)
      throw Error(Errc::migration_protocol, peer_ + " speaks migration protocol version " + std::to_string(version) +
                                                ", this Apiary " + std::to_string(kProtocolVersion));
  }
  void send(Kind kind, std::string_view payload = {}) {
    std::string h;
    put_le(h, static_cast<uint32_t>(kind), 4);
    put_le(h, 0, 4);
    put_le(h, payload.size(), 8);
    write_all(h.data(), h.size());
    write_all(payload.data(), payload.size());
  }
  // The next frame, within `deadline`; an error frame is thrown as
  // migration_refused with the peer's reason.
  Frame receive(std::chrono::milliseconds deadline) {
    uint8_t h[16];
    read_all(h, sizeof h, deadline);
    const uint64_t raw_kind = get_le(h, 4), len = get_le(h + 8, 8);
    if (raw_kind < static_cast<uint32_t>(Kind::hello) || raw_kind > static_cast<uint32_t>(Kind::disk) ||
        get_le(h + 4, 4) != 0)
      throw Error(Errc::migration_protocol, peer_ + " sent a frame of unknown kind " + std::to_string(raw_kind));
    const auto kind = static_cast<Kind>(raw_kind);
    if (len > max_payload(kind))
      throw Error(Errc::migration_protocol, peer_ + " sent a " + kind_name(kind) + " frame of " + std::to_string(len) +
                                                " bytes, above its limit of " + std::to_string(max_payload(kind)));
    // Grown as the bytes arrive, never allocated from the claimed length
    // alone: a peer that claims 512 MiB and sends nothing costs nothing.
    Frame f{kind, {}};
    constexpr uint64_t kChunk = 1u << 20;
    while (f.payload.size() < len) {
      const size_t at = f.payload.size();
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, len - at));
      f.payload.resize(at + n);
      read_all(f.payload.data() + at, n, deadline);
    }
    if (kind == Kind::error)
      throw Error(Errc::migration_refused, peer_ + ": " + f.payload.substr(0, 1024));
    return f;
  }
  Frame expect(Kind kind, std::chrono::milliseconds deadline) {
    Frame f = receive(deadline);
    if (f.kind != kind)
      throw Error(Errc::migration_protocol, peer_ + " sent " + kind_name(f.kind) + " where " + kind_name(kind) +
                                                " was due");
    return f;
  }
  std::chrono::milliseconds deadline() const noexcept { return deadline_; }

 private:
  // Waits for `events`; throws on deadline, cancel or hang-up.
  void wait(short events, Clock::time_point until) {
    for (;;) {
      if (cancelled_ && cancelled_->load())
        throw Error(Errc::migration_cancelled, "the migration to or from " + peer_ + " was cancelled");
      const auto now = Clock::now();
      if (now >= until)
        throw Error(Errc::migration_timeout, peer_ + " sent or took nothing for " +
                                                 std::to_string(deadline_.count()) + " ms");
      const auto slice = std::min<Clock::duration>(until - now, kPollSlice);
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
      if (r < 0 && errno != EINTR) throw Error(Errc::migration_peer_lost, peer_ + ": poll: " + std::strerror(errno));
      if (r > 0) return;  // readable, writable, or an error the next call reports
    }
  }
  void write_all(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    auto until = Clock::now() + deadline_;
    while (n > 0) {
      const ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w > 0) {
        p += w;
        n -= static_cast<size_t>(w);
        sent_ += static_cast<uint64_t>(w);
        until = Clock::now() + deadline_;  // the deadline is for progress, not the whole write
        continue;
      }
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wait(POLLOUT, until);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      throw Error(Errc::migration_peer_lost, peer_ + ": " + (w < 0 ? std::strerror(errno) : "closed"));
    }
  }
  void read_all(void* data, size_t n, std::chrono::milliseconds deadline) {
    auto* p = static_cast<uint8_t*>(data);
    auto until = Clock::now() + deadline;
    while (n > 0) {
      const ssize_t r = ::recv(fd_, p, n, 0);
      if (r > 0) {
        p += r;
        n -= static_cast<size_t>(r);
        until = Clock::now() + deadline;
        continue;
      }
      if (r == 0) throw Error(Errc::migration_peer_lost, peer_ + " closed the migration stream");
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait(POLLIN, until);
        continue;
      }
      if (errno == EINTR) continue;
      throw Error(Errc::migration_peer_lost, peer_ + ": " + std::strerror(errno));
    }
  }

  int fd_;
  std::chrono::milliseconds deadline_;
  const std::atomic<bool>* cancelled_;
  std::string peer_;
  uint64_t sent_ = 0;
};

std::string address_of(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return std::string(host) + ":" + port;
}

addrinfo* resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const int r = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (r != 0 || !res)
    throw Error(Errc::migration_unreachable, host + ":" + std::to_string(port) + ": " + ::gai_strerror(r));
  return res;
}

int connect_to(const std::string& host, uint16_t port, std::chrono::milliseconds deadline,
               const std::atomic<bool>* cancelled) {
  addrinfo* res = resolve(host, port, false);
  std::string why = "no address";
  const auto until = Clock::now() + deadline;
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    int r = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (r < 0 && errno == EINPROGRESS) {
      for (;;) {
        if (cancelled && cancelled->load()) {
          ::close(fd);
          ::freeaddrinfo(res);
          throw Error(Errc::migration_cancelled, "the migration to " + host + " was cancelled");
        }
        pollfd p{fd, POLLOUT, 0};
        const int pr = ::poll(&p, 1, static_cast<int>(kPollSlice.count()));
        if (pr > 0) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          r = err ? -1 : 0;
          errno = err;
          break;
        }
        if (Clock::now() >= until) {
          errno = ETIMEDOUT;
          r = -1;
          break;
        }
      }
    }
    if (r == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  throw Error(Errc::migration_unreachable, host + ":" + std::to_string(port) + ": " + why);
}

size_t popcount(const std::vector<uint64_t>& bits) {
  size_t n = 0;
  for (uint64_t w : bits) n += static_cast<size_t>(std::popcount(w));
  return n;
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

// ------------------------------------------------------------- listener --

Listener::Listener(const std::string& host, uint16_t port) : host_(host) {
  addrinfo* res = resolve(host, port, true);
  std::string why = "no address";
  for (addrinfo* a = res; a && fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1) == 0) {
      fd_ = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (fd_ < 0) throw Error(Errc::migration_unreachable, "cannot listen on " + host + ":" + std::to_string(port) + ": " + why);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

Listener::~Listener() {
  if (fd_ >= 0) ::close(fd_);
}

int Listener::accept(std::chrono::milliseconds deadline, const std::atomic<bool>* cancelled) {
  const auto until = Clock::now() + deadline;
  for (;;) {
    const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      throw Error(Errc::migration_unreachable, "accept on port " + std::to_string(port_) + ": " + std::strerror(errno));
    if (cancelled && cancelled->load())
      throw Error(Errc::migration_cancelled, "waiting for a migration on port " + std::to_string(port_) + " was cancelled");
    if (Clock::now() >= until)
      throw Error(Errc::migration_unreachable, "no source connected to port " + std::to_string(port_) + " within " +
                                                   std::to_string(deadline.count()) + " ms");
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(kPollSlice.count()));
  }
}

// -------------------------------------------------------------- outgoing --

struct Outgoing::Impl {
  Machine& machine;
  Stream stream;
  Policy policy;
  std::string name;
  Clock::time_point started = Clock::now();
  Clock::time_point stopped_at{};
  // Pages dirty and not yet sent, one bitmap per memory region.
  std::vector<std::vector<uint64_t>> pending;
  double sending_seconds = 0;  // time spent sending pages, for the bandwidth
  uint64_t page_bytes = 0;
  bool logging = false;
  Clock::time_point throttle_start = Clock::now();
  uint64_t throttled_bytes = 0;
  std::vector<uint32_t> copy_disks;  // disks the destination does not see

  // A disk's whole contents, all-zero chunks left out (the destination
  // created the file zero-filled). The guest is stopped: nothing changes it.
  uint64_t send_disk(uint32_t index) {
    const auto& d = machine.config().disks[index];
    const int fd = ::open(d.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(Errc::file_unreadable, d.path + ": " + std::strerror(errno));
    std::string buf(kDiskChunk, '\0');
    uint64_t sent = 0;
    try {
      for (uint64_t off = 0;; off += kDiskChunk) {
        const ssize_t n = ::pread(fd, buf.data(), kDiskChunk, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw Error(Errc::file_unreadable, d.path + ": " + std::strerror(errno));
        if (n == 0) break;
        const auto len = static_cast<size_t>(n);
        if (std::all_of(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(len), [](char c) { return c == 0; }))
          continue;
        std::string frame;
        put_le(frame, index, 4);
        put_le(frame, 0, 4);
        put_le(frame, off, 8);
        frame.append(buf.data(), len);
        stream.send(Kind::disk, frame);
        sent += len;
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    return sent;
  }

  const std::atomic<bool>* cancelled;
  Impl(Machine& m, int fd, const std::string& peer, Policy p, const std::string& n, const std::atomic<bool>* c)
      : machine(m), stream(fd, p.io_deadline, c, peer), policy(p), name(n), cancelled(c) {}

  // ORs what vCPUs (KVM) and devices (GuestMemory) wrote since the last
  // call into `pending`; returns how many pages are pending.
  size_t collect_dirty() {
    auto& regions = machine.memory().regions();
    size_t n = 0;
    for (size_t i = 0; i < regions.size(); ++i) {
      const std::vector<uint64_t> kvm = machine.kvm_vm()->take_dirty_log(static_cast<uint32_t>(i));
      const std::vector<uint64_t> dev = machine.memory().take_written(i);
      auto& p = pending[i];
      for (size_t w = 0; w < p.size(); ++w) {
        if (w < kvm.size()) p[w] |= kvm[w];
        if (w < dev.size()) p[w] |= dev[w];
      }
      n += popcount(p);
    }
    return n;
  }

  // Sends the pages whose bit is set in `bits` (region `index`), in frames of
  // at most kPagesPerFrame, runs of zero pages as records without bytes
  // (skip_zero: not at all, for the first round: the destination's RAM
  // starts zero). Returns pages sent.
  uint64_t send_pages(size_t index, const std::vector<bool>& bits, bool skip_zero) {
    const auto& r = machine.memory().regions()[index];
    const auto t0 = Clock::now();
    std::string frame;
    uint32_t in_frame = 0;
    uint64_t sent = 0;
    auto flush = [&] {
      if (frame.empty()) return;
      stream.send(Kind::pages, frame);
      throttled_bytes += frame.size();
      frame.clear();
      in_frame = 0;
      if (policy.max_bytes_per_second) {  // sleep until the average is within the limit
        const auto due = throttle_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                                              static_cast<double>(throttled_bytes) / policy.max_bytes_per_second));
        while (Clock::now() < due) {  // in slices: a cancel does not wait for the limit
          if (cancelled && cancelled->load())
            throw Error(Errc::migration_cancelled, "the migration to " + stream.peer() + " was cancelled");
          std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), kPollSlice));
        }
      }
    };
    const uint64_t pages = r.size / kPage;
    for (uint64_t p = 0; p < pages;) {
      if (!bits[p]) {
        ++p;
        continue;
      }
      const bool zero = snapshot::page_is_zero(r.host + p * kPage);
      if (zero && skip_zero) {
        ++p;
        continue;
      }
      // A run of pages alike (all zero or all data), within the frame.
      uint64_t n = 1;
      while (p + n < pages && bits[p + n] && in_frame + n < kPagesPerFrame &&
             snapshot::page_is_zero(r.host + (p + n) * kPage) == zero)
        ++n;
      put_le(frame, r.gpa + p * kPage, 8);
      put_le(frame, n, 4);
      put_le(frame, zero ? kZeroPages : 0, 4);
      if (!zero) frame.append(reinterpret_cast<const char*>(r.host + p * kPage), n * kPage);
      in_frame += static_cast<uint32_t>(n);
      sent += n;
      p += n;
      if (in_frame >= kPagesPerFrame) flush();
    }
    flush();
    sending_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    page_bytes += sent * kPage;
    return sent;
  }

  uint64_t send_pending() {
    uint64_t sent = 0;
    for (size_t i = 0; i < pending.size(); ++i) {
      const uint64_t pages = machine.memory().regions()[i].size / kPage;
      std::vector<bool> bits(pages);
      for (uint64_t p = 0; p < pages; ++p) bits[p] = (pending[i][p / 64] >> (p % 64)) & 1;
      std::fill(pending[i].begin(), pending[i].end(), 0);
      sent += send_pages(i, bits, false);
    }
    return sent;
  }

  double bandwidth() const {  // bytes per second of page data, measured
    return sending_seconds > 0 && page_bytes > 0 ? page_bytes / sending_seconds : 0;
  }
};

Outgoing::Outgoing(Machine& machine, const std::string& host, uint16_t port, const std::string& instance_name,
                   Policy policy, const std::atomic<bool>* cancelled) {
  if (!machine.kvm_vm())
    throw Error(Errc::snapshot_unsupported, "a simulated machine runs no guest and cannot be migrated");
  const auto started = Clock::now();
  const int fd = connect_to(host, port, policy.io_deadline, cancelled);
  impl_ = std::make_unique<Impl>(machine, fd, host + ":" + std::to_string(port), policy, instance_name, cancelled);
  impl_->started = started;
  auto& s = impl_->stream;
  s.send_preface();
  s.expect_preface();
  // The machine's shape, kernel and initrd (a reboot on the destination
  // reloads them): what the destination builds before any RAM arrives.
  v1::MachineSnapshot hello = snapshot::capture_config(machine, instance_name);
  s.send(Kind::hello, hello.SerializeAsString());
  // The disks the destination does not see (u32 indices): their contents go
  // with the stop-and-copy.
  const Frame built = s.expect(Kind::built, policy.io_deadline);
  if (built.payload.size() % 4) throw Error(Errc::migration_protocol, s.peer() + " sent a malformed built frame");
  for (size_t i = 0; i < built.payload.size(); i += 4) {
    const auto index = static_cast<uint32_t>(get_le(reinterpret_cast<const uint8_t*>(built.payload.data()) + i, 4));
    if (index >= machine.config().disks.size())
      throw Error(Errc::migration_protocol, s.peer() + " asked for disk " + std::to_string(index) + " of " +
                                                std::to_string(machine.config().disks.size()));
    impl_->copy_disks.push_back(index);
  }
  for (const auto& r : machine.memory().regions()) impl_->pending.emplace_back((r.size / kPage + 63) / 64, 0);
}

Outgoing::~Outgoing() {
  if (impl_ && impl_->logging) {
    try {
      impl_->machine.kvm_vm()->set_dirty_logging(false);
    } catch (...) {
    }
    impl_->machine.memory().stop_write_tracking();
  }
}

void Outgoing::precopy() {
  Impl& m = *impl_;
  const auto t0 = Clock::now();
  // Logs first, then the first full pass: a page written during it is in
  // the log and goes again in the next round.
  m.machine.kvm_vm()->set_dirty_logging(true);
  m.machine.memory().start_write_tracking();
  m.logging = true;
  const auto& regions = m.machine.memory().regions();
  for (size_t i = 0; i < regions.size(); ++i)
    stats_.pages += m.send_pages(i, snapshot::touched_pages(regions[i].host, regions[i].size), true);
  stats_.rounds = 1;
  for (;;) {
    if (m.cancelled && m.cancelled->load())
      throw Error(Errc::migration_cancelled, "the migration to " + m.stream.peer() + " was cancelled");
    const size_t dirty = m.collect_dirty();
    const double bw = m.bandwidth();
    const double estimate_ms = dirty == 0 ? 0 : bw > 0 ? dirty * kPage / bw * 1000 : 1e9;
    if (estimate_ms <= static_cast<double>(m.policy.downtime_target.count())) {
      stats_.converged = true;
      break;
    }
    if (stats_.rounds >= m.policy.max_rounds) break;
    stats_.pages += m.send_pending();
    ++stats_.rounds;
  }
  stats_.precopy_ms = ms_since(t0);
  stats_.bytes = m.stream.bytes_sent();
}

void Outgoing::stop_and_copy(Clock::time_point stopped_at) {
  Impl& m = *impl_;
  m.stopped_at = stopped_at;
  m.collect_dirty();
  stats_.final_pages = m.send_pending();
  stats_.pages += stats_.final_pages;
  for (uint32_t index : m.copy_disks) stats_.disk_bytes += m.send_disk(index);
  v1::MachineSnapshot state = snapshot::capture(m.machine, m.name);
  state.mutable_machine()->clear_kernel();  // hello carried them
  state.mutable_machine()->clear_initrd();
  m.stream.send(Kind::state, state.SerializeAsString());
  m.stream.expect(Kind::ready, m.policy.io_deadline);
  stats_.bytes = m.stream.bytes_sent();
}

void Outgoing::commit() {
  Impl& m = *impl_;
  m.stream.send(Kind::commit);
  committed_ = true;
  m.stream.expect(Kind::running, m.policy.io_deadline);
  stats_.total_ms = ms_since(m.started);
  stats_.downtime_ms = ms_since(m.stopped_at);
  stats_.bytes = m.stream.bytes_sent();
}

// -------------------------------------------------------------- incoming --

void apply_page_records(vmm::GuestMemory& memory, std::string_view payload, const std::string& peer) {
  const auto* p = reinterpret_cast<const uint8_t*>(payload.data());
  size_t off = 0;
  while (off < payload.size()) {
    if (payload.size() - off < 16) throw Error(Errc::migration_protocol, peer + ": a torn page record");
    const uint64_t gpa = get_le(p + off, 8), n = get_le(p + off + 8, 4), flags = get_le(p + off + 12, 4);
    off += 16;
    const bool zero = flags == kZeroPages;
    uint8_t* host =
        (n && n <= kPagesPerFrame && gpa % kPage == 0 && flags <= kZeroPages) ? memory.host_range(gpa, n * kPage) : nullptr;
    if (!host || (!zero && payload.size() - off < n * kPage))
      throw Error(Errc::migration_protocol, peer + ": a page record [" + std::to_string(gpa) + ", " +
                                                std::to_string(n) + " pages) that is not guest RAM");
    if (zero) {
      std::memset(host, 0, n * kPage);
    } else {
      std::memcpy(host, p + off, n * kPage);
      off += n * kPage;
    }
  }
}

struct Incoming::Impl {
  Stream stream;
  Policy policy;
  v1::MachineSnapshot hello;
  // Disks this host did not see, created here (index -> open file); removed
  // again unless the migration committed.
  std::map<uint32_t, int> created;
  bool committed = false;
  Impl(int fd, const std::string& peer, Policy p, const std::atomic<bool>* c)
      : stream(fd, p.io_deadline, c, peer), policy(p) {}
  ~Impl() {
    for (auto& [index, fd] : created) {
      ::close(fd);
      if (!committed) ::unlink(hello.machine().disks(static_cast<int>(index)).path().c_str());
    }
  }

  // Shared storage is used as it is; a disk whose path this host does not
  // have is created at that path, as large as the source's, for its
  // contents to arrive during the stop-and-copy.
  void create_missing_disks() {
    const auto& disks = hello.machine().disks();
    for (int i = 0; i < disks.size(); ++i) {
      const auto& d = disks[i];
      if (d.path().empty() || d.path().front() != '/')
        throw Error(Errc::migration_protocol, stream.peer() + ": disk " + std::to_string(i) + " has no absolute path");
      if (::access(d.path().c_str(), F_OK) == 0) continue;
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(d.path()).parent_path(), ec);
      const int fd = ::open(d.path().c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) throw Error(Errc::file_unwritable, d.path() + ": " + std::strerror(errno));
      created[static_cast<uint32_t>(i)] = fd;
      if (::ftruncate(fd, static_cast<off_t>(d.size_bytes())) != 0)
        throw Error(Errc::file_unwritable, d.path() + ": " + std::strerror(errno));
    }
  }
  void write_disk(const Frame& f) {
    const auto* p = reinterpret_cast<const uint8_t*>(f.payload.data());
    if (f.payload.size() < 16) throw Error(Errc::migration_protocol, stream.peer() + ": a torn disk frame");
    const auto index = static_cast<uint32_t>(get_le(p, 4));
    const uint64_t off = get_le(p + 8, 8), len = f.payload.size() - 16;
    auto it = created.find(index);
    if (it == created.end() || get_le(p + 4, 4) != 0 ||
        off > hello.machine().disks(static_cast<int>(index)).size_bytes() ||
        len > hello.machine().disks(static_cast<int>(index)).size_bytes() - off)
      throw Error(Errc::migration_protocol, stream.peer() + ": disk data for disk " + std::to_string(index) +
                                                " that was not asked for or lies past its end");
    for (uint64_t done = 0; done < len;) {
      const ssize_t w = ::pwrite(it->second, p + 16 + done, len - done, static_cast<off_t>(off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw Error(Errc::file_unwritable, hello.machine().disks(static_cast<int>(index)).path() + ": " +
                                                         std::strerror(errno));
      done += static_cast<uint64_t>(w);
    }
  }
};

Incoming::Incoming(int fd, Policy policy, const std::atomic<bool>* cancelled) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  std::string peer = "a migration source";
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    peer = "migration source " + address_of(reinterpret_cast<sockaddr*>(&ss), len);
  impl_ = std::make_unique<Impl>(fd, peer, policy, cancelled);
  auto& s = impl_->stream;
  s.send_preface();
  s.expect_preface();
  Frame f = s.expect(Kind::hello, policy.io_deadline);
  if (!impl_->hello.ParseFromString(f.payload) || !impl_->hello.has_machine()) {
    report_failure("malformed hello");
    throw Error(Errc::migration_protocol, peer + " sent a malformed hello");
  }
  if (impl_->hello.board() != snapshot::board_name()) {
    const std::string why = "this destination is board '" + snapshot::board_name() + "', the source '" +
                            impl_->hello.board() + "'";
    report_failure(why);
    throw Error(Errc::snapshot_board, peer + ": " + why);
  }
  if (const auto& want = policy.expect) {
    const auto& m = impl_->hello.machine();
    std::vector<std::string> paths;
    for (const auto& d : m.disks()) paths.push_back(d.path());
    if (m.vcpus() != want->vcpus || m.memory_bytes() != want->memory_mib << 20 || paths != want->disk_paths) {
      const std::string why = "the source sends a machine of " + std::to_string(m.vcpus()) + " vCPUs, " +
                              std::to_string(m.memory_bytes() >> 20) + " MiB and " + std::to_string(paths.size()) +
                              " disks; this destination expects " + std::to_string(want->vcpus) + " vCPUs, " +
                              std::to_string(want->memory_mib) + " MiB and " +
                              std::to_string(want->disk_paths.size()) + " disks at the instance's paths";
      report_failure(why);
      throw Error(Errc::snapshot_board, peer + ": " + why);
    }
  }
  try {
    impl_->create_missing_disks();
  } catch (const std::exception& e) {
    report_failure(e.what());
    throw;
  }
}

Incoming::~Incoming() = default;

const std::string& Incoming::peer() const noexcept { return impl_->stream.peer(); }

MachineConfig Incoming::machine_config() const {
  auto h = std::make_shared<snapshot::Header>();
  h->path = impl_->stream.peer();
  h->state = impl_->hello;
  h->incoming = true;
  return snapshot::restore_config(std::move(h));
}

void Incoming::receive(Machine& machine) {
  auto& s = impl_->stream;
  try {
    snapshot::check_fits(machine, impl_->hello, s.peer());
    std::string wanted;
    for (const auto& [index, fd] : impl_->created) put_le(wanted, index, 4);
    s.send(Kind::built, wanted);
    for (;;) {
      Frame f = s.receive(impl_->policy.io_deadline);
      if (f.kind == Kind::pages) {
        apply_page_records(machine.memory(), f.payload, s.peer());
      } else if (f.kind == Kind::disk) {
        impl_->write_disk(f);
      } else if (f.kind == Kind::state) {
        for (auto& [index, fd] : impl_->created)
          if (::fsync(fd) != 0)
            throw Error(Errc::file_unwritable, impl_->hello.machine().disks(static_cast<int>(index)).path() + ": " +
                                                   std::strerror(errno));
        v1::MachineSnapshot state;
        if (!state.ParseFromString(f.payload)) throw Error(Errc::migration_protocol, s.peer() + ": malformed state");
        snapshot::apply_state(machine, state, s.peer());
        s.send(Kind::ready);
        s.expect(Kind::commit, impl_->policy.io_deadline);
        impl_->committed = true;
        return;
      } else {
        throw Error(Errc::migration_protocol,
                    s.peer() + " sent " + kind_name(f.kind) + " where pages or the state were due");
      }
    }
  } catch (const Error& e) {
    if (e.code() != Errc::migration_peer_lost && e.code() != Errc::migration_refused) report_failure(e.what());
    throw;
  } catch (const std::exception& e) {
    report_failure(e.what());
    throw;
  }
}

void Incoming::report_running() { impl_->stream.send(Kind::running); }

void Incoming::report_failure(const std::string& why) noexcept {
  try {
    impl_->stream.send(Kind::error, why);
  } catch (...) {
  }
}

}  // namespace apiary::devices::migration
