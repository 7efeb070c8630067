// Pre-tokenizers as Hugging Face tokenizers defines them, splitting with PCRE2 (regex.h).
// Split's "invert" and "Contiguous" behaviour are refused: no supported model family uses them.
#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <optional>
#include <string_view>
#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/regex.h"

namespace atp {
namespace {

// GPT-2's pattern, which ByteLevel applies when use_regex is set (Hugging Face's exact string).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// What happens to a match ("delimiter") when splitting.
enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };

void SplitPieces(const Regex& re, Behavior behavior, std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  for (const std::string& p : pieces) {
    std::string carry;  // a delimiter waiting to be merged into the next piece
    size_t prev = 0;
    auto emit = [&](std::string s) {
      if (!s.empty()) out.push_back(std::move(s));
    };
    for (auto [b, e] : re.FindAll(p)) {
      std::string before = carry + p.substr(prev, b - prev);
      std::string match = p.substr(b, e - b);
      carry.clear();
      prev = e;
      switch (behavior) {
        case Behavior::kIsolated:
          emit(std::move(before)), emit(std::move(match));
          break;
        case Behavior::kRemoved:
          emit(std::move(before));
          break;
        case Behavior::kMergedWithPrevious:
          emit(before + match);
          break;
        case Behavior::kMergedWithNext:
          emit(std::move(before));
          carry = std::move(match);
          break;
      }
    }
    emit(carry + p.substr(prev));
  }
  pieces = std::move(out);
}

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::optional<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}
  void Apply(std::vector<std::string>& pieces, bool) const override {
    if (add_prefix_space_)
      for (std::string& p : pieces)
        if (!p.starts_with(' ')) p.insert(0, 1, ' ');
    if (re_) SplitPieces(*re_, Behavior::kIsolated, pieces);
    for (std::string& p : pieces) {
      std::string mapped;
      byte_level::Encode(p, mapped);
      p = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::optional<Regex> re_;  // GPT-2's pattern, unless use_regex is false
};

class Split : public PreTokenizer {
 public:
  Split(Regex re, Behavior behavior) : re_(std::move(re)), behavior_(behavior) {}
  void Apply(std::vector<std::string>& pieces, bool) const override { SplitPieces(re_, behavior_, pieces); }

 private:
  Regex re_;
  Behavior behavior_;
};

// SentencePiece's space handling: spaces become the replacement ("▁"), one is prepended, and each
// word starts at a replacement character.
class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  Metaspace(std::string replacement, Regex space, Regex replacement_re, Prepend prepend, bool split)
      : replacement_(std::move(replacement)),
        space_(std::move(space)),
        replacement_re_(std::move(replacement_re)),
        prepend_(prepend),
        split_(split) {}
  void Apply(std::vector<std::string>& pieces, bool at_text_start) const override {
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string s = space_.ReplaceAll(pieces[i], replacement_);
      const bool prepend =
          prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && at_text_start && i == 0);
      if (prepend && !s.starts_with(replacement_)) s.insert(0, replacement_);
      pieces[i] = std::move(s);
    }
    if (split_) SplitPieces(replacement_re_, Behavior::kMergedWithNext, pieces);
  }

 private:
  std::string replacement_;
  Regex space_;           // a literal " "
  Regex replacement_re_;  // a literal replacement_
  Prepend prepend_;
  bool split_;
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void Apply(std::vector<std::string>& pieces, bool at_text_start) const override {
    for (const auto& s : steps_) s->Apply(pieces, at_text_start);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

Result<std::unique_ptr<PreTokenizer>> ParseByteLevel(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(bool prefix, jf::Bool(j, "add_prefix_space", path, true));
  ATP_ASSIGN_OR_RETURN(bool use_regex, jf::Bool(j, "use_regex", path, true));
  std::optional<Regex> re;
  if (use_regex) {
    ATP_ASSIGN_OR_RETURN(re, Regex::Compile(kGpt2Pattern, false));
  }
  return std::unique_ptr<PreTokenizer>(new ByteLevel(prefix, std::move(re)));
}

Result<std::unique_ptr<PreTokenizer>> ParseSplit(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(const nlohmann::json* pat, jf::Require(j, "pattern", path));
  ATP_ASSIGN_OR_RETURN(Regex re, ParsePattern(*pat, path + ".pattern"));
  ATP_ASSIGN_OR_RETURN(bool invert, jf::Bool(j, "invert", path, false));
  if (invert) return Status::Unsupported(path + ".invert: true is not supported");
  ATP_ASSIGN_OR_RETURN(std::string b, jf::String(j, "behavior", path));
  static constexpr std::pair<std::string_view, Behavior> kBehaviors[] = {
      {"Isolated", Behavior::kIsolated},
      {"Removed", Behavior::kRemoved},
      {"MergedWithPrevious", Behavior::kMergedWithPrevious},
      {"MergedWithNext", Behavior::kMergedWithNext}};
  for (const auto& [name, behavior] : kBehaviors)
    if (b == name) return std::unique_ptr<PreTokenizer>(new Split(std::move(re), behavior));
  return Status::Unsupported(path + ".behavior: '" + b + "' is not supported");
}

Result<std::unique_ptr<PreTokenizer>> ParseMetaspace(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string replacement, jf::String(j, "replacement", path));
  // Older files say add_prefix_space (true: always), newer ones prepend_scheme.
  Metaspace::Prepend prepend;
  if (const auto* scheme = jf::Find(j, "prepend_scheme")) {
    static constexpr std::pair<std::string_view, Metaspace::Prepend> kSchemes[] = {
        {"always", Metaspace::Prepend::kAlways},
        {"first", Metaspace::Prepend::kFirst},
        {"never", Metaspace::Prepend::kNever}};
    const auto* found = std::find_if(std::begin(kSchemes), std::end(kSchemes), [&](const auto& s) {
      return scheme->is_string() && scheme->get<std::string>() == s.first;
    });
    if (found == std::end(kSchemes))
      return Status::Corruption(path + ".prepend_scheme: expected always, first or never");
    prepend = found->second;
  } else {
    ATP_ASSIGN_OR_RETURN(bool add, jf::Bool(j, "add_prefix_space", path, true));
    prepend = add ? Metaspace::Prepend::kAlways : Metaspace::Prepend::kNever;
  }
  ATP_ASSIGN_OR_RETURN(bool split, jf::Bool(j, "split", path, true));
  ATP_ASSIGN_OR_RETURN(Regex space, Regex::Compile(" ", /*literal=*/true));
  ATP_ASSIGN_OR_RETURN(Regex replacement_re, Regex::Compile(replacement, /*literal=*/true));
  return std::unique_ptr<PreTokenizer>(
      new Metaspace(std::move(replacement), std::move(space), std::move(replacement_re), prepend, split));
}

}  // namespace

Result<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string type, jf::Type(j, path));
  if (type == "ByteLevel") return ParseByteLevel(j, path);
  if (type == "Split") return ParseSplit(j, path);
  if (type == "Metaspace") return ParseMetaspace(j, path);
  if (type == "Sequence") {
    ATP_ASSIGN_OR_RETURN(const nlohmann::json* list, jf::Array(j, "pretokenizers", path));
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      ATP_ASSIGN_OR_RETURN(auto p,
                           ParsePreTokenizer((*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]"));
      steps.push_back(std::move(p));
    }
    return std::unique_ptr<PreTokenizer>(new Sequence(std::move(steps)));
  }
  return jf::UnknownType(path, "pre-tokenizer", type);
}

}  // namespace atp
