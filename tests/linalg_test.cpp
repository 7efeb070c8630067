// kv/linalg: BlockSvd (the Gram route ATP uses) against LAPACK's sgesdd on the same blocks, and on
// rank-deficient blocks, where it must still return an orthonormal V and reconstruct A exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kv/linalg.h"

namespace atp {
namespace {

std::vector<float> RandomBlock(int m, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> a(size_t(m) * n);
  for (auto& x : a) x = nd(rng);
  return a;
}

// max |V V^T - I| over the rows of Vt (rows x n) and max |U diag(S) Vt - A| (U: m x k, first `rows` columns).
void Check(const std::vector<float>& A, int m, int n, const std::vector<float>& U, const std::vector<float>& S,
           const std::vector<float>& Vt, int rows, double* orth, double* rec) {
  const int k = std::min(m, n);
  *orth = 0, *rec = 0;
  for (int a = 0; a < rows; ++a)
    for (int b = 0; b < rows; ++b) {
      double d = 0;
      for (int j = 0; j < n; ++j) d += double(Vt[size_t(a) * n + j]) * Vt[size_t(b) * n + j];
      *orth = std::max(*orth, std::fabs(d - (a == b)));
    }
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double d = 0;
      for (int c = 0; c < rows; ++c) d += double(U[size_t(i) * k + c]) * S[size_t(c)] * Vt[size_t(c) * n + j];
      *rec = std::max(*rec, std::fabs(d - A[size_t(i) * n + j]));
    }
}

TEST(Linalg, BlockSvdMatchesSgesddOnWideBlocks) {
  for (auto [m, n] : {std::pair{32, 256}, std::pair{64, 64}, std::pair{16, 2048}}) {
    const auto A = RandomBlock(m, n, uint32_t(m + n));
    std::vector<float> U, S, Vt, U2, S2, Vt2;
    ASSERT_TRUE(BlockSvd(A.data(), m, n, &U, &S, m, &Vt).ok());
    ASSERT_TRUE(ThinSvd(A.data(), m, n, &U2, &S2, &Vt2).ok());
    // Singular values to 1e-5 of the largest: both are backward stable in f32; the Gram matrix is
    // formed in double, so squaring the condition number costs nothing at f32 output precision.
    for (int i = 0; i < m; ++i) EXPECT_NEAR(S[size_t(i)], S2[size_t(i)], 1e-5 * S2[0]) << m << "x" << n << " i=" << i;
    double orth, rec;
    Check(A, m, n, U, S, Vt, m, &orth, &rec);
    EXPECT_LT(orth, 1e-5) << m << "x" << n;         // f32 storage of double vectors: ~1e-7 per entry
    EXPECT_LT(rec, 1e-4 * S2[0]) << m << "x" << n;  // sums of m f32 products of size <= S[0]
  }
}

TEST(Linalg, BlockSvdOfARankDeficientBlockKeepsVOrthonormal) {
  // Repeated rows (a repeated token at layer 0): rank 20 of 64. The null directions of V are arbitrary,
  // but must complete an orthonormal set, or a basis of full rank r = d would not be the identity.
  const int m = 64, n = 64;
  auto A = RandomBlock(m, n, 5);
  for (int i = 20; i < m; ++i) std::copy_n(&A[size_t(i % 20) * n], n, &A[size_t(i) * n]);
  std::vector<float> U, S, Vt;
  ASSERT_TRUE(BlockSvd(A.data(), m, n, &U, &S, m, &Vt).ok());
  EXPECT_LT(S[20], 1e-4 * S[0]);  // the rank shows in the spectrum
  double orth, rec;
  Check(A, m, n, U, S, Vt, m, &orth, &rec);
  EXPECT_LT(orth, 1e-5);
  EXPECT_LT(rec, 1e-4 * S[0]);
}

TEST(Linalg, BlockSvdOfATallBlockFallsBackToSgesdd) {
  const int m = 128, n = 64;  // basis=key with B = 128 > head_dim
  const auto A = RandomBlock(m, n, 9);
  std::vector<float> U, S, Vt;
  ASSERT_TRUE(BlockSvd(A.data(), m, n, &U, &S, 8, &Vt).ok());
  EXPECT_EQ(U.size(), size_t(m) * n);
  EXPECT_EQ(Vt.size(), size_t(8) * n);
  double orth, rec;
  Check(A, m, n, U, S, Vt, 8, &orth, &rec);
  EXPECT_LT(orth, 1e-5);
}

}  // namespace
}  // namespace atp
