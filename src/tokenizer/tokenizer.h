// Tokenizer loaded from a Hugging Face tokenizer.json (+ tokenizer_config.json):
// byte-level BPE (GPT-2, Llama-3, Qwen2) and SentencePiece-style BPE (Metaspace, byte_fallback).
// Thread-safety: a loaded Tokenizer is immutable; Encode/Decode may be called from many threads.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace atp {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads dir/tokenizer.json and, if present, dir/tokenizer_config.json (BOS/EOS names, add_bos_token).
  static Result<std::unique_ptr<Tokenizer>> LoadFromDir(const std::string& dir);
  // Loads from the texts of the two files (config may be empty). `where` names the source in errors.
  static Result<std::unique_ptr<Tokenizer>> LoadFromJson(std::string_view tokenizer_json,
                                                         std::string_view tokenizer_config_json,
                                                         const std::string& where);

  // Splits out added/special tokens, pre-tokenizes, applies BPE. add_special applies the
  // post-processor (TemplateProcessing: typically a leading BOS).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special) const = 0;
  // Inverse of Encode through the decoder chain; skip_special drops special tokens.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;           // largest id + 1
  virtual int32_t bos_id() const = 0;               // -1 if none
  virtual std::vector<int32_t> eos_ids() const = 0; // may be empty
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual int32_t TokenToId(std::string_view token) const = 0;  // -1 if unknown
  virtual std::string IdToToken(int32_t id) const = 0;          // raw vocab string, "" if out of range
};

// Emits decoded text incrementally during generation without splitting a UTF-8 character or a
// byte-fallback sequence: Push() returns the new, complete text since the last call.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string Push(int32_t id);
  std::string Flush();  // whatever is left, even if incomplete

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of Decode(ids_) already returned
};

}  // namespace atp
