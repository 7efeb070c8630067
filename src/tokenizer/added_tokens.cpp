// Leftmost-longest matching of added tokens, then lstrip/rstrip/single_word as Hugging Face defines
// them. Candidates are bucketed by first byte, which keeps 400 KB texts with 256 specials fast.
#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace atp {
namespace {

// single_word's test, as Hugging Face writes it: is the character right before or right after the
// match a \w (Unicode letter, digit, '_')?
bool WordTouches(std::string_view text, size_t begin, size_t end) {
  static const Regex kWord = Regex::Compile(R"(\A\w)", false).value();
  size_t before = begin;
  while (before > 0 && (uint8_t(text[--before]) & 0xC0) == 0x80) {
  }
  return (begin > 0 && !kWord.FindAll(text.substr(before, begin - before)).empty()) ||
         !kWord.FindAll(text.substr(end)).empty();
}

std::string_view TrimLeft(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!utf8::IsWhitespace(utf8::Next(s, &j))) break;
    i = j;
  }
  return s.substr(i);
}
std::string_view TrimRight(std::string_view s) {
  while (!s.empty()) {
    size_t b = s.size() - 1;
    while (b > 0 && (uint8_t(s[b]) & 0xC0) == 0x80) --b;
    size_t j = b;
    if (!utf8::IsWhitespace(utf8::Next(s, &j))) break;
    s = s.substr(0, b);
  }
  return s;
}

}  // namespace

AddedTokenSplitter::AddedTokenSplitter(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const AddedToken& t) { return t.content.empty(); });
  std::stable_sort(tokens_.begin(), tokens_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  for (uint32_t i = 0; i < tokens_.size(); ++i) by_first_[uint8_t(tokens_[i].content[0])].push_back(i);
}

std::vector<AddedTokenSplitter::Segment> AddedTokenSplitter::Split(std::string_view text) const {
  struct Match {
    size_t begin, end;
    const AddedToken* token;
  };
  std::vector<Match> matches;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* found = nullptr;
    for (uint32_t k : by_first_[uint8_t(text[i])]) {
      const AddedToken& t = tokens_[k];
      if (text.compare(i, t.content.size(), t.content) != 0) continue;
      if (t.single_word && WordTouches(text, i, i + t.content.size())) continue;
      found = &t;
      break;
    }
    if (!found) {
      ++i;
      continue;
    }
    matches.push_back({i, i + found->content.size(), found});
    i += found->content.size();
  }

  std::vector<Segment> out;
  size_t prev = 0;
  for (size_t m = 0; m < matches.size(); ++m) {
    std::string_view before = text.substr(prev, matches[m].begin - prev);
    if (matches[m].token->lstrip) before = TrimRight(before);
    if (m > 0 && matches[m - 1].token->rstrip) before = TrimLeft(before);
    if (!before.empty()) out.push_back({before, -1});
    out.push_back({{}, matches[m].token->id});
    prev = matches[m].end;
  }
  std::string_view rest = text.substr(prev);
  if (!matches.empty() && matches.back().token->rstrip) rest = TrimLeft(rest);
  if (!rest.empty()) out.push_back({rest, -1});
  return out;
}

}  // namespace atp
