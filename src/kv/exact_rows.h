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
  ExactRows(DType dtype, int kv_dim) : dtype_(dtype), kv_dim_(kv_dim) {}
  // Appends n rows of K and V (n, kv_dim) f32, converted to the store's dtype.
  void Append(const float* K, const float* V, int64_t n);
  // Drops the first n rows (tokens that moved to a compressed form).
  void DropFront(int64_t n);
  int64_t size() const { return n_; }
  size_t Bytes() const { return size_t(n_) * 2 * size_t(kv_dim_) * DTypeSize(dtype_); }
  // Rows [begin, begin+count) of KV head h.
  KvRows Keys(int h, int head_dim, int64_t begin, int64_t count) const { return View(k_, h, head_dim, begin, count); }
  KvRows Values(int h, int head_dim, int64_t begin, int64_t count) const { return View(v_, h, head_dim, begin, count); }

 private:
  KvRows View(const std::vector<uint8_t>& buf, int h, int head_dim, int64_t begin, int64_t count) const;
  DType dtype_;
  int kv_dim_;
  int64_t n_ = 0;
  std::vector<uint8_t> k_, v_;  // (n_, kv_dim_) each, in dtype_
};

}  // namespace atp
