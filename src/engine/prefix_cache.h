// Automatic prefix caching (vLLM's): the KV pages of whole blocks of PagedRows::kRowsPerPage tokens
// that sequences computed stay in the engine's page store under the policy and the tokens up to the
// block's end, so that a later sequence whose tokens start the same way adopts them instead of
// running them through the model (KvPolicy::SharePages: dense and MX rows on the host; policies that
// compress blocks together, slide windows or evict do not share).
//
// A block is found through its parent (the block before it), so a hit needs the same tokens from the
// first on, and each block's tokens are compared, not only hashed: a hash collision costs a lookup,
// never a wrong page. Sharing a page costs no copy: the store counts holders (PageStore::Share), and
// neither sequence writes it again. Evicting a block returns the cache's hold on its pages; sequences
// that adopted them keep theirs.
//
// Whether a sequence adopted its prefix or ran it, it holds rows computed from the same tokens, but not
// always by the same kernels' blocking (a prompt's rows come from one prefill chunk or another), so
// logits may differ in the last bits, as they do in vLLM; `--no-prefix-caching` turns it off.
#pragma once
#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/sequence.h"
#include "kv/page_store.h"

namespace atp {

// Thread-safety: none; the scheduler thread owns it.
class PrefixCache {
 public:
  static constexpr int64_t kBlock = PagedRows::kRowsPerPage;

  explicit PrefixCache(PageStore& store) : store_(store) {}
  ~PrefixCache();  // returns the cache's hold on every page
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // Into `seq`, which holds nothing yet and runs `policy` (KvPolicyFactory::Describe()): the longest run
  // of cached blocks that begins `tokens`, at most max_blocks, as if those tokens had been run.
  // Returns the number of tokens adopted (a multiple of kBlock).
  int64_t Attach(const std::string& policy, std::span<const int32_t> tokens, int64_t max_blocks, Sequence& seq);

  // Caches the whole blocks that `seq` holds and the cache does not (tokens[0, seq.length()) are the
  // tokens it holds), while the cache holds at most `max_bytes`, evicting the least recently used
  // blocks that no other block extends to make room. Returns false when seq's policy does not share.
  bool Offer(const std::string& policy, std::span<const int32_t> tokens, Sequence& seq, size_t max_bytes);

  // Evicts least recently used leaf blocks (those no cached block extends) until the cache holds at
  // most `bytes`.
  void Shrink(size_t bytes) { EvictDownTo(bytes, nullptr); }

  size_t bytes() const { return bytes_; }    // of the pages the cache holds (shared ones included)
  size_t blocks() const { return blocks_.size(); }

 private:
  struct Block {
    Block* parent = nullptr;
    std::string policy;                 // roots only; children inherit their root's
    std::vector<int32_t> tokens;        // its kBlock tokens
    std::vector<BlockPages> layers;     // its pages, per layer
    size_t bytes = 0;
    uint64_t last_use = 0;
    int children = 0;
    uint64_t key = 0;
  };
  static uint64_t Key(const Block* parent, const std::string& policy, std::span<const int32_t> tokens);
  Block* Find(const Block* parent, const std::string& policy, std::span<const int32_t> tokens) const;
  void Touch(Block* b);  // most recently used now
  void EvictDownTo(size_t bytes, const Block* keep);  // Shrink, never evicting `keep`
  void Evict(Block* b);

  PageStore& store_;
  std::unordered_multimap<uint64_t, std::unique_ptr<Block>> blocks_;
  std::set<std::pair<uint64_t, Block*>> leaves_;  // blocks with no children, by last use
  size_t bytes_ = 0;
  uint64_t clock_ = 0;
};

}  // namespace atp
