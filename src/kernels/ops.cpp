#include "kernels/ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace atp {

namespace {
#if defined(__AVX512F__)
// exp(x) for 16 lanes: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact r), Cephes'
// degree-6 polynomial for exp(r), then scale by 2^n. Relative error ~2 ulp; inputs below -104
// give 0 (as exp does in f32), above 88.7 give +inf.
inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.8f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}
#endif
}  // namespace

void RmsNorm(const float* x, int64_t n, int64_t d, const TensorView& weight, float eps, float* out) {
  static thread_local std::vector<float> w;  // (d) the weight in f32; reused: no allocation per call
  w.resize(static_cast<size_t>(d));
  ToF32(weight.dtype, weight.data, w.data(), size_t(d));
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    double ss = 0;  // double: d can be 8192 and the reference sums in f32 with pairwise order
    for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
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
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));  // exp(-g)
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
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
#if defined(__AVX512F__)
  if (n >= 16) {
    __m512 vm = _mm512_loadu_ps(x);
    for (i = 16; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
    m = _mm512_reduce_max_ps(vm);
  }
#endif
  for (; i < n; ++i) m = std::max(m, x[i]);
  float s = 0;
  i = 0;
#if defined(__AVX512F__)
  const __m512 vmax = _mm512_set1_ps(m);
  __m512 vs = _mm512_setzero_ps();  // 16 partial sums
  for (; i + 16 <= n; i += 16) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
    _mm512_storeu_ps(x + i, e);
    vs = _mm512_add_ps(vs, e);
  }
  s = _mm512_reduce_add_ps(vs);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  const float inv = 1.0f / s;
  i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(inv)));
#endif
  for (; i < n; ++i) x[i] *= inv;
}

void AddInPlace(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace atp
