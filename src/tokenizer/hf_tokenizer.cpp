// Encode/Decode over the parsed stages, in the order Hugging Face tokenizers runs them.
// Invalid UTF-8 input is repaired to U+FFFD first (JavaScript and Rust strings cannot hold it either).
#include "tokenizer/hf_tokenizer.h"

#include "tokenizer/utf8.h"

namespace atp {

HfTokenizer::HfTokenizer(Parts parts) : p_(std::move(parts)) {
  id_to_token_ = p_.model.id_to_token();
  std::vector<AddedToken> raw, normalized;
  for (const AddedToken& t : p_.added) {
    if (size_t(t.id) >= id_to_token_.size()) id_to_token_.resize(size_t(t.id) + 1);
    id_to_token_[size_t(t.id)] = t.content;
    added_ids_[t.content] = t.id;
    // Without a normalizer both kinds see the same text, so one pass finds them all.
    (t.normalized && p_.normalizer ? normalized : raw).push_back(t);
  }
  raw_split_ = AddedTokenSplitter(std::move(raw));
  normalized_split_ = AddedTokenSplitter(std::move(normalized));
  is_added_.assign(id_to_token_.size(), 0);
  is_special_.assign(id_to_token_.size(), 0);
  for (const AddedToken& t : p_.added) {
    is_added_[size_t(t.id)] = 1;
    if (t.special) is_special_[size_t(t.id)] = 1;
  }
}

void HfTokenizer::SetSpecialIds(int32_t bos, std::vector<int32_t> eos,
                                const std::vector<int32_t>& extra_special) {
  bos_ = bos;
  eos_ = std::move(eos);
  for (int32_t id : extra_special) is_special_[size_t(id)] = 1;
}

void HfTokenizer::EncodeSection(std::string_view text, bool at_text_start, WordCache& cache,
                                std::vector<int32_t>& ids) const {
  std::string normalized;
  if (p_.normalizer) {
    normalized = p_.normalizer->Apply(text);
    text = normalized;
  }
  for (const auto& seg : normalized_split_.Split(text)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::vector<std::string> pieces{std::string(seg.text)};
    if (p_.pre_tokenizer) p_.pre_tokenizer->Apply(pieces, at_text_start && seg.text.data() == text.data());
    for (std::string& piece : pieces) {
      // Long pieces rarely repeat (a pre-tokenizer-less SentencePiece text is one piece).
      if (piece.size() > 64) {
        p_.model.Encode(piece, ids);
        continue;
      }
      auto [it, fresh] = cache.try_emplace(std::move(piece));
      if (fresh) p_.model.Encode(it->first, it->second);
      ids.insert(ids.end(), it->second.begin(), it->second.end());
    }
  }
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text, bool add_special) const {
  std::string repaired;
  if (!utf8::IsValid(text)) {
    repaired = utf8::Repair(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  WordCache cache;
  if (add_special) ids = p_.post.prefix;
  for (const auto& seg : raw_split_.Split(text)) {
    if (seg.id >= 0)
      ids.push_back(seg.id);
    else
      EncodeSection(seg.text, seg.text.data() == text.data(), cache, ids);
  }
  if (add_special) ids.insert(ids.end(), p_.post.suffix.begin(), p_.post.suffix.end());
  return ids;
}

std::string HfTokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<DecodePiece> pieces;
  pieces.reserve(ids.size());
  for (int32_t id : ids) {
    // Ids outside the vocabulary (a model head wider than its tokenizer) have no text.
    if (id < 0 || size_t(id) >= id_to_token_.size()) continue;
    if (skip_special && is_special_[size_t(id)]) continue;
    pieces.push_back({id_to_token_[size_t(id)], is_added_[size_t(id)] != 0});
  }
  std::string out;
  if (p_.decoder) {
    p_.decoder->Apply(pieces);
    for (const DecodePiece& p : pieces) out += p.text;
  } else {
    for (size_t i = 0; i < pieces.size(); ++i) out += (i ? " " : "") + pieces[i].text;
  }
  return out;
}

bool HfTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && size_t(id) < is_special_.size() && is_special_[size_t(id)];
}

int32_t HfTokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_ids_.find(std::string(token)); it != added_ids_.end()) return it->second;
  return p_.model.TokenToId(token);
}

std::string HfTokenizer::IdToToken(int32_t id) const {
  return id >= 0 && size_t(id) < id_to_token_.size() ? id_to_token_[size_t(id)] : std::string();
}

}  // namespace atp
