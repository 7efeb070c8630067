// ATP's block bases on the GPU, the twin of kv/linalg.h's BlockSvd + ChooseRank + FixColumnSigns
// for the wide blocks ATP compresses (B rows of width d >= B): the left singular vectors of X_b are
// the eigenvectors of its Gram matrix X_b X_b^T, formed in double and diagonalized by cyclic Jacobi
// rotations inside one thread block per matrix, so that a prefill's hundreds of blocks are one
// launch and no LAPACK call (or host round trip) sits in the forward pass. Launchers only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace atp::cuda {

// Jacobi keeps a block's Gram matrix and eigenvectors in shared memory: B <= 64 (2 x 33 KB of double).
constexpr int kMaxBasisBlock = 64;

// For blocks z = 0 .. n-1 of B rows of width d (row-major f32; block 0 at `first` when it is not
// null, the others back to back from `rest`): U (n, B, B) f32 whose column c is the singular
// vector of the c-th largest singular value, sign-fixed (entries sum to >= 0), and ranks (n) the
// rank kept (`rank` when tau <= 0, else the smallest reaching tau of the energy; kv/linalg.h).
// Requires 1 <= B <= kMaxBasisBlock and d >= B.
void BlockBases(const float* first, const float* rest, int n, int B, int d, int rank, double tau, float* U,
                int32_t* ranks, cudaStream_t s);

// Principal rows of n blocks: for block z, column c < ranks[z] of its U (B, B) and its rows
// K_z, V_z (B, width) f32 (blocks back to back in K and V), row ranks[0] + .. + ranks[z-1] + c of
// PK and PV (width) = sum_i U[i][c] K_z[i] (and V), summed in i order with separate roundings like
// the CPU policy's loop, so both get the same floats from the same U. max_rank bounds ranks[z].
// Also the blocks' ends for cuda::Visibility: ends[z] = base + ranks[0] + .. + ranks[z], written on
// the device, so a block needs no host-to-device copy (which would synchronize the host).
void PrincipalRows(const float* U, const int32_t* ranks, int n, int B, int max_rank, const float* K, const float* V,
                   int width, float* PK, float* PV, int64_t base, int32_t* ends, cudaStream_t s);

}  // namespace atp::cuda
