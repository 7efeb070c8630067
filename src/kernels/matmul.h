// Y = X W^T for weights in their file dtype (f32/f16/bf16 or any block dtype of core/dtype.h), accumulating in f32.
// Block weights (Q8_0, Q4_0, the k-quants, ...) go through our own threaded integer GEMV at any
// number of rows: it quantizes x to 8-bit blocks once per call and takes integer dot products on the
// packed blocks (kernels/q8_dot.h), AVX512-VNNI or AVX2, so those results carry the activations'
// quantization error too (as llama.cpp's do, in prefill and decode alike). Held interleaved in groups
// of 8 rows (TensorView::interleaved, core/interleave.h), they are read 8 rows at a time. Prefill
// through them beat sgemm on f32 panels converted on the fly by 1.1-1.35x (atp-40m, pp512).
// f32/f16/bf16 weights see f32 x: few rows (decode) through our own AVX-512/AVX2 GEMV, which reads
// each weight once; many rows (prefill) through OpenBLAS sgemm on f32 panels converted on the fly.
// Threads: both paths split output columns over ThreadPool::Global(); OpenBLAS is set to one thread
// on first use (each pool thread runs its own sgemm), so its spinning threads never compete with the pool.
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace atp {

// Rows of X at or below this count take the GEMV path (block weights take it at any count).
constexpr int kGemvMaxRows = 8;

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
