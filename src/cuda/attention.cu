// Kernels behind cuda/attention.h's Attend: split-K decode and tiled prefill over rows in any form
// (read through cuda/kv_rows.cuh), seen through a Visibility.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "cuda/attention.h"
#include "cuda/kv_rows.cuh"
#include "cuda/pdl.cuh"

namespace atp::cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxGroup = 8;  // query heads per KV head that one block serves (decode: GM <= 8)

// --- Decode: split-K over the sequence ---------------------------------------------------------

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / 32;

// The decode chunk: the smallest multiple of 32 in [64, 1024] at which `splits(chunk)` splits (of
// n_kv blocks each) fit `slots`, the blocks the GPU holds at once, so that the grid runs in one wave:
// with ~8 per SM where registers allow 6, the last 30% of the blocks ran as a second wave after the
// first (1.3 waves at 32k on the H200, 51 us per layer); 1024 when none fits. Short sequences get
// fewer blocks. splits(c) does not grow with c, so a bisection finds it; for one range of len rows
// it is ceil(len / (slots / n_kv)) rounded up to 32, clamped.
template <typename Splits>
int DecodeChunk(const AttnShape& a, int64_t slots, Splits splits) {
  const int64_t target = std::max<int64_t>(1, slots / a.n_kv);
  int lo = 2, hi = 32;  // in units of 32 rows; hi always fits (by definition)
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (splits(32 * mid) <= target) hi = mid;
    else lo = mid + 1;
  }
  return 32 * lo;
}

int64_t SplitsOf(int64_t rows, int chunk) { return rows > 0 ? (rows + chunk - 1) / chunk : 0; }

// Where a decode block's work comes from: the batch's tasks and work list in device memory, or (the
// batch of one, Attend's T == 1, with no descriptor upload) one task by value, block b doing split
// slot0 + b.
struct DecodeArgs {
  const DecodeTask* tasks = nullptr;
  const DecodeWork* work = nullptr;
  DecodeTask one;
  int slot0 = 0;
};

// The raw rows begin + base + u * step + lane_row (u < U) of one KV head, lanes c, put in flight
// before any is decoded; rows at or past n stay unloaded. The decode loop's K and V passes.
template <KvFormat F, int U>
__device__ __forceinline__ void LoadAhead(Raw8<F> (&raw)[U], const DeviceRows& rows, int64_t begin, int base, int step,
                                          int lane_row, int n, int kvh, int c) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int jl = base + u * step + lane_row;
    if (jl < n) raw[u] = LoadRaw8<F>(rows, begin + jl, kvh, c);
  }
}

// Block (work unit, kv head): the G query heads of one KV head over one chunk of rows of a task.
// Lanes work in groups of hd/8, one row per group, each lane owning 8 elements of the row; the
// same lane keeps the same 8 query elements in registers for the whole kernel. Writes, per head
// and split, the running max m, the sum l of exp(s - m) and the unnormalized output (hd), to the
// task's partial results (two launches of different forms can fill one task's merge).
// GM: the group size G rounded up to 1, 2, 4 or 8 (register arrays need a compile-time size;
// lanes of heads g >= G compute on zeros and are never stored).
template <KvFormat F, int GM>
__global__ void __launch_bounds__(kDecodeThreads) DecodeKernel(DecodeArgs args, int n_heads, int chunk, float scale,
                                                               float* part) {
  extern __shared__ float smem[];
  LetNextStart();
  WaitForPrevious();
  DecodeWork w{0, args.slot0 + int(blockIdx.x)};
  DecodeTask t;  // copied field by field as used (a select of the two addresses would spill args)
  if (args.work) w = args.work[blockIdx.x];
  if (args.tasks) t = args.tasks[w.task];
  else t = args.one;
  // A task's first pre_splits splits read its principal rows, the rest its exact rows: the merge
  // cannot tell.
  const bool pre = w.split < t.pre_splits;
  const DeviceRows K = pre ? t.pk : t.k, V = pre ? t.pv : t.v;
  const int64_t begin = pre ? int64_t(w.split) * chunk : t.begin + int64_t(w.split - t.pre_splits) * chunk;
  const int64_t end = pre ? t.pre_rows : t.end;
  const int hd = K.dim, G = n_heads / K.n_kv, kvh = blockIdx.y, split = w.split, splits = t.splits;
  const float* q = t.q;
  float* ss = smem;                       // (G, chunk) scores, then exp(s - m)
  float* red = ss + G * chunk;            // (warps, G, hd) per-warp output sums
  float* ml = red + kDecodeWarps * G * hd;  // (G, 2) max and sum per head
  const int n = end > begin ? int(end - begin < chunk ? end - begin : chunk) : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, lpr = hd / 8, rpw = 32 / lpr;
  const int c = lane % lpr, sub = lane / lpr;

  float qr[GM][8];
#pragma unroll
  for (int g = 0; g < GM; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) qr[g][e] = g < G ? q[(kvh * G + g) * hd + c * 8 + e] * scale : 0.f;

  // U rows per lane group and step, loaded before any is decoded: ~64 bytes in flight per lane
  // whatever the form (a bandwidth-bound loop must cover memory latency; packed rows are shorter).
  constexpr int U = kRowsInFlight<F>;
  const int step = kDecodeWarps * rpw;
  for (int base = 0; base < n; base += U * step) {
    Raw8<F> raw[U];
    LoadAhead<F, U>(raw, K, begin, base, step, warp * rpw + sub, n, kvh, c);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int jl = base + u * step + warp * rpw + sub;
      float kv[8];
      Decode8<F>(raw[u], kv);  // garbage past n: its scores stay in its own lane group, unstored
      float dot[GM] = {};
#pragma unroll
      for (int g = 0; g < GM; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) dot[g] += qr[g][e] * kv[e];
#pragma unroll
      for (int g = 0; g < GM; ++g)
        for (int o = lpr / 2; o > 0; o >>= 1) dot[g] += __shfl_xor_sync(kFull, dot[g], o);
      if (jl < n && c == 0)
#pragma unroll
        for (int g = 0; g < GM; ++g)  // unrolled: register arrays take constant indices only
          if (g < G) ss[g * chunk + jl] = dot[g];
    }
  }
  __syncthreads();

  for (int g = warp; g < G; g += kDecodeWarps) {
    float m = -INFINITY, l = 0;
    for (int i = lane; i < n; i += 32) m = fmaxf(m, ss[g * chunk + i]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(kFull, m, o));
    for (int i = lane; i < n; i += 32) {
      const float p = expf(ss[g * chunk + i] - m);
      ss[g * chunk + i] = p;
      l += p;
    }
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(kFull, l, o);
    if (lane == 0) ml[2 * g] = m, ml[2 * g + 1] = l;
  }
  __syncthreads();

  float acc[GM][8] = {};
  for (int base = 0; base < n; base += U * step) {
    Raw8<F> raw[U];
    LoadAhead<F, U>(raw, V, begin, base, step, warp * rpw + sub, n, kvh, c);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int jl = base + u * step + warp * rpw + sub;
      if (jl >= n) continue;
      float vv[8];
      Decode8<F>(raw[u], vv);
#pragma unroll
      for (int g = 0; g < GM; ++g) {
        const float p = g < G ? ss[g * chunk + jl] : 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += p * vv[e];
      }
    }
  }
#pragma unroll
  for (int g = 0; g < GM; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e)
      for (int o = lpr; o < 32; o <<= 1) acc[g][e] += __shfl_xor_sync(kFull, acc[g][e], o);
  if (sub == 0)
#pragma unroll
    for (int g = 0; g < GM; ++g)
      if (g < G)
#pragma unroll
        for (int e = 0; e < 8; ++e) red[(warp * G + g) * hd + c * 8 + e] = acc[g][e];
  __syncthreads();
  for (int i = threadIdx.x; i < G * hd; i += kDecodeThreads) {
    float s = 0;
    for (int w = 0; w < kDecodeWarps; ++w) s += red[w * G * hd + i];
    const int g = i / hd, d = i % hd;
    float* P = part + t.part + (int64_t(kvh * G + g) * splits + split) * (hd + 2);
    P[2 + d] = s;
    if (d == 0) P[0] = ml[2 * g], P[1] = ml[2 * g + 1];
  }
}

constexpr int kCombineThreads = 256;

// Block-wide reduction with op; every thread gets the result. `red` holds one float per warp.
template <typename Op>
__device__ float BlockReduce(float v, Op op, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float t = red[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w) t = op(t, red[w]);
  __syncthreads();  // red is reused by the next reduction
  return t;
}

// Block (h, task) merges head h's splits of a task: the global max, each split's weight
// exp(m_s - M) (0 for an empty split), then threads (d, j) sum the weighted outputs of splits j,
// j + nj, ... in parallel (independent loads: the merge reads up to ~100 KB per head from L2 and
// must not wait on each).
__global__ void __launch_bounds__(kCombineThreads) CombineKernel(DecodeArgs args, int hd, const float* part) {
  extern __shared__ float sw[];  // (splits) weights, then (nj, hd) partial outputs
  __shared__ float red[kCombineThreads / 32];
  LetNextStart();  // the next projection may start loading its weights (cuda/pdl.cuh)
  WaitForPrevious();
  DecodeTask t;
  if (args.tasks) t = args.tasks[blockIdx.y];
  else t = args.one;
  const int h = blockIdx.x, stride = hd + 2, splits = t.splits;
  float* O = t.o;
  const float* P = part + t.part + int64_t(h) * splits * stride;
  float m = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += kCombineThreads) m = fmaxf(m, P[s * stride]);
  const float M = BlockReduce(m, [](float a, float b) { return fmaxf(a, b); }, red);
  float l = 0;
  for (int s = threadIdx.x; s < splits; s += kCombineThreads) {
    const float ms = P[s * stride];
    const float w = ms == -INFINITY ? 0.f : expf(ms - M);
    sw[s] = w;
    l += w * P[s * stride + 1];
  }
  const float L = BlockReduce(l, [](float a, float b) { return a + b; }, red);  // its barrier publishes sw
  const int d = threadIdx.x % hd, j = threadIdx.x / hd, nj = kCombineThreads / hd;
  float o = 0;
  for (int s = j; s < splits; s += nj) o += sw[s] * P[s * stride + 2 + d];
  float* po = sw + splits;
  po[j * hd + d] = o;
  __syncthreads();
  if (j == 0) {
    for (int k = 1; k < nj; ++k) o += po[k * hd + d];
    O[h * hd + d] = o / L;
  }
}

// --- Visibility ----------------------------------------------------------------------------------

// The first position a query at p sees exactly, and the principal rows it sees.
__host__ __device__ __forceinline__ int64_t SeenFrom(const Visibility& v, int64_t p) {
  return CompressedBlocks(v.block, v.window, p) * v.block;
}
__device__ __forceinline__ int64_t PrincipalSeen(const Visibility& v, int64_t p) {
  const int64_t nb = CompressedBlocks(v.block, v.window, p);
  const int64_t n = nb == 0 ? 0 : v.pre_end ? v.pre_end[nb - 1] : nb * v.rows_per_block;
  return v.max_pre >= 0 && n > v.max_pre ? v.max_pre : n;
}

// --- Prefill: tiled online softmax on tensor cores ---------------------------------------------

constexpr int kPrefillThreads = 128;         // 4 warps
constexpr int kQv = 64;                      // query vectors (row, head) per block, 16 per warp
constexpr int kBk = 64;                      // keys per tile
constexpr int kSs = kBk + 4, kPs = kBk + 8;  // row strides of the score (f32) and probability (bf16) tiles

// Shared-memory layout of the prefill kernel for head_dim HD (every array 32-byte aligned, as WMMA
// loads need; row strides padded off multiples of 128 bytes against bank conflicts).
template <int HD>
struct PrefillSmem {
  static constexpr int kQk = HD + 8, kO = HD + 4;  // row strides (elements) of Q/K/V (bf16) and O (f32)
  static constexpr size_t kQ = 0, kK = kQ + 2 * kQv * kQk, kV = kK + 2 * kBk * kQk, kS = kV + 2 * kBk * kQk,
                          kP = kS + 4 * kQv * kSs, kOut = kP + 2 * kQv * kPs, kBytes = kOut + 4 * kQv * kO;
};

// Block (query tile, KV head): query vectors qv = r * G + g for rows tile*BQ + r (BQ = 64 / G) and
// the G query heads of the KV head; warp w owns qv 16w .. 16w+15. Per key tile: S = Q K^T and
// O += P V on bf16 tensor cores (WMMA 16x16x16, f32 accumulation); the online softmax between them
// runs on lane pairs (lanes 2i, 2i+1: row i of the warp, 32 keys each), with O kept in shared memory
// so that rescaling it needs no fragment layout. Q is pre-scaled by 1/sqrt(hd); Q, K, V and P are
// rounded to bf16 (as PyTorch's bf16 SDPA computes); decode stays f32.
// P: the form of the principal rows (F itself for ATP, a KIVI form for KIVI's packed groups).
template <KvFormat F, KvFormat P, int HD>
__global__ void __launch_bounds__(kPrefillThreads) PrefillKernel(DeviceRows K, DeviceRows V, Visibility vis, const float* Q,
                                                                 float* O, int T, int64_t start, int n_heads, float scale) {
  using namespace nvcuda;
  using L = PrefillSmem<HD>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto* Qs = reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kQ);  // (kQv, kQk)
  auto* Ks = reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kK);  // (kBk, kQk)
  auto* Vs = reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kV);  // (kBk, kQk)
  auto* Ss = reinterpret_cast<float*>(smem_raw + L::kS);          // (kQv, kSs) scores
  auto* Ps = reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kP);  // (kQv, kPs) probabilities
  auto* Os = reinterpret_cast<float*>(smem_raw + L::kOut);        // (kQv, kO) unnormalized output
  const int G = n_heads / K.n_kv, BQ = kQv / G, kvh = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = blockIdx.x * BQ;

  for (int i = threadIdx.x; i < kQv * HD; i += kPrefillThreads) {
    const int v = i / HD, d = i % HD, r = row0 + v / G;
    const float x = (v < BQ * G && r < T) ? Q[int64_t(r) * n_heads * HD + (kvh * G + v % G) * HD + d] * scale : 0.f;
    Qs[v * L::kQk + d] = __float2bfloat16_rn(x);
    Os[v * L::kO + d] = 0.f;
  }
  // This lane's softmax row (block-local query vector) and half of each key tile.
  const int qv = warp * 16 + lane / 2, half = lane % 2;
  const bool valid = qv < BQ * G && row0 + qv / G < T;
  // Its position p: it sees principal rows [0, pre) and exact positions [lo, p] (Visibility).
  const int64_t p = start + row0 + qv / G, lo = SeenFrom(vis, p), pre = valid ? PrincipalSeen(vis, p) : 0;
  // The tile's queries together: principal rows [0, pre_hi), then positions [lo_lo, kv_end).
  const int64_t kv_end = start + min(T, row0 + BQ), lo_lo = SeenFrom(vis, start + row0);
  const int64_t pre_hi = PrincipalSeen(vis, kv_end - 1), pre_tiles = (pre_hi + kBk - 1) / kBk;
  const int64_t tiles = pre_tiles + (kv_end - lo_lo + kBk - 1) / kBk;
  float m = -INFINITY, l = 0;

  for (int64_t t = 0; t < tiles; ++t) {
    // Keys kt .. kt + kBk - 1 below `end`: principal row indices, or positions (row = position - first).
    const bool principal = t < pre_tiles;
    const int64_t kt = principal ? t * kBk : lo_lo + (t - pre_tiles) * kBk, end = principal ? pre_hi : kv_end;
    const DeviceRows Kt = principal ? vis.pk : K, Vt = principal ? vis.pv : V;
    const int64_t row_of_key = principal ? 0 : -vis.first;
    __syncthreads();  // the previous tile is consumed (and, first time, Qs and Os are written)
    for (int i = threadIdx.x; i < kBk * (HD / 8); i += kPrefillThreads) {
      const int jj = i / (HD / 8), c = i % (HD / 8);
      float a[8] = {}, b[8] = {};
      if (kt + jj < end && principal) {
        Load8<P>(Kt, kt + jj + row_of_key, kvh, c, a);
        Load8<P>(Vt, kt + jj + row_of_key, kvh, c, b);
      } else if (kt + jj < end) {
        Load8<F>(Kt, kt + jj + row_of_key, kvh, c, a);
        Load8<F>(Vt, kt + jj + row_of_key, kvh, c, b);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        Ks[jj * L::kQk + c * 8 + e] = __float2bfloat16_rn(a[e]);
        Vs[jj * L::kQk + c * 8 + e] = __float2bfloat16_rn(b[e]);
      }
    }
    __syncthreads();

    // S (16 x 64) of this warp = Q (16 x HD) K^T.
#pragma unroll
    for (int j = 0; j < kBk / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int k = 0; k < HD / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kb;  // K^T
        wmma::load_matrix_sync(qa, Qs + warp * 16 * L::kQk + k * 16, L::kQk);
        wmma::load_matrix_sync(kb, Ks + j * 16 * L::kQk + k * 16, L::kQk);
        wmma::mma_sync(acc, qa, kb, acc);
      }
      wmma::store_matrix_sync(Ss + warp * 16 * kSs + j * 16, acc, kSs, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of row qv over keys half*32 .. +32 of the tile.
    float s[kBk / 2];
    float tmax = -INFINITY;
#pragma unroll
    for (int i = 0; i < kBk / 2; ++i) {
      const int64_t j = kt + half * (kBk / 2) + i;
      const bool seen = principal ? j < pre : lo <= j && j <= p;
      s[i] = (valid && seen) ? Ss[qv * kSs + half * (kBk / 2) + i] : -INFINITY;
      tmax = fmaxf(tmax, s[i]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 1));
    const float m_new = fmaxf(m, tmax);
    // Until a row has seen a key (m_new = -inf) nothing accumulates; exp(-inf) = 0 covers m = -inf.
    const float corr = m_new == -INFINITY ? 1.f : expf(m - m_new);
    float ls = 0;
#pragma unroll
    for (int i = 0; i < kBk / 2; ++i) {
      const float e = s[i] == -INFINITY ? 0.f : expf(s[i] - m_new);
      Ps[qv * kPs + half * (kBk / 2) + i] = __float2bfloat16_rn(e);
      ls += e;
    }
    ls += __shfl_xor_sync(kFull, ls, 1);
    l = l * corr + ls;
    m = m_new;
#pragma unroll
    for (int d = 0; d < HD / 2; ++d) Os[qv * L::kO + half * (HD / 2) + d] *= corr;
    __syncwarp();

    // O (16 x HD) of this warp += P (16 x 64) V (64 x HD).
#pragma unroll
    for (int d = 0; d < HD / 16; ++d) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, Os + warp * 16 * L::kO + d * 16, L::kO, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kBk / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vb;
        wmma::load_matrix_sync(pa, Ps + warp * 16 * kPs + k * 16, kPs);
        wmma::load_matrix_sync(vb, Vs + k * 16 * L::kQk + d * 16, L::kQk);
        wmma::mma_sync(acc, pa, vb, acc);
      }
      wmma::store_matrix_sync(Os + warp * 16 * L::kO + d * 16, acc, L::kO, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (!valid) return;
  const int row = row0 + qv / G, h = kvh * G + qv % G;
  float* out = O + int64_t(row) * n_heads * HD + h * HD + half * (HD / 2);
#pragma unroll
  for (int d = 0; d < HD / 2; ++d) out[d] = Os[qv * L::kO + half * (HD / 2) + d] / l;
}

size_t DecodeSmem(const AttnShape& a, int chunk) {
  const int G = a.n_heads / a.n_kv;
  return sizeof(float) * (size_t(G) * chunk + size_t(kDecodeWarps) * G * a.head_dim + 2 * G);
}

constexpr int kMaxResident = 2048 / kDecodeThreads;
// Blocks of a decode kernel one SM holds at once (registers; shared memory at the longest chunk),
// asked once per kernel and shape.
template <typename Kernel>
int Resident(Kernel kernel, const AttnShape& a) {
  static std::mutex mu;
  static std::map<std::pair<const void*, size_t>, int> known;
  const size_t smem = DecodeSmem(a, 1024);
  std::lock_guard<std::mutex> lock(mu);
  auto [it, fresh] = known.try_emplace({reinterpret_cast<const void*>(kernel), smem}, 1);
  if (fresh) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kDecodeThreads, smem) == cudaSuccess && n > 0)
      it->second = std::min(n, kMaxResident);
    else
      cudaGetLastError();
  }
  return it->second;
}

// The decode kernel of form X for group size G (register arrays need compile-time sizes).
template <KvFormat X>
auto DecodeKernelFor(int G) {
  return G == 1 ? DecodeKernel<X, 1> : G == 2 ? DecodeKernel<X, 2> : G <= 4 ? DecodeKernel<X, 4> : DecodeKernel<X, 8>;
}

// Dense, ATP and streaming read rows of one form (P = F); KIVI reads packed groups of a KIVI form P
// and exact rows of form F. Opts in to more than 48 KB of dynamic shared memory once per kernel
// (Hopper allows 227 KB).
template <KvFormat F, KvFormat P>
void OptIn() {
  static const bool opted = [] {
    for (auto* kernel : {DecodeKernel<F, 1>, DecodeKernel<F, 2>, DecodeKernel<F, 4>, DecodeKernel<F, 8>,
                         DecodeKernel<P, 1>, DecodeKernel<P, 2>, DecodeKernel<P, 4>, DecodeKernel<P, 8>})
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024);
    for (auto* kernel : {PrefillKernel<F, P, 16>, PrefillKernel<F, P, 32>, PrefillKernel<F, P, 64>, PrefillKernel<F, P, 128>})
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024);
    return true;
  }();
  (void)opted;
}

// Calls fn(F, P) (std::integral_constant<KvFormat, ...> each) for exact rows of form f and principal
// rows of form p: p == f, or a KIVI p over exact f; other pairs have no kernels and call nothing.
template <typename Fn>
void WithForms(KvFormat f, KvFormat p, Fn&& fn) {
  WithFormat(f, [&](auto ff) {
    constexpr KvFormat F = decltype(ff)::value;
    if constexpr (!IsKiviF(F)) {
      if (p == F) return fn(ff, ff);
      if constexpr (IsExact(F)) {
        WithFormat(p, [&](auto pf) {
          if constexpr (IsKiviF(decltype(pf)::value)) fn(ff, pf);
        });
      }
    }
  });
}

// The form of the principal rows a query reads: KIVI's packed groups, else the exact rows' own.
KvFormat PrincipalForm(const DeviceRows& k, const Visibility& vis) {
  return vis.block > 0 && IsKiviF(vis.pk.fmt) ? vis.pk.fmt : k.fmt;
}

// Blocks the GPU holds at once for a batch of forms F and P: KIVI's packed rows take a kernel of
// their own, with more registers, so the grid fits the tighter. (After the opt-in: without it a
// kernel asking for more than 48 KB, G = 8 at head_dim 128, would count as fitting once per SM.)
template <KvFormat F, KvFormat P>
int64_t DecodeSlots(const AttnShape& a, int sm_count) {
  OptIn<F, P>();
  const int G = a.n_heads / a.n_kv;
  return int64_t(sm_count) * std::min(Resident(DecodeKernelFor<F>(G), a), Resident(DecodeKernelFor<P>(G), a));
}

// A query's two ranges: principal rows [0, pre) and exact rows [lo, hi) (row indices of k, v).
struct QueryRanges {
  int64_t pre, lo, hi;
};
QueryRanges RangesOf(const DecodeQuery& q) {
  return {q.vis.last_pre, SeenFrom(q.vis, q.pos) - q.vis.first, q.pos - q.vis.first + 1};
}
int64_t SplitsOf(const QueryRanges& r, int chunk) { return SplitsOf(r.pre, chunk) + SplitsOf(r.hi - r.lo, chunk); }

// The task of query q cut in chunks, its partial results from workspace float `part` on.
DecodeTask TaskOf(const DecodeQuery& q, int chunk, int64_t part) {
  const QueryRanges r = RangesOf(q);
  DecodeTask t;
  t.pk = q.vis.pk, t.pv = q.vis.pv, t.k = q.k, t.v = q.v;
  t.pre_rows = r.pre, t.begin = r.lo, t.end = r.hi, t.part = part;
  t.pre_splits = int(SplitsOf(r.pre, chunk)), t.splits = int(SplitsOf(r, chunk));
  t.q = q.q, t.o = q.o;
  return t;
}

// Decode blocks, then the combine of n_tasks tasks: with P == F one launch of `pre_blocks +
// exact_blocks` blocks from `pre`; else pre_blocks of form P from `pre` and exact_blocks of form F
// from `exact`, both into the same partial results.
template <KvFormat F, KvFormat P>
void LaunchDecode(const AttnShape& a, int chunk, const DecodeArgs& pre, int pre_blocks, const DecodeArgs& exact,
                  int exact_blocks, const DecodeArgs& combine, int n_tasks, int max_splits, float* ws, cudaStream_t s) {
  OptIn<F, P>();
  const float scale = 1.0f / std::sqrt(float(a.head_dim));
  const int G = a.n_heads / a.n_kv;
  const auto launch = [&](auto kernel, const DecodeArgs& args, int blocks) {
    if (blocks > 0)
      LaunchAfter(kernel, dim3(unsigned(blocks), unsigned(a.n_kv)), dim3(kDecodeThreads), DecodeSmem(a, chunk), s, args,
                  a.n_heads, chunk, scale, ws);
  };
  if constexpr (P == F) {
    launch(DecodeKernelFor<F>(G), pre, pre_blocks + exact_blocks);
  } else {
    launch(DecodeKernelFor<P>(G), pre, pre_blocks);
    launch(DecodeKernelFor<F>(G), exact, exact_blocks);
  }
  LaunchAfter(CombineKernel, dim3(unsigned(a.n_heads), unsigned(n_tasks)), dim3(kCombineThreads),
              sizeof(float) * (max_splits + kCombineThreads), s, combine, a.head_dim, ws);
}

template <KvFormat F, KvFormat P>
void AttendAs(const AttnShape& a, const DeviceRows& k, const DeviceRows& v, const Visibility& vis, const float* Q,
              int64_t T, int64_t start, float* O, float* ws, int sm_count, cudaStream_t s) {
  OptIn<F, P>();
  if (T == 1) {  // the batch of one, its task passed by value: no descriptor to upload
    const DecodeQuery q{k, v, vis, start, Q, O};
    const QueryRanges r = RangesOf(q);
    const int chunk = DecodeChunk(a, DecodeSlots<F, P>(a, sm_count), [&](int c) { return SplitsOf(r, c); });
    DecodeArgs pre, exact;
    pre.one = exact.one = TaskOf(q, chunk, 0);
    exact.slot0 = pre.one.pre_splits;
    LaunchDecode<F, P>(a, chunk, pre, pre.one.pre_splits, exact, pre.one.splits - pre.one.pre_splits, pre, 1,
                       pre.one.splits, ws, s);
    return;
  }
  const float scale = 1.0f / std::sqrt(float(a.head_dim));
  const int BQ = kQv / (a.n_heads / a.n_kv);
  const dim3 grid(unsigned((T + BQ - 1) / BQ), unsigned(a.n_kv));
  const auto prefill = [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    PrefillKernel<F, P, HD><<<grid, kPrefillThreads, PrefillSmem<HD>::kBytes, s>>>(k, v, vis, Q, O, int(T), start,
                                                                                   a.n_heads, scale);
  };
  switch (a.head_dim) {  // CheckAttnShape admits exactly these
    case 16: return prefill(std::integral_constant<int, 16>{});
    case 32: return prefill(std::integral_constant<int, 32>{});
    case 64: return prefill(std::integral_constant<int, 64>{});
    case 128: return prefill(std::integral_constant<int, 128>{});
  }
}

}  // namespace

Status CheckAttnShape(const AttnShape& a, KvFormat f) {
  if (a.n_kv <= 0 || a.n_heads % a.n_kv != 0 || a.n_heads / a.n_kv > kMaxGroup)
    return Status::Unsupported("cuda attention: " + std::to_string(a.n_heads) + " query heads over " +
                               std::to_string(a.n_kv) + " KV heads (at most " + std::to_string(kMaxGroup) +
                               " query heads per KV head)");
  // 16 serves lowrank's rank-16 coefficient rows (exact forms: MX blocks hold 32 elements).
  if (a.head_dim != 32 && a.head_dim != 64 && a.head_dim != 128 && !(a.head_dim == 16 && IsExact(f)))
    return Status::Unsupported("cuda attention: head_dim " + std::to_string(a.head_dim) +
                               " (supported: 32, 64, 128, and 16 for f32/f16/bf16 rows)");
  return Status::Ok();
}

int64_t AttendWorkspaceFloats(const AttnShape& a, int64_t len, int sm_count) {
  // Two ranges cut by the chunk Attend picks take at most one split more than one range of their
  // length at the chunk one range would get (Attend's is no shorter). Sized for the most blocks an SM
  // can hold (threads), which no kernel's Resident exceeds.
  const int chunk = DecodeChunk(a, int64_t(sm_count) * kMaxResident, [&](int c) { return SplitsOf(len, c); });
  return int64_t(a.n_heads) * (SplitsOf(len, chunk) + 1) * (a.head_dim + 2);
}

void Attend(const AttnShape& a, const DeviceRows& k, const DeviceRows& v, const Visibility& vis, const float* Q,
            int64_t T, int64_t start, float* O, float* ws, int sm_count, cudaStream_t s) {
  if (T <= 0) return;
  WithForms(k.fmt, PrincipalForm(k, vis), [&](auto f, auto p) {
    AttendAs<decltype(f)::value, decltype(p)::value>(a, k, v, vis, Q, T, start, O, ws, sm_count, s);
  });
}

std::vector<DecodeBatch> PlanDecodeBatches(const AttnShape& a, const DecodeQuery* queries, size_t n, int sm_count,
                                           int chunk_override) {
  std::vector<DecodeBatch> out;
  std::vector<std::vector<const DecodeQuery*>> members;
  for (size_t i = 0; i < n; ++i) {
    const KvFormat f = queries[i].k.fmt, p = PrincipalForm(queries[i].k, queries[i].vis);
    size_t b = 0;
    while (b < out.size() && !(out[b].f == f && out[b].p == p)) ++b;
    if (b == out.size()) {
      DecodeBatch batch;
      batch.a = a, batch.f = f, batch.p = p;
      out.push_back(std::move(batch));
      members.emplace_back();
    }
    members[b].push_back(&queries[i]);
  }
  for (size_t b = 0; b < out.size(); ++b) {
    DecodeBatch& batch = out[b];
    std::vector<QueryRanges> ranges;
    for (const DecodeQuery* q : members[b]) ranges.push_back(RangesOf(*q));
    int64_t slots = 0;
    WithForms(batch.f, batch.p, [&](auto f, auto p) {
      slots = DecodeSlots<decltype(f)::value, decltype(p)::value>(a, sm_count);
    });
    batch.chunk = chunk_override > 0 ? chunk_override : DecodeChunk(a, slots, [&](int c) {
      int64_t total = 0;
      for (const QueryRanges& r : ranges) total += SplitsOf(r, c);
      return total;
    });
    for (const DecodeQuery* q : members[b]) {
      batch.tasks.push_back(TaskOf(*q, batch.chunk, batch.ws_floats));
      batch.ws_floats += int64_t(a.n_heads) * batch.tasks.back().splits * (a.head_dim + 2);
      batch.max_splits = std::max(batch.max_splits, batch.tasks.back().splits);
    }
    // Principal chunks first (a launch of form p when it differs from f), then exact ones.
    for (int exact = 0; exact < 2; ++exact) {
      for (size_t t = 0; t < batch.tasks.size(); ++t) {
        const DecodeTask& task = batch.tasks[t];
        for (int sp = exact ? task.pre_splits : 0; sp < (exact ? task.splits : task.pre_splits); ++sp)
          batch.work.push_back({int32_t(t), sp});
      }
      if (!exact) batch.work_pre = int(batch.work.size());
    }
  }
  return out;
}

void RunDecodeBatch(const DecodeBatch& b, const DecodeTask* tasks, const DecodeWork* work, float* ws, cudaStream_t s) {
  if (b.tasks.empty()) return;
  DecodeArgs pre, exact;
  pre.tasks = exact.tasks = tasks;
  pre.work = work, exact.work = work + b.work_pre;
  WithForms(b.f, b.p, [&](auto f, auto p) {
    LaunchDecode<decltype(f)::value, decltype(p)::value>(b.a, b.chunk, pre, b.work_pre, exact,
                                                         int(b.work.size()) - b.work_pre, pre, int(b.tasks.size()),
                                                         b.max_splits, ws, s);
  });
}

}  // namespace atp::cuda
