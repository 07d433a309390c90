// The demo's `disk` command: the first virtio-blk device, one 512-byte
// sector at a time.
//
//   disk info                  -> disk: capacity=N sectors id=ID
//   disk write <sector> <text> -> wrote sector S fnv=xxxxxxxx
//   disk read <sector>         -> sector S fnv=xxxxxxxx: <printable prefix>
//   disk flush                 -> disk: flushed
//
// `write` stores the text (the rest of the line, blanks included) padded
// with zeros to a full sector; fnv is FNV-1a 32 over all 512 bytes, so a
// host test can check the backing file. Failures print one "disk: ..."
// line (device status, timeout, no device, range) and never hang: the
// virtio core bounds every wait.
#include "guest/demo/commands.hpp"
#include "guest/lib/checksum.hpp"
#include "guest/lib/print.hpp"
#include "guest/lib/string.hpp"
#include "guest/lib/virtio_blk.hpp"

namespace apiary::guestlib::demo {

namespace {

constexpr size_t kPrefixMax = 64;  // printable bytes `disk read` shows

// A sector buffer the device reads or writes by address: static (identity
// mapped like everything else, and off the small stack).
alignas(16) uint8_t sector_buf[virtio_blk::kSectorSize];

void usage() { puts("usage: disk info | disk read <sector> | disk write <sector> <text> | disk flush"); }

// The word after the one at s (blanks skipped); "" at the end.
const char* next_word(const char* s) {
  while (*s && !is_space(*s)) ++s;
  return skip_spaces(s);
}

bool word_is(const char* s, const char* word) {
  size_t n = str_len(word);
  return str_eq_n(word, s, n) && (s[n] == '\0' || is_space(s[n]));
}

// Brings the device up; prints why not and returns false on failure.
bool ready() {
  virtio::Result r = virtio_blk::init();
  if (r == virtio::Result::ok) return true;
  if (r == virtio::Result::no_device) puts("disk: no virtio-blk device");
  else printf("disk: %s\n", virtio::result_name(r));
  return false;
}

// True when the request succeeded; otherwise prints why.
bool check(const virtio_blk::Outcome& o) {
  if (o.ok()) return true;
  if (o.transport == virtio::Result::timeout) puts("disk: timeout");
  else if (o.transport != virtio::Result::ok) printf("disk: %s\n", virtio::result_name(o.transport));
  else printf("disk: error status %u (%s)\n", o.status, virtio_blk::status_name(o.status));
  return false;
}

// Parses the sector argument and checks it against the capacity.
bool parse_sector(const char* s, uint64_t* sector) {
  if (!parse_u64(s, sector)) {
    usage();
    return false;
  }
  uint64_t cap = virtio_blk::capacity();
  if (*sector >= cap) {
    printf("disk: sector %lu out of range (capacity %lu)\n", *sector, cap);
    return false;
  }
  return true;
}

void disk_info() {
  char id[virtio_blk::kIdBytes + 1] = {};
  virtio_blk::Outcome o = virtio_blk::get_id(id);
  if (o.transport != virtio::Result::ok) {
    check(o);
    return;
  }
  if (o.status != virtio_blk::kStatusOk) id[0] = '\0';  // a device without ids
  for (size_t i = 0; i < virtio_blk::kIdBytes && id[i]; ++i)
    if (id[i] < ' ' || id[i] > '~') id[i] = '?';
  printf("disk: capacity=%lu sectors id=%s%s\n", virtio_blk::capacity(), id,
         virtio_blk::read_only() ? " (read-only)" : "");
}

void disk_read(const char* args) {
  uint64_t sector;
  if (*next_word(args)) {
    usage();
    return;
  }
  if (!parse_sector(args, &sector)) return;
  if (!check(virtio_blk::read(sector, sector_buf))) return;
  printf("sector %lu fnv=%08x:", sector, fnv1a32(sector_buf, sizeof sector_buf));
  size_t n = 0;
  while (n < kPrefixMax && sector_buf[n] >= ' ' && sector_buf[n] <= '~') ++n;
  if (n) put_char(' ');
  for (size_t i = 0; i < n; ++i) put_char(static_cast<char>(sector_buf[i]));
  put_char('\n');
}

void disk_write(const char* args) {
  uint64_t sector;
  const char* text = next_word(args);
  if (!*text) {
    usage();
    return;
  }
  if (!parse_sector(args, &sector)) return;
  memset(sector_buf, 0, sizeof sector_buf);
  size_t len = str_len(text);
  if (len > sizeof sector_buf) len = sizeof sector_buf;
  memcpy(sector_buf, text, len);
  if (!check(virtio_blk::write(sector, sector_buf))) return;
  printf("wrote sector %lu fnv=%08x\n", sector, fnv1a32(sector_buf, sizeof sector_buf));
}

void disk_flush() {
  if (check(virtio_blk::flush())) puts("disk: flushed");
}

}  // namespace

void cmd_disk(const CommandContext& ctx) {
  const char* sub = ctx.args;
  const char* rest = next_word(sub);
  bool is_info = word_is(sub, "info"), is_read = word_is(sub, "read"), is_write = word_is(sub, "write"),
       is_flush = word_is(sub, "flush");
  if (!is_info && !is_read && !is_write && !is_flush) {
    usage();
    return;
  }
  if ((is_info || is_flush) && *rest) {
    usage();
    return;
  }
  if (!ready()) return;
  if (is_info) disk_info();
  else if (is_read) disk_read(rest);
  else if (is_write) disk_write(rest);
  else disk_flush();
}

}  // namespace apiary::guestlib::demo
