#include "kv/exact_rows.h"

namespace atp {

void ExactRows::Append(const float* K, const float* V, int64_t n) {
  const size_t row = size_t(kv_dim_) * DTypeSize(dtype_);
  k_.resize(size_t(n_ + n) * row);
  v_.resize(size_t(n_ + n) * row);
  FromF32(dtype_, K, k_.data() + size_t(n_) * row, size_t(n) * size_t(kv_dim_));
  FromF32(dtype_, V, v_.data() + size_t(n_) * row, size_t(n) * size_t(kv_dim_));
  n_ += n;
}

void ExactRows::DropFront(int64_t n) {
  const size_t bytes = size_t(n) * size_t(kv_dim_) * DTypeSize(dtype_);
  k_.erase(k_.begin(), k_.begin() + std::ptrdiff_t(bytes));
  v_.erase(v_.begin(), v_.begin() + std::ptrdiff_t(bytes));
  n_ -= n;
}

KvRows ExactRows::View(const std::vector<uint8_t>& buf, int h, int head_dim, int64_t begin, int64_t count) const {
  KvRows r;
  r.dtype = dtype_;
  r.stride = kv_dim_;
  r.count = count;
  r.data = buf.data() + (size_t(begin) * size_t(kv_dim_) + size_t(h) * size_t(head_dim)) * DTypeSize(dtype_);
  return r;
}

}  // namespace atp
