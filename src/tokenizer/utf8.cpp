// UTF-8 decoding with maximal-subpart replacement, encoding, and the White_Space property.
// Surrogates and code points above U+10FFFF are invalid, as in every UTF-8 decoder we compare with.
#include "tokenizer/utf8.h"

#include <cstdint>

namespace atp::utf8 {

char32_t Next(std::string_view s, size_t* i) {
  const size_t n = s.size();
  const uint8_t b0 = uint8_t(s[*i]);
  ++*i;
  if (b0 < 0x80) return b0;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;  // the range allowed for the first continuation byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return kReplacement;
  }
  for (int k = 0; k < need; ++k) {
    if (*i >= n) return kReplacement;
    const uint8_t b = uint8_t(s[*i]);
    if (b < lo || b > hi) return kReplacement;  // not consumed: it may start the next character
    cp = (cp << 6) | (b & 0x3F);
    ++*i;
    lo = 0x80, hi = 0xBF;
  }
  return cp;
}

void Append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

bool IsValid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (uint8_t(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t start = i;
    // A decoded U+FFFD is only an error if the bytes were not literally EF BF BD.
    if (Next(s, &i) == kReplacement && s.substr(start, i - start) != "\xEF\xBF\xBD") return false;
  }
  return true;
}

std::string Repair(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) Append(out, Next(s, &i));
  return out;
}

bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

}  // namespace atp::utf8
