// tokenizer.json "pre_tokenizer": ByteLevel, Split, Metaspace and Sequence of them.
// Others (Whitespace, Digits, Punctuation, BertPreTokenizer, ...) are refused at load time.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace atp {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may rewrite) each piece in place; pieces are valid UTF-8. at_text_start: the first
  // piece begins the whole input text (Metaspace's prepend_scheme "first" looks at it).
  virtual void Apply(std::vector<std::string>& pieces, bool at_text_start) const = 0;
};

Result<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j, const std::string& path);

}  // namespace atp
