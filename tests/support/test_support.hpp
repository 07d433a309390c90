// Shared helpers for the Boost.Test suites: the /dev/kvm precondition, paths
// of the in-tree guest images, and a bounded machine run.
//
// ctest runs every kvm test through scripts/kvm-vm, which provides a real
// /dev/kvm on any machine (natively or in a nested-KVM VM), so the
// precondition only matters when a test binary is started by hand.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "vmm-core/boot.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/multiboot_image.hpp"

namespace apiary::test {

// Precondition for BOOST_AUTO_TEST_CASE(x, *boost::unit_test::precondition(kvm_available)):
// where /dev/kvm is unusable such tests are reported as skipped, with this
// reason, except under CI (the CI variable set and non-empty): there a guest
// test that cannot get KVM runs anyway and fails on kvm_unavailable, since a
// test skipped in CI is a test that does not exist.
// (A plain function: boost::function copies an empty functor's uninitialized
// bytes, which GCC 12 warns about.)
inline boost::test_tools::assertion_result kvm_available(boost::unit_test::test_unit_id) {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  const char* ci = std::getenv("CI");
  if (fd < 0 && ci && *ci) {
    BOOST_TEST_MESSAGE("CI is set and /dev/kvm is unusable (" << std::strerror(errno)
                                                                << "): running the test so that it fails");
    return true;
  }
  if (fd < 0) {
    boost::test_tools::assertion_result r(false);
    r.message() << "skipped: this test boots a guest and needs /dev/kvm, which is not usable here ("
                << std::strerror(errno) << ")";
    return r;
  }
  ::close(fd);
  return true;
}

inline std::string guest_path(const std::string& file) {
  std::string p = APIARY_GUEST_DIR;
  p.append("/").append(file);
  return p;
}
inline std::vector<uint8_t> guest_image(const std::string& file) { return vmm::read_file(guest_path(file)); }

// A flat multiboot image (address-field header) whose entry runs `code`.
inline std::vector<uint8_t> multiboot_flat(const std::vector<uint8_t>& code) {
  return vmm::multiboot_flat_image(code);
}

}  // namespace apiary::test
