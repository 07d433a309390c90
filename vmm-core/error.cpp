#include "vmm-core/error.hpp"

namespace apiary::vmm {

const char* to_string(Errc code) noexcept {
  switch (code) {
    case Errc::kvm_unavailable: return "kvm_unavailable";
    case Errc::kvm_permission: return "kvm_permission";
    case Errc::kvm_api_version: return "kvm_api_version";
    case Errc::kvm_capability: return "kvm_capability";
    case Errc::ioctl_failed: return "ioctl_failed";
    case Errc::host_out_of_memory: return "host_out_of_memory";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::too_many_vcpus: return "too_many_vcpus";
    case Errc::memory_too_large: return "memory_too_large";
    case Errc::guest_address_out_of_range: return "guest_address_out_of_range";
    case Errc::file_not_found: return "file_not_found";
    case Errc::file_unreadable: return "file_unreadable";
    case Errc::image_truncated: return "image_truncated";
    case Errc::image_bad_magic: return "image_bad_magic";
    case Errc::image_unsupported: return "image_unsupported";
    case Errc::image_corrupt: return "image_corrupt";
    case Errc::image_too_large: return "image_too_large";
    case Errc::image_overlaps_boot_data: return "image_overlaps_boot_data";
    case Errc::elf_no_pvh_note: return "elf_no_pvh_note";
    case Errc::multiboot_no_header: return "multiboot_no_header";
    case Errc::multiboot_bad_checksum: return "multiboot_bad_checksum";
    case Errc::bzimage_bad_header: return "bzimage_bad_header";
    case Errc::bzimage_too_old: return "bzimage_too_old";
    case Errc::bzimage_not_64bit: return "bzimage_not_64bit";
    case Errc::cmdline_too_long: return "cmdline_too_long";
    case Errc::initrd_too_large: return "initrd_too_large";
    case Errc::bus_overlap: return "bus_overlap";
    case Errc::bus_bad_range: return "bus_bad_range";
    case Errc::snapshot_truncated: return "snapshot_truncated";
    case Errc::snapshot_corrupt: return "snapshot_corrupt";
    case Errc::snapshot_version: return "snapshot_version";
    case Errc::snapshot_board: return "snapshot_board";
    case Errc::snapshot_unsupported: return "snapshot_unsupported";
    case Errc::file_unwritable: return "file_unwritable";
    case Errc::migration_unreachable: return "migration_unreachable";
    case Errc::migration_peer_lost: return "migration_peer_lost";
    case Errc::migration_timeout: return "migration_timeout";
    case Errc::migration_protocol: return "migration_protocol";
    case Errc::migration_refused: return "migration_refused";
    case Errc::migration_cancelled: return "migration_cancelled";
  }
  return "unknown";
}

Error::Error(Errc code, const std::string& detail)
    : std::runtime_error(std::string(to_string(code)) + ": " + detail), code_(code) {}

}  // namespace apiary::vmm
