// Kernels behind cuda/attention.h's Attend: split-K decode and tiled prefill over rows in any form
// (read through cuda/kv_rows.cuh), seen through a Visibility.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "cuda/attention.h"
#include "cuda/kv_rows.cuh"
#include "cuda/mma.cuh"
#include "cuda/pdl.cuh"

namespace atp::cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxGroup = 8;  // query heads per KV head that one block serves (decode: GM <= 8)

// --- Decode: split-K over the sequence ---------------------------------------------------------

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / 32;

// The longest decode chunk. A chunk costs no shared memory (the kernel streams its rows once), so
// this only bounds the bisection below: far beyond any split a one-wave grid needs.
constexpr int kMaxChunk = 32768;

// The decode chunk: the smallest multiple of 32 in [64, kMaxChunk] at which `splits(chunk)` splits
// (of n_kv blocks each) fit `slots`, the blocks the GPU holds at once, so that the grid runs in one
// wave: with ~8 per SM where registers allow 6, the last 30% of the blocks ran as a second wave after
// the first (1.3 waves at 32k on the H200, 51 us per layer); kMaxChunk when none fits. Short
// sequences get fewer blocks. splits(c) does not grow with c, so a bisection finds it; for one range
// of len rows it is ceil(len / (slots / n_kv)) rounded up to 32, clamped.
template <typename Splits>
int DecodeChunk(const AttnShape& a, int64_t slots, Splits splits) {
  const int64_t target = std::max<int64_t>(1, slots / a.n_kv);
  int lo = 2, hi = kMaxChunk / 32;  // in units of 32 rows; hi always fits (by definition)
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
// before any is decoded; rows at or past n stay unloaded. The decode loop's K and V loads.
template <KvFormat F, int U>
__device__ __forceinline__ void LoadAhead(Raw8<F> (&raw)[U], const DeviceRows& rows, int64_t begin, int base, int step,
                                          int lane_row, int n, int kvh, int c) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int jl = base + u * step + lane_row;
    if (jl < n) raw[u] = LoadRaw8<F>(rows, begin + jl, kvh, c);
  }
}

// exp(x - m) for a running max m; a max of -inf (nothing seen yet) gives 0 for every x, not NaN:
// the weight of a state that holds no row, and of a masked score.
__device__ __forceinline__ float ExpFrom(float x, float m) { return expf(x - (m == -INFINITY ? 0.f : m)); }

// Block (work unit, kv head): the G query heads of one KV head over one chunk of rows of a task,
// in one pass over the rows (online softmax, as the prefill kernel's). Lanes work in groups of
// hd/8, one row per group at a time, each lane owning 8 elements of the row; the same lane keeps the
// same 8 query elements in registers for the whole kernel. Each lane group reads the key and value
// of its rows together and keeps, per head, a running max m, the sum l of exp(s - m) and its 8
// elements of the unnormalized output acc (rescaled by exp(m_old - m_new) when the max grows);
// the lane groups' states then merge, within a warp by shuffles and across warps in shared memory,
// into the block's (m, l, output) per head, written to the task's partial results, which
// CombineKernel merges the same way (two launches of different forms can fill one task's merge).
// An empty chunk (n == 0) writes m = -inf, l = 0: weight 0 in the merge.
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
  float* red = smem;                        // (warps, G, hd) per-warp outputs
  float* ml = red + kDecodeWarps * G * hd;  // (warps, G, 2) per-warp max and sum
  const int n = end > begin ? int(end - begin < chunk ? end - begin : chunk) : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, lpr = hd / 8, rpw = 32 / lpr;
  const int c = lane % lpr, sub = lane / lpr;

  float qr[GM][8];
#pragma unroll
  for (int g = 0; g < GM; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) qr[g][e] = g < G ? q[(kvh * G + g) * hd + c * 8 + e] * scale : 0.f;

  // U rows per lane group and step, keys and values both loaded before any is decoded: 32-64 bytes
  // in flight per lane (kRowsInFlight: a bandwidth-bound loop must cover memory latency; packed rows
  // are shorter), at most 4 rows at GM = 8, whose U x GM scores would spill (ptxas -v).
  // Software-pipelined: the next step's rows are put in flight before this step's are decoded, so a
  // lane waits on memory once per chunk rather than once per step.
  constexpr int U = (kRowsInFlight<F> + 1) / 2 < 32 / GM ? (kRowsInFlight<F> + 1) / 2 : 32 / GM;
  const int step = kDecodeWarps * rpw, row0 = warp * rpw + sub;
  Raw8<F> rk[U], rv[U], nk[U], nv[U];
  LoadAhead<F, U>(nk, K, begin, 0, step, row0, n, kvh, c);
  LoadAhead<F, U>(nv, V, begin, 0, step, row0, n, kvh, c);
  float m[GM], l[GM] = {}, acc[GM][8] = {};
#pragma unroll
  for (int g = 0; g < GM; ++g) m[g] = -INFINITY;
  for (int base = 0; base < n; base += U * step) {
#pragma unroll
    for (int u = 0; u < U; ++u) rk[u] = nk[u], rv[u] = nv[u];
    if (base + U * step < n) {
      LoadAhead<F, U>(nk, K, begin, base + U * step, step, row0, n, kvh, c);
      LoadAhead<F, U>(nv, V, begin, base + U * step, step, row0, n, kvh, c);
    }
    float s[U][GM];  // scores, -inf past n; then exp(s - m)
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kv[8];
      Decode8<F>(rk[u], kv);  // garbage past n: its scores stay in its own lane group, masked below
#pragma unroll
      for (int g = 0; g < GM; ++g) {
        float dot = 0;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot += qr[g][e] * kv[e];
        for (int o = lpr / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(kFull, dot, o);
        s[u][g] = base + u * step + row0 < n ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < GM; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < U; ++u) mx = fmaxf(mx, s[u][g]);
      const float corr = ExpFrom(m[g], mx);
      m[g] = mx;
      l[g] *= corr;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= corr;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        s[u][g] = ExpFrom(s[u][g], mx);
        l[g] += s[u][g];
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (base + u * step + row0 >= n) continue;  // garbage times 0 could be NaN
      float vv[8];
      Decode8<F>(rv[u], vv);
#pragma unroll
      for (int g = 0; g < GM; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += s[u][g] * vv[e];
    }
  }
  // The warp's lane groups (lanes c, c + lpr, ...) merge: the larger max wins, each side weighted
  // by exp(its max - the merged max).
  for (int o = lpr; o < 32; o <<= 1) {
#pragma unroll
    for (int g = 0; g < GM; ++g) {
      const float mo = __shfl_xor_sync(kFull, m[g], o), lo = __shfl_xor_sync(kFull, l[g], o);
      const float mx = fmaxf(m[g], mo), a = ExpFrom(m[g], mx), b = ExpFrom(mo, mx);
      m[g] = mx;
      l[g] = l[g] * a + lo * b;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = acc[g][e] * a + __shfl_xor_sync(kFull, acc[g][e], o) * b;
    }
  }
  if (sub == 0)
#pragma unroll
    for (int g = 0; g < GM; ++g)
      if (g < G) {
#pragma unroll
        for (int e = 0; e < 8; ++e) red[(warp * G + g) * hd + c * 8 + e] = acc[g][e];
        if (c == 0) ml[2 * (warp * G + g)] = m[g], ml[2 * (warp * G + g) + 1] = l[g];
      }
  __syncthreads();
  for (int i = threadIdx.x; i < G * hd; i += kDecodeThreads) {
    const int g = i / hd, d = i % hd;
    float M = -INFINITY;
    for (int wi = 0; wi < kDecodeWarps; ++wi) M = fmaxf(M, ml[2 * (wi * G + g)]);
    float s = 0, L = 0;
    for (int wi = 0; wi < kDecodeWarps; ++wi) {
      const float wt = ExpFrom(ml[2 * (wi * G + g)], M);
      s += wt * red[wi * G * hd + i];
      L += wt * ml[2 * (wi * G + g) + 1];
    }
    float* P = part + t.part + (int64_t(kvh * G + g) * splits + split) * (hd + 2);
    P[2 + d] = s;
    if (d == 0) P[0] = M, P[1] = L;
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

// The first position a query at p sees exactly (never before `first`: rows before it were dropped;
// h2o and snapkv keep their rows at positions first, first + 1, ... of this numbering), and the
// principal rows it sees.
__host__ __device__ __forceinline__ int64_t SeenFrom(const Visibility& v, int64_t p) {
  const int64_t from = CompressedBlocks(v.block, v.window, p) * v.block;
  return from > v.first ? from : v.first;
}
__device__ __forceinline__ int64_t PrincipalSeen(const Visibility& v, int64_t p) {
  const int64_t nb = CompressedBlocks(v.block, v.window, p);
  const int64_t n = nb == 0 ? 0 : v.pre_end ? v.pre_end[nb - 1] : nb * v.rows_per_block;
  return v.max_pre >= 0 && n > v.max_pre ? v.max_pre : n;
}

// --- Prefill: FlashAttention-2 on bf16 tensor cores (cuda/mma.cuh) -----------------------------

// Tile sizes. 8 warps, each owning 16 query vectors (FA2's per-warp slice: one m16 row block of
// mma.m16n8k16, so S and O stay in that warp's registers and the row max and sum need only the 4
// lanes of a quad). 128 query vectors per block: each key and value tile brought to shared memory
// feeds 128 rows (twice the old kernel's 64, halving the loads per flop), and a GQA group of 8 still
// leaves 16 rows per block. 64 keys per tile: per thread S takes 32 f32 registers beside O's HD / 2
// (64 at head_dim 128) and the next tile's rows in flight, within 255 registers at head_dim 128 (one
// block of 256 threads per SM) and 128 at head_dim 64 for bf16 rows (two); 128 keys would not fit.
// Q's fragments are read from shared memory per tile rather than held (HD / 4 registers more).
// Shared memory: Q and two buffers each of K and V, (128 + 4 * 64) rows of HD + 8 bf16, 102 KB at
// head_dim 128, 55 KB at 64.
constexpr int kPrefillWarps = 8;
constexpr int kPrefillThreads = 32 * kPrefillWarps;
constexpr int kQv = 16 * kPrefillWarps;  // query vectors (row, head) per block
constexpr int kBk = 64;                  // keys per tile

// Row stride of the bf16 tiles: HD + 8 elements, i.e. 16 bytes past a multiple of 32, so the eight
// 16-byte rows one ldmatrix matrix reads fall in eight distinct bank quads (row strides of 48, 80,
// 144 or 272 bytes: odd multiples of 16 modulo 128). Offsets in elements.
template <int HD>
struct PrefillSmem {
  static constexpr int kLd = HD + 8;
  static constexpr int kTile = kBk * kLd;  // one K or V buffer
  static constexpr size_t kQ = 0, kK = kQ + size_t(kQv) * kLd, kV = kK + 2 * kTile, kElems = kV + 2 * kTile;
  static constexpr size_t kBytes = kElems * sizeof(__nv_bfloat16);
};

// The rows one key tile reads: keys kt .. kt + kBk - 1 below `end`, key j in row j + row_of_key of
// the principal rows (form P) or of the exact rows (form F; row = position - first).
struct PrefillTile {
  bool principal;
  int64_t kt, end, row_of_key;
};

// Block (query tile, KV head): query vectors qv = r * G + g for rows qb * BQ + r (BQ = kQv / G) and
// the G query heads of the KV head; warp w owns qv 16w .. 16w+15, lane 4i + t of it rows 16w + i
// and 16w + i + 8 (the C fragment's rows). Per key tile, all in registers: S = Q K^T, the online
// softmax (exp2, running max and per-lane partial sums), P repacked as A fragments, O += P V.
// Q is pre-scaled by 1/sqrt(hd); Q, K, V and P are rounded to bf16 (as PyTorch's bf16 SDPA
// computes), with f32 accumulation; decode stays f32.
// Key tiles are double-buffered: while tile t is multiplied, tile t + 1 is on its way. bf16 rows go
// by cp.async straight to shared memory; other forms' next K (V) tile is loaded into registers
// (LoadRaw8) before this tile's S (O) product and decoded, rounded and stored after it. With P != F
// (KIVI's packed groups over exact rows) the registers hold form P, and F's few exact tiles (the
// residual window) are loaded when stored. f16 rows take the register path too: their bits are not
// bf16's. Tiles that no query of the block sees are never visited (before the window's lower bound,
// after the block's last position); a warp skips the tiles none of its rows sees and masks only
// those some of its rows see in part.
// P: the form of the principal rows (F itself for ATP, a KIVI form for KIVI's packed groups).
// Two blocks per SM where 128 registers suffice without spills (ptxas -v): head_dim up to 32, and
// bf16 rows at 64 (cp.async: no rows in flight in registers); one block, up to 255 registers, else.
template <KvFormat F, KvFormat P>
constexpr int PrefillBlocksPerSm(int hd) {
  return hd <= 32 || (hd == 64 && F == KvFormat::kBF16 && P == F) ? 2 : 1;
}

template <KvFormat F, KvFormat P, int HD>
__global__ void __launch_bounds__(kPrefillThreads, PrefillBlocksPerSm<F, P>(HD))
    PrefillKernel(DeviceRows K, DeviceRows V, Visibility vis, const float* Q, float* O, int T, int64_t start,
                  int n_heads, float scale) {
  using L = PrefillSmem<HD>;
  constexpr int kLd = L::kLd, kCpr = HD / 8;  // 16-byte chunks (8 elements) per row
  constexpr int kChunks = (kBk * kCpr + kPrefillThreads - 1) / kPrefillThreads;  // of a K or V tile per thread
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto* sm = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Qs = sm + L::kQ;  // (kQv, kLd)
  const int G = n_heads / K.n_kv, BQ = kQv / G, kvh = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // The last query tiles see the most keys: they start first, so that the short ones fill the tail.
  const int row0 = (gridDim.x - 1 - blockIdx.x) * BQ;

  for (int i = threadIdx.x; i < kQv * kCpr; i += kPrefillThreads) {
    const int v = i / kCpr, c = i % kCpr, r = row0 + v / G;
    float x[8] = {};
    if (v < BQ * G && r < T) {
      const float4* q = reinterpret_cast<const float4*>(Q + int64_t(r) * n_heads * HD + (kvh * G + v % G) * HD + c * 8);
      const float4 a = q[0], b = q[1];
      x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
    }
    *reinterpret_cast<uint4*>(Qs + v * kLd + c * 8) =
        make_uint4(PackBf16(x[0] * scale, x[1] * scale), PackBf16(x[2] * scale, x[3] * scale),
                   PackBf16(x[4] * scale, x[5] * scale), PackBf16(x[6] * scale, x[7] * scale));
  }

  // The block's queries together: principal rows [0, pre_hi), then positions [lo_lo, kv_end).
  const int64_t kv_end = start + min(T, row0 + BQ), lo_lo = SeenFrom(vis, start + row0);
  // This lane's two rows (r = 0, 1: block-local query vector warp * 16 + lane / 4 + 8r) see principal
  // rows [0, pre[r]) and exact positions [lo[r], p[r]] (Visibility), the positions kept relative to
  // lo_lo (int: they lie within the block's exact range, less than T + window long; registers are
  // short at head_dim 128). Vectors past the last row compute as the last row does (never stored;
  // their own positions could read past pre_end).
  const int last = T - 1 - row0;
  const auto pos_of = [&](int qv) { return start + row0 + min(qv / G, last); };
  int p[2], lo[2], pre[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t pos = pos_of(warp * 16 + lane / 4 + 8 * r);
    p[r] = int(pos - lo_lo);
    lo[r] = int(SeenFrom(vis, pos) - lo_lo);
    pre[r] = int(PrincipalSeen(vis, pos));
  }
  // The warp's rows together (the same in every lane): positions [p_lo, p_hi], relative as above.
  const int64_t pos_lo = pos_of(warp * 16), pos_hi = pos_of(warp * 16 + 15);
  const int p_lo = int(pos_lo - lo_lo), p_hi = int(pos_hi - lo_lo);
  const int lo_min = int(SeenFrom(vis, pos_lo) - lo_lo), lo_max = int(SeenFrom(vis, pos_hi) - lo_lo);
  const int pre_min = int(PrincipalSeen(vis, pos_lo)), pre_max = int(PrincipalSeen(vis, pos_hi));
  const int64_t pre_hi = PrincipalSeen(vis, kv_end - 1), pre_tiles = (pre_hi + kBk - 1) / kBk;
  const int64_t tiles = pre_tiles + (kv_end - lo_lo + kBk - 1) / kBk;
  const auto tile_of = [&](int64_t t) {
    const bool principal = t < pre_tiles;
    return PrefillTile{principal, principal ? t * kBk : lo_lo + (t - pre_tiles) * kBk, principal ? pre_hi : kv_end,
                       principal ? 0 : -vis.first};
  };

  // Loading a K (values false) or V tile into buffer dst: fetch issues the loads, store (after some
  // math) decodes and writes what fetch left in registers. Keys at or past `end` are zeros.
  Raw8<P> raw[kChunks];
  const auto by_cp_async = [](const PrefillTile& ti) {
    return ti.principal ? P == KvFormat::kBF16 : F == KvFormat::kBF16;
  };
  const auto fetch = [&](const PrefillTile& ti, bool values, __nv_bfloat16* dst) {
    const DeviceRows R = ti.principal ? (values ? vis.pv : vis.pk) : (values ? V : K);
#pragma unroll
    for (int u = 0; u < kChunks; ++u) {
      const int i = threadIdx.x + u * kPrefillThreads, jj = i / kCpr, c = i % kCpr;
      if (i >= kBk * kCpr) break;
      const bool in = ti.kt + jj < ti.end;
      const int64_t row = in ? ti.kt + jj + ti.row_of_key : 0;
      if (by_cp_async(ti)) {
        CpAsync16(dst + jj * kLd + c * 8, R.elems + ((row * R.n_kv + kvh) * HD + c * 8) * 2, in);
      } else if (in && (ti.principal || P == F)) {
        raw[u] = LoadRaw8<P>(R, row, kvh, c);
      }
    }
  };
  const auto store = [&](const PrefillTile& ti, bool values, __nv_bfloat16* dst) {
    if (by_cp_async(ti)) return;
    const DeviceRows R = ti.principal ? (values ? vis.pv : vis.pk) : (values ? V : K);
#pragma unroll
    for (int u = 0; u < kChunks; ++u) {
      const int i = threadIdx.x + u * kPrefillThreads, jj = i / kCpr, c = i % kCpr;
      if (i >= kBk * kCpr) break;
      float x[8] = {};
      if (ti.kt + jj < ti.end) {
        if (ti.principal || P == F) Decode8<P>(raw[u], x);
        else Load8<F>(R, ti.kt + jj + ti.row_of_key, kvh, c, x);
      }
      *reinterpret_cast<uint4*>(dst + jj * kLd + c * 8) =
          make_uint4(PackBf16(x[0], x[1]), PackBf16(x[2], x[3]), PackBf16(x[4], x[5]), PackBf16(x[6], x[7]));
    }
  };

  const PrefillTile t0 = tile_of(0);  // tiles >= 1: kv_end > lo_lo
  fetch(t0, false, sm + L::kK);  // one tile at a time: the register path holds one tile in `raw`
  store(t0, false, sm + L::kK);
  fetch(t0, true, sm + L::kV);
  store(t0, true, sm + L::kV);
  CpAsyncWaitAll();
  __syncthreads();  // Qs and the first tile are written

  float o[HD / 8][4] = {};  // O (16 x HD): C fragments of dims 8n .. 8n + 7
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // per row: running max; this lane's partial sum

  for (int64_t t = 0; t < tiles; ++t) {
    const int b = int(t % 2);
    const __nv_bfloat16 *Kb = sm + L::kK + b * L::kTile, *Vb = sm + L::kV + b * L::kTile;
    __nv_bfloat16 *Kn = sm + L::kK + (1 - b) * L::kTile, *Vn = sm + L::kV + (1 - b) * L::kTile;
    const PrefillTile ti = tile_of(t), nx = tile_of(t + 1);
    const bool more = t + 1 < tiles;
    if (more) fetch(nx, false, Kn);

    // Whether any of this warp's rows sees a key of the tile, and whether all see all of them (kr:
    // the tile's first key relative to its range's start).
    const int kr = int(ti.principal ? ti.kt : ti.kt - lo_lo);
    bool any, full;
    if (ti.principal) {
      any = kr < pre_max;
      full = kr + kBk <= pre_min;
    } else {
      any = kr <= p_hi && kr + kBk - 1 >= lo_min;
      full = kr >= lo_max && kr + kBk - 1 <= p_lo;
    }
    uint32_t pa[kBk / 16][4];  // P (16 x kBk) as A fragments, k = 16 keys each
    if (any) {
      float s[kBk / 8][4] = {};  // S (16 x kBk): C fragments of keys 8n .. 8n + 7
#pragma unroll
      for (int k = 0; k < HD / 16; ++k) {
        uint32_t qa[4];  // reloaded per tile: registers are short at head_dim 128 (+1/8 shared-memory reads)
        Ldsm4(qa, Qs + LdsmAddrA(warp * 16, k * 16, kLd, lane));
#pragma unroll
        for (int n = 0; n < kBk / 16; ++n) {
          uint32_t kb[4];
          Ldsm4(kb, Kb + LdsmAddrBn(n * 16, k * 16, kLd, lane));
          Mma16816(s[2 * n], qa, kb[0], kb[1]);
          Mma16816(s[2 * n + 1], qa, kb[2], kb[3]);
        }
      }
      if (!full) {
#pragma unroll
        for (int n = 0; n < kBk / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e / 2;
            const int j = kr + n * 8 + 2 * (lane % 4) + e % 2;
            const bool seen = ti.principal ? j < pre[r] : lo[r] <= j && j <= p[r];
            if (!seen) s[n][e] = -INFINITY;
          }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < kBk / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 2));
        const float m_new = fmaxf(m[r], mx);
        // Until a row has seen a key (m_new = -inf) nothing accumulates: exp2(-inf) = 0 for every
        // masked score and for the correction of a running max of -inf.
        const float ms = m_new == -INFINITY ? 0.f : m_new * kLog2e;
        const float corr = exp2f(m[r] * kLog2e - ms);
        float sum = 0;
#pragma unroll
        for (int n = 0; n < kBk / 8; ++n) {
          s[n][2 * r] = exp2f(fmaf(s[n][2 * r], kLog2e, -ms));
          s[n][2 * r + 1] = exp2f(fmaf(s[n][2 * r + 1], kLog2e, -ms));
          sum += s[n][2 * r] + s[n][2 * r + 1];
        }
        l[r] = l[r] * corr + sum;
        m[r] = m_new;
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) o[d][2 * r] *= corr, o[d][2 * r + 1] *= corr;
      }
      // The C fragments of keys 16k .. 16k + 15 are, repacked, the A fragment of that k step.
#pragma unroll
      for (int k = 0; k < kBk / 16; ++k) {
        pa[k][0] = PackBf16(s[2 * k][0], s[2 * k][1]);
        pa[k][1] = PackBf16(s[2 * k][2], s[2 * k][3]);
        pa[k][2] = PackBf16(s[2 * k + 1][0], s[2 * k + 1][1]);
        pa[k][3] = PackBf16(s[2 * k + 1][2], s[2 * k + 1][3]);
      }
    }
    if (more) {
      store(nx, false, Kn);
      fetch(nx, true, Vn);
    }
    if (any) {
#pragma unroll
      for (int k = 0; k < kBk / 16; ++k)
#pragma unroll
        for (int d = 0; d < HD / 16; ++d) {
          uint32_t vb[4];
          Ldsm4T(vb, Vb + LdsmAddrA(k * 16, d * 16, kLd, lane));
          Mma16816(o[2 * d], pa[k], vb[0], vb[1]);
          Mma16816(o[2 * d + 1], pa[k], vb[2], vb[3]);
        }
    }
    if (more) store(nx, true, Vn);
    CpAsyncWaitAll();
    __syncthreads();  // tile t + 1 is written; tile t's buffers are free
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = l[r];
    sum += __shfl_xor_sync(kFull, sum, 1);
    sum += __shfl_xor_sync(kFull, sum, 2);
    const int qv = warp * 16 + lane / 4 + 8 * r, row = row0 + qv / G;
    if (qv >= BQ * G || row >= T) continue;
    float* out = O + int64_t(row) * n_heads * HD + (kvh * G + qv % G) * HD + 2 * (lane % 4);
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
      *reinterpret_cast<float2*>(out + 8 * d) = make_float2(o[d][2 * r] / sum, o[d][2 * r + 1] / sum);
  }
}

// The decode kernel's shared memory: per warp and head, its output and its (max, sum); whatever the
// chunk, at most 16.6 KB (G = 8, head_dim 128), within the 48 KB a kernel gets without opting in.
size_t DecodeSmem(const AttnShape& a) {
  const int G = a.n_heads / a.n_kv;
  return sizeof(float) * size_t(kDecodeWarps) * G * (a.head_dim + 2);
}

constexpr int kMaxResident = 2048 / kDecodeThreads;
// Blocks of a decode kernel one SM holds at once (registers and shared memory), asked once per
// kernel and shape.
template <typename Kernel>
int Resident(Kernel kernel, const AttnShape& a) {
  static std::mutex mu;
  static std::map<std::pair<const void*, size_t>, int> known;
  const size_t smem = DecodeSmem(a);
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
// and exact rows of form F. Opts the prefill kernels in to more than 48 KB of dynamic shared memory
// once per kernel (Hopper allows 227 KB); decode needs less (DecodeSmem).
template <KvFormat F, KvFormat P>
void OptIn() {
  static const bool opted = [] {
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
// their own, with more registers, so the grid fits the tighter.
template <KvFormat F, KvFormat P>
int64_t DecodeSlots(const AttnShape& a, int sm_count) {
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
  const float scale = 1.0f / std::sqrt(float(a.head_dim));
  const int G = a.n_heads / a.n_kv;
  const auto launch = [&](auto kernel, const DecodeArgs& args, int blocks) {
    if (blocks > 0)
      LaunchAfter(kernel, dim3(unsigned(blocks), unsigned(a.n_kv)), dim3(kDecodeThreads), DecodeSmem(a), s, args,
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
