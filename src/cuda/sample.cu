// Token choice on the GPU (cuda/sample.h): one block per query walks its logit row a few times,
// without sorting it. Every cut of sampling/rules.h (top-k, top-p) is a prefix of the rank order, so
// it is found as a threshold: SelectCut narrows the order key of the prefix's last token by 16-way
// splits of the key range (one pass over the row each, every thread summing the weight at or above 15
// thresholds in registers; no atomic sums, so a row gives the same answer every time), then, where equal
// logits straddle the cut, takes the tied tokens in id order. min_p is a threshold already. The draw
// is one prefix sum in id order. Sums are in double, per thread in id order then across the block in a
// fixed order, so they differ from the host's sequential sums only in the last bits.
#include <cub/block/block_scan.cuh>

#include <climits>

#include "cuda/sample.h"
#include "sampling/rules.h"

namespace atp::cuda {

namespace {

using sampling::OrderKey;

constexpr int kThreads = 512, kWarps = kThreads / 32;
constexpr int kSplit = 16;  // ways a SelectCut pass splits the key range

// The last token of a prefix of the rank order: a token is in it when its key is larger, or equal
// with an id no larger. kAll keeps every token.
struct Cut {
  uint32_t key;
  int32_t id;
  __device__ bool Keeps(uint32_t k, int32_t i) const { return k > key || (k == key && i <= id); }
};
constexpr Cut kAll = {0u, INT_MAX};

struct Shared {
  double w[kWarps][kSplit];
  int c[kWarps][kSplit];
  double wt[kSplit];
  int ct[kSplit];
  unsigned long long best[kWarps];
  int found;
  int gathered;
  uint32_t g_key[kSampleMaxTop];
  int32_t g_id[kSampleMaxTop];
  union {
    cub::BlockScan<double, kThreads>::TempStorage dscan;
    cub::BlockScan<int, kThreads>::TempStorage iscan;
  } scan;
};

// Sums w[0..N) and c[0..N) over the block; every thread gets the totals. Deterministic: warps in a
// fixed order. A is double (weights) or int (counts; exact in the double slots).
template <class A, int N>
__device__ void BlockSum(A (&w)[N], int (&c)[N], Shared& sh) {
  static_assert(N <= kSplit, "one slot per value");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < N; ++j)
    for (int o = 16; o > 0; o >>= 1) {
      w[j] += __shfl_xor_sync(0xffffffffu, w[j], o);
      c[j] += __shfl_xor_sync(0xffffffffu, c[j], o);
    }
  if (lane == 0)
#pragma unroll
    for (int j = 0; j < N; ++j) sh.w[warp][j] = w[j], sh.c[warp][j] = c[j];
  __syncthreads();
  if (threadIdx.x < N) {
    A a = 0;
    int b = 0;
    for (int k = 0; k < kWarps; ++k) a += A(sh.w[k][threadIdx.x]), b += sh.c[k][threadIdx.x];
    sh.wt[threadIdx.x] = double(a), sh.ct[threadIdx.x] = b;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; ++j) w[j] = A(sh.wt[j]), c[j] = sh.ct[j];
  __syncthreads();
}

// The largest v over the block; every thread gets it.
__device__ unsigned long long BlockMax(unsigned long long v, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sh.best[threadIdx.x >> 5] = v;
  __syncthreads();
  v = 0;
  for (int k = 0; k < kWarps; ++k) v = max(v, sh.best[k]);
  __syncthreads();
  return v;
}

// The first token in rank order of value(i), i < V (largest key, lowest id).
template <class Value>
__device__ int32_t BlockTop(int V, Value value, Shared& sh) {
  unsigned long long best = 0;
  for (int i = threadIdx.x; i < V; i += kThreads)
    best = max(best, (static_cast<unsigned long long>(OrderKey(value(i))) << 32) | (0xffffffffu - uint32_t(i)));
  best = BlockMax(best, sh);
  return int32_t(0xffffffffu - uint32_t(best & 0xffffffffu));
}

// The first i < V, in id order, at which the running sum of f(i) >= 0 reaches target, among the i
// with f(i) > 0; -1 when rounding leaves the sum of all short of target. Each thread sums a
// contiguous chunk of ids, one block scan orders the chunks, and the thread whose chunk holds the
// crossing walks it again.
template <class T, class F>
__device__ int32_t FirstReaching(int V, F f, T target, Shared& sh) {
  const int chunk = (V + kThreads - 1) / kThreads, b = min(V, int(threadIdx.x) * chunk), e = min(V, b + chunk);
  T mine = 0;
  for (int i = b; i < e; ++i) mine += f(i);
  T before = 0, all = 0;
  if constexpr (sizeof(T) == sizeof(double))
    cub::BlockScan<double, kThreads>(sh.scan.dscan).ExclusiveSum(mine, before, all);
  else
    cub::BlockScan<int, kThreads>(sh.scan.iscan).ExclusiveSum(mine, before, all);
  if (threadIdx.x == 0) sh.found = INT_MAX;
  __syncthreads();
  if (mine > 0 && before + mine >= target) {  // the crossing is in this chunk or an earlier one
    T c = before;
    for (int i = b; i < e; ++i) {
      const T w = f(i);
      if (w > 0 && (c += w) >= target) {
        atomicMin(&sh.found, i);
        break;
      }
    }
  }
  __syncthreads();
  const int32_t id = sh.found;
  __syncthreads();
  return id == INT_MAX ? -1 : id;
}

// The shortest prefix of the rank order whose weight reaches `target`, where weigh(i, &key) gives
// token i's key and weight (0: not counted), of type W: int (1 for every token: a count, top-k) or
// double (probability weights, top-p). total_w, total_c: weight and count of all counted tokens
// (total_w >= target > 0).
template <class W, class Weigh>
__device__ Cut SelectCut(int V, Weigh weigh, W target, W total_w, int total_c, Shared& sh) {
  uint32_t lo = 0, hi = 0xffffffffu;
  W w_lo = total_w, w_above = 0;  // weight at or above lo, and above hi
  int c_lo = total_c, c_above = 0;
  while (lo < hi) {
    const uint64_t span = uint64_t(hi) - lo;
    uint32_t t[kSplit];
#pragma unroll
    for (int j = 1; j < kSplit; ++j) t[j] = uint32_t(lo + (span * uint64_t(j) + kSplit - 1) / kSplit);
    W w[kSplit - 1] = {};
    int c[kSplit - 1] = {};
    for (int i = threadIdx.x; i < V; i += kThreads) {
      uint32_t key;
      const W wi = weigh(i, &key);
      if (!(wi > 0)) continue;
#pragma unroll
      for (int j = 1; j < kSplit; ++j)
        if (key >= t[j]) w[j - 1] += wi, c[j - 1] += 1;
    }
    BlockSum(w, c, sh);
    int j = 0;  // the last threshold whose weight at or above it reaches the target
#pragma unroll
    for (int k = 1; k < kSplit; ++k)
      if (w[k - 1] >= target) j = k;
    if (j > 0) lo = t[j], w_lo = w[j - 1], c_lo = c[j - 1];
    if (j < kSplit - 1) hi = t[j + 1] - 1, w_above = w[j], c_above = c[j];
  }
  // Tokens tied at key lo: as many as reach the target, in id order.
  const int ties = c_lo - c_above;
  const double need = double(target - w_above);
  const double share = ceil(need * double(ties) / double(w_lo - w_above));  // equal logits, equal weights
  if (ties <= 1 || !(share < double(ties))) return {lo, INT_MAX};
  const int take = share < 1 ? 1 : int(share);
  const int32_t id = FirstReaching(V, [&](int i) {
    uint32_t key;
    return int(weigh(i, &key) > 0 && key == lo);
  }, take, sh);
  return {lo, id < 0 ? INT_MAX : id};
}

// The rows a query reads: raw logits, and with a repetition penalty those of its history penalized.
struct Row {
  const float* raw;
  const uint32_t* seen;  // null: no penalty
  float penalty;
  __device__ float operator()(int i) const {
    const float x = raw[i];
    return seen && (seen[i >> 5] >> (i & 31) & 1u) ? sampling::Penalize(x, penalty) : x;
  }
};

__device__ int32_t Draw(int V, const Row& l, int32_t top, const SampleQuery& q, Shared& sh) {
  const float mx = l(top), inv_temp = 1.0f / q.temperature;
  Cut top_k = kAll;
  if (q.top_k > 0 && q.top_k < V) {
    auto one = [&](int i, uint32_t* key) { *key = OrderKey(l(i)); return 1; };
    top_k = SelectCut(V, one, q.top_k, V, V, sh);
  }
  // Z (weight of the top-k prefix), and weight and count of what min_p keeps of it.
  double s[2] = {0, 0};
  int n[2] = {0, 0};
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float x = l(i);
    if (!top_k.Keeps(OrderKey(x), i)) continue;
    const float w = sampling::Weight(x, mx, inv_temp);
    s[0] += w;
    if (w >= q.min_p && w > 0) s[1] += w, n[1] += 1;  // counted as SelectCut counts: positive weights
  }
  BlockSum(s, n, sh);
  auto kept_weight = [&](int i, uint32_t* key) {
    const float x = l(i);
    *key = OrderKey(x);
    if (!top_k.Keeps(*key, i)) return 0.0;
    const float w = sampling::Weight(x, mx, inv_temp);
    return w >= q.min_p ? double(w) : 0.0;
  };
  Cut top_p = kAll;
  const double target_p = double(q.top_p) * s[0];
  if (q.top_p < 1 && s[1] >= target_p) top_p = SelectCut<double>(V, kept_weight, target_p, s[1], n[1], sh);
  double total[1] = {0};
  int unused[1] = {0};
  for (int i = threadIdx.x; i < V; i += kThreads) {
    uint32_t key;
    const double w = kept_weight(i, &key);
    if (top_p.Keeps(key, i)) total[0] += w;
  }
  BlockSum(total, unused, sh);
  const double target = sampling::Uniform(q.seed, q.draw) * total[0];
  // The first kept token, in id order, whose running weight reaches the target.
  const auto drawn = [&](int i) {
    uint32_t key;
    const double w = kept_weight(i, &key);
    return top_p.Keeps(key, i) ? w : 0.0;
  };
  const int32_t id = FirstReaching(V, drawn, target, sh);
  if (id >= 0) return id;
  // Rounding left the target above the running total: the last kept token of positive weight (the
  // top token, weight 1, unless the row holds NaN).
  unsigned long long last = 0;
  for (int i = threadIdx.x; i < V; i += kThreads)
    if (drawn(i) > 0) last = max(last, (unsigned long long)(i + 1));
  last = BlockMax(last, sh);
  return last > 0 ? int32_t(last - 1) : top;
}

// The chosen token's logprob and the top_n best of the raw logits.
__device__ void Logprobs(int V, const float* raw, int32_t id, const SampleQuery& q, SampleResult* out, Shared& sh) {
  const int32_t top = BlockTop(V, [&](int i) { return raw[i]; }, sh);
  const float mx = raw[top];
  double s[1] = {0};
  int unused[1] = {0};
  for (int i = threadIdx.x; i < V; i += kThreads) s[0] += sampling::LseTerm(raw[i], mx);
  BlockSum(s, unused, sh);
  const float lse = sampling::LogSumExp(mx, s[0]);
  if (threadIdx.x == 0) out->logprob = raw[id] - lse;
  if (q.top_n <= 0) return;
  const int n = q.top_n < V ? q.top_n : V;
  auto one = [&](int i, uint32_t* key) { *key = OrderKey(raw[i]); return 1; };
  const Cut cut = n < V ? SelectCut(V, one, n, V, V, sh) : kAll;
  if (threadIdx.x == 0) sh.gathered = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const uint32_t key = OrderKey(raw[i]);
    if (cut.Keeps(key, i)) {
      const int slot = atomicAdd(&sh.gathered, 1);
      if (slot < kSampleMaxTop) sh.g_key[slot] = key, sh.g_id[slot] = i;
    }
  }
  __syncthreads();
  const int got = sh.gathered < n ? sh.gathered : n;
  if (int(threadIdx.x) < got) {  // each gathered token's place: how many rank before it
    const uint32_t key = sh.g_key[threadIdx.x];
    const int32_t tok = sh.g_id[threadIdx.x];
    int rank = 0;
    for (int k = 0; k < got; ++k) rank += sampling::RanksBefore(sh.g_key[k], sh.g_id[k], key, tok);
    out->top_ids[rank] = tok;
    out->top_logprobs[rank] = raw[tok] - lse;
  }
}

__global__ void __launch_bounds__(kThreads) ChooseKernel(const float* __restrict__ logits, int V,
                                                         const SampleQuery* __restrict__ queries,
                                                         const int32_t* __restrict__ history, uint32_t* seen_all,
                                                         SampleResult* results) {
  __shared__ Shared sh;
  const SampleQuery q = queries[blockIdx.x];
  SampleResult* out = results + blockIdx.x;
  const float* raw = logits + int64_t(q.row) * V;
  uint32_t* seen = nullptr;
  if (q.penalty != 1.0f && q.hist_len > 0) {
    const int64_t words = SampleSeenWords(V);
    seen = seen_all + int64_t(blockIdx.x) * words;
    for (int64_t w = threadIdx.x; w < words; w += kThreads) seen[w] = 0;
    __syncthreads();
    for (int h = threadIdx.x; h < q.hist_len; h += kThreads) {
      const int32_t t = history[q.hist_begin + h];
      if (t >= 0 && t < V) atomicOr(&seen[t >> 5], 1u << (t & 31));
    }
    __syncthreads();
  }
  const Row l{raw, seen, q.penalty};
  const int32_t top = BlockTop(V, l, sh);
  const int32_t id = q.temperature == 0 ? top : Draw(V, l, top, q, sh);
  if (threadIdx.x == 0) out->id = id;
  if (q.top_n >= 0) {
    __syncthreads();
    Logprobs(V, raw, id, q, out, sh);
  }
}

}  // namespace

void ChooseTokens(const float* logits, int vocab, const SampleQuery* queries, int n, const int32_t* history,
                  uint32_t* seen, SampleResult* results, cudaStream_t s) {
  if (n > 0 && vocab > 0) ChooseKernel<<<unsigned(n), kThreads, 0, s>>>(logits, vocab, queries, history, seen, results);
}

}  // namespace atp::cuda
