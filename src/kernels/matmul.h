// Y = X W^T for weights in their file dtype (f32/f16/bf16 or any block dtype of core/dtype.h), accumulating in f32.
// Few rows (decode) go through our own threaded AVX-512/AVX2 GEMV, which reads each weight once; for
// block weights (Q8_0, Q4_0, the k-quants, ...) it quantizes x to 8-bit blocks once per call and takes
// integer dot products on the packed blocks (kernels/q8_dot.h, AVX512-VNNI or AVX2), so those results
// carry the activations' quantization error too (as llama.cpp's do); f32/f16/bf16 weights see f32 x.
// Block weights may be interleaved in groups of 8 rows (TensorView::interleaved, core/interleave.h),
// which the GEMV reads 8 rows at a time and the GEMM's panels convert back.
// Many rows (prefill): the block weights of IntegerPrefill through the same integer GEMV, the others
// through OpenBLAS sgemm on f32 panels converted on the fly.
// Threads: both paths split output columns over ThreadPool::Global(); OpenBLAS is set to one thread
// on first use (each pool thread runs its own sgemm), so its spinning threads never compete with the pool.
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace atp {

// Rows of X at or below this count take the GEMV path.
constexpr int kGemvMaxRows = 8;

// Whether w takes the integer GEMV at any number of rows (prefill included): block weights in groups
// of 8 interleaved rows (the default layout), of every block type. Measured on atp-40m's
// llama-quantize files (pp512, 2026-12-07, AVX512-VNNI Xeon), integer GEMV against sgemm on
// dequantized panels at 1 / 2 threads: Q4_0 1.34 / 1.35, Q4_1 1.32 / 1.36, Q5_0 1.24 / 1.30, Q5_1
// 1.21 / 1.15, Q4_K_M 1.20 / 1.21, Q8_0 1.12 / 1.12, IQ4_NL 1.07 / 1.07, IQ4_XS 0.97 / 1.12, Q5_K_M
// 1.01 / 1.00. Q2_K/Q3_K/Q6_K, whose scales change every 16 elements, measured 0.71-0.85 then; with
// their loops unrolled (q8_dot.cpp, 163505f), the llama-3.2-1b shape's files at one thread, two
// alternations: Q2_K 72.7/74.1 against 60.8/63.9 tok/s, Q6_K 66.6/70.4 against 62.0/62.4, but
// Q3_K_M 66.7/68.4 against 72.4/72.1, so Q3_K stayed on sgemm until its group kernel's scales were
// decoded at once (839c63a): Q3_K_M 74.5/73.6/74.3 against 74.5/71.1/72.6 (three alternations), and
// the Q2_K file (20% Q3_K) 75.6/78.9/82.0 against 72.7/77.8/77.9. In ggml's row order (--no-repack) the
// row-by-row kernels prefilled at half sgemm's rate (atp-40m Q4_0, Q4_K_M, Q8_0, one thread: 707-827
// against 1450-1667 tok/s with the rows grouped), so such weights take sgemm.
bool IntegerPrefill(const TensorView& w);

// x: (n, in) f32 row-major; w: (out, in), in a multiple of the block (32 or 256) for block dtypes; y: (n, out). bias (out) f32 or null.
void MatMul(const float* x, int64_t n, const TensorView& w, const float* bias, float* y);

// Several products of the same x (the q/k/v projections, gate and up): y_i = x W_i^T (+ bias_i).
// Same result as one MatMul per job; on the GEMV path all jobs share one pass of the thread pool
// (one synchronization and one work queue instead of one per matrix).
struct MatMulJob {
  const TensorView* w;   // (out_i, in), every job the same `in`
  const float* bias;     // (out_i) f32 or null
  float* y;              // (n, out_i)
};
void MatMulShared(const float* x, int64_t n, std::span<const MatMulJob> jobs);

// Sets OpenBLAS to one thread, once; GEMM and every LAPACK caller (src/kv/linalg) call it first.
// Its own threads would fight the pool for the cores, and LAPACK's results (e.g. the singular
// vectors of a rank-deficient block) change with the thread count: a result must not depend on
// whether the process happened to run a GEMM before.
void UseSingleThreadedBlas();

// The two paths, exposed so tests can check each against a scalar reference.
void GemvRows(const float* x, int64_t n, const TensorView& w, float* y);
void GemmRows(const float* x, int64_t n, const TensorView& w, float* y);

}  // namespace atp
