// Kernels behind cuda/block_basis.h.
#include <cmath>

#include "cuda/block_basis.h"

namespace atp::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kLd = kMaxBasisBlock + 1;  // row stride of the shared matrices (odd: no bank conflicts)
constexpr int kXc = 64;                  // columns of X staged per step of the Gram product

struct BasisSmem {
  static constexpr size_t kA = 0, kV = kA + sizeof(double) * kMaxBasisBlock * kLd,
                          kX = kV + sizeof(double) * kMaxBasisBlock * kLd,
                          kRot = kX + sizeof(float) * kMaxBasisBlock * (kXc + 1),
                          kBytes = kRot + sizeof(double) * kMaxBasisBlock + sizeof(int) * 2 * kMaxBasisBlock;
};

// Sum over the block; every thread gets the total. `red` holds one double per warp.
__device__ double BlockSum(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  double t = 0;
  for (int w = 0; w < kThreads / 32; ++w) t += red[w];
  __syncthreads();
  return t;
}

// The players of round `round` of a round-robin over m + 1 players (0 fixed, 1..m on a circle,
// m odd): pair i of m/2 + 1. Every pair of indices meets once in m rounds: one Jacobi sweep.
__device__ void RoundPair(int round, int i, int m, int* p, int* q) {
  const auto at = [&](int j) { return (j + round) % m + 1; };
  if (i == 0) {
    *p = 0, *q = at(0);
  } else {
    *p = at(i), *q = at(m - i);
  }
}

// One thread block per matrix: G = X X^T in double, cyclic Jacobi until the off-diagonal mass is
// below 1e-26 of the total mass (norm 1e-13; at most 40 sweeps), then columns sorted by
// descending eigenvalue, signs fixed and the rank chosen exactly as kv/linalg.cpp does.
__global__ void __launch_bounds__(kThreads) BasisKernel(const float* first, const float* rest, int heads, int B, int d,
                                                         int64_t ld, int rank, double tau, float* U, int32_t* ranks,
                                                         int keep, int32_t* split) {
  extern __shared__ __align__(16) unsigned char smem[];
  double* A = reinterpret_cast<double*>(smem + BasisSmem::kA);
  double* V = reinterpret_cast<double*>(smem + BasisSmem::kV);
  float* Xs = reinterpret_cast<float*>(smem + BasisSmem::kX);
  double* cs = reinterpret_cast<double*>(smem + BasisSmem::kRot);  // (pairs) cos, then sin
  int* pq = reinterpret_cast<int*>(cs + kMaxBasisBlock);           // (pairs) p, q
  __shared__ double red[kThreads / 32];
  __shared__ int kept_rank;  // the rank chosen, for keep's split
  const int z = blockIdx.x, zb = z / heads;  // matrix z: slice z % heads of block zb
  const float* X = (first ? (zb == 0 ? first : rest + int64_t(zb - 1) * B * ld) : rest + int64_t(zb) * B * ld) +
                   int64_t(z % heads) * d;

  // Gram in double: thread t accumulates entries t, t + kThreads, ... of the B x B matrix.
  constexpr int kPer = kMaxBasisBlock * kMaxBasisBlock / kThreads;
  double acc[kPer] = {};
  for (int c0 = 0; c0 < d; c0 += kXc) {
    const int w = min(kXc, d - c0);
    __syncthreads();
    for (int e = threadIdx.x; e < B * kXc; e += kThreads) {
      const int i = e / kXc, c = e % kXc;
      Xs[i * (kXc + 1) + c] = c < w ? X[int64_t(i) * ld + c0 + c] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int e = threadIdx.x + k * kThreads, i = e / kMaxBasisBlock, j = e % kMaxBasisBlock;
      if (i < B && j < B)
        for (int c = 0; c < w; ++c) acc[k] += double(Xs[i * (kXc + 1) + c]) * double(Xs[j * (kXc + 1) + c]);
    }
  }
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int e = threadIdx.x + k * kThreads, i = e / kMaxBasisBlock, j = e % kMaxBasisBlock;
    if (i < B && j < B) A[i * kLd + j] = acc[k], V[i * kLd + j] = i == j ? 1.0 : 0.0;
  }
  __syncthreads();

  // An odd B gets a dummy player B (a zero row and column) whose rotations are the identity.
  const int n = B + (B & 1), m = n - 1, pairs = n / 2;
  if (threadIdx.x == 0 && (B & 1)) {
    for (int j = 0; j < n; ++j) A[B * kLd + j] = A[j * kLd + B] = 0, V[B * kLd + j] = V[j * kLd + B] = j == B;
  }
  __syncthreads();
  for (int sweep = 0; sweep < 40; ++sweep) {
    double off = 0, all = 0;
    for (int e = threadIdx.x; e < B * B; e += kThreads) {
      const double a = A[(e / B) * kLd + e % B];
      all += a * a;
      if (e / B != e % B) off += a * a;
    }
    off = BlockSum(off, red);
    all = BlockSum(all, red);
    if (!(off > 1e-26 * all)) break;  // off-diagonal norm <= 1e-13 of the whole; every thread gets the same verdict
    for (int round = 0; round < m; ++round) {
      if (threadIdx.x < pairs) {
        int p, q;
        RoundPair(round, threadIdx.x, m, &p, &q);
        double c = 1, s = 0;
        const double apq = A[p * kLd + q];
        if (p < B && q < B && apq != 0) {  // Numerical Recipes' rotation: A' = J^T A J zeroes A'[p][q]
          // t = tan of the angle, the smaller root of t^2 + 2 theta t - 1 = 0 for theta = (aqq - app) / 2apq,
          // written with one division; c = rsqrt(1 + t^2) keeps c^2 + s^2 = 1 to double precision.
          const double h = A[q * kLd + q] - A[p * kLd + p], g = 2 * apq;
          const double t = (h >= 0 ? g : -g) / (fabs(h) + sqrt(h * h + g * g));
          c = rsqrt(t * t + 1), s = t * c;
        }
        cs[threadIdx.x] = c, cs[kMaxBasisBlock / 2 + threadIdx.x] = s;
        pq[2 * threadIdx.x] = p, pq[2 * threadIdx.x + 1] = q;
      }
      __syncthreads();
      // The pairs are disjoint, so A' = J^T A J splits into 2 x 2 blocks (rows of pair k, columns
      // of pair l), each read and written by one thread: one pass, no barrier inside the round.
      for (int e = threadIdx.x; e < pairs * pairs; e += kThreads) {
        const int k = e / pairs, l = e % pairs, p = pq[2 * k], q = pq[2 * k + 1], u = pq[2 * l], w = pq[2 * l + 1];
        const double ck = cs[k], sk = cs[kMaxBasisBlock / 2 + k], cl = cs[l], sl = cs[kMaxBasisBlock / 2 + l];
        const double apu = A[p * kLd + u], apw = A[p * kLd + w], aqu = A[q * kLd + u], aqw = A[q * kLd + w];
        const double bpu = ck * apu - sk * aqu, bpw = ck * apw - sk * aqw;  // J^T A: rows p, q
        const double bqu = sk * apu + ck * aqu, bqw = sk * apw + ck * aqw;
        A[p * kLd + u] = cl * bpu - sl * bpw, A[p * kLd + w] = sl * bpu + cl * bpw;  // (J^T A) J: columns u, w
        A[q * kLd + u] = cl * bqu - sl * bqw, A[q * kLd + w] = sl * bqu + cl * bqw;
      }
      for (int e = threadIdx.x; e < pairs * n; e += kThreads) {  // V J: columns p, q of every row
        const int k = e / n, row = e % n, p = pq[2 * k], q = pq[2 * k + 1];
        const double c = cs[k], s = cs[kMaxBasisBlock / 2 + k], vp = V[row * kLd + p], vq = V[row * kLd + q];
        V[row * kLd + p] = c * vp - s * vq, V[row * kLd + q] = s * vp + c * vq;
      }
      __syncthreads();
    }
  }

  // Order by descending eigenvalue (stable), then per column: float entries, sign by their sum.
  int* order = pq;
  if (threadIdx.x < B) {
    const double me = A[threadIdx.x * kLd + threadIdx.x];
    int before = 0;
    for (int j = 0; j < B; ++j) {
      const double o = A[j * kLd + j];
      before += o > me || (o == me && j < int(threadIdx.x));
    }
    order[before] = threadIdx.x;
  }
  __syncthreads();
  float* Uz = U + int64_t(z) * B * B;
  if (threadIdx.x < B) {
    const int c = threadIdx.x, src = order[c];
    double sum = 0;
    for (int i = 0; i < B; ++i) sum += double(float(V[i * kLd + src]));
    const float sign = sum < 0 ? -1.f : 1.f;
    for (int i = 0; i < B; ++i) Uz[i * B + c] = sign * float(V[i * kLd + src]);
  }
  if (threadIdx.x == 0) {
    int r = min(max(rank, 1), B);
    if (tau > 0) {
      double total = 0, acc = 0;
      for (int c = 0; c < B; ++c) {
        const float s = float(sqrt(fmax(0.0, A[order[c] * kLd + order[c]])));
        total += double(s) * s;
      }
      r = B;
      for (int c = 0; c < B; ++c) {
        const float s = float(sqrt(fmax(0.0, A[order[c] * kLd + order[c]])));
        acc += double(s) * s;
        if (acc >= tau * total) {
          r = c + 1;
          break;
        }
      }
    }
    ranks[z] = r;
    kept_rank = r;
  }
  if (keep <= 0 || !split) return;

  // keep=E (block_basis.h): row i's energy outside the top r directions, as the CPU sums it, in cs
  // (free since the rotations); a NaN energy (from NaN inputs) ranks below every number, so that the
  // order stays total and split a permutation.
  __syncthreads();
  double* lost = cs;
  int* kept = pq + kMaxBasisBlock;  // order holds pq[0 .. B)
  if (threadIdx.x < B) {
    double e = 0;
    for (int c = kept_rank; c < B; ++c) {
      const int src = order[c];
      const float s = float(sqrt(fmax(0.0, A[src * kLd + src])));
      const double x = double(float(V[threadIdx.x * kLd + src])) * s;
      e += x * x;
    }
    lost[threadIdx.x] = isnan(e) ? -1.0 : e;
  }
  __syncthreads();
  if (threadIdx.x < B) {  // row i's place in the CPU's stable descending sort: kept iff among the first E
    const int i = threadIdx.x;
    int before = 0;
    for (int j = 0; j < B; ++j) before += lost[j] > lost[i] || (lost[j] == lost[i] && j < i);
    kept[i] = before < keep;
  }
  __syncthreads();
  if (threadIdx.x < B) {  // summarized rows first, then kept ones, each ascending
    const int i = threadIdx.x;
    int at = kept[i] ? B - keep : 0;
    for (int j = 0; j < i; ++j) at += kept[j] == kept[i];
    split[int64_t(z) * B + at] = i;
  }
}

// Block (z, c, h): row c of block z in slice h, if c < its rank + extra (c >= the rank: kept row
// c - rank, copied); threads over the slice's width.
__global__ void PrincipalKernel(const float* U, const int32_t* ranks, int B, const float* K, const float* V, int width,
                                int64_t ld, float* PK, float* PV, int64_t base, int32_t* ends, int extra, const float* KK,
                                const float* KV) {
  const int z = blockIdx.x, c = blockIdx.y, h = blockIdx.z, heads = gridDim.z, m = z * heads + h, r = ranks[m];
  if (c >= r + extra) return;
  int64_t row = c;
  for (int y = 0; y < z; ++y) row += ranks[y * heads] + extra;
  if (c == 0 && h == 0 && threadIdx.x == 0) ends[z] = int32_t(base + row + r + extra);
  if (c >= r) {
    const int64_t from = (int64_t(z) * extra + (c - r)) * ld + int64_t(h) * width;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
      PK[row * ld + int64_t(h) * width + j] = KK[from + j];
      PV[row * ld + int64_t(h) * width + j] = KV[from + j];
    }
    return;
  }
  const float* u = U + int64_t(m) * B * B + c;
  const float* k = K + int64_t(z) * B * ld + int64_t(h) * width;
  const float* v = V + int64_t(z) * B * ld + int64_t(h) * width;
  for (int j = threadIdx.x; j < width; j += blockDim.x) {
    float pk = 0, pv = 0;
    for (int i = 0; i < B; ++i) {
      const float ui = u[int64_t(i) * B];
      pk = __fadd_rn(pk, __fmul_rn(ui, k[int64_t(i) * ld + j]));
      pv = __fadd_rn(pv, __fmul_rn(ui, v[int64_t(i) * ld + j]));
    }
    PK[row * ld + int64_t(h) * width + j] = pk, PV[row * ld + int64_t(h) * width + j] = pv;
  }
}

}  // namespace

void BlockBases(const float* first, const float* rest, int n, int heads, int B, int d, int64_t ld, int rank, double tau,
                float* U, int32_t* ranks, cudaStream_t s, int keep, int32_t* split) {
  if (n <= 0 || heads <= 0) return;
  static const bool opted = [] {
    cudaFuncSetAttribute(BasisKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(BasisSmem::kBytes));
    return true;
  }();
  (void)opted;
  BasisKernel<<<unsigned(n * heads), kThreads, BasisSmem::kBytes, s>>>(first, rest, heads, B, d, ld, rank, tau, U, ranks,
                                                                       keep, split);
}

void PrincipalRows(const float* U, const int32_t* ranks, int n, int heads, int B, int max_rank, const float* K,
                   const float* V, int width, int64_t ld, float* PK, float* PV, int64_t base, int32_t* ends, cudaStream_t s,
                   int extra, const float* KK, const float* KV) {
  if (n <= 0 || heads <= 0 || max_rank <= 0) return;
  PrincipalKernel<<<dim3(unsigned(n), unsigned(max_rank + extra), unsigned(heads)), 128, 0, s>>>(
      U, ranks, B, K, V, width, ld, PK, PV, base, ends, extra, KK, KV);
}

}  // namespace atp::cuda
