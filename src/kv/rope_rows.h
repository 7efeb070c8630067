// RoPE for policies that keep keys before RoPE (atp rope=pre, docs/design.md section 4): the forward
// pass hands Append keys rotated at their positions; such a policy turns them back, compresses the
// pre-RoPE keys, and rotates each key it rebuilds at its own position again before a query reads it.
// Layout as kernels/ops.h ApplyRope: Hugging Face rotate_half, pair (i, i + head_dim/2) turns by
// position * inv_freq[i].
#pragma once
#include <cstdint>
#include <vector>

namespace atp {

// Undoes ApplyRope(x, n, heads, head_dim, positions, inv_freq): the same f32 angles turned the other
// way (ApplyRope at -position: float(-p) * f == -(float(p) * f) exactly, and cos/sin are even/odd), so
// x comes back up to f32 rounding of the two rotations.
void UnapplyRope(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq);

// Rotates rows of one head at positions base + offset for offsets in [0, span): cos and sin of the
// base's f32 angle (one trig pair per frequency), composed by angle addition with those of the offsets
// (computed once here). Cheaper than ApplyRope when many blocks of rows are rotated (a decode step
// rotates every rebuilt key); the angle differs from ApplyRope's f32 angle by its rounding,
// |float(p f) - p f| <= 2^-24 p f (1.2e-4 rad at p = 2048, f = 1), far below what the policies that use it lose.
class BlockRope {
 public:
  BlockRope(const std::vector<float>& inv_freq, int span);
  // x: n rows of head_dim (2 * inv_freq.size()) floats, row i at x + i * stride, at position
  // base + offsets[i] (offsets null: base + i; each offset < span).
  void Rotate(float* x, int64_t n, int64_t stride, int64_t base, const int32_t* offsets) const;

 private:
  std::vector<float> inv_freq_;
  int span_ = 0;
  std::vector<float> cos_, sin_;  // (span, half): the offsets' angles
};

}  // namespace atp
