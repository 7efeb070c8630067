// The BPE model of tokenizer.json: vocabulary, merge ranks, unk and SentencePiece byte fallback.
// Dropout, continuing_subword_prefix and end_of_word_suffix are refused at load time.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace atp {

class Bpe {
 public:
  static Result<Bpe> FromJson(const nlohmann::json& model, const std::string& path);

  // Appends the ids of one pre-token (valid UTF-8). Characters the vocabulary lacks become byte
  // tokens (byte_fallback), else the unk token; with neither, they are dropped (Encode cannot fail).
  void Encode(std::string_view word, std::vector<int32_t>& ids) const;

  int32_t TokenToId(std::string_view token) const;  // -1 if absent
  // Vocabulary ids run from 0 to id_to_token().size() - 1; holes are empty strings.
  const std::vector<std::string>& id_to_token() const { return id_to_token_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  struct Merge {
    int32_t rank;    // position in the merges list: lower merges first
    int32_t result;  // id of the merged token
  };
  static uint64_t PairKey(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  // Symbols of `word` before any merge: its characters' ids, byte tokens or unk.
  void InitialSymbols(std::string_view word, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;  // keyed by PairKey(left id, right id)
  int32_t byte_ids_[256];                       // "<0xAB>" tokens, -1 where absent
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
};

}  // namespace atp
