// Exact K and V rows in one dtype (f32, f16, bf16), in pages leased from a PageStore: the storage of
// dense, of ATP's window, principal and kept rows, and of lowrank's window. Rows only ever leave from
// the front, so a row's slot in its page depends on its position alone and attention over a range
// splits into the same runs however the tokens were chunked (bit-for-bit chunk invariance).
// Not yet in pages (issue 16): the row stores of kv/composite.h (eviction survivors, KIVI, MX),
// whose compaction after eviction would move rows across page boundaries depending on when it ran,
// and with them the float summation order of attention (kernels/attention.h sums a run's rows in two
// interleaved chains, combined per call).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "kv/attend.h"
#include "kv/page_store.h"

namespace atp {

// Thread-safety: const methods may run concurrently; the rest is exclusive.
class ExactRows {
 public:
  // Rows of k_width key and v_width value elements (v_width 0: same as k_width).
  ExactRows(PageStore& store, DType dtype, int k_width, int v_width = 0)
      : dtype_(dtype), kw_(k_width), vw_(v_width ? v_width : k_width),
        k_(store, size_t(kw_) * DTypeSize(dtype)), v_(store, size_t(vw_) * DTypeSize(dtype)) {}
  // Appends n rows of K (n, k_width) and V (n, v_width) f32, converted to the store's dtype (round to
  // nearest even).
  void Append(const float* K, const float* V, int64_t n);
  // Drops the first n rows (tokens that moved to a compressed form or out of a window).
  void DropFront(int64_t n);
  // Rows [begin, begin + count) as f32: K (count, k_width), V (count, v_width).
  void ToF32(int64_t begin, int64_t count, float* K, float* V) const;
  // Elements [offset, offset + dim) of the same rows (a KV head's slice of rows holding every head;
  // k_width == v_width) as f32: K and V (count, dim).
  void SliceToF32(int offset, int dim, int64_t begin, int64_t count, float* K, float* V) const;
  // Adds to `out` the segments holding rows [begin, begin + count) from element `offset` on (a KV
  // head's slice, or 0), in row order: one per run of rows contiguous in a page.
  void View(int offset, int64_t begin, int64_t count, std::vector<KvSegment>* out) const;
  int64_t size() const { return k_.size(); }
  // Data bytes of the rows held; LeasedBytes: of the pages holding them (at most a page per K and V more).
  size_t Bytes() const { return size_t(size()) * size_t(kw_ + vw_) * DTypeSize(dtype_); }
  size_t LeasedBytes() const { return k_.LeasedBytes() + v_.LeasedBytes(); }

 private:
  DType dtype_;
  int kw_, vw_;
  PagedRows k_, v_;  // (size, kw_) and (size, vw_) in dtype_
};

}  // namespace atp
