#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/simd.h"

namespace atp {

namespace {
// sum x[i]^2 in double: d can be 8192 and the reference sums in f32 with pairwise order. The vector
// path converts kLanes / 2 floats at a time to double lanes; only the order of double additions changes.
double SumSquares(const float* x, int64_t d) {
  int64_t i = 0;
  double ss = 0;
#if ATP_SIMD_WIDTH == 16
  __m512d acc = _mm512_setzero_pd();
  for (; i + 8 <= d; i += 8) {
    const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    acc = _mm512_fmadd_pd(v, v, acc);
  }
  ss = _mm512_reduce_add_pd(acc);
#elif ATP_SIMD_WIDTH == 8
  __m256d acc = _mm256_setzero_pd();
  for (; i + 4 <= d; i += 4) {
    const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    acc = _mm256_fmadd_pd(v, v, acc);
  }
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
  ss = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
#endif
  for (; i < d; ++i) ss += double(x[i]) * x[i];
  return ss;
}
}  // namespace

void RmsNorm(const float* x, int64_t n, int64_t d, const TensorView& weight, float eps, float* out) {
  static thread_local std::vector<float> w;  // (d) the weight in f32; reused: no allocation per call
  w.resize(static_cast<size_t>(d));
  ToF32(weight.dtype, weight.data, w.data(), size_t(d));
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    const double ss = SumSquares(xr, d);
    float inv = float(1.0 / std::sqrt(ss / double(d) + eps));
    float* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = xr[i] * inv * w[size_t(i)];
  }
}

void ApplyRope(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq) {
  const int half = head_dim / 2;
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  for (int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < half; ++i) {
      // The angle in f32 like PyTorch (position * inv_freq computed in f32), then cos/sin.
      float a = float(positions[r]) * inv_freq[i];
      c[size_t(i)] = std::cos(a);
      s[size_t(i)] = std::sin(a);
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * c[size_t(i)] - b * s[size_t(i)];
        v[i + half] = b * c[size_t(i)] + a * s[size_t(i)];
      }
    }
  }
}

void SiluMul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
#if defined(ATP_SIMD_WIDTH)
  using namespace simd;
  const Vec one = Set1(1.0f);
  for (; i + kLanes <= n; i += kLanes) {
    const Vec g = Load(gate + i);
    const Vec e = Exp(Sub(Zero(), g));  // exp(-g)
    Store(gate + i, Mul(Div(g, Add(one, e)), Load(up + i)));
  }
#endif
  for (; i < n; ++i) {
    float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  int64_t i = 0;
  float m = x[0];
#if defined(ATP_SIMD_WIDTH)
  using namespace simd;
  if (n >= kLanes) {
    Vec vm = Load(x);
    for (i = kLanes; i + kLanes <= n; i += kLanes) vm = Max(vm, Load(x + i));
    m = ReduceMax(vm);
  }
#endif
  for (; i < n; ++i) m = std::max(m, x[i]);
  float s = 0;
  i = 0;
#if defined(ATP_SIMD_WIDTH)
  const Vec vmax = Set1(m);
  Vec vs = Zero();  // kLanes partial sums
  for (; i + kLanes <= n; i += kLanes) {
    const Vec e = Exp(Sub(Load(x + i), vmax));
    Store(x + i, e);
    vs = Add(vs, e);
  }
  s = ReduceAdd(vs);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  const float inv = 1.0f / s;
  i = 0;
#if defined(ATP_SIMD_WIDTH)
  for (; i + kLanes <= n; i += kLanes) Store(x + i, Mul(Load(x + i), Set1(inv)));
#endif
  for (; i < n; ++i) x[i] *= inv;
}

void AddInPlace(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace atp
