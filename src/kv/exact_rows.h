// Exact K and V rows in one dtype (f32, f16, bf16), in pages leased from a PageStore: the storage of
// every policy that keeps some tokens exact (dense, ATP's window, principal and kept rows, lowrank's
// window, KIVI's residual, eviction survivors, `+dense:dtype=...` stores). Where page runs break
// depends on when rows were dropped or compacted, which may depend on how a prompt was chunked; the
// attention kernels' sums do not depend on the runs (kernels/attention.h), so outputs do not either.
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
  // Appends n rows: key row i at K + i * k_stride (k_width floats), value row i at V + i * v_stride,
  // converted to the store's dtype (round to nearest even). Where the store refuses a page, nothing changes.
  [[nodiscard]] Status Append(const float* K, int64_t k_stride, const float* V, int64_t v_stride, int64_t n);
  [[nodiscard]] Status Append(const float* K, const float* V, int64_t n) { return Append(K, kw_, V, vw_, n); }
  // Drops the first n rows (tokens that moved to a compressed form or out of a window).
  void DropFront(int64_t n);
  // Keeps row i iff keep[i] != 0, for keep[0 .. size()), in order (eviction). An error (a shared page's
  // copy refused) may leave the keys retained and the values not: the rows are then unusable.
  [[nodiscard]] Status Retain(const char* keep);
  // Rows [begin, begin + count) as f32: K (count, k_width), V (count, v_width).
  void ToF32(int64_t begin, int64_t count, float* K, float* V) const;
  // Elements [offset, offset + dim) of the same rows (a KV head's slice of rows holding every head;
  // k_width == v_width) as f32: K and V (count, dim).
  void SliceToF32(int offset, int dim, int64_t begin, int64_t count, float* K, float* V) const;
  // Adds to `out` the segments holding rows [begin, begin + count) from element `offset` on (a KV
  // head's slice, or 0), in row order: one per run of rows contiguous in a page.
  void View(int offset, int64_t begin, int64_t count, std::vector<KvSegment>* out) const;
  // Prefix caching (PagedRows::FullPage): appends the key and value pages of rows [b, b + 1) * 64, and
  // on empty rows takes blocks[i][at] and [at + 1] as those of block i, returning at + 2. Only for
  // rows of which none was ever dropped.
  void SharePages(int64_t b, BlockPages* out) { out->push_back(k_.FullPage(b)), out->push_back(v_.FullPage(b)); }
  size_t Adopt(std::span<const BlockPages> blocks, size_t at) {
    k_.Adopt(blocks, at), v_.Adopt(blocks, at + 1);
    return at + 2;
  }
  int64_t size() const { return k_.size(); }
  // Data bytes of the rows held; LeasedBytes: of the pages holding them (at most a page per K and V more).
  size_t Bytes() const { return size_t(size()) * size_t(kw_ + vw_) * DTypeSize(dtype_); }
  size_t LeasedBytes() const { return k_.LeasedBytes() + v_.LeasedBytes(); }
  // Bytes of the pages appending n rows (at once or in parts, rows dropped between or not) may lease
  // beyond those held now (PagedRows::GrowBytes).
  size_t GrowBytes(int64_t n) const { return k_.GrowBytes(n) + v_.GrowBytes(n); }

 private:
  DType dtype_;
  int kw_, vw_;
  PagedRows k_, v_;  // (size, kw_) and (size, vw_) in dtype_
};

}  // namespace atp
