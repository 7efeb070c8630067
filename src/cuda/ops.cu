// Kernels behind cuda/ops.h: one thread per element, or one block per row where a row reduces.
#include <cstdlib>
#include <cuda_fp16.h>

#include "cuda/convert.cuh"
#include "cuda/ops.h"

namespace atp::cuda {

namespace {

constexpr int kThreads = 256;
inline unsigned Blocks(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void ToBf16Kernel(const T* src, int64_t n, bf16* dst) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __float2bfloat16_rn(ToFloat(src[i]));
}

__global__ void EmbedKernel(const bf16* table, const int32_t* tokens, int d, float* x) {
  const int64_t r = blockIdx.x;
  const bf16* row = table + int64_t(tokens[r]) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) x[r * d + i] = __bfloat162float(row[i]);
}

// Sum over the block; every thread gets the total. `red` holds one float per warp.
__device__ float BlockSum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0;
  for (int w = 0; w < warps; ++w) t += red[w];
  __syncthreads();  // red may be reused by the caller's next reduction
  return t;
}

template <typename T>
__global__ void RmsNormKernel(const float* x, const int32_t* rows, int d, const float* w, float eps, T* y) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows ? int64_t(rows[r]) : r) * d;
  float ss = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  // f32 sums of d/256 squares per thread, then a tree: relative error ~1e-6, far under bf16's
  // 4e-3 rounding of the output (the CPU sums in double).
  const float inv = rsqrtf(BlockSum(ss, red) / float(d) + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) y[r * d + i] = FromFloat<T>(xr[i] * inv * w[i]);
}

// One block per row; thread i handles rotation pair i of every head (and the V copy).
__global__ void BiasRopeSplitKernel(const float* qkv, const float* bias, const int32_t* pos, const float* inv_freq,
                                    int n_heads, int n_kv, int hd, float* q, float* k, float* v) {
  const int64_t r = blockIdx.x;
  const int qd = n_heads * hd, kvd = n_kv * hd, width = qd + 2 * kvd, half = hd / 2;
  const float* in = qkv + r * width;
  auto at = [&](int c) { return bias ? in[c] + bias[c] : in[c]; };
  for (int c = threadIdx.x; c < kvd; c += blockDim.x) v[r * kvd + c] = at(qd + kvd + c);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // Same f32 angle as the CPU path (and PyTorch), then the accurate cosf/sinf.
    const float a = float(pos[r]) * inv_freq[i];
    const float cs = cosf(a), sn = sinf(a);
    for (int h = 0; h < n_heads + n_kv; ++h) {
      const int base = h < n_heads ? h * hd : qd + (h - n_heads) * hd;
      const float x0 = at(base + i), x1 = at(base + i + half);
      float* out = h < n_heads ? q + r * qd + h * hd : k + r * kvd + (h - n_heads) * hd;
      out[i] = x0 * cs - x1 * sn;
      out[i + half] = x1 * cs + x0 * sn;
    }
  }
}

__global__ void SiluMulKernel(const float* gu, int64_t n, int ffn, bf16* h) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * ffn) return;
  const int64_t r = i / ffn, c = i % ffn;
  const float g = gu[r * 2 * ffn + c], u = gu[r * 2 * ffn + ffn + c];
  h[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
}

__device__ __forceinline__ float RoundBf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Block b computes rows b * 8 .. b * 8 + 7, one per warp, after forming the input in shared memory
// (xs, `in` floats). Lane l reads W's 16-byte vectors l, l + 32, ...: the warp covers 512 contiguous
// bytes per load, and four loads are issued before their use.
__global__ void __launch_bounds__(256) GemvKernel(const bf16* W, int64_t out, int in, GemvInput x, float beta, float* y) {
  extern __shared__ float xs[];  // (in)
  __shared__ float red[32];
  float inv = 1.f;
  if (x.kind == GemvInput::kRmsNorm) {
    float ss = 0;
    for (int i = threadIdx.x; i < in; i += blockDim.x) ss += x.x[i] * x.x[i];
    inv = rsqrtf(BlockSum(ss, red) / float(in) + x.eps);
  }
  for (int i = threadIdx.x; i < in; i += blockDim.x) {
    float v = x.x[i];
    if (x.kind == GemvInput::kRmsNorm) v = v * inv * x.norm_w[i];
    if (x.kind == GemvInput::kSiluMul) v = v / (1.0f + expf(-v)) * x.x[in + i];
    xs[i] = RoundBf16(v);
  }
  __syncthreads();
  const int64_t row = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= out) return;
  const uint4* w = reinterpret_cast<const uint4*>(W + row * in);
  const int n16 = in / 8;  // 16-byte vectors per row
  float acc = 0;
  for (int base = lane; base < n16; base += 4 * 32) {
    uint4 a[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (base + u * 32 < n16) a[u] = __ldcs(w + base + u * 32);  // W streams once: evict first
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = base + u * 32;
      if (i >= n16) break;
      const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a[u]);
      const float4 x0 = reinterpret_cast<const float4*>(xs)[2 * i], x1 = reinterpret_cast<const float4*>(xs)[2 * i + 1];
      const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 fa = __bfloat1622float2(pa[k]);
        acc += fa.x * xv[2 * k] + fa.y * xv[2 * k + 1];
      }
    }
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[row] = beta == 0.f ? acc : acc + beta * y[row];
}

__global__ void F32ToBf16Kernel(const float* x, int64_t n, bf16* y) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

// One block per (token, head) row, one thread per output element; in_dim <= head_dim (<= 128) terms.
__global__ void ProjectHeadsKernel(const float* in, int heads, int in_dim, const float* P, int heads_per_basis,
                                   int out_dim, int s_in, int s_out, float scale, float* out) {
  const int64_t row = blockIdx.x;  // t * heads + h
  const int h = int(row % heads), o = threadIdx.x;
  if (o >= out_dim) return;
  const float* x = in + row * in_dim;
  const float* p = P + int64_t(h / heads_per_basis) * in_dim * out_dim + int64_t(o) * s_out;
  float acc = 0.f;
  for (int i = 0; i < in_dim; ++i) acc += x[i] * p[int64_t(i) * s_in];
  out[row * out_dim + o] = scale * acc;
}

}  // namespace

void ToBf16(DType t, const void* src, int64_t n, bf16* dst, cudaStream_t s) {
  if (n == 0) return;
  switch (t) {
    case DType::kF32: ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(static_cast<const float*>(src), n, dst); break;
    case DType::kF16: ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(static_cast<const __half*>(src), n, dst); break;
    case DType::kBF16: ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(static_cast<const bf16*>(src), n, dst); break;
    case DType::kQ8_0:
    case DType::kQ4_0: std::abort();  // a bug: callers dequantize blocks on the host (forward.cpp)
  }
}

void EmbedRows(const bf16* table, const int32_t* tokens, int64_t n, int d, float* x, cudaStream_t s) {
  if (n > 0) EmbedKernel<<<unsigned(n), kThreads, 0, s>>>(table, tokens, d, x);
}

void RmsNormBf16(const float* x, const int32_t* rows, int64_t n, int d, const float* w, float eps, bf16* y,
                 cudaStream_t s) {
  if (n > 0) RmsNormKernel<<<unsigned(n), kThreads, 0, s>>>(x, rows, d, w, eps, y);
}

void RmsNormF32(const float* x, int64_t n, int d, const float* w, float eps, float* y, cudaStream_t s) {
  if (n > 0) RmsNormKernel<<<unsigned(n), kThreads, 0, s>>>(x, static_cast<const int32_t*>(nullptr), d, w, eps, y);
}

void BiasRopeSplit(const float* qkv, const float* bias, const int32_t* pos, const float* inv_freq, int64_t n,
                   int n_heads, int n_kv, int head_dim, float* q, float* k, float* v, cudaStream_t s) {
  if (n > 0) BiasRopeSplitKernel<<<unsigned(n), 128, 0, s>>>(qkv, bias, pos, inv_freq, n_heads, n_kv, head_dim, q, k, v);
}

void SiluMulBf16(const float* gu, int64_t n, int ffn, bf16* h, cudaStream_t s) {
  if (n > 0) SiluMulKernel<<<Blocks(n * ffn), kThreads, 0, s>>>(gu, n, ffn, h);
}

void Gemv(const bf16* W, int64_t out, int64_t in, const GemvInput& x, float beta, float* y, cudaStream_t s) {
  if (out > 0) GemvKernel<<<unsigned((out + 7) / 8), 256, size_t(in) * sizeof(float), s>>>(W, out, int(in), x, beta, y);
}

void ProjectHeads(const float* in, int64_t n, int heads, int in_dim, const float* P, int heads_per_basis,
                  int out_dim, int s_in, int s_out, float scale, float* out, cudaStream_t s) {
  if (n > 0)
    ProjectHeadsKernel<<<unsigned(n * heads), unsigned((out_dim + 31) / 32 * 32), 0, s>>>(
        in, heads, in_dim, P, heads_per_basis, out_dim, s_in, s_out, scale, out);
}

void F32ToBf16(const float* x, int64_t n, bf16* y, cudaStream_t s) {
  if (n > 0) F32ToBf16Kernel<<<Blocks(n), kThreads, 0, s>>>(x, n, y);
}

}  // namespace atp::cuda
