// Small dense linear algebra for the low-rank policies, through LAPACK (LAPACKE): thin SVD,
// symmetric eigendecomposition, and the rank and sign conventions docs/design.md section 4 fixes.
#pragma once
#include <vector>

#include "core/status.h"

namespace atp {

// A (m x n, row-major) = U diag(S) V^T with k = min(m, n): U (m x k) row-major, S (k) descending,
// Vt (k x n) row-major. A is not modified.
Status ThinSvd(const float* A, int m, int n, std::vector<float>* U, std::vector<float>* S, std::vector<float>* Vt);

// The same decomposition as ThinSvd (U m x k, S k, k = min(m, n)) for the wide blocks ATP compresses,
// with only the first vt_rows rows of Vt (vt_rows x n; none when 0). For m <= n it goes through the
// Gram matrix A A^T (m x m) in double and its eigendecomposition: bench/svd_bench.cpp measured that
// 4-18x faster than sgesdd at the engine's block shapes (B = 32/64 rows of width 256-2048) with the
// same captured energy, and double keeps the squared condition number harmless. Rows of Vt whose
// singular value is negligible (<= 1e-6 of the largest) complete V to an orthonormal set.
Status BlockSvd(const float* A, int m, int n, std::vector<float>* U, std::vector<float>* S, int vt_rows,
                std::vector<float>* Vt);

// Eigenvectors of the symmetric n x n matrix G with the largest eigenvalues first:
// vecs (n x n) row-major with eigenvector i in COLUMN i, vals (n) descending.
Status SymmetricEigen(const std::vector<float>& G, int n, std::vector<float>* vecs, std::vector<float>* vals);

// The rank to keep: `rank` if tau <= 0, else the smallest r whose energy sum(s_i^2) reaches tau of
// the total; clamped to [1, S.size()].
int ChooseRank(const std::vector<float>& S, int rank, double tau);

// Flips each of the first r columns of U (rows x cols, row-major) so that its entries sum to >= 0:
// singular vectors have arbitrary signs and attention scores are not sign-invariant.
void FixColumnSigns(float* U, int rows, int cols, int r);

}  // namespace atp
