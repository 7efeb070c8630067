// Micro-benchmarks of decode attention over a long cache: one query token against 4096 keys with
// Llama-3.2-1B's head layout (32 query heads, 8 KV heads, head_dim 64), through the dense policy
// and through the raw per-head kernels. Counter: KV bytes read per second.
// Run: ./build/atp_microbench --benchmark_filter=Attn
#include <benchmark/benchmark.h>

#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kv/kv_policy.h"

namespace atp {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

const KvShape kShape{0, 2048, 32, 8, 64};

// args: keys in the cache, storage dtype (0 f32, 1 bf16).
void BM_AttnDenseDecode(benchmark::State& st) {
  const int64_t T = st.range(0);
  const char* spec = st.range(1) ? "dense:dtype=bf16" : "dense";
  auto f = ParseKvPolicy(spec);
  if (!f.ok()) {
    st.SkipWithError(f.status().ToString().c_str());
    return;
  }
  auto kv = (*f)->Create(kShape);
  const int kvd = kShape.kv_dim(), qd = kShape.q_dim();
  auto K = Random(size_t(T * kvd), 1), V = Random(size_t(T * kvd), 2);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  if (!kv->Append(pos, nullptr, K.data(), V.data()).ok()) {
    st.SkipWithError("append failed");
    return;
  }
  auto Q = Random(size_t(qd), 3);
  std::vector<float> O(static_cast<size_t>(qd));
  const int32_t last = int32_t(T - 1);
  for (auto _ : st) {
    if (!kv->Attend(std::span<const int32_t>(&last, 1), Q.data(), O.data()).ok()) st.SkipWithError("attend failed");
    benchmark::DoNotOptimize(O.data());
  }
  st.counters["kv_GB/s"] = benchmark::Counter(double(kv->Bytes()) * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttnDenseDecode)->Args({4096, 0})->Args({4096, 1})->ArgNames({"keys", "bf16"})->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// One query head against `keys` f32 rows of head_dim 64 with a KV-head stride of 512 (8 heads):
// scores, softmax left out, weighted sum of values.
void BM_AttnKernelsOneHead(benchmark::State& st) {
  const int64_t T = st.range(0);
  const int hd = 64, stride = 512;
  auto K = Random(size_t(T * stride), 1), V = Random(size_t(T * stride), 2), q = Random(hd, 3);
  std::vector<float> s(static_cast<size_t>(T), 1.0f / float(T)), o(hd);
  KvRows k{DType::kF32, K.data(), stride, T}, v{DType::kF32, V.data(), stride, T};
  for (auto _ : st) {
    AttnScores(q.data(), hd, k, 0.125f, s.data());
    std::fill(s.begin(), s.end(), 1.0f / float(T));
    AttnAccumulate(s.data(), v, hd, o.data());
    benchmark::DoNotOptimize(o.data());
  }
  st.counters["kv_GB/s"] =
      benchmark::Counter(2.0 * double(T * hd * 4) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttnKernelsOneHead)->Arg(4096)->ArgName("keys")->Unit(benchmark::kMicrosecond);

// The 4 query heads of one KV head (Llama-3.2-1B's group) against 4096 keys: per-head kernel calls
// (arg 0: each K and V row read 4 times) or the grouped kernels (arg 1: read once per block).
void BM_AttnGqaGroup(benchmark::State& st) {
  const int64_t T = 4096;
  const int hd = 64, stride = 512, G = 4;
  auto K = Random(size_t(T * stride), 1), V = Random(size_t(T * stride), 2), q = Random(size_t(G * hd), 3);
  std::vector<float> s(size_t(G * T), 1.0f / float(T)), o(size_t(G * hd)), odd(o.size());
  KvRows k{DType::kF32, K.data(), stride, T}, v{DType::kF32, V.data(), stride, T};
  const bool grouped = st.range(0) != 0;
  for (auto _ : st) {
    if (grouped) {
      AttnScoresGroup(q.data(), G, hd, k, 0.125f, s.data(), T);
      AttnAccumulateGroup(s.data(), T, G, v, hd, o.data(), odd.data(), 0);
    } else {
      for (int g = 0; g < G; ++g) AttnScores(q.data() + g * hd, hd, k, 0.125f, s.data() + g * T);
      for (int g = 0; g < G; ++g) AttnAccumulate(s.data() + g * T, v, hd, o.data() + g * hd);
    }
    benchmark::DoNotOptimize(o.data());
  }
  st.counters["kv_GB/s"] =
      benchmark::Counter(2.0 * double(T * hd * 4) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttnGqaGroup)->Arg(0)->Arg(1)->ArgName("grouped")->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace atp
