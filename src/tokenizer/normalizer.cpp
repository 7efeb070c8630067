// The normalizers Llama-2-style (Prepend "▁" + Replace " " -> "▁") and Qwen2-style (NFC) tokenizers use.
// A normalizer here rewrites text only; it keeps no offsets, since nothing maps tokens back to input.
#include "tokenizer/normalizer.h"

#include <vector>

#include "tokenizer/json_fields.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_nfc.h"

namespace atp {
namespace {

class Nfc : public Normalizer {
 public:
  std::string Apply(std::string_view text) const override { return ToNfc(text); }
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Apply(std::string_view text) const override { return prefix_ + std::string(text); }

 private:
  std::string prefix_;
};

class Replace : public Normalizer {
 public:
  Replace(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Apply(std::string_view text) const override { return pattern_.ReplaceAll(text, content_); }

 private:
  Regex pattern_;
  std::string content_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string Apply(std::string_view text) const override {
    std::string s(text);
    for (const auto& n : steps_) {
      if (s.empty()) break;  // as in Hugging Face, an emptied text stays empty (Prepend adds nothing)
      s = n->Apply(s);
    }
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

Result<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string type, jf::Type(j, path));
  if (type == "NFC") return std::unique_ptr<Normalizer>(new Nfc());
  if (type == "Prepend") {
    ATP_ASSIGN_OR_RETURN(std::string prefix, jf::String(j, "prepend", path));
    return std::unique_ptr<Normalizer>(new Prepend(std::move(prefix)));
  }
  if (type == "Replace") {
    ATP_ASSIGN_OR_RETURN(const nlohmann::json* pat, jf::Require(j, "pattern", path));
    ATP_ASSIGN_OR_RETURN(Regex pattern, ParsePattern(*pat, path + ".pattern"));
    ATP_ASSIGN_OR_RETURN(std::string content, jf::String(j, "content", path));
    return std::unique_ptr<Normalizer>(new Replace(std::move(pattern), std::move(content)));
  }
  if (type == "Sequence") {
    ATP_ASSIGN_OR_RETURN(const nlohmann::json* list, jf::Array(j, "normalizers", path));
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      ATP_ASSIGN_OR_RETURN(auto n,
                           ParseNormalizer((*list)[i], path + ".normalizers[" + std::to_string(i) + "]"));
      steps.push_back(std::move(n));
    }
    return std::unique_ptr<Normalizer>(new Sequence(std::move(steps)));
  }
  return jf::UnknownType(path, "normalizer", type);
}

}  // namespace atp
