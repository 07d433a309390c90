// Named failures for everything below the actor layer.
//
// Every way the VMM core can refuse or fail has an Errc value with a stable
// name, so callers (tests, the CLI, the actors above) can branch on the kind
// of failure and print something an operator can act on. Errors are thrown
// as vmm::Error from setup paths (opening KVM, building memory, loading
// images); the vCPU hot path never throws.
#pragma once

#include <stdexcept>
#include <string>

namespace apiary::vmm {

enum class Errc {
  // Host / KVM
  kvm_unavailable,       // /dev/kvm missing, or a software-emulated KVM (no SSE3)
  kvm_permission,        // /dev/kvm present but not accessible
  kvm_api_version,       // KVM_GET_API_VERSION != 12
  kvm_capability,        // a required KVM capability is missing
  ioctl_failed,          // an ioctl failed; message names ioctl and errno
  host_out_of_memory,    // mmap of guest memory failed
  // Configuration
  invalid_argument,
  too_many_vcpus,
  memory_too_large,
  // Guest memory
  guest_address_out_of_range,
  // Files
  file_not_found,
  file_unreadable,
  // Images (loaders)
  image_truncated,
  image_bad_magic,
  image_unsupported,
  image_corrupt,
  image_too_large,       // does not fit into guest memory
  image_overlaps_boot_data,  // a segment lies on data Apiary writes for the boot (named)
  elf_no_pvh_note,
  multiboot_no_header,
  multiboot_bad_checksum,
  bzimage_bad_header,
  bzimage_too_old,
  bzimage_not_64bit,
  cmdline_too_long,
  initrd_too_large,
  // Bus
  bus_overlap,
  bus_bad_range,
  // Snapshots (devices/machine_snapshot.hpp)
  snapshot_truncated,    // the file ends before its trailer
  snapshot_corrupt,      // bad magic, checksum mismatch, malformed header or state
  snapshot_version,      // written by another format version
  snapshot_board,        // made for another board, architecture or machine shape
  snapshot_unsupported,  // this machine's state cannot be saved (simulated, running)
  file_unwritable,
  // Live migration (devices/machine_migration.hpp)
  migration_unreachable,  // the destination could not be connected to, or no source came
  migration_peer_lost,    // the other side closed or reset the stream
  migration_timeout,      // the other side sent nothing within the deadline
  migration_protocol,     // a frame that is not the protocol's (garbage, wrong order, too large)
  migration_refused,      // the other side said no (its reason follows)
  migration_cancelled,    // the source gave up (the instance was stopped meanwhile)
};

const char* to_string(Errc code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& detail);
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

}  // namespace apiary::vmm
