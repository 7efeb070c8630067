// The Tokenizer that tokenizer.json describes: added-token split, normalizer, pre-tokenizer, BPE,
// post-processor and decoder chain. Built only by tokenizer_json.cpp; it parses nothing itself.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace atp {

class HfTokenizer : public Tokenizer {
 public:
  struct Parts {
    Bpe model;
    std::vector<AddedToken> added;
    std::unique_ptr<Normalizer> normalizer;       // may be null
    std::unique_ptr<PreTokenizer> pre_tokenizer;  // may be null: the whole text is one word
    std::unique_ptr<Decoder> decoder;             // may be null: tokens are joined with spaces
    SpecialTemplate post;
  };
  explicit HfTokenizer(Parts parts);

  const SpecialTemplate& post_template() const { return p_.post; }
  // Ids named by tokenizer_config.json; see tokenizer_json.cpp for the fallbacks.
  void SetSpecialIds(int32_t bos, std::vector<int32_t> eos, const std::vector<int32_t>& extra_special);

  std::vector<int32_t> Encode(std::string_view text, bool add_special) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const override;
  int32_t vocab_size() const override { return int32_t(id_to_token_.size()); }
  int32_t bos_id() const override { return bos_; }
  std::vector<int32_t> eos_ids() const override { return eos_; }
  bool IsSpecial(int32_t id) const override;
  int32_t TokenToId(std::string_view token) const override;
  std::string IdToToken(int32_t id) const override;

 private:
  // BPE results of the pre-tokens already seen in one Encode call. Per call rather than shared, so
  // that concurrent Encode calls need no lock; long texts repeat their words enough to pay for it.
  using WordCache = std::unordered_map<std::string, std::vector<int32_t>>;
  // Encodes text between added tokens (raw, not yet normalized).
  void EncodeSection(std::string_view text, bool at_text_start, WordCache& cache,
                     std::vector<int32_t>& ids) const;

  Parts p_;
  AddedTokenSplitter raw_split_;         // added tokens matched in the raw input
  AddedTokenSplitter normalized_split_;  // those with normalized=true, matched after the normalizer
  std::unordered_map<std::string, int32_t> added_ids_;
  std::vector<std::string> id_to_token_;  // vocabulary and added tokens
  std::vector<uint8_t> is_added_, is_special_;
  int32_t bos_ = -1;
  std::vector<int32_t> eos_;
};

}  // namespace atp
