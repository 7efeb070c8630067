// Element-wise and row-wise kernels of the Llama block: RMSNorm, RoPE, SwiGLU, softmax.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace atp {

// out[r] = x[r] / rms(x[r]) * weight, for n rows of width d. weight in any dtype.
void RmsNorm(const float* x, int64_t n, int64_t d, const TensorView& weight, float eps, float* out);

// Rotates n rows of `heads` heads of width head_dim in place, Hugging Face rotate_half layout:
// pair (i, i + head_dim/2) turns by angle positions[r] * inv_freq[i].
void ApplyRope(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq);

// gate[i] = silu(gate[i]) * up[i] over n elements.
void SiluMul(float* gate, const float* up, int64_t n);

// Numerically stable softmax of x[0..n) in place.
void Softmax(float* x, int64_t n);

// Adds b into a over n elements.
void AddInPlace(float* a, const float* b, int64_t n);

}  // namespace atp
