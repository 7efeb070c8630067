// A compiled PCRE2 pattern (UTF + UCP, JIT-compiled) and the list of its matches in a text.
// Subjects must be valid UTF-8: the tokenizer repairs its input once, so matching skips PCRE2's check.
#pragma once
#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace atp {

class Regex {
 public:
  // literal: the pattern is a plain string to find, not a regular expression.
  static Result<Regex> Compile(std::string_view pattern, bool literal);

  // [begin, end) byte ranges of the non-overlapping, non-empty matches, left to right. Like
  // JavaScript's matchAll, an empty match moves the search one character on.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view subject) const;
  // subject with every match (as FindAll finds them) replaced by `with`, taken literally.
  std::string ReplaceAll(std::string_view subject, std::string_view with) const;

 private:
  struct Code;
  explicit Regex(std::shared_ptr<const Code> code) : code_(std::move(code)) {}
  std::shared_ptr<const Code> code_;  // shared: a compiled pattern is immutable and thread-safe
};

// {"String": s} (literal) or {"Regex": r}, as tokenizer.json writes Replace and Split patterns.
Result<Regex> ParsePattern(const nlohmann::json& j, const std::string& path);

}  // namespace atp
