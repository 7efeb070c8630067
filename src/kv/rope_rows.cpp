#include "kv/rope_rows.h"

#include <cmath>

#include "kernels/ops.h"

namespace atp {

void UnapplyRope(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq) {
  std::vector<int32_t> back(positions, positions + n);
  for (int32_t& p : back) p = -p;
  ApplyRope(x, n, heads, head_dim, back.data(), inv_freq);
}

BlockRope::BlockRope(const std::vector<float>& inv_freq, int span) : inv_freq_(inv_freq), span_(span) {
  const size_t half = inv_freq_.size();
  cos_.resize(size_t(span) * half);
  sin_.resize(cos_.size());
  for (int o = 0; o < span; ++o)
    for (size_t i = 0; i < half; ++i) {
      const float a = float(o) * inv_freq_[i];
      cos_[size_t(o) * half + i] = std::cos(a);
      sin_[size_t(o) * half + i] = std::sin(a);
    }
}

void BlockRope::Rotate(float* x, int64_t n, int64_t stride, int64_t base, const int32_t* offsets) const {
  const size_t half = inv_freq_.size();
  std::vector<float> cb(half), sb(half), c(half), s(half);  // the base's and one row's cos and sin
  for (size_t i = 0; i < half; ++i) {
    const float a = float(base) * inv_freq_[i];  // as ApplyRope: the angle in f32
    cb[i] = std::cos(a);
    sb[i] = std::sin(a);
  }
  for (int64_t r = 0; r < n; ++r) {
    const size_t o = size_t(offsets ? offsets[r] : r);
    const float *co = &cos_[o * half], *so = &sin_[o * half];
    for (size_t i = 0; i < half; ++i) {  // cos and sin of base + offset
      c[i] = cb[i] * co[i] - sb[i] * so[i];
      s[i] = sb[i] * co[i] + cb[i] * so[i];
    }
    float* v = x + r * stride;
    for (size_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * c[i] - b * s[i];
      v[i + half] = b * c[i] + a * s[i];
    }
  }
}

}  // namespace atp
