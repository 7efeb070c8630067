#include "kv/linalg.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>

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

Status BlockSvd(const float* A, int m, int n, std::vector<float>* U, std::vector<float>* S, int vt_rows,
                std::vector<float>* Vt) {
  vt_rows = std::clamp(vt_rows, 0, std::min(m, n));
  if (m > n) {  // a tall block (basis=key with B > head_dim): the Gram matrix would be the larger one
    ATP_RETURN_IF_ERROR(ThinSvd(A, m, n, U, S, Vt));
    Vt->resize(size_t(vt_rows) * size_t(n));
    return Status::Ok();
  }
  UseSingleThreadedBlas();
  std::vector<double> a(A, A + size_t(m) * size_t(n)), g(size_t(m) * size_t(m)), w(static_cast<size_t>(m));
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, n, 1.0, a.data(), n, 0.0, g.data(), m);
  int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', m, g.data(), m, w.data());
  if (info != 0) return Status::InvalidArgument("dsyevd failed (info " + std::to_string(info) + ")");
  // Ascending eigenvalues s_i^2 with eigenvectors in columns: reverse so the largest come first.
  U->assign(size_t(m) * size_t(m), 0.f);
  S->assign(size_t(m), 0.f);
  Vt->assign(size_t(vt_rows) * size_t(n), 0.f);
  for (int c = 0; c < m; ++c) {
    const int src = m - 1 - c;
    (*S)[size_t(c)] = float(std::sqrt(std::max(0.0, w[size_t(src)])));
    for (int i = 0; i < m; ++i) (*U)[size_t(i) * size_t(m) + size_t(c)] = float(g[size_t(i) * size_t(m) + size_t(src)]);
  }
  // v_c = A^T u_c / s_c where s_c carries energy. Where it does not (a rank-deficient block, e.g. a
  // repeated token), v_c is any unit vector orthogonal to the rows before it, as for any SVD: the
  // standard basis vector e_j farthest from their span (|e_j - P e_j|^2 = 1 - sum_p v_p[j]^2, at least
  // (n - c) / n for the best j), orthogonalized, so V stays orthonormal and the choice is deterministic.
  const double negligible = 1e-6 * std::sqrt(std::max(0.0, w[size_t(m - 1)]));
  std::vector<double> v(size_t(vt_rows) * size_t(n), 0.0);
  for (int c = 0; c < vt_rows; ++c) {
    const int src = m - 1 - c;
    const double s = std::sqrt(std::max(0.0, w[size_t(src)]));
    double* row = &v[size_t(c) * size_t(n)];
    if (s > negligible) {
      for (int i = 0; i < m; ++i) cblas_daxpy(n, g[size_t(i) * size_t(m) + size_t(src)] / s, &a[size_t(i) * size_t(n)], 1, row, 1);
      continue;
    }
    std::vector<double> in_span(size_t(n), 0.0);
    for (int p = 0; p < c; ++p)
      for (int j = 0; j < n; ++j) in_span[size_t(j)] += v[size_t(p) * size_t(n) + size_t(j)] * v[size_t(p) * size_t(n) + size_t(j)];
    const int j = int(std::min_element(in_span.begin(), in_span.end()) - in_span.begin());
    row[j] = 1.0;
    for (int p = 0; p < c; ++p) {
      const double* prev = &v[size_t(p) * size_t(n)];
      cblas_daxpy(n, -prev[j], prev, 1, row, 1);
    }
    cblas_dscal(n, 1.0 / cblas_dnrm2(n, row, 1), row, 1);
  }
  for (size_t i = 0; i < v.size(); ++i) (*Vt)[i] = float(v[i]);
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
