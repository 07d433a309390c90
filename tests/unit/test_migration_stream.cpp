// The destination's side of the live-migration stream against a peer that
// is not a well-behaved Apiary source (no KVM needed: everything here is
// refused before a machine is built): garbage instead of the preface,
// another protocol version, a frame of unknown kind or over its size bound,
// a machine of another board or of a shape the destination did not agree
// to, a peer that stops sending or goes away. Each is a named error, and
// the source is told why where the stream still carries it. Also the
// source's side against a destination that is not there.
#define BOOST_TEST_MODULE migration_stream
#include <boost/test/unit_test.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "devices/machine.hpp"
#include "devices/machine_migration.hpp"
#include "devices/machine_snapshot.hpp"
#include "tests/support/temp_dir.hpp"
#include "vmm-core/error.hpp"

using namespace apiary;
using namespace std::chrono_literals;
using vmm::Errc;
namespace mig = devices::migration;

namespace {

void put_le(std::string& out, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
std::string preface(uint32_t version = mig::kProtocolVersion) {
  std::string p = "APIARYMG";
  put_le(p, version, 4);
  return p;
}
std::string frame(uint32_t kind, const std::string& payload, uint64_t claimed_len = ~0ull) {
  std::string f;
  put_le(f, kind, 4);
  put_le(f, 0, 4);
  put_le(f, claimed_len == ~0ull ? payload.size() : claimed_len, 8);
  return f + payload;
}
std::string hello(uint32_t vcpus, uint64_t mib, std::vector<std::string> disks = {},
                  std::string board = devices::snapshot::board_name()) {
  v1::MachineSnapshot s;
  s.set_board(board);
  s.mutable_machine()->set_vcpus(vcpus);
  s.mutable_machine()->set_memory_bytes(mib << 20);
  for (auto& d : disks) {
    auto* out = s.mutable_machine()->add_disks();
    out->set_path(d);
    out->set_size_bytes(4096);
  }
  return frame(1, s.SerializeAsString());
}

struct Outcome {
  Errc code{};
  std::string what;
  std::string told;  // what the destination sent back, after its preface
};

// The destination reads `bytes` from a peer that then closes its end (or
// keeps it open, `hold`), with `policy`.
Outcome destination_reads(const std::string& bytes, mig::Policy policy = {}, bool hold = false) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  std::thread peer([&] {
    [[maybe_unused]] auto n = ::send(sv[1], bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (!hold) ::shutdown(sv[1], SHUT_WR);
  });
  Outcome o;
  try {
    mig::Incoming in(sv[0], policy, nullptr);  // owns sv[0]
    o.what = "accepted";
  } catch (const vmm::Error& e) {
    o.code = e.code();
    o.what = e.what();
  }
  peer.join();
  ::shutdown(sv[1], SHUT_WR);
  std::string got(4096, '\0');
  const ssize_t n = ::recv(sv[1], got.data(), got.size(), MSG_DONTWAIT);
  if (n > 12) o.told = got.substr(12, static_cast<size_t>(n) - 12);
  ::close(sv[1]);
  return o;
}

}  // namespace

BOOST_AUTO_TEST_CASE(garbage_and_other_versions_are_migration_protocol) {
  auto o = destination_reads("GET / HTTP/1.0\r\n\r\n");
  BOOST_TEST((o.code == Errc::migration_protocol), o.what);
  BOOST_TEST(o.what.find("does not speak Apiary's migration protocol") != std::string::npos, o.what);

  o = destination_reads(preface(9) + hello(1, 64));
  BOOST_TEST((o.code == Errc::migration_protocol), o.what);
  BOOST_TEST(o.what.find("version 9") != std::string::npos, o.what);

  o = destination_reads(preface() + frame(77, "x"));
  BOOST_TEST((o.code == Errc::migration_protocol), o.what);
  BOOST_TEST(o.what.find("unknown kind 77") != std::string::npos, o.what);

  // A hello claiming more than a hello may hold: refused before it is read.
  o = destination_reads(preface() + frame(1, "", uint64_t{1} << 40));
  BOOST_TEST((o.code == Errc::migration_protocol), o.what);
  BOOST_TEST(o.what.find("above its limit") != std::string::npos, o.what);

  o = destination_reads(preface() + frame(3, std::string(16, '\0')));  // pages before hello
  BOOST_TEST((o.code == Errc::migration_protocol), o.what);
  BOOST_TEST(o.what.find("sent pages where hello was due") != std::string::npos, o.what);

  o = destination_reads(preface() + frame(1, "\xff\xff\xff"));
  BOOST_TEST((o.code == Errc::migration_protocol), o.what);
  BOOST_TEST(o.told.find("malformed hello") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(another_board_or_shape_is_refused_and_the_source_told) {
  auto o = destination_reads(preface() + hello(1, 64, {}, "other-pc/1/arm64"));
  BOOST_TEST((o.code == Errc::snapshot_board), o.what);
  BOOST_TEST(o.told.find("other-pc/1/arm64") != std::string::npos, o.told);

  mig::Policy p;
  p.expect = mig::Policy::Shape{1, 64, {"/var/lib/apiary/d0.img"}};
  o = destination_reads(preface() + hello(8, 64, {"/var/lib/apiary/d0.img"}), p);
  BOOST_TEST((o.code == Errc::snapshot_board), o.what);
  BOOST_TEST(o.told.find("expects 1 vCPUs, 64 MiB") != std::string::npos, o.told);

  // A disk path it did not agree to: refused, and no file made there.
  test::TempDir dir;
  const std::string stray = dir.file("not-mine/created.img");
  o = destination_reads(preface() + hello(1, 64, {stray}), p);
  BOOST_TEST((o.code == Errc::snapshot_board), o.what);
  BOOST_TEST(!std::filesystem::exists(stray));

  // The agreed shape is accepted: the missing disk is made, as large as the
  // source's, and removed again as the migration never commits.
  const std::string mine = dir.file("mine/d0.img");
  p.expect = mig::Policy::Shape{1, 64, {mine}};
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  const std::string bytes = preface() + hello(1, 64, {mine});
  BOOST_REQUIRE(::write(sv[1], bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  {
    mig::Incoming in(sv[0], p, nullptr);
    BOOST_TEST(std::filesystem::file_size(mine) == 4096u);
    BOOST_TEST(in.machine_config().vcpus == 1u);
    BOOST_TEST(in.machine_config().memory_mib == 64u);
  }
  BOOST_TEST(!std::filesystem::exists(mine));
  ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(a_silent_or_vanished_peer_is_named) {
  mig::Policy p;
  p.io_deadline = 300ms;
  const auto started = std::chrono::steady_clock::now();
  auto o = destination_reads(preface(), p, /*hold=*/true);  // then nothing
  BOOST_TEST((o.code == Errc::migration_timeout), o.what);
  BOOST_TEST((std::chrono::steady_clock::now() - started < 5s));

  o = destination_reads(preface() + "\x01\x00", p);  // half a frame header, then gone
  BOOST_TEST((o.code == Errc::migration_peer_lost), o.what);

  // The source's side: nobody listening.
  mig::Listener l("127.0.0.1", 0);
  const uint16_t port = l.port();
  BOOST_TEST(port != 0);
  std::atomic<bool> cancelled{true};
  try {
    l.accept(10s, &cancelled);
    BOOST_FAIL("accepted");
  } catch (const vmm::Error& e) {
    BOOST_TEST((e.code() == Errc::migration_cancelled), e.what());
  }
  try {
    l.accept(200ms);
    BOOST_FAIL("accepted");
  } catch (const vmm::Error& e) {
    BOOST_TEST((e.code() == Errc::migration_unreachable), e.what());
    BOOST_TEST(std::string(e.what()).find("no source connected") != std::string::npos);
  }
}
