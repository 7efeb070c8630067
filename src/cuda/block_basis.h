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

// For blocks z = 0 .. n-1 of B rows (block 0 at `first` when it is not null, the others `B * ld`
// floats apart from `rest`; row i of a block at i * ld) and `heads` matrices per block: matrix
// m = z * heads + h is the B x d slice of columns [h * d, (h + 1) * d) (heads = 1, ld = d: a block's
// whole rows, atp basis=input; heads = n_kv, d = head_dim, ld = kv_dim: each KV head's keys,
// basis=key). U (n * heads, B, B) f32 whose column c of matrix m is the singular vector of its c-th
// largest singular value, sign-fixed (entries sum to >= 0), and ranks (n * heads) the rank kept
// (`rank` when tau <= 0, else the smallest reaching tau of the energy; kv/linalg.h).
// Requires 1 <= B <= kMaxBasisBlock and d >= B.
// keep > 0 (atp keep=E; split not null): also split (n * heads, B) int32: per matrix its rows
// 0 .. B-1 ordered as kv/atp_policy.cpp's SplitWorstSummarized splits them, the B - keep it
// summarizes first (ascending), then the `keep` whose energy outside the top ranks[m] directions,
// sum_{c >= r} (U_ic S_c)^2, is largest (ascending; ties to the earlier row). The energies are the
// CPU's expression (float U and S, S_c = float(sqrt(eigenvalue)) as tau's, products and sum in
// double, c in order) over singular vectors that agree with LAPACK's to ~1e-13, so the choice is the
// CPU's unless two rows' energies lie within rounding of each other.
void BlockBases(const float* first, const float* rest, int n, int heads, int B, int d, int64_t ld, int rank, double tau,
                float* U, int32_t* ranks, cudaStream_t s, int keep = 0, int32_t* split = nullptr);

// Principal rows of n blocks, `heads` slices of `width` columns each (as BlockBases' matrices): for
// block z and slice h, column c < ranks[z * heads + h] of U_(z, h) (B, B; matrix z * heads + h of U)
// and the slice's rows of K_z, V_z (block z's B rows, `ld` floats apart; blocks back to back), row
// ranks[0] + .. + ranks[(z-1) * heads] + c of PK and PV (rows `ld` floats apart, the slice at column
// h * width) = sum_i U[i][c] K_z[i] (and V), summed in i order with separate roundings like the CPU
// policy's loop, so both get the same floats from the same U. Every slice of a block has the same
// rank (heads > 1 only with a fixed rank); max_rank bounds it. extra > 0 (atp keep=E): each block's
// principal rows are followed by `extra` rows copied from KK and KV (block z's at rows z * extra ..
// of them, `ld` floats apart, the slice at column h * width): PK row R_z + ranks[z * heads] + j is
// KK row z * extra + j, where R_z = ranks[0] + .. + ranks[(z-1) * heads] + z * extra is where block
// z's rows begin. Also the blocks' ends for cuda::Visibility: ends[z] = base + R_(z+1), written on
// the device, so a block needs no host-to-device copy (which would synchronize the host).
void PrincipalRows(const float* U, const int32_t* ranks, int n, int heads, int B, int max_rank, const float* K,
                   const float* V, int width, int64_t ld, float* PK, float* PV, int64_t base, int32_t* ends, cudaStream_t s,
                   int extra = 0, const float* KK = nullptr, const float* KV = nullptr);

}  // namespace atp::cuda
