// libFuzzer target for the destination's side of the live-migration stream
// (devices/machine_migration.hpp): whoever connects to a destination's port
// first is its "source", so every byte it sends is untrusted.
//
//   byte 0 even: the rest is what the peer sends on the stream (preface,
//                frames, hello), read by an Incoming through a socketpair
//                with a short deadline and the shape a node would expect
//                (so that no disk file is ever created).
//   byte 0 odd:  the rest is a pages frame's payload, written into 1 MiB
//                of guest RAM by apply_page_records.
// What must hold: no crash, no sanitizer report, no exception but vmm::Error.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "devices/machine.hpp"
#include "devices/machine_migration.hpp"
#include "vmm-core/error.hpp"

using namespace apiary;
namespace mig = devices::migration;

namespace {

void stream(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  std::thread peer([&] {
    for (size_t off = 0; off < size;) {
      const ssize_t n = ::send(sv[1], data + off, size - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::shutdown(sv[1], SHUT_WR);
  });
  mig::Policy p;
  p.io_deadline = std::chrono::milliseconds(20);
  p.expect = mig::Policy::Shape{1, 1, {}};
  try {
    mig::Incoming in(sv[0], p, nullptr);
    (void)in.machine_config();
  } catch (const vmm::Error&) {
  }
  ::shutdown(sv[1], SHUT_RD);
  peer.join();
  ::close(sv[1]);
}

void pages(const uint8_t* data, size_t size) {
  static vmm::GuestMemory mem(1 << 20);
  try {
    mig::apply_page_records(mem, std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const vmm::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1)
    pages(data + 1, size - 1);
  else
    stream(data + 1, size - 1);
  return 0;
}
