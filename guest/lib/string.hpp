// The few string and memory routines freestanding guests need.
//
// The compiler may emit calls to memset/memcpy/memmove/memcmp even in
// freestanding code (struct copies, zero-initialized arrays), so string.cpp
// defines them with C linkage. The rest are helpers for parsing command
// lines and shell input without a libc.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {
void* memset(void* dst, int c, size_t n);
void* memcpy(void* dst, const void* src, size_t n);
void* memmove(void* dst, const void* src, size_t n);
int memcmp(const void* a, const void* b, size_t n);
}

namespace apiary::guestlib {

size_t str_len(const char* s);
bool str_eq(const char* a, const char* b);
// True when the first n bytes of a and b are equal (stops early at a NUL in a).
bool str_eq_n(const char* a, const char* b, size_t n);
inline bool is_space(char c) { return c == ' ' || c == '\t'; }
// Skips leading blanks.
const char* skip_spaces(const char* s);
// Parses an unsigned decimal, or hex with a 0x prefix, from the start of s up
// to the end of the token (a blank or the NUL). False when the token is empty,
// has a stray character, or overflows 64 bits.
bool parse_u64(const char* s, uint64_t* out);
// Finds `key=value` among the blank-separated words of a command line and
// returns a pointer to the value (ends at the next blank or NUL), or nullptr.
const char* find_option(const char* cmdline, const char* key);

}  // namespace apiary::guestlib
