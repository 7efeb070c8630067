// Growable store of exact K and V rows in one dtype, shared by every policy that keeps some tokens
// exact (dense, ATP's window, KIVI's residual, eviction survivors).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "kernels/attention.h"

namespace atp {

class ExactRows {
 public:
  // Rows of k_width key and v_width value elements (v_width 0: same as k_width).
  ExactRows(DType dtype, int k_width, int v_width = 0) : dtype_(dtype), kw_(k_width), vw_(v_width ? v_width : k_width) {}
  // Appends n rows of K (n, k_width) and V (n, v_width) f32, converted to the store's dtype.
  void Append(const float* K, const float* V, int64_t n);
  // Drops the first n rows (tokens that moved to a compressed form).
  void DropFront(int64_t n);
  int64_t size() const { return n_; }
  size_t Bytes() const { return size_t(n_) * size_t(kw_ + vw_) * DTypeSize(dtype_); }
  // Rows [begin, begin+count), elements from h*head_dim on (KV head h of a multi-head row).
  KvRows Keys(int h, int head_dim, int64_t begin, int64_t count) const { return View(k_, kw_, h * head_dim, begin, count); }
  KvRows Values(int h, int head_dim, int64_t begin, int64_t count) const { return View(v_, vw_, h * head_dim, begin, count); }

 private:
  KvRows View(const std::vector<uint8_t>& buf, int width, int offset, int64_t begin, int64_t count) const;
  DType dtype_;
  int kw_, vw_;
  int64_t n_ = 0;
  std::vector<uint8_t> k_, v_;  // (n_, kw_) and (n_, vw_), in dtype_
};

}  // namespace atp
