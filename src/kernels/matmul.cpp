#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "core/kquant.h"
#include "core/quant.h"
#include "core/thread_pool.h"
#include "kernels/simd.h"

namespace atp {

namespace {

inline float ScalarW(const void* w, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(w)[i];
    case DType::kBF16: return Bf16ToF32(static_cast<const uint16_t*>(w)[i]);
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(w)[i]);
    default: break;  // rows of blocks go through DotRowBlocks / DotRowDequant
  }
  return 0;
}

// y[r * out] = dot(w, x row r) for R rows of x against one weight row: the row streams once, in
// order, and each weight vector is used for all R rows. U vectors per step give R * U independent
// FMA chains. One row at a time is deliberate: interleaving several weight rows (4 streams 4 KiB
// apart) measured ~30% slower on the reference machine than one sequential stream per thread.
// T: float (f32 weights) or uint16_t (f16/bf16).
#if defined(ATP_SIMD_WIDTH)
template <typename T>
inline simd::Vec LoadW(const T* w, DType t) {
  if constexpr (sizeof(T) == 4) return simd::Load(w);
  else return t == DType::kBF16 ? simd::LoadBf16(w) : simd::LoadF16(w);
}

template <int R, int U, typename T>
inline void DotRow(const T* w, int64_t in, DType t, const float* x, float* y, int64_t out) {
  using namespace simd;
  Vec acc[R][U];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) acc[r][u] = Zero();
  int64_t i = 0;
  for (; i + U * kLanes <= in; i += U * kLanes) {
    for (int u = 0; u < U; ++u) {
      const Vec wv = LoadW(w + i + u * kLanes, t);
      for (int r = 0; r < R; ++r) acc[r][u] = Fma(wv, Load(x + r * in + i + u * kLanes), acc[r][u]);
    }
  }
  for (; i + kLanes <= in; i += kLanes) {
    const Vec wv = LoadW(w + i, t);
    for (int r = 0; r < R; ++r) acc[r][0] = Fma(wv, Load(x + r * in + i), acc[r][0]);
  }
  for (int r = 0; r < R; ++r) {
    for (int u = 1; u < U; ++u) acc[r][0] = Add(acc[r][0], acc[r][u]);
    float s = ReduceAdd(acc[r][0]);
    for (int64_t j = i; j < in; ++j) s += ScalarW(w, t, j) * x[r * in + j];
    y[r * out] = s;
  }
}

// The same for a row of Q8_0/Q4_0 blocks (in a multiple of 32): each block's codes are widened to
// f32 in registers and used for all R rows; B blocks per step. One row of x (decode) sums codes * x
// over a block and scales that partial sum once (one multiply per block instead of one per vector);
// several rows scale the codes once and share them.
// The activations stay f32. llama.cpp instead quantizes them to Q8 and takes integer dot products;
// f32 activations are more exact (the only error is the weights' own), and decode is bound by the
// weight bytes streamed.
template <int R, int B, DType Q>
inline void DotRowBlocks(const uint8_t* w, int64_t in, const float* x, float* y, int64_t out) {
  using namespace simd;
  constexpr int V = kBlockVecs;
  constexpr int64_t kBytes = Q == DType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
  Vec acc[R][B * V];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < B * V; ++u) acc[r][u] = Zero();
  auto block = [&](int64_t b, int k) {  // block b into accumulator set k
    Vec c[V];
    const Vec d = LoadBlock<Q>(w + b * kBytes, c);
    const float* xb = x + b * kQuantBlock;
    if constexpr (R == 1) {
      Vec t = Mul(c[0], Load(xb));
      for (int v = 1; v < V; ++v) t = Fma(c[v], Load(xb + v * kLanes), t);
      acc[0][k] = Fma(d, t, acc[0][k]);
    } else {
      for (int v = 0; v < V; ++v) {
        const Vec wv = Mul(d, c[v]);
        for (int r = 0; r < R; ++r) acc[r][k * V + v] = Fma(wv, Load(xb + r * in + v * kLanes), acc[r][k * V + v]);
      }
    }
  };
  const int64_t nb = in / kQuantBlock;
  int64_t b = 0;
  for (; b + B <= nb; b += B)
    for (int k = 0; k < B; ++k) block(b + k, k);
  for (; b < nb; ++b) block(b, 0);
  for (int r = 0; r < R; ++r) {
    for (int u = 1; u < B * V; ++u) acc[r][0] = Add(acc[r][0], acc[r][u]);
    y[r * out] = ReduceAdd(acc[r][0]);
  }
}

// Integer lanes for unpacking codes: kLanes bytes widened to int32, shifts by a runtime count, masks.
#if ATP_SIMD_WIDTH == 16
using IVec = __m512i;
inline IVec LoadU8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline IVec Bits(IVec v, int shift, int mask) {
  return _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(shift)), _mm512_set1_epi32(mask));
}
inline IVec ShlOr(IVec lo, IVec hi, int shift) { return _mm512_or_si512(lo, _mm512_sll_epi32(hi, _mm_cvtsi32_si128(shift))); }
inline simd::Vec ToF32Lanes(IVec v, int minus) { return _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(minus))); }
#else
using IVec = __m256i;
inline IVec LoadU8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
inline IVec Bits(IVec v, int shift, int mask) {
  return _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(shift)), _mm256_set1_epi32(mask));
}
inline IVec ShlOr(IVec lo, IVec hi, int shift) { return _mm256_or_si256(lo, _mm256_sll_epi32(hi, _mm_cvtsi32_si128(shift))); }
inline simd::Vec ToF32Lanes(IVec v, int minus) { return _mm256_cvtepi32_ps(_mm256_sub_epi32(v, _mm256_set1_epi32(minus))); }
#endif

// The k-quants of llama.cpp's Q4_K_M/Q5_K_M files (Q4_K, Q5_K, Q6_K; layouts in core/kquant.h):
// kLanes codes at a time unpacked in registers to the weights (scale * code - min, the library's
// dequantization up to the rounding of a fused multiply-add) and used for all R rows; two
// accumulation chains per row.
template <int R, DType Q>
inline void DotRowK(const uint8_t* w, int64_t in, const float* x, float* y, int64_t out) {
  using namespace simd;
  constexpr int64_t kBytes = Q == DType::kQ4_K ? 144 : Q == DType::kQ5_K ? 176 : 210;
  Vec acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = Zero();
  int u = 0;
  auto use = [&](Vec wv, const float* xs) {
    for (int r = 0; r < R; ++r) acc[r][u] = Fma(wv, Load(xs + r * in), acc[r][u]);
    u ^= 1;
  };
  auto half = [](const uint8_t* p) { return _cvtsh_ss(uint16_t(p[0] | p[1] << 8)); };  // inline, as LoadBlock
  for (int64_t b = 0; b < in / kSuperBlock; ++b) {
    const uint8_t* p = w + b * kBytes;
    const float* xb = x + b * kSuperBlock;
    if constexpr (Q == DType::kQ6_K) {
      const float d = half(p + 208);
      const auto* sc = reinterpret_cast<const int8_t*>(p + 192);
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 4; ++k)
          for (int l = 0; l < 32; l += kLanes) {
            const IVec lo = Bits(LoadU8(p + 64 * h + l + 32 * (k % 2)), k < 2 ? 0 : 4, 0xf);
            const IVec hi = Bits(LoadU8(p + 128 + 32 * h + l), 2 * k, 3);
            const Vec code = ToF32Lanes(ShlOr(lo, hi, 4), 32);
            use(Mul(Set1(d * float(sc[8 * h + 2 * k + l / 16])), code), xb + 128 * h + 32 * k + l);
          }
    } else {
      const float d = half(p), dmin = half(p + 2);
      const uint8_t* qs = p + (Q == DType::kQ4_K ? 16 : 48);
      for (int s = 0; s < 8; ++s) {
        int sc, m;
        ScaleMinK4(p + 4, s, &sc, &m);
        const Vec ds = Set1(d * float(sc)), ms = Set1(dmin * float(m));
        for (int l = 0; l < 32; l += kLanes) {
          IVec v = Bits(LoadU8(qs + 32 * (s / 2) + l), 4 * (s % 2), 0xf);
          if constexpr (Q == DType::kQ5_K) v = ShlOr(v, Bits(LoadU8(p + 16 + l), s, 1), 4);
          use(Sub(Mul(ds, ToF32Lanes(v, 0)), ms), xb + 32 * s + l);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r * out] = ReduceAdd(Add(acc[r][0], acc[r][1]));
}

// Any other block dtype (Q4_1, Q5_x, IQ4_NL, Q2_K, Q3_K, IQ4_XS): each block is dequantized to f32 by its
// reference dequantizer (core/kquant.h, the bit-exact form) into a buffer on the stack and used for
// all R rows. The weights still stream once; the dequantization is the cost over DotRowBlocks.
template <int R>
inline void DotRowDequant(const uint8_t* w, int64_t in, const BlockCodec& c, const float* x, float* y, int64_t out) {
  using namespace simd;
  alignas(64) float buf[kSuperBlock];
  Vec acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = Zero();
  for (int64_t b = 0; b < in / c.elems; ++b) {
    c.to_f32(w + b * int64_t(c.bytes), buf, c.elems);
    const float* xb = x + b * c.elems;
    for (int64_t v = 0; v < c.elems; v += 2 * kLanes) {  // elems is a multiple of 32 >= 2 * kLanes
      const Vec w0 = Load(buf + v), w1 = Load(buf + v + kLanes);
      for (int r = 0; r < R; ++r) {
        acc[r][0] = Fma(w0, Load(xb + r * in + v), acc[r][0]);
        acc[r][1] = Fma(w1, Load(xb + r * in + v + kLanes), acc[r][1]);
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r * out] = ReduceAdd(Add(acc[r][0], acc[r][1]));
}
#else
template <int R, int U, typename T>
inline void DotRow(const T* w, int64_t in, DType t, const float* x, float* y, int64_t out) {
  for (int r = 0; r < R; ++r) {
    float s = 0;
    for (int64_t j = 0; j < in; ++j) s += ScalarW(w, t, j) * x[r * in + j];
    y[r * out] = s;
  }
}

template <int R, int B, DType Q>
inline void DotRowBlocks(const uint8_t* w, int64_t in, const float* x, float* y, int64_t out) {
  float s[R] = {}, blk[kQuantBlock];
  for (int64_t b = 0; b < in / kQuantBlock; ++b) {
    ToF32(Q, w + DTypeBytes(Q, b * kQuantBlock), blk, kQuantBlock);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < kQuantBlock; ++j) s[r] += blk[j] * x[r * in + b * kQuantBlock + j];
  }
  for (int r = 0; r < R; ++r) y[r * out] = s[r];
}

template <int R>
inline void DotRowDequant(const uint8_t* w, int64_t in, const BlockCodec& c, const float* x, float* y, int64_t out) {
  float s[R] = {}, buf[kSuperBlock];
  for (int64_t b = 0; b < in / c.elems; ++b) {
    c.to_f32(w + b * int64_t(c.bytes), buf, c.elems);
    for (int r = 0; r < R; ++r)
      for (int64_t j = 0; j < c.elems; ++j) s[r] += buf[j] * x[r * in + b * c.elems + j];
  }
  for (int r = 0; r < R; ++r) y[r * out] = s[r];
}
#endif

// Output rows [b, e) for R rows of x (x: (R, in), y: (R, out) with row stride out).
template <int R>
void GemvRange(const TensorView& w, const float* x, float* y, int64_t b, int64_t e) {
  constexpr int U = R == 1 ? 8 : R == 2 ? 4 : R <= 4 ? 2 : 1;  // 8 chains at R=1 measured ~3% faster than 4
  constexpr int B = R == 1 ? 4 : 1;                               // blocks per step: 4 accumulation chains at R=1
  const int64_t out = w.rows(), in = w.cols();
  const DType t = w.dtype;
  const size_t row_bytes = DTypeBytes(t, in);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const BlockCodec* codec = FindBlockCodec(t);
  for (int64_t o = b; o < e; ++o) {
    const uint8_t* row = base + size_t(o) * row_bytes;
    switch (t) {
      case DType::kF32: DotRow<R, U>(reinterpret_cast<const float*>(row), in, t, x, y + o, out); break;
      case DType::kF16:
      case DType::kBF16: DotRow<R, U>(reinterpret_cast<const uint16_t*>(row), in, t, x, y + o, out); break;
      case DType::kQ8_0: DotRowBlocks<R, B, DType::kQ8_0>(row, in, x, y + o, out); break;
      case DType::kQ4_0: DotRowBlocks<R, B, DType::kQ4_0>(row, in, x, y + o, out); break;
#if defined(ATP_SIMD_WIDTH)
      case DType::kQ4_K: DotRowK<R, DType::kQ4_K>(row, in, x, y + o, out); break;
      case DType::kQ5_K: DotRowK<R, DType::kQ5_K>(row, in, x, y + o, out); break;
      case DType::kQ6_K: DotRowK<R, DType::kQ6_K>(row, in, x, y + o, out); break;
#endif
      default: DotRowDequant<R>(row, in, *codec, x, y + o, out); break;
    }
  }
}

void GemvDispatch(int rows, const TensorView& w, const float* x, float* y, int64_t b, int64_t e) {
  switch (rows) {
    case 1: return GemvRange<1>(w, x, y, b, e);
    case 2: return GemvRange<2>(w, x, y, b, e);
    case 3: return GemvRange<3>(w, x, y, b, e);
    case 4: return GemvRange<4>(w, x, y, b, e);
    case 5: return GemvRange<5>(w, x, y, b, e);
    case 6: return GemvRange<6>(w, x, y, b, e);
    case 7: return GemvRange<7>(w, x, y, b, e);
    default: return GemvRange<8>(w, x, y, b, e);
  }
}

// Rows [b, e) of y = x W^T for all n rows of x, in groups of kGemvMaxRows.
void GemvSlice(const float* x, int64_t n, const TensorView& w, float* y, int64_t b, int64_t e) {
  const int64_t out = w.rows(), in = w.cols();
  for (int64_t r0 = 0; r0 < n; r0 += kGemvMaxRows) {
    const int rows = int(std::min<int64_t>(kGemvMaxRows, n - r0));
    GemvDispatch(rows, w, x + r0 * in, y + r0 * out, b, e);
  }
}

// y_i = x W_i^T for every job, in one pass of the pool. The output rows of all jobs form one list of
// chunks (~256 KiB of weights each), split into one contiguous region per thread. A thread streams
// its own region front to back (one sequential stream: measured ~7% faster than interleaved
// chunks), and when done takes chunks from the back of another region. On a shared machine a thread
// slowed by another tenant on its core then costs little instead of making the other wait.
void GemvJobs(const float* x, int64_t n, std::span<const MatMulJob> jobs) {
  ThreadPool& pool = ThreadPool::Global();
  struct Span { const MatMulJob* job; int64_t chunk_rows, first_chunk; };
  std::vector<Span> spans;
  int64_t chunks = 0;
  for (const MatMulJob& j : jobs) {
    const int64_t row_bytes = std::max<int64_t>(1, int64_t(DTypeBytes(j.w->dtype, j.w->cols())));
    const int64_t rows = std::max<int64_t>(1, (int64_t(256) << 10) / row_bytes);
    spans.push_back({&j, rows, chunks});
    chunks += (j.w->rows() + rows - 1) / rows;
  }
  auto run_chunk = [&](int64_t c) {
    size_t s = spans.size() - 1;
    while (spans[s].first_chunk > c) --s;
    const Span& sp = spans[s];
    const int64_t b = (c - sp.first_chunk) * sp.chunk_rows;
    GemvSlice(x, n, *sp.job->w, sp.job->y, b, std::min(sp.job->w->rows(), b + sp.chunk_rows));
  };
  const int P = pool.size();
  if (chunks <= 1 || P == 1) {
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c);
    return;
  }
  // Region r holds chunks [front, back), packed in one atomic word (front << 32 | back) so the owner
  // (taking front) and a thief (taking back - 1) can never take the same chunk.
  std::vector<std::atomic<uint64_t>> regions(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r)
    regions[size_t(r)].store(uint64_t(chunks * r / P) << 32 | uint64_t(chunks * (r + 1) / P), std::memory_order_relaxed);
  auto take = [&](int r, bool from_front, int64_t* c) {
    std::atomic<uint64_t>& a = regions[size_t(r)];
    uint64_t v = a.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t front = v >> 32, back = v & 0xffffffffu;
      if (front >= back) return false;
      const uint64_t next = from_front ? (front + 1) << 32 | back : front << 32 | (back - 1);
      if (a.compare_exchange_weak(v, next, std::memory_order_relaxed)) {
        *c = int64_t(from_front ? front : back - 1);
        return true;
      }
    }
  };
  pool.ParallelFor(P, [&](int64_t, int64_t, int me) {
    int64_t c;
    while (take(me, true, &c)) run_chunk(c);
    for (int k = 1; k < P; ++k)
      while (take((me + k) % P, false, &c)) run_chunk(c);
  });
}

void AddBias(const float* bias, int64_t n, int64_t out, float* y) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
}

}  // namespace

// OpenBLAS would start its own threads and spin (sched_yield) between calls, fighting our pool
// for the same cores. It runs single-threaded inside each pool thread instead: the pool owns the cores.
void UseSingleThreadedBlas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

void GemvRows(const float* x, int64_t n, const TensorView& w, float* y) {
  const MatMulJob job{&w, nullptr, y};
  GemvJobs(x, n, std::span<const MatMulJob>(&job, 1));
}

void GemmRows(const float* x, int64_t n, const TensorView& w, float* y) {
  UseSingleThreadedBlas();
  const int64_t out = w.rows(), in = w.cols();
  // Each pool thread owns a contiguous slice of output columns (weight rows) and runs a
  // single-threaded sgemm on it; x is shared read-only.
  ThreadPool::Global().ParallelFor(out, [&](int64_t b, int64_t e, int) {
    if (w.dtype == DType::kF32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(e - b), int(in), 1.0f, x, int(in),
                  static_cast<const float*>(w.data) + b * in, int(in), 0.0f, y + b, int(out));
      return;
    }
    // f16/bf16/block weights: convert a panel of this slice's rows to f32 (about 8 MiB, in cache when
    // sgemm reads it), then sgemm it into the matching columns of y. Each sgemm call repacks all
    // of x, so panels are made large enough that this costs a few percent at most.
    const int64_t panel = std::max<int64_t>(16, (int64_t(8) << 20) / (in * 4));
    static thread_local std::vector<float> buf;  // (panel, in) f32, one per thread
    buf.resize(size_t(std::min(panel, e - b) * in));
    for (int64_t o0 = b; o0 < e; o0 += panel) {
      const int64_t rows = std::min(panel, e - o0);
      ToF32(w.dtype, static_cast<const uint8_t*>(w.data) + DTypeBytes(w.dtype, o0 * in), buf.data(), size_t(rows * in));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(rows), int(in), 1.0f, x, int(in), buf.data(),
                  int(in), 0.0f, y + o0, int(out));
    }
  });
}

void MatMul(const float* x, int64_t n, const TensorView& w, const float* bias, float* y) {
  if (n <= kGemvMaxRows) GemvRows(x, n, w, y);
  else GemmRows(x, n, w, y);
  if (bias) AddBias(bias, n, w.rows(), y);
}

void MatMulShared(const float* x, int64_t n, std::span<const MatMulJob> jobs) {
  if (n <= kGemvMaxRows) {
    GemvJobs(x, n, jobs);
  } else {
    for (const MatMulJob& j : jobs) GemmRows(x, n, *j.w, j.y);
  }
  for (const MatMulJob& j : jobs)
    if (j.bias) AddBias(j.bias, n, j.w->rows(), j.y);
}

}  // namespace atp
