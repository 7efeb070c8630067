// atp_cuda_attn: the GPU attention kernels alone, at llama-3.2-1b's attention shape (32 query heads,
// 8 KV heads, head_dim 64), per KV form and context, plus the device's copy bandwidth; the
// counterpart of bench/cuda_sdpa.py (PyTorch's scaled_dot_product_attention on the same shapes).
// Also the decode step's projections alone (cuBLAS bf16 GEMMs with one row, every layer's weights
// once): what the forward pass could reach without its small kernels and launch gaps.
// Prints one JSON object per line. Decode reads the caches of 16 layers in turn, like a decode
// step, so that no layer's rows are still in L2 when it is read again.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention.h"
#include "cuda/block_basis.h"
#include "cuda/ops.h"

namespace {

using atp::cuda::DeviceRows;
using atp::cuda::KvFormat;

#define CHECK(x)                                                                         \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

constexpr int kLayers = 16, kHeads = 32, kKv = 8, kHd = 64;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Milliseconds of fn() on the GPU: median of `reps` event-timed runs after 2 warm-ups.
template <typename F>
double TimeMs(F fn, int reps) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int r = 0; r < reps + 2; ++r) {
    CHECK(cudaEventRecord(a));
    fn();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaGetLastError());
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    if (r >= 2) t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return Median(t);
}

const char* Name(KvFormat f) {
  switch (f) {
    case KvFormat::kF32: return "dense:dtype=f32";
    case KvFormat::kF16: return "dense:dtype=f16";
    case KvFormat::kBF16: return "dense:dtype=bf16";
    case KvFormat::kMxFp8E4M3: return "mx:fmt=fp8_e4m3";
    case KvFormat::kMxFp4: return "mx:fmt=fp4";
    default: return "?";  // KIVI rows are measured through the policy (atp bench), not here
  }
}

// The same kernels under ATP's visibility (block 64, rank 16, window 64: r/B = 1/4): the query at
// L-1 sees 16 principal rows per compressed block and its exact window, so decode reads about a
// quarter of the rows. The principal rows are the layer's first rows (random values; only their
// count matters for time). Then the block basis alone (cuda/block_basis.h: Gram + Jacobi), for
// one block (a decode step's) and for 64 (a prefill's launch).
void AtpRows(const atp::cuda::AttnShape& shape, const std::vector<DeviceRows>& ks, const std::vector<DeviceRows>& vs,
             const float* q, float* o, int sms, int L) {
  constexpr int kBlock = 64, kRank = 16, kWindow = 64, kDModel = 2048;
  const int64_t nb = atp::cuda::CompressedBlocks(kBlock, kWindow, L - 1);
  std::vector<int32_t> ends(size_t(nb) + 1);
  for (size_t b = 0; b < ends.size(); ++b) ends[b] = int32_t((b + 1) * kRank);
  int32_t* d_ends;
  CHECK(cudaMalloc(&d_ends, ends.size() * sizeof(int32_t)));
  CHECK(cudaMemcpy(d_ends, ends.data(), ends.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  atp::cuda::Visibility vis;
  vis.block = kBlock, vis.window = kWindow, vis.pre_end = d_ends, vis.last_pre = nb * kRank;
  float* ws;  // sized for the rows this query sees: its two ranges may take more splits than L dense rows
  CHECK(cudaMalloc(&ws, sizeof(float) * size_t(atp::cuda::AttendWorkspaceFloats(shape, vis.last_pre + L - nb * kBlock, sms))));
  const double dec = TimeMs([&] {
    for (int l = 0; l < kLayers; ++l) {
      vis.pk = ks[size_t(l)], vis.pv = vs[size_t(l)];
      atp::cuda::Attend(shape, ks[size_t(l)], vs[size_t(l)], vis, q, 1, L - 1, o, ws, sms, nullptr);
    }
  }, 20) / kLayers;
  const double bytes = double(vis.last_pre + L - nb * kBlock) * 2 * atp::cuda::TokenElemBytes(KvFormat::kBF16, kHd, kKv);
  std::printf("{\"what\":\"decode\",\"kv\":\"atp_b64_r16_bf16\",\"context\":%d,\"us_per_layer\":%.2f,"
              "\"kv_bytes_per_layer\":%.0f,\"gb_s\":%.1f}\n", L, dec * 1e3, bytes, bytes / dec / 1e6);
  vis.pk = ks[0], vis.pv = vs[0];
  const double pre = TimeMs([&] { atp::cuda::Attend(shape, ks[0], vs[0], vis, q, L, 0, o, ws, sms, nullptr); }, 3);
  std::printf("{\"what\":\"prefill\",\"kv\":\"atp_b64_r16_bf16\",\"context\":%d,\"ms_per_layer\":%.3f}\n", L, pre);
  CHECK(cudaFree(d_ends));
  CHECK(cudaFree(ws));
  if (L != 32768) return;  // q holds enough Gaussian floats for 64 blocks only here
  for (int n : {1, 64}) {
    float *x, *u;
    int32_t* ranks;
    CHECK(cudaMalloc(&x, sizeof(float) * size_t(n) * kBlock * kDModel));
    CHECK(cudaMalloc(&u, sizeof(float) * size_t(n) * kBlock * kBlock));
    CHECK(cudaMalloc(&ranks, sizeof(int32_t) * size_t(n)));
    CHECK(cudaMemcpy(x, q, sizeof(float) * size_t(n) * kBlock * kDModel, cudaMemcpyDeviceToDevice));  // Gaussian rows
    const double ms = TimeMs([&] { atp::cuda::BlockBases(nullptr, x, n, 1, kBlock, kDModel, kDModel, kRank, 0, u, ranks, nullptr); }, 5);
    std::printf("{\"what\":\"block_basis\",\"blocks\":%d,\"block\":%d,\"d_model\":%d,\"ms\":%.3f}\n", n, kBlock, kDModel, ms);
    CHECK(cudaFree(x));
    CHECK(cudaFree(u));
    CHECK(cudaFree(ranks));
  }
}

}  // namespace

// argv[1] (optional): the only context to time (e.g. 32768, to profile one size with ncu).
int main(int argc, char** argv) {
  const int only = argc > 1 ? std::atoi(argv[1]) : 0;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  {  // device-to-device copy of 2 GiB: the bandwidth that bounds decode (bytes read + written)
    const size_t n = size_t(2) << 30;
    void *a, *b;
    CHECK(cudaMalloc(&a, n));
    CHECK(cudaMalloc(&b, n));
    CHECK(cudaMemset(a, 1, n));
    const double ms = TimeMs([&] { CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice)); }, 10);
    std::printf("{\"what\":\"copy\",\"bytes\":%zu,\"ms\":%.4f,\"gb_s_read_plus_write\":%.1f}\n", n, ms, 2.0 * n / ms / 1e6);
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
  }
  {  // the projections of one decode step: per layer Wqkv (3072x2048), Wo, Wgate|Wup, Wdown, then the LM head
    const int64_t d = 2048, ffn = 8192, vocab = 128256;
    const int64_t shapes[4][2] = {{3072, d}, {d, d}, {2 * ffn, d}, {d, ffn}};
    int64_t total = vocab * d;
    for (auto& sh : shapes) total += kLayers * sh[0] * sh[1];
    __nv_bfloat16* w;
    float *x, *y;
    CHECK(cudaMalloc(&w, size_t(total) * 2));
    CHECK(cudaMemset(w, 0x3c, size_t(total) * 2));  // 0x3c3c: bf16 0.0115, not zero
    CHECK(cudaMalloc(&x, size_t(ffn) * 4));
    CHECK(cudaMemset(x, 0x3c, size_t(ffn) * 4));
    CHECK(cudaMalloc(&y, size_t(vocab) * 4));
    cublasHandle_t h;
    cublasCreate(&h);
    const float one = 1, zero = 0;
    const double ms = TimeMs([&] {
      const __nv_bfloat16* p = w;
      for (int l = 0; l < kLayers; ++l)
        for (auto& sh : shapes) {
          cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(sh[0]), 1, int(sh[1]), &one, p, CUDA_R_16BF, int(sh[1]), x,
                       CUDA_R_16BF, int(sh[1]), &zero, y, CUDA_R_32F, int(sh[0]), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
          p += sh[0] * sh[1];
        }
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(vocab), 1, int(d), &one, p, CUDA_R_16BF, int(d), x, CUDA_R_16BF,
                   int(d), &zero, y, CUDA_R_32F, int(vocab), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }, 20);
    std::printf("{\"what\":\"decode_gemms_cublas\",\"weight_bytes\":%lld,\"ms\":%.4f,\"gb_s\":%.1f}\n", (long long)(total * 2), ms,
                double(total) * 2 / ms / 1e6);
    // The same projections through the backend's own GEMV (cuda/ops.h), from an f32 input.
    const atp::cuda::GemvInput in{atp::cuda::GemvInput::kF32, x};
    const double ms2 = TimeMs([&] {
      const __nv_bfloat16* p = w;
      for (int l = 0; l < kLayers; ++l)
        for (auto& sh : shapes) {
          atp::cuda::Gemv(p, sh[0], sh[1], in, 0.f, y, nullptr);
          p += sh[0] * sh[1];
        }
      atp::cuda::Gemv(p, vocab, d, in, 0.f, y, nullptr);
    }, 20);
    std::printf("{\"what\":\"decode_gemms_gemv\",\"weight_bytes\":%lld,\"ms\":%.4f,\"gb_s\":%.1f}\n", (long long)(total * 2), ms2,
                double(total) * 2 / ms2 / 1e6);
    cublasDestroy(h);
    CHECK(cudaFree(w));
    CHECK(cudaFree(x));
    CHECK(cudaFree(y));
  }
  const atp::cuda::AttnShape shape{kHeads, kKv, kHd};
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kMxFp8E4M3, KvFormat::kMxFp4}) {
    for (int L : {1024, 8192, 32768}) {
      if (only && L != only) continue;
      const int64_t eb = atp::cuda::TokenElemBytes(f, kHd, kKv), sb = atp::cuda::TokenScaleBytes(f, kHd, kKv);
      // Random rows (a fresh draw per layer would take minutes on the host: one draw, stored
      // through the policy's own encoder into every layer).
      std::vector<float> h(size_t(L) * kKv * kHd);
      for (auto& x : h) x = nd(rng);
      float* src;
      CHECK(cudaMalloc(&src, h.size() * sizeof(float)));
      CHECK(cudaMemcpy(src, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
      std::vector<uint8_t*> bufs;
      std::vector<DeviceRows> ks, vs;
      for (int l = 0; l < kLayers; ++l) {
        for (auto* rows : {&ks, &vs}) {
          uint8_t* p;
          CHECK(cudaMalloc(&p, size_t(L) * (eb + sb)));
          bufs.push_back(p);
          rows->push_back({f, p, sb ? p + L * eb : nullptr, kHd, kKv});
        }
        atp::cuda::StoreKv(ks.back(), vs.back(), 0, src, src, L, nullptr);
      }
      float *q, *o, *ws;
      CHECK(cudaMalloc(&q, sizeof(float) * size_t(L) * kHeads * kHd));
      CHECK(cudaMalloc(&o, sizeof(float) * size_t(L) * kHeads * kHd));
      CHECK(cudaMalloc(&ws, sizeof(float) * size_t(atp::cuda::AttendWorkspaceFloats(shape, L, sms))));
      std::vector<float> hq(size_t(L) * kHeads * kHd);
      for (auto& x : hq) x = nd(rng);
      CHECK(cudaMemcpy(q, hq.data(), hq.size() * sizeof(float), cudaMemcpyHostToDevice));
      CHECK(cudaDeviceSynchronize());

      // Decode: the query at position L-1 over L rows, one call per layer.
      const double dec = TimeMs([&] {
        for (int l = 0; l < kLayers; ++l) atp::cuda::Attend(shape, ks[size_t(l)], vs[size_t(l)], {}, q, 1, L - 1, o, ws, sms, nullptr);
      }, 20) / kLayers;
      const double bytes = double(L) * 2 * (eb + sb);  // K and V of one layer
      std::printf("{\"what\":\"decode\",\"kv\":\"%s\",\"context\":%d,\"us_per_layer\":%.2f,\"kv_bytes_per_layer\":%.0f,"
                  "\"gb_s\":%.1f}\n", Name(f), L, dec * 1e3, bytes, bytes / dec / 1e6);
      // Prefill: L queries from position 0 over the same rows (causal), one layer.
      const double pre = TimeMs([&] { atp::cuda::Attend(shape, ks[0], vs[0], {}, q, L, 0, o, ws, sms, nullptr); }, 3);
      const double flop = 4.0 * kHd * kHeads * (double(L) * (L + 1) / 2);  // QK^T and PV over the causal half
      std::printf("{\"what\":\"prefill\",\"kv\":\"%s\",\"context\":%d,\"ms_per_layer\":%.3f,\"tflop_s\":%.2f}\n", Name(f), L,
                  pre, flop / pre / 1e9);
      if (f == KvFormat::kBF16) AtpRows(shape, ks, vs, q, o, sms, L);
      std::fflush(stdout);
      for (auto* p : bufs) CHECK(cudaFree(p));
      CHECK(cudaFree(src));
      CHECK(cudaFree(q));
      CHECK(cudaFree(o));
      CHECK(cudaFree(ws));
    }
  }
  return 0;
}
