// Micro-benchmarks of the linear layers: the decode GEMV on bf16 and block weights at Llama-3.2-1B's
// MLP shapes (bandwidth-bound: the counter is weight bytes streamed per second) and the prefill GEMM.
// Run: ./build/atp_microbench --benchmark_filter=Gemv
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/interleave.h"
#include "core/tensor.h"
#include "eval/bench.h"
#include "kernels/matmul.h"

namespace atp {
namespace {

// Several copies of a weight matrix (so the set exceeds the caches) in anonymous memory on
// transparent huge pages, as LlamaModel keeps resident weights.
struct Weights {
  void* mem = nullptr;
  size_t bytes = 0;
  std::vector<TensorView> views;
  ~Weights() {
    if (mem) ::munmap(mem, bytes);
  }
};

// Weights of dtype t (bf16 or a block dtype, quantized by the library) from uniform random values;
// the copies are byte copies of the first. interleaved: in groups of 8 rows (core/interleave.h), the
// layout LlamaModel gives block matrices for the CPU decode.
void MakeWeights(DType t, int64_t out, int64_t in, int copies, Weights* w, bool interleaved = false) {
  const size_t one = DTypeBytes(t, out * in);
  w->bytes = one * size_t(copies);
  w->mem = ::mmap(nullptr, w->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ::madvise(w->mem, w->bytes, MADV_HUGEPAGE);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  std::vector<float> v(size_t(out * in));
  for (float& x : v) x = u(rng);
  auto* p = static_cast<uint8_t*>(w->mem);
  if (interleaved) {
    std::vector<uint8_t> plain(one);
    FromF32(t, v.data(), plain.data(), v.size());
    InterleaveRows(t, plain.data(), out, in, p);
  } else {
    FromF32(t, v.data(), p, v.size());
  }
  for (int c = 0; c < copies; ++c) {
    if (c > 0) std::memcpy(p + size_t(c) * one, p, one);
    TensorView view{t, {out, in}, p + size_t(c) * one};
    view.interleaved = interleaved;
    w->views.push_back(view);
  }
}

// The machine's read bandwidth as `atp bench --roofline` measures it, for comparison.
void BM_ReadBandwidth(benchmark::State& st) {
  double bw = 0;
  for (auto _ : st) bw = MeasureReadBandwidth(size_t(256) << 20, 5);
  st.counters["GB/s"] = bw / 1e9;
}
BENCHMARK(BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);

// args: out rows, in columns, rows of x (1 = one decode token), weight copies cycled through
// (1: the matrix may sit in cache; 8: 256 MiB at 2048x8192, streamed from memory like decode).
void BM_GemvBf16(benchmark::State& st) {
  const int64_t out = st.range(0), in = st.range(1), n = st.range(2);
  const int copies = int(st.range(3));
  Weights w;
  MakeWeights(DType::kBF16, out, in, copies, &w);
  std::vector<float> x(size_t(n * in), 0.01f), y(size_t(n * out));
  size_t i = 0;
  for (auto _ : st) {
    GemvRows(x.data(), n, w.views[i++ % w.views.size()], y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["weight_GB/s"] = benchmark::Counter(double(out * in * 2) * double(st.iterations()) / 1e9,
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemvBf16)
    ->Args({8192, 2048, 1, 1})
    ->Args({8192, 2048, 1, 8})
    ->Args({2048, 8192, 1, 1})
    ->Args({2048, 8192, 1, 8})
    ->Args({2048, 8192, 4, 8})
    ->ArgNames({"out", "in", "n", "copies"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The same for block weights, which the GEMV multiplies with x quantized to 8-bit blocks in integer
// arithmetic (kernels/q8_dot.h). args: dtype (as DType's enum value), out, in, rows of x, copies,
// interleaved (1: groups of 8 rows, the decode's layout; 0: ggml's, as with --no-repack). out = 1024
// with one copy (0.3-1.1 MB) stays in a core's L2: the kernel's arithmetic, not the memory, decides.
// n = 64 rows of x is prefill through the integer kernels (kernels/matmul.h, IntegerPrefill); its
// weight_GB/s counts the weights once per call.
void BM_GemvBlocks(benchmark::State& st) {
  const DType t = DType(st.range(0));
  const int64_t out = st.range(1), in = st.range(2), n = st.range(3);
  Weights w;
  MakeWeights(t, out, in, int(st.range(4)), &w, st.range(5) != 0);
  std::vector<float> x(size_t(n * in)), y(size_t(n * out));
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0, 1);
  for (float& v : x) v = g(rng);
  size_t i = 0;
  for (auto _ : st) {
    GemvRows(x.data(), n, w.views[i++ % w.views.size()], y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetLabel(std::string(DTypeName(t)));
  st.counters["weight_GB/s"] = benchmark::Counter(double(DTypeBytes(t, out * in)) * double(st.iterations()) / 1e9,
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemvBlocks)
    ->ArgsProduct({{int(DType::kQ8_0), int(DType::kQ4_0), int(DType::kQ4_1), int(DType::kQ5_0), int(DType::kQ5_1),
                    int(DType::kIQ4_NL), int(DType::kQ2_K), int(DType::kQ3_K), int(DType::kQ4_K), int(DType::kQ5_K),
                    int(DType::kQ6_K), int(DType::kIQ4_XS)},
                   {8192, 1024}, {2048}, {1, 64}, {1, 8}, {0, 1}})
    ->ArgNames({"dtype", "out", "in", "n", "copies", "interleaved"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Prefill: n rows through OpenBLAS on f32 panels converted from bf16.
void BM_GemmBf16(benchmark::State& st) {
  const int64_t out = st.range(0), in = st.range(1), n = st.range(2);
  Weights w;
  MakeWeights(DType::kBF16, out, in, 1, &w);
  std::vector<float> x(size_t(n * in), 0.01f), y(size_t(n * out));
  for (auto _ : st) {
    GemmRows(x.data(), n, w.views[0], y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(out * in * n) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmBf16)->Args({8192, 2048, 128})->Args({8192, 2048, 512})->ArgNames({"out", "in", "n"})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace atp
