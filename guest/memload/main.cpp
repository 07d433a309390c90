// memload: a guest that keeps a region of its RAM filled with data it can
// check, and rewrites it at a fixed rate. Live migration's benchmark guest
// (bench/bench_migration.py) and a correctness probe for anything that moves
// guest memory: every page it rewrites is first compared with what it wrote
// there last, so a page lost or stale after a migration is seen by the guest
// itself, not guessed from the outside.
//
// Why an in-tree guest and not Linux: Debian's kernel does not boot in
// 64 MiB (see bench/bench_migration.py), and a Linux loop dirties memory at
// whatever rate its VMM lets it. This guest is paced by the PIT, so under
// Apiary and under QEMU it dirties the same bytes per second as long as its
// vCPU gets the time, and it boots in either through PVH.
//
// Command line:
//   region_mib=<n>    the region's size (default: a quarter of the RAM);
//                     it starts at kRegionBase
//   mib_per_s=<n>     rewrite rate (default 0: the region is written once at
//                     boot, then the guest only counts: the idle case)
//   check_every=<s>   also runs the check (token "auto") every s seconds
// Output: "memload: ready ..." after the region is filled; "tick <n>" every
// second (n = 1, 2, ...); for a console line "check <token>" it reads the
// whole region and answers "memload: check <token> ok ..." or
// "memload: check <token> FAILED ...". A rewrite that finds a page not
// holding what was written there prints "memload: corrupt ..." and every
// later check fails.
//
// The pattern: generation g of the 8-byte word at address a is
// ((g + 1) * kGolden ^ a) | 1: never zero (a VMM may send zero pages as
// markers, which would make the guest cheap to move), different on every
// page and in every generation. Pages [0, cursor) hold generation pass + 1,
// the rest generation pass.
#include <stddef.h>

#include "guest/lib/interrupts.hpp"
#include "guest/lib/io.hpp"
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "guest/lib/serial.hpp"
#include "guest/lib/string.hpp"
#include "vmm-core/layout.hpp"

extern "C" void memload_timer_entry();
extern "C" volatile uint64_t memload_ticks;  // incremented by memload_timer_entry

namespace apiary::guestlib {

namespace {
constexpr uint64_t kRegionBase = 8ull << 20;  // above the image, its stack and the boot structures
constexpr uint64_t kRamReserve = 1ull << 20;  // left free below the top of RAM (firmware tables)
constexpr uint64_t kPage = 4096;
constexpr uint32_t kTickHz = 100;
constexpr uint16_t kPitDivisor = (layout::kPitInputHz + kTickHz / 2) / kTickHz;
constexpr uint8_t kPitChannel0Mode2 = 0x34;  // channel 0, lobyte/hibyte, mode 2 (rate generator), binary
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;
constexpr int kExitBadRegion = 2;

uint64_t region_pages;
uint64_t pass;    // complete rewrites of the region
uint64_t cursor;  // the next page to rewrite
bool corrupt;

uint64_t word(uint64_t generation, uint64_t addr) { return (((generation + 1) * kGolden) ^ addr) | 1; }

volatile uint64_t* page_ptr(uint64_t page) {
  return reinterpret_cast<volatile uint64_t*>(kRegionBase + page * kPage);
}

// The first word of the page that differs from generation g; -1 when none.
long find_mismatch(uint64_t page, uint64_t g, uint64_t* found) {
  volatile uint64_t* p = page_ptr(page);
  const uint64_t base = kRegionBase + page * kPage;
  for (size_t i = 0; i < kPage / 8; ++i) {
    if (p[i] != word(g, base + i * 8)) {
      *found = p[i];
      return static_cast<long>(i);
    }
  }
  return -1;
}

void fill(uint64_t page, uint64_t g) {
  volatile uint64_t* p = page_ptr(page);
  const uint64_t base = kRegionBase + page * kPage;
  for (size_t i = 0; i < kPage / 8; ++i) p[i] = word(g, base + i * 8);
}

uint64_t generation_of(uint64_t page) { return page < cursor ? pass + 1 : pass; }

void rewrite_next() {
  const uint64_t g = generation_of(cursor);
  uint64_t found = 0;
  const long at = find_mismatch(cursor, g, &found);
  if (at >= 0 && !corrupt) {
    corrupt = true;
    printf("memload: corrupt page at %p: word %d is %p, generation %lu expected\n",
           reinterpret_cast<void*>(kRegionBase + cursor * kPage), static_cast<int>(at),
           reinterpret_cast<void*>(found), g);
  }
  fill(cursor, g + 1);
  if (++cursor == region_pages) {
    cursor = 0;
    ++pass;
  }
}

void check(const char* token) {
  for (uint64_t page = 0; page < region_pages; ++page) {
    uint64_t found = 0;
    const long at = find_mismatch(page, generation_of(page), &found);
    if (at >= 0) {
      printf("memload: check %s FAILED at %p: %p, generation %lu expected\n", token,
             reinterpret_cast<void*>(kRegionBase + page * kPage + static_cast<uint64_t>(at) * 8),
             reinterpret_cast<void*>(found), generation_of(page));
      return;
    }
  }
  if (corrupt) {
    printf("memload: check %s FAILED: a rewrite found a corrupt page earlier\n", token);
    return;
  }
  printf("memload: check %s ok: %lu pages, pass %lu, page %lu\n", token, region_pages, pass, cursor);
}

// Console input, polled once per tick: a line "check <token>" runs check().
char line[64];
size_t line_len;

void poll_input() {
  while (serial::can_read()) {
    const char c = static_cast<char>(serial::read_byte());
    if (c != '\r' && c != '\n') {
      if (line_len < sizeof(line) - 1) line[line_len++] = c;
      continue;
    }
    line[line_len] = '\0';
    if (line_len > 6 && str_eq_n(line, "check ", 6)) check(line + 6);
    line_len = 0;
  }
}

void start_timer() {
  install_idt();
  set_gate(kIrqVectorBase + layout::kPitIrq, memload_timer_entry);
  init_pics(1u << layout::kPitIrq);
  outb(layout::kPitCommand, kPitChannel0Mode2);
  outb(layout::kPitChannel0, static_cast<uint8_t>(kPitDivisor));
  outb(layout::kPitChannel0, static_cast<uint8_t>(kPitDivisor >> 8));
}
}  // namespace

int guest_main(const BootInfo& boot) {
  const uint64_t ram = boot.ram_bytes;
  // A quarter of the RAM, to the nearest MiB: the memory map's RAM is a
  // little short of the machine's size (the BIOS area, firmware tables).
  uint64_t region_mib = ((ram >> 20) + 2) / 4;
  uint64_t mib_per_s = 0;
  uint64_t check_every = 0;
  if (const char* v = find_option(boot.cmdline, "region_mib")) parse_u64(v, &region_mib);
  if (const char* v = find_option(boot.cmdline, "check_every")) parse_u64(v, &check_every);
  if (const char* v = find_option(boot.cmdline, "mib_per_s")) parse_u64(v, &mib_per_s);
  const uint64_t region_bytes = region_mib << 20;
  if (region_bytes == 0 || kRegionBase + region_bytes + kRamReserve > ram) {
    printf("memload: region of %lu MiB at %p does not fit in %lu MiB of RAM\n", region_mib,
           reinterpret_cast<void*>(kRegionBase), ram >> 20);
    return kExitBadRegion;
  }
  region_pages = region_bytes / kPage;
  for (uint64_t page = 0; page < region_pages; ++page) fill(page, 0);
  const uint64_t bytes_per_tick = (mib_per_s << 20) / kTickHz;
  start_timer();
  printf("memload: ready, %lu MiB at %p, %lu MiB/s, %lu MiB of RAM\n", region_mib,
         reinterpret_cast<void*>(kRegionBase), mib_per_s, ram >> 20);

  uint64_t seen = memload_ticks;
  uint64_t budget = 0;  // bytes owed to the rewrite rate
  for (;;) {
    wait_for_interrupt();
    const uint64_t now = memload_ticks;
    if (now == seen) continue;
    // Ticks the guest slept through (its vCPU descheduled or paused) are
    // owed, up to one pass: no burst longer than that after a stall.
    budget += (now - seen) * bytes_per_tick;
    if (budget > region_bytes) budget = region_bytes;
    for (; budget >= kPage; budget -= kPage) rewrite_next();
    // Every second gets its line, also after a stall of several.
    for (uint64_t second = seen / kTickHz + 1; second <= now / kTickHz; ++second) {
      printf("tick %lu\n", second);
      if (check_every && second % check_every == 0) check("auto");
    }
    seen = now;
    poll_input();
  }
}

}  // namespace apiary::guestlib
