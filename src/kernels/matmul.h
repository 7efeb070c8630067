// Y = X W^T for weights in their file dtype (f32/f16/bf16), accumulating in f32.
// Few rows (decode) go through our own threaded AVX-512/AVX2 GEMV, which reads each weight once;
// many rows (prefill) go through OpenBLAS sgemm on f32 panels converted on the fly.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace atp {

// Rows of X at or below this count take the GEMV path.
constexpr int kGemvMaxRows = 8;

// x: (n, in) f32 row-major; w: (out, in); y: (n, out). bias (out) f32 or null.
void MatMul(const float* x, int64_t n, const TensorView& w, const float* bias, float* y);

// The two paths, exposed so tests can check each against a scalar reference.
void GemvRows(const float* x, int64_t n, const TensorView& w, float* y);
void GemmRows(const float* x, int64_t n, const TensorView& w, float* y);

}  // namespace atp
