// Incremental detokenization: re-decode a short window of recent ids and emit what grew.
// It holds back a trailing U+FFFD (an unfinished UTF-8 character) until the next id or Flush().
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace atp {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Bytes of `text` that are safe to show: all but a trailing run of U+FFFD, which may be the lossy
// decoding of a character whose remaining bytes are still to come.
size_t CompletePrefix(std::string_view text) {
  size_t n = text.size();
  while (n >= kReplacement.size() &&
         text.substr(n - kReplacement.size(), kReplacement.size()) == kReplacement)
    n -= kReplacement.size();
  return n;
}

}  // namespace

std::string StreamDecoder::Push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tok_.Decode(ids_);
  const size_t complete = CompletePrefix(text);
  if (complete <= emitted_) return {};
  std::string out = text.substr(emitted_, complete - emitted_);
  if (complete == text.size()) {
    // Everything is out: keep only the last id as context. Decoders treat the first token of a text
    // specially (Metaspace/Strip drop its leading space), so the window must never start with the
    // id whose text comes next; re-decoding the whole history on every call would cost O(n^2).
    ids_.erase(ids_.begin(), ids_.end() - 1);
    emitted_ = tok_.Decode(ids_).size();
  } else {
    emitted_ = complete;
  }
  return out;
}

std::string StreamDecoder::Flush() {
  const std::string text = tok_.Decode(ids_);
  std::string out = text.size() > emitted_ ? text.substr(emitted_) : std::string();
  ids_.clear();
  emitted_ = 0;
  return out;
}

}  // namespace atp
