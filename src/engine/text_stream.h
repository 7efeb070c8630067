// Generated token ids to final text: incremental detokenization that never splits a UTF-8 character,
// and stop strings, holding back text that may be the start of one. Generate and the server's
// sessions both use it, so a request's text is the same whether it ran alone or batched.
#pragma once
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace atp {

class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stop) : dec_(tok), stop_(std::move(stop)) {}

  // The text made final by token `id`. Sets *stopped when a stop string matched: the text then ends
  // just before it and nothing more is to be pushed.
  std::string Push(int32_t id, bool* stopped);
  // What is still held back, at the end of a sequence that did not end on a stop string.
  std::string Flush();

  // Bytes of text made final so far (returned by Push and Flush).
  size_t emitted() const { return emitted_; }
  // Where the next token's text will begin: emitted() plus the text held back.
  size_t offset() const { return emitted_ + pending_.size(); }

 private:
  StreamDecoder dec_;
  std::vector<std::string> stop_;
  std::string pending_;  // decoded but not yet final (may begin a stop string)
  size_t emitted_ = 0;
};

}  // namespace atp
