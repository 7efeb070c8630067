#include "kv/exact_rows.h"

namespace atp {

void ExactRows::Append(const float* K, const float* V, int64_t n) {
  if (n == 0) return;  // nothing to copy, and K, V and the empty buffers may be null (memcpy's contract)
  const size_t es = DTypeSize(dtype_);
  k_.resize(size_t(n_ + n) * size_t(kw_) * es);
  v_.resize(size_t(n_ + n) * size_t(vw_) * es);
  FromF32(dtype_, K, k_.data() + size_t(n_) * size_t(kw_) * es, size_t(n) * size_t(kw_));
  FromF32(dtype_, V, v_.data() + size_t(n_) * size_t(vw_) * es, size_t(n) * size_t(vw_));
  n_ += n;
}

void ExactRows::DropFront(int64_t n) {
  const size_t es = DTypeSize(dtype_);
  k_.erase(k_.begin(), k_.begin() + std::ptrdiff_t(size_t(n) * size_t(kw_) * es));
  v_.erase(v_.begin(), v_.begin() + std::ptrdiff_t(size_t(n) * size_t(vw_) * es));
  n_ -= n;
}

KvRows ExactRows::View(const std::vector<uint8_t>& buf, int width, int offset, int64_t begin, int64_t count) const {
  KvRows r;
  r.dtype = dtype_;
  r.stride = width;
  r.count = count;
  r.data = buf.data() + (size_t(begin) * size_t(width) + size_t(offset)) * DTypeSize(dtype_);
  return r;
}

}  // namespace atp
