#include "kv/linalg.h"

#include <lapacke.h>

#include <algorithm>

#include "kernels/matmul.h"

namespace atp {

Status ThinSvd(const float* A, int m, int n, std::vector<float>* U, std::vector<float>* S, std::vector<float>* Vt) {
  UseSingleThreadedBlas();
  const int k = std::min(m, n);
  std::vector<float> a(A, A + size_t(m) * size_t(n));  // sgesdd destroys its input
  U->assign(size_t(m) * size_t(k), 0.f);
  S->assign(size_t(k), 0.f);
  Vt->assign(size_t(k) * size_t(n), 0.f);
  int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', m, n, a.data(), n, S->data(), U->data(), k, Vt->data(), n);
  if (info != 0) return Status::InvalidArgument("sgesdd failed (info " + std::to_string(info) + ")");
  return Status::Ok();
}

Status SymmetricEigen(const std::vector<float>& G, int n, std::vector<float>* vecs, std::vector<float>* vals) {
  UseSingleThreadedBlas();
  std::vector<float> a = G;
  std::vector<float> w(static_cast<size_t>(n));
  int info = LAPACKE_ssyevd(LAPACK_ROW_MAJOR, 'V', 'U', n, a.data(), n, w.data());
  if (info != 0) return Status::InvalidArgument("ssyevd failed (info " + std::to_string(info) + ")");
  // LAPACK returns ascending eigenvalues; reverse the columns so the largest come first.
  vecs->assign(size_t(n) * size_t(n), 0.f);
  vals->assign(size_t(n), 0.f);
  for (int j = 0; j < n; ++j) {
    (*vals)[size_t(j)] = std::max(0.f, w[size_t(n - 1 - j)]);
    for (int i = 0; i < n; ++i) (*vecs)[size_t(i) * size_t(n) + size_t(j)] = a[size_t(i) * size_t(n) + size_t(n - 1 - j)];
  }
  return Status::Ok();
}

int ChooseRank(const std::vector<float>& S, int rank, double tau) {
  const int k = int(S.size());
  if (tau <= 0) return std::clamp(rank, 1, std::max(1, k));
  double total = 0;
  for (float s : S) total += double(s) * s;
  double acc = 0;
  for (int r = 0; r < k; ++r) {
    acc += double(S[size_t(r)]) * S[size_t(r)];
    if (acc >= tau * total) return r + 1;
  }
  return std::max(1, k);
}

void FixColumnSigns(float* U, int rows, int cols, int r) {
  for (int c = 0; c < r; ++c) {
    double sum = 0;
    for (int i = 0; i < rows; ++i) sum += U[size_t(i) * size_t(cols) + size_t(c)];
    if (sum < 0)
      for (int i = 0; i < rows; ++i) U[size_t(i) * size_t(cols) + size_t(c)] = -U[size_t(i) * size_t(cols) + size_t(c)];
  }
}

}  // namespace atp
