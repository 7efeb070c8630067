#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "core/interleave.h"
#include "core/thread_pool.h"
#include "kernels/q8_dot.h"
#include "kernels/simd.h"

namespace atp {

namespace {

inline float ScalarW(const void* w, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(w)[i];
    case DType::kBF16: return Bf16ToF32(static_cast<const uint16_t*>(w)[i]);
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(w)[i]);
    default: break;  // rows of blocks go through DotRowQ8
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

// Each step asks for the row's lines 1 KiB ahead: on the 2026-12-07 Xeon the llama-3.2-1b shape's f16
// decode (weights from memory) took 197/194 ms a token at one thread against 209/209 without, and
// 241/242 with 4 KiB; atp-40m's (in L3) 4.0/3.5 against 4.5/5.5 (2 alternating rounds, noisy).
constexpr int64_t kRowPrefetchAhead = 1024;
template <int R, int U, typename T>
inline void DotRow(const T* w, int64_t in, DType t, const float* x, float* y, int64_t out) {
  using namespace simd;
  constexpr int kLines = std::max<int>(1, U * kLanes * int(sizeof(T)) / 64);  // a step's bytes, in lines
  Vec acc[R][U];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u) acc[r][u] = Zero();
  int64_t i = 0;
  for (; i + U * kLanes <= in; i += U * kLanes) {
    for (int l = 0; l < kLines; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(w + i) + kRowPrefetchAhead + 64 * l, _MM_HINT_T0);
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
#else
template <int R, int U, typename T>
inline void DotRow(const T* w, int64_t in, DType t, const float* x, float* y, int64_t out) {
  for (int r = 0; r < R; ++r) {
    float s = 0;
    for (int64_t j = 0; j < in; ++j) s += ScalarW(w, t, j) * x[r * in + j];
    y[r * out] = s;
  }
}
#endif

// Output rows [b, e) for R rows of x (x: (R, in), y: (R, out) with row stride out).
template <int R>
void GemvRange(const TensorView& w, const float* x, float* y, int64_t b, int64_t e) {
  constexpr int U = R == 1 ? 8 : R == 2 ? 4 : R <= 4 ? 2 : 1;  // 8 chains at R=1 measured ~3% faster than 4
  const int64_t out = w.rows(), in = w.cols();
  const DType t = w.dtype;
  const size_t row_bytes = DTypeBytes(t, in);
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t o = b; o < e; ++o) {
    const uint8_t* row = base + size_t(o) * row_bytes;
    switch (t) {
      case DType::kF32: DotRow<R, U>(reinterpret_cast<const float*>(row), in, t, x, y + o, out); break;
      case DType::kF16:
      case DType::kBF16: DotRow<R, U>(reinterpret_cast<const uint16_t*>(row), in, t, x, y + o, out); break;
      default: std::abort();  // block dtypes go through DotRowQ8 (GemvSlice)
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

// Rows [b, e) of y = x W^T for all n rows of x, in groups of kGemvMaxRows. Weights with an integer
// kernel (HasQ8Dot) read xq, x's rows as 8-bit blocks (kernels/q8_dot.h); the others x. An interleaved
// w's slice starts at a group (GemvJobs' chunks are whole groups).
void GemvSlice(const float* x, const Q8Rows& xq, int64_t n, const TensorView& w, float* y, int64_t b, int64_t e) {
  const int64_t out = w.rows(), in = w.cols();
  const bool q8 = HasQ8Dot(w.dtype);
  const size_t row_bytes = DTypeBytes(w.dtype, in);
  // Interleaved: the whole groups in [b, e) (b is a group's first row), then the rows after them.
  const int64_t grouped = w.interleaved ? std::max(b, std::min(e, w.rows() / kInterleaveRows * kInterleaveRows)) : b;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r0 = 0; r0 < n; r0 += kGemvMaxRows) {
    const int rows = int(std::min<int64_t>(kGemvMaxRows, n - r0));
    if (grouped > b)
      DotRowsQ8x8(w.dtype, base + size_t(b) * row_bytes, (grouped - b) / kInterleaveRows, in, xq.From(r0), rows,
                  y + r0 * out + b, out);
    if (q8 && e > grouped)
      DotRowQ8(w.dtype, base + size_t(grouped) * row_bytes, e - grouped, in, xq.From(r0), rows, y + r0 * out + grouped, out);
    else if (!q8)
      GemvDispatch(rows, w, x + r0 * in, y + r0 * out, b, e);
  }
}

// y_i = x W_i^T for every job, in one pass of the pool. The output rows of all jobs form one list of
// chunks (~256 KiB of weights each), split into one contiguous region per thread. A thread streams
// its own region front to back (one sequential stream: measured ~7% faster than interleaved
// chunks), and when done takes chunks from the back of another region. On a shared machine a thread
// slowed by another tenant on its core then costs little instead of making the other wait.
// Weights with an integer kernel (HasQ8Dot) read x quantized to 8-bit blocks, made here once for all
// jobs and threads (n * in values; every job has the same `in`).
void GemvJobs(const float* x, int64_t n, std::span<const MatMulJob> jobs) {
  ThreadPool& pool = ThreadPool::Global();
  static thread_local Q8Buffer q8;  // the calling thread's; reused across calls
  Q8Rows xq;
  if (std::any_of(jobs.begin(), jobs.end(), [](const MatMulJob& j) { return HasQ8Dot(j.w->dtype); }))
    xq = q8.Quantize(x, n, jobs[0].w->cols());
  struct Span { const MatMulJob* job; int64_t chunk_rows, first_chunk; };
  std::vector<Span> spans;
  int64_t chunks = 0;
  for (const MatMulJob& j : jobs) {
    const int64_t row_bytes = std::max<int64_t>(1, int64_t(DTypeBytes(j.w->dtype, j.w->cols())));
    // Many rows of x (a prefill through the integer kernels) make each chunk's work n / 8 passes over
    // its weights: smaller chunks stay in cache across the passes and balance the threads.
    const int64_t chunk_bytes = n <= kGemvMaxRows ? int64_t(256) << 10 : int64_t(32) << 10;
    int64_t rows = std::max<int64_t>(1, chunk_bytes / row_bytes);
    if (j.w->interleaved) rows = (rows + kInterleaveRows - 1) / kInterleaveRows * kInterleaveRows;  // whole groups
    spans.push_back({&j, rows, chunks});
    chunks += (j.w->rows() + rows - 1) / rows;
  }
  auto run_chunk = [&](int64_t c) {
    size_t s = spans.size() - 1;
    while (spans[s].first_chunk > c) --s;
    const Span& sp = spans[s];
    const int64_t b = (c - sp.first_chunk) * sp.chunk_rows;
    GemvSlice(x, xq, n, *sp.job->w, sp.job->y, b, std::min(sp.job->w->rows(), b + sp.chunk_rows));
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
      RowsToF32(w, o0, rows, buf.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(rows), int(in), 1.0f, x, int(in), buf.data(),
                  int(in), 0.0f, y + o0, int(out));
    }
  });
}

bool IntegerPrefill(const TensorView& w) { return w.interleaved && HasQ8Dot(w.dtype); }

void MatMul(const float* x, int64_t n, const TensorView& w, const float* bias, float* y) {
  if (n <= kGemvMaxRows || IntegerPrefill(w)) GemvRows(x, n, w, y);
  else GemmRows(x, n, w, y);
  if (bias) AddBias(bias, n, w.rows(), y);
}

void MatMulShared(const float* x, int64_t n, std::span<const MatMulJob> jobs) {
  if (n <= kGemvMaxRows) {
    GemvJobs(x, n, jobs);
  } else {  // IntegerPrefill's block weights through the integer kernels, the others through sgemm
    std::vector<MatMulJob> integer;
    for (const MatMulJob& j : jobs) {
      if (IntegerPrefill(*j.w)) integer.push_back(j);
      else GemmRows(x, n, *j.w, j.y);
    }
    if (!integer.empty()) GemvJobs(x, n, integer);
  }
  for (const MatMulJob& j : jobs)
    if (j.bias) AddBias(j.bias, n, j.w->rows(), j.y);
}

}  // namespace atp
