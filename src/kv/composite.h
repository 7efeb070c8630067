// Row stores and row codecs: the storage layer under every policy that keeps whole rows (all
// tokens, eviction survivors, low-rank coefficients). In `A+B`, policy A decides which rows exist
// and which a query reads; codec B decides the form they are kept in (exact, KIVI, MX). A store
// never chooses rows for a query: the policy passes the range and the query's horizon.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kv/attend.h"
#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// Rows of one KV head (or of any per-head row family) in append order, in some stored form.
// Thread-safety: View() may run concurrently with other View() calls; the rest is exclusive.
class RowStore {
 public:
  virtual ~RowStore() = default;
  // Appends n rows: key row i at K + i*k_stride (k_width floats), value row i at V + i*v_stride
  // (v_width floats). Contract: every query after this call has a horizon > size() before the call.
  // Where the store refuses a page (ResourceExhausted), the rows are as they were, or (KIVI) appended
  // with a group not yet formed, which the next Append forms: queries read the same either way.
  [[nodiscard]] virtual Status Append(const float* K, int64_t k_stride, const float* V, int64_t v_stride, int64_t n) = 0;
  // Drops copies that no query at position size() or later reads (KvPolicy::Update). Default: none.
  virtual void Trim() {}
  // Keeps row i iff keep[i] != 0 (keep has size() entries), preserving order (eviction). An error (a
  // shared page's copy refused; no policy that evicts shares pages) leaves the store unusable.
  [[nodiscard]] virtual Status Retain(const std::vector<char>& keep) = 0;
  // Adds to `out`, in row order, segments holding rows [begin, end) as read by a query whose
  // newest visible row is horizon-1 (begin <= end <= horizon <= size()). Stores with an exact
  // residual choose each row's form from the horizon alone, so prefill and decode agree.
  virtual void View(int64_t begin, int64_t end, int64_t horizon, std::vector<KvSegment>* out) const = 0;
  virtual int64_t size() const = 0;
  virtual size_t Bytes() const = 0;  // data plus per-group metadata actually held
  // Bytes of the pages appending n rows may lease beyond those held now, counted before anything is
  // returned, whether the rows come in one Append or several, with Trim between them or not
  // (KvPolicy::StepLeaseBytes).
  virtual size_t AppendBytes(int64_t n) const = 0;
  // Prefix caching (KvPolicy::SharePages) for stores whose rows each sit in their own page slot, written
  // once, and were never dropped: appends block b's pages and returns true; false (the default): the
  // store's form of a block is not its own pages. Adopt takes blocks[i][at ...] on an empty store and
  // returns the index after what it took.
  virtual bool SharePages(int64_t b, BlockPages* out) {
    (void)b, (void)out;
    return false;
  }
  virtual size_t Adopt(std::span<const BlockPages> blocks, size_t at) {
    (void)blocks;
    return at;
  }
};

class RowCodec {
 public:
  virtual ~RowCodec() = default;
  // A new, empty store for rows of k_width key and v_width value elements, leasing its pages from
  // `pages` (which must outlive it).
  virtual std::unique_ptr<RowStore> NewStore(PageStore& pages, int k_width, int v_width) const = 0;
};

// Rows [begin, end) of `store` in f32 as a query with horizon store.size() reads them: K (end-begin,
// k_width) and V (end-begin, v_width; null: keys only), row-major. For policies that add something to a stored row before
// attending to it (atp's quantized residual); the stores of MakeExactCodec, kivi and mx hand out rows
// in the token's own basis, which is all this reads (no q_map / out_map).
void DecodeRows(const RowStore& store, int64_t begin, int64_t end, int k_width, int v_width, float* K, float* V);

// Exact rows in f32, f16 or bf16 (the codec of `dense:dtype=...` on the right of '+').
std::shared_ptr<const RowCodec> MakeExactCodec(DType dtype);

// The host's codec of a row form (kv/policy_config.h): exact, MX or KIVI rows.
std::shared_ptr<const RowCodec> MakeRowCodec(const RowForm& form);

// Every token's K and V rows kept in `form`, one store per KV head (`kivi`, `mx` alone).
// Causal, and chunk-invariant when the codec's form depends only on the horizon (all ours do).
std::shared_ptr<KvPolicyFactory> MakeCodecPolicyFactory(const RowForm& form);

}  // namespace atp
