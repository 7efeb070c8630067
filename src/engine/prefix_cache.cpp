#include "engine/prefix_cache.h"

#include <algorithm>

namespace atp {

PrefixCache::~PrefixCache() { Shrink(0); }

uint64_t PrefixCache::Key(const Block* parent, const std::string& policy, std::span<const int32_t> tokens) {
  // FNV-1a over the parent's identity (or, for a root, the policy) and the tokens: collisions are
  // resolved by comparing, so this only needs to spread.
  uint64_t h = 1469598103934665603ull;
  const auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i, v >>= 8) h = (h ^ (v & 0xff)) * 1099511628211ull;
  };
  if (parent) {
    mix(parent->key), mix(uint64_t(reinterpret_cast<uintptr_t>(parent)));
  } else {
    for (char c : policy) mix(uint8_t(c));
  }
  for (int32_t t : tokens) mix(uint32_t(t));
  return h;
}

PrefixCache::Block* PrefixCache::Find(const Block* parent, const std::string& policy,
                                      std::span<const int32_t> tokens) const {
  auto [lo, hi] = blocks_.equal_range(Key(parent, policy, tokens));
  for (auto it = lo; it != hi; ++it) {
    Block* b = it->second.get();
    if (b->parent == parent && (parent || b->policy == policy) && std::ranges::equal(b->tokens, tokens)) return b;
  }
  return nullptr;
}

int64_t PrefixCache::Attach(const std::string& policy, std::span<const int32_t> tokens, int64_t max_blocks,
                            Sequence& seq) {
  if (seq.length() != 0) return 0;
  std::vector<const Block*> chain;
  const Block* parent = nullptr;
  for (int64_t b = 0; b < max_blocks && (b + 1) * kBlock <= int64_t(tokens.size()); ++b) {
    Block* found = Find(parent, policy, tokens.subspan(size_t(b * kBlock), size_t(kBlock)));
    if (!found) break;
    Touch(found);
    chain.push_back(found);
    parent = found;
  }
  if (chain.empty()) return 0;
  const auto layers = seq.kv();
  std::vector<BlockPages> column(chain.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    for (size_t b = 0; b < chain.size(); ++b) column[b] = chain[b]->layers[l];
    layers[l]->AdoptPages(column);
  }
  const int64_t adopted = int64_t(chain.size()) * kBlock;
  seq.Advance(int32_t(adopted));
  return adopted;
}

bool PrefixCache::Offer(const std::string& policy, std::span<const int32_t> tokens, Sequence& seq, size_t max_bytes) {
  const int64_t whole = std::min<int64_t>(seq.length(), int64_t(tokens.size())) / kBlock;
  Block* parent = nullptr;
  size_t chain = 0;  // bytes of parent and its ancestors
  for (int64_t b = 0; b < whole; ++b) {
    const auto block_tokens = tokens.subspan(size_t(b * kBlock), size_t(kBlock));
    if (Block* found = Find(parent, policy, block_tokens)) {
      Touch(found);
      parent = found;
      chain += found->bytes;
      continue;
    }
    auto nb = std::make_unique<Block>();
    for (KvPolicy* layer : seq.kv()) {
      BlockPages pages;
      if (!layer->SharePages(b, &pages)) return false;
      nb->layers.push_back(std::move(pages));
    }
    for (const BlockPages& pages : nb->layers)
      for (const PageRef& p : pages) nb->bytes += p.bytes;
    // Room: least recently used leaves go first, never `parent` (its ancestors are not leaves), so this
    // chain stays; and nothing goes unless the block then fits beside the chain.
    if (chain + nb->bytes > max_bytes) return true;  // no room: the pages stay the sequence's alone
    if (bytes_ + nb->bytes > max_bytes) EvictDownTo(max_bytes - nb->bytes, parent);
    for (const BlockPages& pages : nb->layers)
      for (const PageRef& p : pages) store_.Share(p.data, p.bytes);
    nb->parent = parent;
    if (!parent) nb->policy = policy;
    nb->tokens.assign(block_tokens.begin(), block_tokens.end());
    nb->last_use = ++clock_;
    nb->key = Key(parent, policy, block_tokens);
    if (parent && parent->children++ == 0) leaves_.erase({parent->last_use, parent});
    bytes_ += nb->bytes;
    Block* raw = nb.get();
    leaves_.insert({raw->last_use, raw});
    blocks_.emplace(raw->key, std::move(nb));
    parent = raw;
    chain += raw->bytes;
  }
  return true;
}

void PrefixCache::Touch(Block* b) {
  if (b->children == 0) leaves_.erase({b->last_use, b});
  b->last_use = ++clock_;
  if (b->children == 0) leaves_.insert({b->last_use, b});
}

void PrefixCache::EvictDownTo(size_t bytes, const Block* keep) {
  while (bytes_ > bytes) {
    auto it = leaves_.begin();
    if (it != leaves_.end() && it->second == keep) ++it;
    if (it == leaves_.end()) return;
    Evict(it->second);
  }
}

void PrefixCache::Evict(Block* b) {
  for (const BlockPages& pages : b->layers)
    for (const PageRef& p : pages) store_.Return(p.data, p.bytes);
  bytes_ -= b->bytes;
  leaves_.erase({b->last_use, b});
  if (b->parent && --b->parent->children == 0) leaves_.insert({b->parent->last_use, b->parent});
  auto [lo, hi] = blocks_.equal_range(b->key);
  for (auto it = lo; it != hi; ++it)
    if (it->second.get() == b) {
      blocks_.erase(it);
      return;
    }
}

}  // namespace atp
