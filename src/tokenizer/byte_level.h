// GPT-2's reversible map between bytes and printable code points, which byte-level BPE vocabularies
// are written in. Only the map: splitting text is the pre-tokenizer's business.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace atp::byte_level {

// Appends each byte of s as its mapped character (UTF-8).
void Encode(std::string_view s, std::string& out);
// The byte a mapped character stands for, or -1 if cp is not one of the 256 characters.
int ByteOf(char32_t cp);

}  // namespace atp::byte_level
