// Unicode Normalization Form C, for tokenizers whose normalizer is "NFC" (Qwen2/Qwen3).
// Tables come from Unicode 14 (gen_unicode_nfc_tables.py); characters assigned later pass through unchanged.
#pragma once
#include <string>
#include <string_view>

namespace atp {

// s must be valid UTF-8.
std::string ToNfc(std::string_view s);

}  // namespace atp
