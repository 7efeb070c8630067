// Which rows an eviction policy (streaming, h2o, snapkv: kv/evict_policy.h) keeps, written once for the
// host and the GPU. Per KV head it tracks the positions of the kept rows (ascending) and H2O's
// accumulated scores, and holds the votes of the last Attend until they are applied. The policy keeps
// the rows themselves, in its backend's memory: it appends a chunk's rows to every KV head as it calls
// Append here, reads the index ranges Visible names, sums the attention its voting queries give each
// row into the votes, and applies every keep mask the rule hands its `Retain` callback to its rows of
// that head, in the order given. Both backends thus evict the same rows given the same votes.
// Thread-safety: none; a policy's calls are serialized.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kv/policy_config.h"

namespace atp {

class EvictRule {
 public:
  // keep[j]: whether row j of KV head `kv_head` stays; rows keep their order. An error (the policy's
  // rows could not be moved) is passed up and leaves the rule as it was for that head.
  using Retain = std::function<Status(int kv_head, const std::vector<char>& keep)>;
  struct Range {
    int64_t begin = 0, end = 0;  // row indices of one KV head
  };

  EvictRule(const EvictParams& p, int n_kv);

  // A chunk's rows appended to every KV head at `positions` (after the votes and drops its Append applies).
  void Append(std::span<const int32_t> positions);
  int64_t rows(int kv_head) const { return int64_t(heads_[size_t(kv_head)].pos.size()); }
  const std::vector<int32_t>& positions(int kv_head) const { return heads_[size_t(kv_head)].pos; }

  // The rows of KV head h a query at position p reads, in position order: one range, or two (streaming's
  // sinks and window, apart) split by position, not by what happens to be stored, so every chunking
  // hands the kernels the same segments. Returns how many of out[0..1] it filled.
  int Visible(int kv_head, int32_t p, Range out[2]) const;

  // Of an Attend of T queries, the first whose attention votes (T: none): H2O's every query, SnapKV's
  // last min(window, T) of a multi-token chunk.
  int64_t VotersFrom(int64_t T) const;
  // The votes of that Attend: votes[h][j], what row j of KV head h got from the voting queries (summed
  // over them and the query heads of h's group); `voters` how many queries voted. Kept until applied.
  void SetVotes(std::vector<std::vector<float>> votes, int64_t voters);
  bool HasVotes() const { return !votes_.empty(); }

  // Applies pending votes. H2O adds them to each row's score and, beyond the budget, evicts the lowest
  // scores outside the `recent` newest rows; SnapKV, beyond the budget, keeps the budget - voters
  // best-voted older rows (votes max-pooled over `pool` neighbours) and the voters' own rows. Ties
  // evict the older row.
  Status ApplyVotes(const Retain& retain);
  // Streaming: drops the rows no query from position `next` on reads (before next - window + 1, not a sink).
  Status DropUnread(int64_t next, const Retain& retain);

  // What the rule holds beside the rows: a position per row, and H2O's score per row.
  size_t Bytes() const;

 private:
  struct Head {
    std::vector<int32_t> pos;  // position of each row
    std::vector<float> score;  // h2o: accumulated attention of each row
  };
  Status Keep(int kv_head, const std::vector<char>& keep, const Retain& retain);
  // Evicts the `count` rows with the lowest key among rows [0, candidates), older first on ties.
  Status EvictLowest(int kv_head, const std::vector<float>& key, int64_t candidates, int64_t count, const Retain& retain);

  EvictParams p_;
  std::vector<Head> heads_;                // per KV head
  std::vector<std::vector<float>> votes_;  // per KV head: the last Attend's votes per row; empty once applied
  int64_t voters_ = 0;                     // snapkv: rows of that chunk's observation window
};

}  // namespace atp
