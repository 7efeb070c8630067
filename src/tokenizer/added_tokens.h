// Added tokens (tokenizer.json "added_tokens"): found in the text before any other stage so that
// BPE never sees them. Matching is leftmost-longest over exact bytes; there is no fuzzy matching.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace atp {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;       // swallow whitespace on the left
  bool rstrip = false;       // swallow whitespace on the right
  bool normalized = false;   // matched in normalized text rather than raw input
  bool single_word = false;  // matched only where no word character touches it
};

// Splits text around occurrences of a fixed set of added tokens.
class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;
  explicit AddedTokenSplitter(std::vector<AddedToken> tokens);

  struct Segment {
    std::string_view text;  // a view into the split text; empty for a token
    int32_t id;             // the added token's id, or -1 for ordinary text
  };
  // Segments in order; text segments are non-empty (whitespace swallowed by lstrip/rstrip is gone).
  std::vector<Segment> Split(std::string_view text) const;

 private:
  std::vector<AddedToken> tokens_;                     // longest first, so the first match is the longest
  std::array<std::vector<uint32_t>, 256> by_first_{};  // indices into tokens_, by first byte
};

}  // namespace atp
