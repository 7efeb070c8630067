// Byte-pair encoding of one pre-token: the lowest-ranked adjacent pair merges first (leftmost on
// ties), with a heap over a linked list of symbols, so long words cost O(n log n), not O(n^2).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace atp {

Result<Bpe> Bpe::FromJson(const nlohmann::json& m, const std::string& path) {
  Bpe bpe;
  ATP_ASSIGN_OR_RETURN(const nlohmann::json* vocab, jf::Require(m, "vocab", path));
  if (!vocab->is_object()) return Status::Corruption(path + ".vocab: expected an object of token: id");
  int32_t max_id = -1;
  bpe.vocab_.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    ATP_ASSIGN_OR_RETURN(const int32_t id, jf::TokenId(*it, path + ".vocab[\"" + it.key() + "\"]"));
    bpe.vocab_.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  bpe.id_to_token_.resize(size_t(max_id + 1));
  for (const auto& [tok, id] : bpe.vocab_) bpe.id_to_token_[size_t(id)] = tok;

  for (const char* field : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto* v = jf::Find(m, field);
    const bool unset =
        !v || (v->is_string() && v->get<std::string>().empty()) || (v->is_number() && v->get<double>() == 0);
    if (!unset) return Status::Unsupported(jf::Join(path, field) + ": only null/empty is supported");
  }
  ATP_ASSIGN_OR_RETURN(bpe.byte_fallback_, jf::Bool(m, "byte_fallback", path, false));
  ATP_ASSIGN_OR_RETURN(bpe.fuse_unk_, jf::Bool(m, "fuse_unk", path, false));
  ATP_ASSIGN_OR_RETURN(bpe.ignore_merges_, jf::Bool(m, "ignore_merges", path, false));
  if (jf::Find(m, "unk_token")) {
    ATP_ASSIGN_OR_RETURN(std::string unk, jf::String(m, "unk_token", path));
    bpe.unk_id_ = bpe.TokenToId(unk);
    if (bpe.unk_id_ < 0)
      return Status::Corruption(path + ".unk_token: '" + unk + "' is not in the vocabulary");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    bpe.byte_ids_[b] = bpe.TokenToId(name);
  }

  // Merges are "left right" strings (tokenizers < 0.20) or ["left", "right"] pairs.
  ATP_ASSIGN_OR_RETURN(const nlohmann::json* merges, jf::Array(m, "merges", path));
  bpe.merges_.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const auto& e = (*merges)[i];
    std::string left, right;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos)
        return Status::Corruption(path + ".merges[" + std::to_string(i) + "]: expected \"left right\"");
      left = s.substr(0, sp), right = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      left = e[0].get<std::string>(), right = e[1].get<std::string>();
    } else {
      return Status::Corruption(path + ".merges[" + std::to_string(i) +
                                "]: expected \"left right\" or [left, right]");
    }
    const int32_t a = bpe.TokenToId(left), b = bpe.TokenToId(right), r = bpe.TokenToId(left + right);
    if (a < 0 || b < 0 || r < 0)
      return Status::Corruption(path + ".merges[" + std::to_string(i) + "]: '" + left + "' + '" + right +
                                "' uses or makes a token missing from the vocabulary");
    // A repeated pair takes its last rank, as the Rust and JavaScript implementations do.
    bpe.merges_.insert_or_assign(PairKey(a, b), Merge{int32_t(i), r});
  }
  return bpe;
}

int32_t Bpe::TokenToId(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

void Bpe::InitialSymbols(std::string_view word, std::vector<int32_t>& out) const {
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    utf8::Next(word, &i);
    const std::string_view ch = word.substr(start, i - start);
    if (int32_t id = TokenToId(ch); id >= 0) {
      out.push_back(id);
      continue;
    }
    if (byte_fallback_ &&
        std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_ids_[uint8_t(c)] >= 0; })) {
      for (char c : ch) out.push_back(byte_ids_[uint8_t(c)]);
      continue;
    }
    if (unk_id_ < 0) continue;
    if (fuse_unk_ && !out.empty() && out.back() == unk_id_) continue;
    out.push_back(unk_id_);
  }
}

void Bpe::Encode(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (int32_t id = TokenToId(word); id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  std::vector<int32_t> initial;
  InitialSymbols(word, initial);
  struct Symbol {
    int32_t id;      // merging rewrites the left symbol's id and unlinks the right symbol
    int prev, next;  // neighbours in the list, -1 at the ends
  };
  const int n = int(initial.size());
  std::vector<Symbol> sym;
  sym.reserve(initial.size());
  for (int i = 0; i < n; ++i) sym.push_back({initial[size_t(i)], i - 1, i + 1 < n ? i + 1 : -1});

  struct Candidate {
    int32_t rank, pos, left, right;  // the pair (left, right) at symbol pos and its successor
    int32_t result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Candidate> heap;
  auto queue = [&](int pos) {  // appends the pair starting at pos if it merges; true if it did
    if (pos < 0 || sym[size_t(pos)].next < 0) return false;
    const int32_t l = sym[size_t(pos)].id, r = sym[size_t(sym[size_t(pos)].next)].id;
    auto it = merges_.find(PairKey(l, r));
    if (it == merges_.end()) return false;
    heap.push_back({it->second.rank, pos, l, r, it->second.result});
    return true;
  };
  for (int i = 0; i + 1 < n; ++i) queue(i);
  std::make_heap(heap.begin(), heap.end(), std::greater<>());  // O(n), where n pushes cost O(n log n)

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = sym[size_t(c.pos)];
    // Stale if either side has changed since it was queued: a merged symbol gets a new id, and
    // a token never equals one of its own parts, so comparing ids is enough.
    if (left.id != c.left || left.next < 0 || sym[size_t(left.next)].id != c.right) continue;
    Symbol& right = sym[size_t(left.next)];
    left.id = c.result;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) sym[size_t(right.next)].prev = c.pos;
    if (queue(left.prev)) std::push_heap(heap.begin(), heap.end(), std::greater<>());
    if (queue(c.pos)) std::push_heap(heap.begin(), heap.end(), std::greater<>());
  }
  for (int i = n > 0 ? 0 : -1; i >= 0; i = sym[size_t(i)].next) ids.push_back(sym[size_t(i)].id);
}

}  // namespace atp
