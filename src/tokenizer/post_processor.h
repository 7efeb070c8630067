// tokenizer.json "post_processor" for single sequences: the special ids Encode(add_special=true)
// puts around the text. TemplateProcessing, ByteLevel (adds none) and Sequence; no pair templates.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace atp {

struct SpecialTemplate {
  std::vector<int32_t> prefix;  // before the text, e.g. BOS
  std::vector<int32_t> suffix;  // after it, e.g. EOS
};

// token_to_id resolves template tokens missing from the template's own special_tokens table.
Result<SpecialTemplate> ParsePostProcessor(const nlohmann::json& j, const std::string& path,
                                           const std::function<int32_t(std::string_view)>& token_to_id);

}  // namespace atp
