// Immutable bytes shared by every holder: a boot image (kernel, initrd).
//
// A machine's configuration is copied on its way to the machine: the
// instance actor keeps one for reboots, restores and live migration, the
// machine one, and fw_cfg serves the same kernel and initrd to a guest that
// asks for them. A Linux vmlinux is 65 MB, and memory that is touched costs
// time (about 12 us a page here, 44 us inside the nested-KVM VM), so three
// copies of it were seconds of a boot and 130 MiB of a VMM's idle memory.
// Copies of a SharedBytes share one buffer; nobody can change it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

namespace apiary::vmm {

class SharedBytes {
 public:
  SharedBytes() = default;
  // Takes the vector's buffer (no copy when moved in).
  SharedBytes(std::vector<uint8_t> bytes)  // NOLINT: implicit on purpose
      : bytes_(bytes.empty() ? nullptr : std::make_shared<const std::vector<uint8_t>>(std::move(bytes))) {}
  SharedBytes(std::initializer_list<uint8_t> bytes) : SharedBytes(std::vector<uint8_t>(bytes)) {}
  template <class It>
  void assign(It first, It last) {
    std::vector<uint8_t> bytes;
    bytes.insert(bytes.end(), first, last);
    *this = SharedBytes(std::move(bytes));
  }

  const std::vector<uint8_t>& vector() const noexcept { return bytes_ ? *bytes_ : empty_vector(); }
  std::span<const uint8_t> span() const noexcept { return vector(); }
  operator std::span<const uint8_t>() const noexcept { return span(); }  // NOLINT
  const uint8_t* data() const noexcept { return vector().data(); }
  size_t size() const noexcept { return vector().size(); }
  bool empty() const noexcept { return size() == 0; }
  auto begin() const noexcept { return vector().begin(); }
  auto end() const noexcept { return vector().end(); }
  // Two holders of one buffer (a copy, not equal contents).
  bool shares_with(const SharedBytes& o) const noexcept { return bytes_ && bytes_ == o.bytes_; }

  friend bool operator==(const SharedBytes& a, const SharedBytes& b) noexcept {
    return a.bytes_ == b.bytes_ || a.vector() == b.vector();
  }

 private:
  static const std::vector<uint8_t>& empty_vector() noexcept {
    static const std::vector<uint8_t> none;
    return none;
  }
  std::shared_ptr<const std::vector<uint8_t>> bytes_;
};

}  // namespace apiary::vmm
