// Snapshot files: a paused Machine's whole state (vCPUs, in-kernel irqchip,
// PIT and clock, every device, guest RAM) in one file, and back.
//
// Layout (all integers little-endian):
//   preamble   "APIARYSN", u32 format version, u32 header length
//   header     apiary.v1.MachineSnapshot (proto/apiary/v1/snapshot.proto)
//   memory     runs of non-zero pages: u64 guest-physical address, u64 byte
//              count (a multiple of 4 KiB), the bytes; ended by a run with
//              address ~0 and count 0
//   trailer    u64 pages written, u32 CRC-32 of every byte before it,
//              "APIARYND"
//
// Why zero pages are skipped, and found through mincore(): a page the guest
// never touched is not resident on the host and reads as zero, so it is
// neither read (each first touch costs ~12 us here) nor written; a resident
// page that is all zeros is skipped too. The version sits outside the
// protobuf header so that a future layout is refused before anything is
// parsed; the board name (layout::kBoardRevision and the KVM ABI) refuses a
// file made for another machine. The file is written beside its final name
// and renamed once complete and synced: a crash never leaves a partial
// snapshot under that name.
//
// Refusals are named (vmm::Errc): snapshot_truncated, snapshot_corrupt
// (magic, checksum, malformed header, a state struct of the wrong size, a
// device state that does not fit), snapshot_version, snapshot_board,
// snapshot_unsupported (a simulated machine has no state to save),
// file_not_found / file_unreadable / file_unwritable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proto/apiary/v1/snapshot.pb.h"
#include "vmm-core/guest_memory.hpp"

namespace apiary::devices {

class Machine;
struct MachineConfig;

namespace snapshot {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kPageSize = 4096;
// Larger headers are refused as corrupt (kernel + initrd + state fit well below).
inline constexpr uint32_t kMaxHeaderBytes = 512u << 20;

// Which pages of the host range [host, host + bytes) the guest may have
// written (present or swapped, from /proc/self/pagemap; all, when it cannot
// be read), and whether a page is all zeros.
std::vector<bool> touched_pages(const uint8_t* host, uint64_t bytes);
bool page_is_zero(const uint8_t* page);

// "apiary-pc/<layout::kBoardRevision>/x86_64-kvm".
std::string board_name();

struct SaveStats {
  uint64_t file_bytes = 0;
  uint64_t pages_written = 0;  // non-zero pages stored
  uint64_t pages_skipped = 0;  // not resident, or all zeros
  double seconds = 0;
};

// The file layer alone (no KVM): writes `header` and the non-zero pages of
// `memory` to `path`; read_memory() loads them back into RAM of the same
// size (checking the trailer and the checksum over the whole file).
SaveStats write_file(const std::string& path, const v1::MachineSnapshot& header, const vmm::GuestMemory& memory);

// The whole state of `machine` but its RAM (the header of a file, the last
// message of a live migration). Same conditions as save().
v1::MachineSnapshot capture(Machine& machine, const std::string& instance_name);
// Only the board and the machine's configuration (shape, kernel, initrd,
// disks, NICs): what a restore or a migration destination builds from.
v1::MachineSnapshot capture_config(Machine& machine, const std::string& instance_name);

// Saves `machine` to `path`. No vCPU may be running (the owner holds them)
// and devices should be paused, so that nothing changes underneath.
SaveStats save(Machine& machine, const std::string& path, const std::string& instance_name);

// A snapshot's header, read and checked (magic, version, board), without its
// memory. Enough to build the MachineConfig to restore into.
struct Header {
  std::string path;  // in errors: the file, or where a migration came from
  v1::MachineSnapshot state;
  uint64_t memory_offset = 0;  // where the memory runs start
  // A machine being migrated in: built from `state.machine()` alone; its
  // RAM and the rest of its state arrive over the stream afterwards
  // (devices/machine_migration.hpp), so nothing is loaded at construction.
  bool incoming = false;
};
std::shared_ptr<const Header> read_header(const std::string& path);

// The configuration a restore builds: the saved machine's, with the file's
// header attached as MachineConfig::restore.
MachineConfig restore_config(std::shared_ptr<const Header> header);

void read_memory(const Header& header, vmm::GuestMemory& memory);

// Called by the Machine being built from MachineConfig::restore, once its
// memory, VM, devices and vCPUs exist and before anything runs: loads
// memory (verifying the checksum over the whole file), then the VM state,
// the vCPUs and the devices.
void load_into(Machine& machine, const Header& header);

// The parts of load_into after RAM: refuses a state for another board or
// size (check_fits), then sets the VM-wide devices, the vCPUs and the
// devices from `state`. `where` names the source in errors.
void check_fits(Machine& machine, const v1::MachineSnapshot& state, const std::string& where);
void apply_state(Machine& machine, const v1::MachineSnapshot& state, const std::string& where);

}  // namespace snapshot
}  // namespace apiary::devices
