#include "kernels/matmul.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "core/thread_pool.h"

namespace atp {

namespace {

// Loads 16 (AVX-512) or 8 (AVX2) weights of any dtype as f32 lanes.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
using Vec = __m512;
inline Vec LoadW(const float* p) { return _mm512_loadu_ps(p); }
inline Vec LoadW(const uint16_t* p, DType t) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (t == DType::kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}
inline Vec LoadX(const float* p) { return _mm512_loadu_ps(p); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec Zero() { return _mm512_setzero_ps(); }
inline float Sum(Vec v) { return _mm512_reduce_add_ps(v); }
#else
constexpr int kLanes = 8;
using Vec = __m256;
inline Vec LoadW(const float* p) { return _mm256_loadu_ps(p); }
inline Vec LoadW(const uint16_t* p, DType t) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (t == DType::kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}
inline Vec LoadX(const float* p) { return _mm256_loadu_ps(p); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec Zero() { return _mm256_setzero_ps(); }
inline float Sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}
#endif

float ScalarW(const void* w, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(w)[i];
    case DType::kBF16: return Bf16ToF32(static_cast<const uint16_t*>(w)[i]);
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(w)[i]);
  }
  return 0;
}

// y[r][o] = dot(w_row, x[r]) for up to kGemvMaxRows rows of x: one pass over the weight row.
template <int R>
void DotRows(const void* wrow, DType t, const float* x, int64_t in, float* y, int64_t out) {
  Vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = Zero();
  int64_t i = 0;
  for (; i + kLanes <= in; i += kLanes) {
    Vec w = t == DType::kF32 ? LoadW(static_cast<const float*>(wrow) + i)
                             : LoadW(static_cast<const uint16_t*>(wrow) + i, t);
    for (int r = 0; r < R; ++r) acc[r] = Fma(w, LoadX(x + r * in + i), acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = Sum(acc[r]);
    for (int64_t j = i; j < in; ++j) s += ScalarW(wrow, t, j) * x[r * in + j];
    y[r * out] = s;
  }
}

using DotFn = void (*)(const void*, DType, const float*, int64_t, float*, int64_t);
constexpr DotFn kDot[kGemvMaxRows + 1] = {nullptr, DotRows<1>, DotRows<2>, DotRows<3>, DotRows<4>,
                                          DotRows<5>, DotRows<6>, DotRows<7>, DotRows<8>};

}  // namespace

void GemvRows(const float* x, int64_t n, const TensorView& w, float* y) {
  const int64_t out = w.rows(), in = w.cols();
  const size_t row_bytes = size_t(in) * DTypeSize(w.dtype);
  const auto* wb = static_cast<const uint8_t*>(w.data);
  ThreadPool::Global().ParallelFor(out, [&](int64_t b, int64_t e, int) {
    for (int64_t r0 = 0; r0 < n; r0 += kGemvMaxRows) {
      int rows = int(std::min<int64_t>(kGemvMaxRows, n - r0));
      for (int64_t o = b; o < e; ++o) kDot[rows](wb + o * row_bytes, w.dtype, x + r0 * in, in, y + r0 * out + o, out);
    }
  });
}

void GemmRows(const float* x, int64_t n, const TensorView& w, float* y) {
  const int64_t out = w.rows(), in = w.cols();
  if (w.dtype == DType::kF32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(out), int(in), 1.0f, x, int(in),
                static_cast<const float*>(w.data), int(in), 0.0f, y, int(out));
    return;
  }
  // 16-bit weights: convert a panel of output rows to f32 (a few MB, reused across all n rows),
  // then sgemm it into the matching columns of y.
  const int64_t panel = std::max<int64_t>(64, (int64_t(4) << 20) / (in * 4));
  static thread_local std::vector<float> buf;
  buf.resize(size_t(std::min(panel, out) * in));
  float* const panel_f32 = buf.data();  // workers must not name the thread_local: each has its own
  const size_t es = DTypeSize(w.dtype);
  for (int64_t o0 = 0; o0 < out; o0 += panel) {
    int64_t rows = std::min(panel, out - o0);
    ThreadPool::Global().ParallelFor(rows, [&](int64_t b, int64_t e, int) {
      ToF32(w.dtype, static_cast<const uint8_t*>(w.data) + (o0 + b) * in * es, panel_f32 + b * in, size_t((e - b) * in));
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(rows), int(in), 1.0f, x, int(in), panel_f32,
                int(in), 0.0f, y + o0, int(out));
  }
}

void MatMul(const float* x, int64_t n, const TensorView& w, const float* bias, float* y) {
  if (n <= kGemvMaxRows) GemvRows(x, n, w, y);
  else GemmRows(x, n, w, y);
  if (bias) {
    const int64_t out = w.rows();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
  }
}

}  // namespace atp
