// bytes_to_unicode() from GPT-2's encoder.py: printable Latin-1 bytes map to themselves, the other
// 68 bytes to U+0100 onward, in byte order. Built once; nothing else lives here.
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace atp::byte_level {
namespace {

struct Maps {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 0x144> cp_to_byte;  // every mapped code point is below U+0144
  Maps() {
    cp_to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? char32_t(b) : next++;
      utf8::Append(byte_to_utf8[b], cp);
      cp_to_byte[cp] = int16_t(b);
    }
  }
};
const Maps& GetMaps() {
  static const Maps m;
  return m;
}

}  // namespace

void Encode(std::string_view s, std::string& out) {
  const Maps& m = GetMaps();
  for (char c : s) out += m.byte_to_utf8[uint8_t(c)];
}

int ByteOf(char32_t cp) {
  const Maps& m = GetMaps();
  return cp < m.cp_to_byte.size() ? m.cp_to_byte[cp] : -1;
}

}  // namespace atp::byte_level
