// Output formatting for guests; see print.hpp.
#include "guest/lib/print.hpp"

#include <stdarg.h>

#include "guest/lib/serial.hpp"

namespace apiary::guestlib {

void put_char(char c) {
  if (c == '\n') serial::write_byte('\r');
  serial::write_byte(static_cast<uint8_t>(c));
}

void put_str(const char* s) {
  while (*s) put_char(*s++);
}

void puts(const char* s) {
  put_str(s);
  put_char('\n');
}

namespace {

// Formats v in `base` into the tail of buf; returns the first digit.
char* format_unsigned(char* end, uint64_t v, unsigned base, bool upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  char* p = end;
  do {
    *--p = digits[v % base];
    v /= base;
  } while (v);
  return p;
}

// Prints [-]s in a field of `width`: right-aligned padded with `pad`, or
// left-aligned padded with spaces when `left`.
void emit_padded(const char* s, int len, int width, char pad, bool negative, bool left = false) {
  int fill = width - len - (negative ? 1 : 0);
  if (!left && pad == ' ')
    for (; fill > 0; --fill) put_char(' ');
  if (negative) put_char('-');
  if (!left)
    for (; fill > 0; --fill) put_char('0');
  for (int i = 0; i < len; ++i) put_char(s[i]);
  for (; fill > 0; --fill) put_char(' ');
}

}  // namespace

void put_dec(uint64_t v) {
  char buf[24];
  char* end = buf + sizeof buf;
  char* p = format_unsigned(end, v, 10, false);
  emit_padded(p, static_cast<int>(end - p), 0, ' ', false);
}

void put_dec_signed(int64_t v) {
  if (v < 0) {
    put_char('-');
    put_dec(0 - static_cast<uint64_t>(v));
  } else {
    put_dec(static_cast<uint64_t>(v));
  }
}

void put_hex(uint64_t v, int digits) {
  char buf[24];
  char* end = buf + sizeof buf;
  char* p = format_unsigned(end, v, 16, false);
  put_str("0x");
  emit_padded(p, static_cast<int>(end - p), digits, '0', false);
}

void printf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  for (const char* f = fmt; *f; ++f) {
    if (*f != '%') {
      put_char(*f);
      continue;
    }
    ++f;
    char pad = ' ';
    bool left = false;
    for (;; ++f) {
      if (*f == '0')
        pad = '0';
      else if (*f == '-')
        left = true;
      else
        break;
    }
    int width = 0;
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    int longs = 0;
    while (*f == 'l' || *f == 'z') {
      ++longs;
      ++f;
    }
    char buf[24];
    char* end = buf + sizeof buf;
    switch (*f) {
      case 'd':
      case 'i': {
        int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
        bool neg = v < 0;
        uint64_t mag = neg ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
        char* p = format_unsigned(end, mag, 10, false);
        emit_padded(p, static_cast<int>(end - p), width, pad, neg, left);
        break;
      }
      case 'u':
      case 'x':
      case 'X': {
        uint64_t v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
        char* p = format_unsigned(end, v, *f == 'u' ? 10 : 16, *f == 'X');
        emit_padded(p, static_cast<int>(end - p), width, pad, false, left);
        break;
      }
      case 'p': {
        put_hex(reinterpret_cast<uint64_t>(va_arg(ap, void*)));
        break;
      }
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        int len = 0;
        while (s[len]) ++len;
        emit_padded(s, len, width, ' ', false, left);
        break;
      }
      case 'c':
        put_char(static_cast<char>(va_arg(ap, int)));
        break;
      case '%':
        put_char('%');
        break;
      case '\0':
        --f;  // a lone '%' at the end: stop at the terminator
        break;
      default:
        put_char('%');
        put_char(*f);
        break;
    }
  }
  va_end(ap);
}

}  // namespace apiary::guestlib
