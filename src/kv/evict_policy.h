// Eviction policies: keep at most a budget of tokens per KV head (rows in a RowStore, exact f32 by
// default or any codec through `A+B`). All are causal: a query at position p reads only rows of
// positions <= p, and which rows survive is decided from queries at or before the chunk that
// precedes it. What each does with a multi-token chunk (prefill):
//  - streaming:budget=N,sinks=S (StreamingLLM): a query at p reads the S first tokens and the
//    newest N-S positions <= p, whatever the chunking (chunk-invariant with a per-row codec); rows
//    are dropped at Append, so a chunk of T tokens briefly holds up to N-1+T rows.
//  - h2o:budget=N,recent=R (Heavy-Hitter Oracle): every query of a chunk reads all retained rows
//    plus the chunk's own rows <= p (a prompt is attended in full, as in the paper); after each
//    Attend, rows beyond N are evicted by lowest accumulated attention (summed over queries so far
//    and the query heads of the group), never among the R newest. Decode steps therefore evict one
//    row each; prefilling token by token differs from one chunk (not chunk-invariant, by design).
//  - snapkv:budget=N,window=W,pool=P (SnapKV): at the end of every multi-token chunk (the end of
//    a prompt) holding more than N rows, the last min(W, T) queries of the chunk vote per KV head
//    with their attention over the older rows; votes are max-pooled over P neighbouring rows and
//    the top N - min(W, T) older rows are kept with the window. Single-token chunks (decode) never
//    evict, so the cache grows by one row per generated token, as in the paper. Prefill a prompt
//    as one chunk for the paper's semantics.
// Ties in H2O scores or SnapKV votes evict the older row. Each policy assumes the forward pass's
// order: Append a chunk, then Attend those positions once.
#pragma once
#include <memory>
#include <string>

#include "kv/composite.h"
#include "kv/policy_config.h"

namespace atp {

// The surviving rows are kept in p.codec's form (absent: exact f32).
std::shared_ptr<KvPolicyFactory> MakeEvictFactory(const EvictParams& p);

}  // namespace atp
