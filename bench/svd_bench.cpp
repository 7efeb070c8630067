// The ATP block basis three ways, timed at the engine's block shapes (B rows of the layer input X,
// B x d): LAPACK's thin SVD (sgesdd, what kv/atp_policy uses), the Gram route (X X^T, B x B, then
// ssyevd), and a randomized SVD (Halko et al. 2011: Gaussian sketch of r+8 columns, one power
// iteration, QR, SVD of the small projection). Accuracy is reported next to time as the counter
// `energy`: ||U_r^T X||_F^2 over the best rank-r energy (1 = exact), so "faster at equal accuracy"
// can be read off one run. Run: ./build/atp_microbench --benchmark_filter=Basis
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <lapacke.h>

#include <cmath>
#include <random>
#include <vector>

#include "kv/linalg.h"

namespace atp {
namespace {

// B x d with singular values exp(-i/8) on random orthonormal-ish directions plus 1% noise: a decaying
// spectrum like the measured one (docs/results.md section 4: 90% of a 128-token window's energy in
// 20-67 directions), so the randomized method is not flattered by an exactly low-rank input.
std::vector<float> DecayingMatrix(int B, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> U(size_t(B) * B), V(size_t(B) * d), X(size_t(B) * d, 0.f);
  for (auto& x : U) x = n(rng) / std::sqrt(float(B));
  for (auto& x : V) x = n(rng) / std::sqrt(float(d));
  for (int i = 0; i < B; ++i)
    for (int k = 0; k < B; ++k) {
      const float s = std::exp(-k / 8.f) * U[size_t(i) * B + k];
      for (int j = 0; j < d; ++j) X[size_t(i) * d + j] += s * V[size_t(k) * d + j];
    }
  for (auto& x : X) x += 0.01f * n(rng) / std::sqrt(float(d));
  return X;
}

// ||U_r^T X||_F^2 for U (B x ldu, row-major, first r columns used).
double CapturedEnergy(const std::vector<float>& X, int B, int d, const std::vector<float>& U, int ldu, int r) {
  double e = 0;
  for (int c = 0; c < r; ++c)
    for (int j = 0; j < d; ++j) {
      double p = 0;
      for (int i = 0; i < B; ++i) p += double(U[size_t(i) * ldu + c]) * X[size_t(i) * d + j];
      e += p * p;
    }
  return e;
}

// U (B x r) of the randomized SVD: Y = (X X^T) X Omega, orthonormalized, then the SVD of Q^T X.
void RandomizedBasis(const std::vector<float>& X, int B, int d, int r, std::mt19937& rng, std::vector<float>* U) {
  const int l = std::min(B, r + 8);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> omega(size_t(d) * l), Y(size_t(B) * l), Z(size_t(d) * l);
  for (auto& x : omega) x = n(rng);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l, d, 1.f, X.data(), d, omega.data(), l, 0.f, Y.data(), l);
  // One power iteration sharpens a slowly decaying spectrum: Y <- X (X^T Y).
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, l, B, 1.f, X.data(), d, Y.data(), l, 0.f, Z.data(), l);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l, d, 1.f, X.data(), d, Z.data(), l, 0.f, Y.data(), l);
  std::vector<float> tau(static_cast<size_t>(l));
  LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, B, l, Y.data(), l, tau.data());
  LAPACKE_sorgqr(LAPACK_ROW_MAJOR, B, l, l, Y.data(), l, tau.data());  // Y is now Q (B x l)
  std::vector<float> small(size_t(l) * d), Us, S, Vt;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l, d, B, 1.f, Y.data(), l, X.data(), d, 0.f, small.data(), d);
  (void)ThinSvd(small.data(), l, d, &Us, &S, &Vt);  // shapes are valid by construction
  U->assign(size_t(B) * r, 0.f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, r, l, 1.f, Y.data(), l, Us.data(), l, 0.f, U->data(), r);
}

// args: B, d, r, method (0 sgesdd, 1 Gram + ssyevd, 2 randomized).
void BM_BasisOfBlock(benchmark::State& st) {
  const int B = int(st.range(0)), d = int(st.range(1)), r = int(st.range(2)), method = int(st.range(3));
  const auto X = DecayingMatrix(B, d, 7);
  std::vector<float> U, S, Vt;
  (void)ThinSvd(X.data(), B, d, &U, &S, &Vt);
  double best = 0;
  for (int i = 0; i < r; ++i) best += double(S[size_t(i)]) * S[size_t(i)];
  std::mt19937 rng(11);
  std::vector<float> G(size_t(B) * B), vals, basis;
  int ldu = B;
  for (auto _ : st) {
    if (method == 0) {
      (void)ThinSvd(X.data(), B, d, &basis, &S, &Vt);
      ldu = B;
    } else if (method == 1) {
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, B, d, 1.f, X.data(), d, 0.f, G.data(), B);
      (void)SymmetricEigen(G, B, &basis, &vals);
      ldu = B;
    } else {
      RandomizedBasis(X, B, d, r, rng, &basis);
      ldu = r;
    }
    benchmark::DoNotOptimize(basis.data());
  }
  st.counters["energy"] = CapturedEnergy(X, B, d, basis, ldu, r) / best;
  st.SetLabel(method == 0 ? "sgesdd" : method == 1 ? "gram+ssyevd" : "randomized");
}
// Blocks of 32 and 64 at ref-5m's (256), atp-40m's (512) and Llama-3.2-1B's (2048) width, r/B = 1/2 and 1/4.
void BlockShapes(benchmark::internal::Benchmark* b) {
  for (int B : {32, 64})
    for (int d : {256, 512, 2048})
      for (int r : {B / 2, B / 4})
        for (int method : {0, 1, 2}) b->Args({B, d, r, method});
}
BENCHMARK(BM_BasisOfBlock)->Apply(BlockShapes)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace atp
