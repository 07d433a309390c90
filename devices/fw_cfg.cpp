// fw_cfg: the item table, the selector/data ports and the DMA engine (every
// guest range bounds-checked). See fw_cfg.hpp for the model.
#include "devices/fw_cfg.hpp"

#include <algorithm>
#include <cstring>

#include "vmm-core/layout.hpp"

namespace apiary::devices {

using namespace fw_cfg;

static_assert(layout::kFwCfgData - layout::kFwCfgSelector == kDataOffset);
static_assert(layout::kFwCfgDma - layout::kFwCfgSelector == kDmaOffset);
static_assert(layout::kFwCfgPorts == kDmaOffset + layout::kFwCfgDmaLen);

namespace {
std::vector<uint8_t> le(uint64_t v, unsigned n) {
  std::vector<uint8_t> out(n);
  for (unsigned i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
  return out;
}
void put_be(uint8_t* p, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
}
uint64_t get_be(const uint8_t* p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
uint32_t checked_size32(size_t n, const char* what) {
  if (n > 0xffffffffu) throw vmm::Error(vmm::Errc::invalid_argument, std::string("fw_cfg: ") + what + " exceeds 4 GiB");
  return static_cast<uint32_t>(n);
}
}  // namespace

FwCfg::FwCfg(std::string name, vmm::GuestMemory& memory, uint32_t cpus, uint64_t ram_bytes,
             vmm::SharedBytes kernel, vmm::SharedBytes initrd, std::string_view cmdline)
    : Device(std::move(name)), memory_(memory), kernel_(std::move(kernel)), initrd_(std::move(initrd)) {
  items_.reserve(9);  // the fixed items and the directory
  set_item(kSignature, {'Q', 'E', 'M', 'U'});
  set_item(kId, le(kIdTraditional | kIdDma, 4));
  set_item(kRamSize, le(ram_bytes, 8));
  set_item(kNbCpus, le(std::min<uint32_t>(cpus, 0xffff), 2));
  set_item(kKernelSize, le(checked_size32(kernel_.size(), "kernel"), 4));
  set_item(kInitrdSize, le(checked_size32(initrd_.size(), "initrd"), 4));
  std::vector<uint8_t> cmd(cmdline.begin(), cmdline.end());
  cmd.push_back(0);
  set_item(kCmdlineSize, le(checked_size32(cmd.size(), "command line"), 4));
  set_item(kCmdlineData, std::move(cmd));
  rebuild_dir();
}

// The first item whose selector is not below `key` (items_ is sorted).
template <class Items>
static auto lower_item(Items& items, uint16_t key) {
  return std::lower_bound(items.begin(), items.end(), key, [](const auto& e, uint16_t k) { return e.first < k; });
}

void FwCfg::set_item(uint16_t key, std::vector<uint8_t> bytes) {
  auto it = lower_item(items_, key);
  if (it != items_.end() && it->first == key)
    it->second = std::move(bytes);
  else
    items_.emplace(it, key, std::move(bytes));
}

void FwCfg::rebuild_dir() {
  std::vector<uint8_t> dir(4 + file_names_.size() * kFileEntrySize, 0);
  put_be(dir.data(), file_names_.size(), 4);
  for (size_t i = 0; i < file_names_.size(); ++i) {
    uint8_t* e = dir.data() + 4 + i * kFileEntrySize;
    const auto sel = static_cast<uint16_t>(kFileFirst + i);
    put_be(e, item(sel)->size(), 4);
    put_be(e + 4, sel, 2);
    // e + 6: be16 reserved, left 0; then the NUL-padded name.
    std::memcpy(e + 8, file_names_[i].data(), file_names_[i].size());
  }
  set_item(kFileDir, std::move(dir));
}

uint16_t FwCfg::add_file(std::string_view name, std::vector<uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  if (name.empty() || name.size() >= kFileNameLen || name.find('\0') != std::string_view::npos)
    throw vmm::Error(vmm::Errc::invalid_argument,
                     "fw_cfg: file name must be 1-" + std::to_string(kFileNameLen - 1) + " bytes without NUL");
  if (std::find(file_names_.begin(), file_names_.end(), name) != file_names_.end())
    throw vmm::Error(vmm::Errc::invalid_argument, "fw_cfg: duplicate file " + std::string(name));
  if (file_names_.size() >= kMaxFiles) throw vmm::Error(vmm::Errc::invalid_argument, "fw_cfg: too many files");
  checked_size32(bytes.size(), "file");
  const auto sel = static_cast<uint16_t>(kFileFirst + file_names_.size());
  file_names_.emplace_back(name);
  set_item(sel, std::move(bytes));
  rebuild_dir();
  return sel;
}

void FwCfg::reset() {
  std::lock_guard lock(mutex_);
  selector_ = kSignature;
  offset_ = 0;
  std::memset(dma_reg_, 0, sizeof dma_reg_);
}

const std::vector<uint8_t>* FwCfg::item(uint16_t key) const {
  if (key == kKernelData) return &kernel_.vector();
  if (key == kInitrdData) return &initrd_.vector();
  auto it = lower_item(items_, key);
  return it == items_.end() || it->first != key ? nullptr : &it->second;
}

void FwCfg::select(uint16_t selector) {
  selector_ = static_cast<uint16_t>(selector & ~kWriteChannel);
  offset_ = 0;
}

uint8_t FwCfg::read_data_byte() {
  ++data_reads_;
  const auto* it = item(selector_);
  if (!it || offset_ >= it->size()) return 0;
  return (*it)[offset_++];
}

uint32_t FwCfg::dma_transfer(uint32_t control, uint32_t length, uint64_t address) {
  if (control & kDmaSelect) select(static_cast<uint16_t>(control >> kDmaSelectShift));
  const auto* it = item(selector_);
  const uint64_t size = it ? it->size() : 0;
  if (control & kDmaRead) {
    if (length == 0) return 0;
    uint8_t* dst = memory_.host_range(address, length);
    if (!dst) return kDmaError;
    const uint64_t avail = offset_ < size ? std::min<uint64_t>(size - offset_, length) : 0;
    if (avail) std::memcpy(dst, it->data() + offset_, avail);
    std::memset(dst + avail, 0, length - avail);  // past the item's end reads as 0
    memory_.note_written(address, length);
    offset_ = std::min<uint64_t>(offset_ + length, size);
    dma_bytes_ += length;
    return 0;
  }
  if (control & kDmaWrite) return kDmaError;  // items are read-only
  if (control & kDmaSkip) offset_ = std::min<uint64_t>(offset_ + length, size);
  return 0;
}

void FwCfg::dma(uint64_t gpa) {
  ++dma_ops_;
  uint8_t* access = memory_.host_range(gpa, kDmaAccessSize);
  if (!access) {  // nowhere to report the error: count it
    ++dma_errors_;
    ++dma_bad_descriptor_;
    return;
  }
  uint8_t desc[kDmaAccessSize];
  std::memcpy(desc, access, sizeof desc);  // one read: the guest may change it meanwhile
  const auto control = static_cast<uint32_t>(get_be(desc, 4));
  const auto length = static_cast<uint32_t>(get_be(desc + 4, 4));
  const uint64_t address = get_be(desc + 8, 8);
  const uint32_t result = dma_transfer(control, length, address);
  if (result) ++dma_errors_;
  uint8_t out[4];
  put_be(out, result, 4);
  std::memcpy(access, out, sizeof out);
  memory_.note_written(gpa, sizeof out);
}

uint64_t FwCfg::io_read(uint64_t offset, unsigned size) {
  std::lock_guard lock(mutex_);
  uint64_t v = 0;
  if (offset == kSelectorOffset) return selector_ & vmm::all_ones(size);
  if (offset == kDataOffset) {
    for (unsigned i = 0; i < size && i < 8; ++i) v |= static_cast<uint64_t>(read_data_byte()) << (8 * i);
    return v;
  }
  for (unsigned i = 0; i < size && i < 8; ++i) {
    const uint64_t off = offset + i;
    uint8_t b = 0xff;
    if (off >= kDmaOffset && off < kDmaOffset + 8)
      b = static_cast<uint8_t>(kDmaSignature >> (8 * (7 - (off - kDmaOffset))));
    v |= static_cast<uint64_t>(b) << (8 * i);
  }
  return v;
}

void FwCfg::io_write(uint64_t offset, unsigned size, uint64_t value) {
  std::lock_guard lock(mutex_);
  if (offset == kSelectorOffset && size >= 2) {
    select(static_cast<uint16_t>(value));
    return;
  }
  bool trigger = false, stored = false;
  for (unsigned i = 0; i < size && i < 8; ++i) {
    const uint64_t off = offset + i;
    if (off < kDmaOffset || off >= kDmaOffset + 8) continue;
    dma_reg_[off - kDmaOffset] = static_cast<uint8_t>(value >> (8 * i));
    stored = true;
    if (off == kDmaOffset + 7) trigger = true;
  }
  if (!stored) {
    ++ignored_writes_;  // data-port writes, byte writes to the selector
    return;
  }
  if (trigger) {
    const uint64_t gpa = get_be(dma_reg_, 8);
    std::memset(dma_reg_, 0, sizeof dma_reg_);
    dma(gpa);
  }
}

v1::DeviceState FwCfg::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  auto& r = *s.mutable_registers();
  r["selector"] = selector_;
  r["offset"] = offset_;
  r["dma_address"] = get_be(dma_reg_, 8);
  auto& c = *s.mutable_counters();
  c["items"] = items_.size() + 2;  // with the kernel and the initrd
  c["files"] = file_names_.size();
  c["data_reads"] = data_reads_;
  c["dma_ops"] = dma_ops_;
  c["dma_errors"] = dma_errors_;
  c["dma_bad_descriptor"] = dma_bad_descriptor_;
  c["dma_bytes"] = dma_bytes_;
  c["ignored_writes"] = ignored_writes_;
  return s;
}

void FwCfg::import_state(const v1::DeviceState& state) {
  // The items themselves are rebuilt from the machine's configuration (the
  // same kernel, initrd and command line); only the guest's cursor returns.
  StateReader r(*this, state);
  std::lock_guard lock(mutex_);
  selector_ = r.reg_as<uint16_t>("selector");
  offset_ = r.reg("offset", uint64_t{1} << 32);
  put_be(dma_reg_, r.reg("dma_address"), 8);
}

}  // namespace apiary::devices
