#include "kv/exact_rows.h"

namespace atp {

Status ExactRows::Append(const float* K, int64_t k_stride, const float* V, int64_t v_stride, int64_t n) {
  const int64_t first = size();
  ATP_RETURN_IF_ERROR(GrowPair(k_, v_, n));
  for (int64_t i = 0; i < n; ++i) {
    FromF32(dtype_, K + i * k_stride, k_.Row(first + i), size_t(kw_));
    FromF32(dtype_, V + i * v_stride, v_.Row(first + i), size_t(vw_));
  }
  return Status::Ok();
}

void ExactRows::DropFront(int64_t n) {
  k_.DropFront(n);
  v_.DropFront(n);
}

Status ExactRows::Retain(const char* keep) {
  ATP_RETURN_IF_ERROR(k_.Retain(keep));
  return v_.Retain(keep);
}

void ExactRows::ToF32(int64_t begin, int64_t count, float* K, float* V) const {
  for (int64_t i = 0; i < count; ++i) {
    atp::ToF32(dtype_, k_.Row(begin + i), K + i * kw_, size_t(kw_));
    atp::ToF32(dtype_, v_.Row(begin + i), V + i * vw_, size_t(vw_));
  }
}

void ExactRows::SliceToF32(int offset, int dim, int64_t begin, int64_t count, float* K, float* V) const {
  const size_t skip = size_t(offset) * DTypeSize(dtype_);
  for (int64_t i = 0; i < count; ++i) {
    atp::ToF32(dtype_, k_.Row(begin + i) + skip, K + i * dim, size_t(dim));
    atp::ToF32(dtype_, v_.Row(begin + i) + skip, V + i * dim, size_t(dim));
  }
}

void ExactRows::View(int offset, int64_t begin, int64_t count, std::vector<KvSegment>* out) const {
  const size_t skip = size_t(offset) * DTypeSize(dtype_);
  k_.ForEachRun(begin, count, [&](int64_t first, int64_t n, const uint8_t* k) {
    KvSegment s;
    s.k = {dtype_, k + skip, kw_, n};
    s.v = {dtype_, v_.Row(first) + skip, vw_, n};
    out->push_back(s);
  });
}

}  // namespace atp
