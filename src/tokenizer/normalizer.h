// tokenizer.json "normalizer": NFC, Prepend, Replace and Sequence of them.
// Other normalizers (NFKC, Lowercase, Precompiled charsmaps, ...) are refused at load time.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/status.h"

namespace atp {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // text is valid UTF-8 and not empty.
  virtual std::string Apply(std::string_view text) const = 0;
};

// path names the field in errors ("normalizer").
Result<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j, const std::string& path);

}  // namespace atp
