// Memory and string routines for guests; see string.hpp. The mem* functions
// are single rep-prefixed instructions: few instructions to emulate, and no
// loop the optimizer could turn back into a call to themselves.
#include "guest/lib/string.hpp"

extern "C" {

void* memset(void* dst, int c, size_t n) {
  void* d = dst;
  asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dst;
}

void* memcpy(void* dst, const void* src, size_t n) {
  void* d = dst;
  asm volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
  return dst;
}

void* memmove(void* dst, const void* src, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  if (d <= s || d >= s + n) return memcpy(dst, src, n);
  // Overlapping with dst above src: copy backwards.
  void* dl = d + n - 1;
  const void* sl = s + n - 1;
  asm volatile("std; rep movsb; cld" : "+D"(dl), "+S"(sl), "+c"(n) : : "memory");
  return dst;
}

int memcmp(const void* a, const void* b, size_t n) {
  auto* x = static_cast<const unsigned char*>(a);
  auto* y = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < n; ++i)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

}  // extern "C"

namespace apiary::guestlib {

size_t str_len(const char* s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}

bool str_eq(const char* a, const char* b) {
  while (*a && *a == *b) {
    ++a;
    ++b;
  }
  return *a == *b;
}

bool str_eq_n(const char* a, const char* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
    if (!a[i]) return true;
  }
  return true;
}

const char* skip_spaces(const char* s) {
  while (is_space(*s)) ++s;
  return s;
}

bool parse_u64(const char* s, uint64_t* out) {
  unsigned base = 10;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  uint64_t v = 0;
  int digits = 0;
  for (; *s && !is_space(*s); ++s, ++digits) {
    unsigned d;
    if (*s >= '0' && *s <= '9')
      d = *s - '0';
    else if (base == 16 && *s >= 'a' && *s <= 'f')
      d = *s - 'a' + 10;
    else if (base == 16 && *s >= 'A' && *s <= 'F')
      d = *s - 'A' + 10;
    else
      return false;
    if (v > (UINT64_MAX - d) / base) return false;
    v = v * base + d;
  }
  if (digits == 0) return false;
  *out = v;
  return true;
}

const char* find_option(const char* cmdline, const char* key) {
  size_t klen = str_len(key);
  const char* p = cmdline;
  while (*(p = skip_spaces(p))) {
    if (str_eq_n(p, key, klen) && p[klen] == '=') return p + klen + 1;
    while (*p && !is_space(*p)) ++p;
  }
  return nullptr;
}

}  // namespace apiary::guestlib
