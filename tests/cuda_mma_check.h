// A test-only kernel (tests/cuda_mma_check.cu): cuda/mma.cuh's fragment helpers on one warp.
#pragma once
#include "core/status.h"

namespace atp::cuda {

// Host arrays of 16 x 16 floats, row-major, each exactly a bf16 value. Through ldmatrix and
// mma.m16n8k16 on one warp: ab_t = A B with B read k-major (ldmatrix.trans, as the prefill kernel
// reads V), ab_n = A B with B read n-major from B's transpose (plain ldmatrix, as it reads K), and
// abc = bf16(A B) C with A B's C fragments repacked as A fragments (as it turns S into P).
Status MmaFragmentCheck(const float* a, const float* b, const float* c, float* ab_t, float* ab_n, float* abc);

}  // namespace atp::cuda
