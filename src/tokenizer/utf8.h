// UTF-8 decoding, encoding and repair shared by the tokenizer's stages.
// It never guesses another encoding: a byte sequence that is not UTF-8 becomes U+FFFD.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace atp::utf8 {

constexpr char32_t kReplacement = 0xFFFD;

// Decodes the code point at s[*i] and advances *i past it. An invalid sequence yields U+FFFD and
// consumes its maximal subpart (Unicode's recommended practice, as WHATWG TextDecoder and Python do).
char32_t Next(std::string_view s, size_t* i);
void Append(std::string& out, char32_t cp);
bool IsValid(std::string_view s);
// s with every maximal invalid subpart replaced by U+FFFD.
std::string Repair(std::string_view s);
// The Unicode White_Space property.
bool IsWhitespace(char32_t cp);

}  // namespace atp::utf8
