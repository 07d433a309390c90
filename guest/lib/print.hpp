// Console output formatting on top of the polled COM1 driver.
//
// A guest has no libc, so this is the whole of its stdio: characters,
// strings, numbers and a small printf. '\n' is sent as "\r\n" so the output
// reads correctly on a raw terminal; every line a guest prints ends in CRLF.
#pragma once

#include <stdint.h>

namespace apiary::guestlib {

void put_char(char c);
// The string as is (no newline added).
void put_str(const char* s);
// The string, then a newline (like C's puts).
void puts(const char* s);
// Unsigned decimal.
void put_dec(uint64_t v);
// Signed decimal.
void put_dec_signed(int64_t v);
// Lower-case hex with a "0x" prefix, zero-padded to at least `digits` digits.
void put_hex(uint64_t v, int digits = 1);

// A small printf: %d %i %u %x %X %s %c %p %%, the flags '0' and '-', a field width,
// and the length modifiers l, ll, z. Nothing else (no floating point).
void printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace apiary::guestlib
