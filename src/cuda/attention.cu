// Kernels behind cuda/attention.h. Every kernel reads rows through Load8<F>, the one place that
// knows a storage form, so decode and prefill share the dequantization (FlashInfer's split of data
// from math, STYLE.md 6).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <mma.h>

#include <algorithm>
#include <cmath>

#include "cuda/attention.h"
#include "cuda/convert.cuh"

namespace atp::cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxGroup = 8;  // query heads per KV head that one block serves (decode: GM <= 8)

int ElementBits(KvFormat f) {
  switch (f) {
    case KvFormat::kF32: return 32;
    case KvFormat::kF16:
    case KvFormat::kBF16: return 16;
    case KvFormat::kMxFp8E4M3: return 8;
    case KvFormat::kMxFp4: return 4;
    case KvFormat::kKivi2: return 2;
    case KvFormat::kKivi4: return 4;
    case KvFormat::kKivi8: return 8;
  }
  return 0;
}

__host__ __device__ constexpr bool IsKiviF(KvFormat f) { return f == KvFormat::kKivi2 || f == KvFormat::kKivi4 || f == KvFormat::kKivi8; }
__host__ __device__ constexpr int KiviBits(KvFormat f) { return f == KvFormat::kKivi2 ? 2 : f == KvFormat::kKivi4 ? 4 : 8; }

// Calls fn with std::integral_constant<KvFormat, f>: one instantiation per form.
template <typename Fn>
void WithFormat(KvFormat f, Fn&& fn) {
  using K = KvFormat;
  switch (f) {
    case K::kF32: return fn(std::integral_constant<K, K::kF32>{});
    case K::kF16: return fn(std::integral_constant<K, K::kF16>{});
    case K::kBF16: return fn(std::integral_constant<K, K::kBF16>{});
    case K::kMxFp8E4M3: return fn(std::integral_constant<K, K::kMxFp8E4M3>{});
    case K::kMxFp4: return fn(std::integral_constant<K, K::kMxFp4>{});
    case K::kKivi2: return fn(std::integral_constant<K, K::kKivi2>{});
    case K::kKivi4: return fn(std::integral_constant<K, K::kKivi4>{});
    case K::kKivi8: return fn(std::integral_constant<K, K::kKivi8>{});
  }
}

// 2^(e - 127) for an E8M0 byte, built from bits (exact, the subnormal 2^-127 included); 0xFF is NaN.
__device__ __forceinline__ float E8M0(uint8_t e) {
  if (e == 0xFF) return __int_as_float(0x7fc00000);
  return e == 0 ? __int_as_float(0x00400000) : __int_as_float(int(e) << 23);
}

// Elements 8c .. 8c+7 of one row as stored: 32, 16, 8 or 4 bytes of elements (and the MX block
// scale byte). Loading (LoadRaw8) and decoding (Decode8) are apart so that a loop can put many
// rows' loads in flight before decoding any.
template <KvFormat F>
struct Raw8 {
  uint4 u;  // f32: the first 4 elements in u and the next 4 in v; f16/bf16: all 8 in u
  uint4 v;  // f32 only
};
template <>
struct Raw8<KvFormat::kMxFp8E4M3> {
  uint2 u;
  uint8_t scale;
};
template <>
struct Raw8<KvFormat::kMxFp4> {
  uint32_t u;
  uint8_t scale;
};
// KIVI: 8 codes (2, 4 or 8 bytes) and the 8 elements' f16 scales and zeros (a value row's single
// pair repeated).
struct RawKivi {
  uint2 u;
  uint4 s, z;
};
template <>
struct Raw8<KvFormat::kKivi2> : RawKivi {};
template <>
struct Raw8<KvFormat::kKivi4> : RawKivi {};
template <>
struct Raw8<KvFormat::kKivi8> : RawKivi {};

// Rows of a form kept in flight per lane by the decode loops: about 64 bytes each form.
template <KvFormat F>
constexpr int kRowsInFlight = F == KvFormat::kF32 ? 2 : F == KvFormat::kMxFp8E4M3 ? 8 : F == KvFormat::kMxFp4 ? 16 : 4;

// A KIVI row's 8 parameters of elements 8c .. 8c+7 (see DeviceRows).
__device__ __forceinline__ void KiviParams8(const DeviceRows& r, int64_t j, int h, int c, uint4* s, uint4* z) {
  const auto* p = reinterpret_cast<const uint16_t*>(r.scales);
  if (r.channel_params) {
    const int64_t base = ((j / r.group) * r.n_kv + h) * 2 * r.dim + c * 8;
    *s = *reinterpret_cast<const uint4*>(p + base);
    *z = *reinterpret_cast<const uint4*>(p + base + r.dim);
  } else {
    const int ng = r.dim / r.group;
    const int64_t base = (j * r.n_kv + h) * 2 * ng + (c * 8) / r.group;
    const uint32_t sc = p[base], ze = p[base + ng];
    const uint32_t s2 = sc | sc << 16, z2 = ze | ze << 16;
    *s = make_uint4(s2, s2, s2, s2);
    *z = make_uint4(z2, z2, z2, z2);
  }
}

template <KvFormat F>
__device__ __forceinline__ Raw8<F> LoadRaw8(const DeviceRows& r, int64_t j, int h, int c) {
  const int64_t row = j * r.n_kv + h, first = row * r.dim + c * 8;  // element index
  Raw8<F> raw;
  if constexpr (F == KvFormat::kF32) {
    raw.u = reinterpret_cast<const uint4*>(r.elems)[first / 4];
    raw.v = reinterpret_cast<const uint4*>(r.elems)[first / 4 + 1];
  } else if constexpr (F == KvFormat::kF16 || F == KvFormat::kBF16) {
    raw.u = reinterpret_cast<const uint4*>(r.elems)[first / 8];
  } else if constexpr (IsKiviF(F)) {  // element i in bits [b*i, b*i+b) of the row's little-endian stream
    if constexpr (F == KvFormat::kKivi2) {
      raw.u = make_uint2(reinterpret_cast<const uint16_t*>(r.elems)[first / 8], 0);
    } else if constexpr (F == KvFormat::kKivi4) {
      raw.u = make_uint2(reinterpret_cast<const uint32_t*>(r.elems)[first / 8], 0);
    } else {
      raw.u = reinterpret_cast<const uint2*>(r.elems)[first / 8];
    }
    KiviParams8(r, j, h, c, &raw.s, &raw.z);
  } else {
    if constexpr (F == KvFormat::kMxFp8E4M3) {
      raw.u = reinterpret_cast<const uint2*>(r.elems)[first / 8];
    } else {  // kMxFp4: element i in bits [4i, 4i+4) of the row's little-endian stream
      raw.u = reinterpret_cast<const uint32_t*>(r.elems)[first / 8];
    }
    raw.scale = r.scales[row * (r.dim / 32) + c / 4];
  }
  return raw;
}

template <KvFormat F>
__device__ __forceinline__ void Decode8(const Raw8<F>& raw, float* o) {
  if constexpr (F == KvFormat::kF32) {
    const uint32_t w[8] = {raw.u.x, raw.u.y, raw.u.z, raw.u.w, raw.v.x, raw.v.y, raw.v.z, raw.v.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = __uint_as_float(w[i]);
  } else if constexpr (F == KvFormat::kF16 || F == KvFormat::kBF16) {
    const uint32_t w[4] = {raw.u.x, raw.u.y, raw.u.z, raw.u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float2 f;
      if constexpr (F == KvFormat::kF16) {
        f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      } else {
        f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
      }
      o[2 * i] = f.x, o[2 * i + 1] = f.y;
    }
  } else if constexpr (IsKiviF(F)) {
    constexpr int b = KiviBits(F);
    const uint32_t s[4] = {raw.s.x, raw.s.y, raw.s.z, raw.s.w}, z[4] = {raw.z.x, raw.z.y, raw.z.z, raw.z.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t code = uint32_t((b == 8 ? (i < 4 ? raw.u.x >> (8 * i) : raw.u.y >> (8 * (i - 4))) : raw.u.x >> (b * i)) &
                                     ((1u << b) - 1));
      const float sc = __half2float(__ushort_as_half(uint16_t(s[i / 2] >> (16 * (i % 2)))));
      const float ze = __half2float(__ushort_as_half(uint16_t(z[i / 2] >> (16 * (i % 2)))));
      o[i] = ze + sc * float(code);
    }
  } else if constexpr (F == KvFormat::kMxFp8E4M3) {
    const float sc = E8M0(raw.scale);
    const uint32_t w[2] = {raw.u.x, raw.u.y};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // Hardware E4M3 -> f16 is exact (every E4M3 value is an f16 value; NaN stays NaN).
      const __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i / 2] >> (16 * (i % 2))), __NV_E4M3);
      const float2 f = __half22float2(__half2(hr));
      o[2 * i] = f.x * sc, o[2 * i + 1] = f.y * sc;
    }
  } else {
    // E2M1 magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 doubled are the nibbles of 0xC8643210: no table
    // in memory; the halving folds into the block scale.
    const float sc = 0.5f * E8M0(raw.scale);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t code = (raw.u >> (4 * i)) & 15u;
      const float mag = float((0xC8643210u >> (4 * (code & 7u))) & 15u);
      o[i] = (code & 8u ? -mag : mag) * sc;
    }
  }
}

// Elements 8c .. 8c+7 of row (token j, KV head h) as f32.
template <KvFormat F>
__device__ __forceinline__ void Load8(const DeviceRows& r, int64_t j, int h, int c, float* o) {
  Decode8<F>(LoadRaw8<F>(r, j, h, c), o);
}

// --- Storing rows --------------------------------------------------------------------------------

// blockIdx.y: 0 stores K into k, 1 stores V into v.
template <typename T>
__global__ void StoreExactKernel(T* k, T* v, const float* K, const float* V, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) (blockIdx.y ? v : k)[i] = FromFloat<T>((blockIdx.y ? V : K)[i]);
}

// kv/mx_codec.cpp's QuantizeMini for E4M3 (ebits 4, mbits 3, bias 7, max 448) and E2M1 (2, 1, 1,
// 6), in double like the CPU so the codes agree bit for bit.
template <int kEbits, int kMbits, int kBias>
__device__ uint32_t QuantizeMini(double x, double max_normal) {
  const uint32_t sign = signbit(x) ? 1u << (kEbits + kMbits) : 0u;
  const double a = fmin(fabs(x), max_normal);
  if (a == 0) return sign;
  const int e = max(ilogb(a), 1 - kBias);
  double r = nearbyint(ldexp(a, kMbits - e));
  if (r == 0) return sign;
  int biased = e + kBias;
  if (r >= double(1u << (kMbits + 1))) {
    r /= 2;
    ++biased;
  }
  if (r < double(1u << kMbits)) return sign | uint32_t(r);
  return sign | uint32_t(biased) << kMbits | (uint32_t(r) - (1u << kMbits));
}

// One warp per block of 32 elements of one (token, head) row; lane i encodes element i.
// blockIdx.y: 0 stores K into k, 1 stores V into v.
template <KvFormat F>
__global__ void StoreMxKernel(DeviceRows k, DeviceRows v, int64_t start, const float* K, const float* V,
                              int64_t n_blocks) {
  const DeviceRows& dst = blockIdx.y ? v : k;
  const float* src = blockIdx.y ? V : K;
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (b >= n_blocks) return;  // whole warps exit together: n_blocks counts warps
  const int lane = threadIdx.x % 32, per_row = dst.dim / 32;
  const int64_t row = b / per_row;  // (token - start) * n_kv + head
  const int blk = int(b % per_row);
  const float x = src[row * dst.dim + blk * 32 + lane];
  const int64_t out_row = start * dst.n_kv + row;
  const bool finite = __all_sync(kFull, isfinite(x));
  float amax = finite ? fabsf(x) : 0.f;
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, o));
  constexpr int kEmax = F == KvFormat::kMxFp8E4M3 ? 8 : 2;
  const int X = amax == 0 ? -127 : min(max(ilogbf(amax) - kEmax, -127), 127);
  if (lane == 0) dst.scales[out_row * per_row + blk] = finite ? uint8_t(X + 127) : uint8_t(0xFF);
  uint32_t code = 0;  // a non-finite block keeps zero codes, like the CPU's memset row
  if (finite) {
    const double y = ldexp(double(x), -X);
    code = F == KvFormat::kMxFp8E4M3 ? QuantizeMini<4, 3, 7>(y, 448.0) : QuantizeMini<2, 1, 1>(y, 6.0);
  }
  if constexpr (F == KvFormat::kMxFp8E4M3) {
    dst.elems[out_row * dst.dim + blk * 32 + lane] = uint8_t(code);
  } else {
    const uint32_t next = __shfl_down_sync(kFull, code, 1);
    if (lane % 2 == 0) dst.elems[(out_row * dst.dim + blk * 32 + lane) / 2] = uint8_t(code | next << 4);
  }
}

// kv/kivi_codec.cpp's parameters and codes, bit for bit: zero = f16 of the minimum rounded down,
// scale = f16 of range / (2^b - 1) rounded up; code = rint((x - zero) / scale) clamped.
__device__ float F16Value(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ uint16_t F16RoundDown(float v) {
  const uint16_t h = __half_as_ushort(__float2half_rn(v));
  if (!(F16Value(h) > v)) return h;
  return h == 0x0000 ? uint16_t(0x8001) : (h & 0x8000) ? uint16_t(h + 1) : uint16_t(h - 1);
}
__device__ uint16_t F16RoundUp(float v) {
  const uint16_t h = __half_as_ushort(__float2half_rn(v));
  if (!(F16Value(h) < v)) return h;
  return h == 0x8000 ? uint16_t(0x0001) : (h & 0x8000) ? uint16_t(h - 1) : uint16_t(h + 1);
}
template <int kBits>
__device__ void KiviParamsFor(float lo, float hi, uint16_t* scale, uint16_t* zero) {
  if (!isfinite(lo) || !isfinite(hi)) {
    *scale = *zero = 0x7E00;
    return;
  }
  *zero = F16RoundDown(lo);
  *scale = F16RoundUp((hi - F16Value(*zero)) / float((1 << kBits) - 1));
}
template <int kBits>
__device__ uint64_t KiviCode(float x, uint16_t scale, uint16_t zero) {
  const float s = F16Value(scale);
  if (!(s > 0)) return 0;
  return uint64_t(fminf(fmaxf(rintf((x - F16Value(zero)) / s), 0.f), float((1 << kBits) - 1)));
}
// The 8 codes of elements 8c .. 8c+7 of row (j, h): kBits bytes of the row's bit stream.
template <int kBits>
__device__ void WriteKivi8(const DeviceRows& r, int64_t j, int h, int c, uint64_t codes) {
  uint8_t* dst = r.elems + ((j * r.n_kv + h) * r.dim + c * 8) * kBits / 8;
  for (int b = 0; b < kBits; ++b) dst[b] = uint8_t(codes >> (8 * b));
}

// Thread (group z, head h, c): channels 8c .. 8c+7 of one key token group: range, then codes.
template <KvFormat F, int kBits>
__global__ void KiviPackKeysKernel(DeviceRows k, int64_t first, int groups, DeviceRows pk, int64_t to) {
  const int per_group = k.n_kv * (k.dim / 8), G = pk.group;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(groups) * per_group) return;
  const int z = int(i / per_group), h = int(i % per_group) / (k.dim / 8), c = int(i % per_group) % (k.dim / 8);
  float lo[8], hi[8], x[8];
  bool finite[8];  // per channel, as the CPU checks each channel's rows
  for (int e = 0; e < 8; ++e) lo[e] = INFINITY, hi[e] = -INFINITY, finite[e] = true;
  for (int j = 0; j < G; ++j) {
    Load8<F>(k, first + int64_t(z) * G + j, h, c, x);
    for (int e = 0; e < 8; ++e)
      finite[e] = finite[e] && isfinite(x[e]), lo[e] = fminf(lo[e], x[e]), hi[e] = fmaxf(hi[e], x[e]);
  }
  uint16_t sc[8], ze[8];
  for (int e = 0; e < 8; ++e) KiviParamsFor<kBits>(finite[e] ? lo[e] : NAN, hi[e], &sc[e], &ze[e]);
  auto* params = reinterpret_cast<uint16_t*>(pk.scales) + ((to / G + z) * pk.n_kv + h) * 2 * pk.dim + c * 8;
  for (int e = 0; e < 8; ++e) params[e] = sc[e], params[pk.dim + e] = ze[e];
  for (int j = 0; j < G; ++j) {
    Load8<F>(k, first + int64_t(z) * G + j, h, c, x);
    uint64_t codes = 0;
    for (int e = 0; e < 8; ++e) codes |= KiviCode<kBits>(x[e], sc[e], ze[e]) << (kBits * e);
    WriteKivi8<kBits>(pk, to + int64_t(z) * G + j, h, c, codes);
  }
}

// Thread (row, head, channel group): one value row's group of pv.group channels.
template <KvFormat F, int kBits>
__global__ void KiviPackValuesKernel(DeviceRows v, int64_t first, int groups, DeviceRows pv, int64_t to) {
  const int G = pv.group, ng = v.dim / G, per_row = v.n_kv * ng;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(groups) * G * per_row) return;
  const int64_t j = i / per_row;
  const int h = int(i % per_row) / ng, g = int(i % per_row) % ng;
  float lo = INFINITY, hi = -INFINITY, x[8];
  bool finite = true;
  for (int c = g * G / 8; c < (g + 1) * G / 8; ++c) {
    Load8<F>(v, first + j, h, c, x);
    for (int e = 0; e < 8; ++e) finite = finite && isfinite(x[e]), lo = fminf(lo, x[e]), hi = fmaxf(hi, x[e]);
  }
  uint16_t sc, ze;
  KiviParamsFor<kBits>(finite ? lo : NAN, hi, &sc, &ze);
  auto* params = reinterpret_cast<uint16_t*>(pv.scales) + ((to + j) * pv.n_kv + h) * 2 * ng;
  params[g] = sc, params[ng + g] = ze;
  for (int c = g * G / 8; c < (g + 1) * G / 8; ++c) {
    Load8<F>(v, first + j, h, c, x);
    uint64_t codes = 0;
    for (int e = 0; e < 8; ++e) codes |= KiviCode<kBits>(x[e], sc, ze) << (kBits * e);
    WriteKivi8<kBits>(pv, to + j, h, c, codes);
  }
}

// --- Decode: split-K over the sequence ---------------------------------------------------------

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / 32;

struct Split {
  int chunk = 0, splits = 0;
};
// About 8 blocks per SM (n_kv blocks per split), so that enough warps stream rows to cover
// memory latency; chunks of 64..1024 rows.
Split DecodeSplit(const AttnShape& a, int64_t len, int sm_count) {
  const int64_t target = std::max(1, 8 * sm_count / a.n_kv);
  int64_t chunk = (len + target - 1) / target;
  chunk = std::clamp<int64_t>((chunk + 31) / 32 * 32, 64, 1024);
  return {int(chunk), int((len + chunk - 1) / chunk)};
}

// Block (split, kv head): the G query heads of one KV head over one chunk of rows of a range.
// Lanes work in groups of hd/8, one row per group, each lane owning 8 elements of the row; the
// same lane keeps the same 8 query elements in registers for the whole kernel. Writes, per head
// and split, the running max m, the sum l of exp(s - m) and the unnormalized output (hd).
// GM: the group size G rounded up to 1, 2, 4 or 8 (register arrays need a compile-time size;
// lanes of heads g >= G compute on zeros and are never stored).
// Rows [begin, end) of k and v that one query sees, cut into `splits` chunks.
struct DecodeRange {
  DeviceRows k, v;
  int64_t begin = 0, end = 0;
  int splits = 0;
};

// Writes partials to slots slot0 + blockIdx.x of `slots` per head (two launches of different forms
// can fill one merge).
template <KvFormat F, int GM>
__global__ void __launch_bounds__(kDecodeThreads) DecodeKernel(DecodeRange ra, DecodeRange rb, const float* q,
                                                               int n_heads, int chunk, float scale, float* part,
                                                               int slot0, int slots) {
  extern __shared__ float smem[];
  // The first ra.splits blocks read range a (principal rows), the rest range b: the merge cannot tell.
  const bool in_a = int(blockIdx.x) < ra.splits;
  const DeviceRows K = in_a ? ra.k : rb.k, V = in_a ? ra.v : rb.v;
  const int64_t begin = in_a ? ra.begin + int64_t(blockIdx.x) * chunk : rb.begin + int64_t(blockIdx.x - ra.splits) * chunk;
  const int hd = K.dim, G = n_heads / K.n_kv, kvh = blockIdx.y, split = slot0 + blockIdx.x, splits = slots;
  float* ss = smem;                       // (G, chunk) scores, then exp(s - m)
  float* red = ss + G * chunk;            // (warps, G, hd) per-warp output sums
  float* ml = red + kDecodeWarps * G * hd;  // (G, 2) max and sum per head
  const int64_t end = in_a ? ra.end : rb.end;
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
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int jl = base + u * step + warp * rpw + sub;
      if (jl < n) raw[u] = LoadRaw8<F>(K, begin + jl, kvh, c);
    }
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
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int jl = base + u * step + warp * rpw + sub;
      if (jl < n) raw[u] = LoadRaw8<F>(V, begin + jl, kvh, c);
    }
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
    float* P = part + (int64_t(kvh * G + g) * splits + split) * (hd + 2);
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

// Block h merges head h's splits: the global max, each split's weight exp(m_s - M) (0 for an
// empty split), then threads (d, j) sum the weighted outputs of splits j, j + nj, ... in parallel
// (independent loads: the merge reads up to ~100 KB per head from L2 and must not wait on each).
__global__ void __launch_bounds__(kCombineThreads) CombineKernel(const float* part, int splits, int hd, float* O) {
  extern __shared__ float sw[];  // (splits) weights, then (nj, hd) partial outputs
  __shared__ float red[kCombineThreads / 32];
  const int h = blockIdx.x, stride = hd + 2;
  const float* P = part + int64_t(h) * splits * stride;
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

// Blocks a query at position p sees only through principal rows (kv/atp_policy.cpp's CompressedBlocks).
__host__ __device__ __forceinline__ int64_t CompressedBlocks(const Visibility& v, int64_t p) {
  return v.block > 0 && p >= v.window ? (p - v.window) / v.block : 0;
}
// The first position a query at p sees exactly, and the principal rows it sees.
__host__ __device__ __forceinline__ int64_t SeenFrom(const Visibility& v, int64_t p) {
  return CompressedBlocks(v, p) * v.block;
}
__device__ __forceinline__ int64_t PrincipalSeen(const Visibility& v, int64_t p) {
  const int64_t nb = CompressedBlocks(v, p);
  return nb == 0 ? 0 : v.pre_end ? v.pre_end[nb - 1] : nb * v.rows_per_block;
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

// Dense and ATP (P = F), KIVI (P a KIVI form over exact rows of form F).
template <KvFormat F, KvFormat P>
void AttendAs(const AttnShape& a, const DeviceRows& k, const DeviceRows& v, const Visibility& vis, const float* Q,
              int64_t T, int64_t start, float* O, float* ws, int sm_count, cudaStream_t s) {
  // Opt in to more than 48 KB of dynamic shared memory once per kernel (Hopper allows 227 KB).
  static const bool opted = [] {
    for (auto* kernel : {DecodeKernel<F, 1>, DecodeKernel<F, 2>, DecodeKernel<F, 4>, DecodeKernel<F, 8>,
                         DecodeKernel<P, 1>, DecodeKernel<P, 2>, DecodeKernel<P, 4>, DecodeKernel<P, 8>})
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024);
    for (auto* kernel : {PrefillKernel<F, P, 32>, PrefillKernel<F, P, 64>, PrefillKernel<F, P, 128>})
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024);
    return true;
  }();
  (void)opted;
  const float scale = 1.0f / std::sqrt(float(a.head_dim));
  if (T == 1) {
    // Two ranges, split alike: the principal rows the query sees, then its exact rows; one launch
    // when both have one form, else one per form into the same merge.
    const int64_t lo = SeenFrom(vis, start) - vis.first, hi = start - vis.first + 1;
    const Split sp = DecodeSplit(a, vis.last_pre + hi - lo, sm_count);
    const auto splits = [&](int64_t n) { return int((n + sp.chunk - 1) / sp.chunk); };
    const DecodeRange pre{vis.pk, vis.pv, 0, vis.last_pre, splits(vis.last_pre)};
    const DecodeRange exact{k, v, lo, hi, splits(hi - lo)};
    const int G = a.n_heads / a.n_kv, total = pre.splits + exact.splits;
    const auto launch = [&](auto kernel, const DecodeRange& ra, const DecodeRange& rb, int slot0) {
      if (ra.splits + rb.splits > 0)
        kernel<<<dim3(unsigned(ra.splits + rb.splits), unsigned(a.n_kv)), kDecodeThreads, DecodeSmem(a, sp.chunk), s>>>(
            ra, rb, Q, a.n_heads, sp.chunk, scale, ws, slot0, total);
    };
    const auto pick = [&](auto f) {
      constexpr KvFormat X = decltype(f)::value;
      return G == 1 ? DecodeKernel<X, 1> : G == 2 ? DecodeKernel<X, 2> : G <= 4 ? DecodeKernel<X, 4> : DecodeKernel<X, 8>;
    };
    if constexpr (P == F) {
      launch(pick(std::integral_constant<KvFormat, F>{}), pre, exact, 0);
    } else {
      launch(pick(std::integral_constant<KvFormat, P>{}), pre, DecodeRange{}, 0);
      launch(pick(std::integral_constant<KvFormat, F>{}), DecodeRange{}, exact, pre.splits);
    }
    CombineKernel<<<unsigned(a.n_heads), kCombineThreads, sizeof(float) * (total + kCombineThreads), s>>>(
        ws, total, a.head_dim, O);
    return;
  }
  const int BQ = kQv / (a.n_heads / a.n_kv);
  const dim3 grid(unsigned((T + BQ - 1) / BQ), unsigned(a.n_kv));
  switch (a.head_dim) {  // CheckAttnShape admits exactly these
    case 32:
      PrefillKernel<F, P, 32><<<grid, kPrefillThreads, PrefillSmem<32>::kBytes, s>>>(k, v, vis, Q, O, int(T), start, a.n_heads, scale);
      break;
    case 64:
      PrefillKernel<F, P, 64><<<grid, kPrefillThreads, PrefillSmem<64>::kBytes, s>>>(k, v, vis, Q, O, int(T), start, a.n_heads, scale);
      break;
    case 128:
      PrefillKernel<F, P, 128><<<grid, kPrefillThreads, PrefillSmem<128>::kBytes, s>>>(k, v, vis, Q, O, int(T), start, a.n_heads, scale);
      break;
  }
}

// out (n, n_kv * dim) f32 = rows first .. first + n - 1; thread i decodes 8 elements.
template <KvFormat F>
__global__ void LoadRowsKernel(DeviceRows r, int64_t first, int64_t n, float* out) {
  const int per_row = r.n_kv * r.dim / 8;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * per_row) return;
  const int64_t j = i / per_row;
  const int h = int(i % per_row) / (r.dim / 8), c = int(i % per_row) % (r.dim / 8);
  Load8<F>(r, first + j, h, c, out + i * 8);
}

}  // namespace

bool IsMx(KvFormat f) { return f == KvFormat::kMxFp8E4M3 || f == KvFormat::kMxFp4; }
bool IsKivi(KvFormat f) { return IsKiviF(f); }

int64_t TokenElemBytes(KvFormat f, int dim, int n_kv) { return int64_t(n_kv) * dim * ElementBits(f) / 8; }
int64_t TokenScaleBytes(KvFormat f, int dim, int n_kv) { return IsMx(f) ? int64_t(n_kv) * (dim / 32) : 0; }

void StoreKv(const DeviceRows& k, const DeviceRows& v, int64_t start, const float* K, const float* V, int64_t n,
             cudaStream_t s) {
  if (n <= 0) return;
  const int64_t count = n * k.n_kv * k.dim;  // elements of K (and of V)
  const int64_t first = start * k.n_kv * k.dim;
  const dim3 grid(unsigned((count + 255) / 256), 2);
  switch (k.fmt) {
    case KvFormat::kF32:
      StoreExactKernel<<<grid, 256, 0, s>>>(reinterpret_cast<float*>(k.elems) + first,
                                            reinterpret_cast<float*>(v.elems) + first, K, V, count);
      break;
    case KvFormat::kF16:
      StoreExactKernel<<<grid, 256, 0, s>>>(reinterpret_cast<__half*>(k.elems) + first,
                                            reinterpret_cast<__half*>(v.elems) + first, K, V, count);
      break;
    case KvFormat::kBF16:
      StoreExactKernel<<<grid, 256, 0, s>>>(reinterpret_cast<__nv_bfloat16*>(k.elems) + first,
                                            reinterpret_cast<__nv_bfloat16*>(v.elems) + first, K, V, count);
      break;
    case KvFormat::kMxFp8E4M3:  // one warp per 32-element block: count / 32 warps
      StoreMxKernel<KvFormat::kMxFp8E4M3><<<grid, 256, 0, s>>>(k, v, start, K, V, count / 32);
      break;
    case KvFormat::kMxFp4:
      StoreMxKernel<KvFormat::kMxFp4><<<grid, 256, 0, s>>>(k, v, start, K, V, count / 32);
      break;
    default:  // KIVI rows are packed from exact ones (KiviPack), never stored directly
      break;
  }
}

Status CheckAttnShape(const AttnShape& a, KvFormat f) {
  if (a.n_kv <= 0 || a.n_heads % a.n_kv != 0 || a.n_heads / a.n_kv > kMaxGroup)
    return Status::Unsupported("cuda attention: " + std::to_string(a.n_heads) + " query heads over " +
                               std::to_string(a.n_kv) + " KV heads (at most " + std::to_string(kMaxGroup) +
                               " query heads per KV head)");
  if (a.head_dim != 32 && a.head_dim != 64 && a.head_dim != 128)
    return Status::Unsupported("cuda attention: head_dim " + std::to_string(a.head_dim) + " (supported: 32, 64, 128)");
  return Status::Ok();
}

int64_t AttendWorkspaceFloats(const AttnShape& a, int64_t len, int sm_count) {
  // Two ranges cut by the same chunk take at most one split more than one range of their length.
  return int64_t(a.n_heads) * (DecodeSplit(a, len, sm_count).splits + 1) * (a.head_dim + 2);
}

void Attend(const AttnShape& a, const DeviceRows& k, const DeviceRows& v, const Visibility& vis, const float* Q,
            int64_t T, int64_t start, float* O, float* ws, int sm_count, cudaStream_t s) {
  if (T <= 0) return;
  const bool packed = vis.block > 0 && IsKiviF(vis.pk.fmt);
  WithFormat(k.fmt, [&](auto f) {
    constexpr KvFormat F = decltype(f)::value;
    if constexpr (!IsKiviF(F)) {
      if (!packed) return AttendAs<F, F>(a, k, v, vis, Q, T, start, O, ws, sm_count, s);
      if constexpr (F == KvFormat::kF32 || F == KvFormat::kF16 || F == KvFormat::kBF16) {
        WithFormat(vis.pk.fmt, [&](auto pf) {
          constexpr KvFormat P = decltype(pf)::value;
          if constexpr (IsKiviF(P)) AttendAs<F, P>(a, k, v, vis, Q, T, start, O, ws, sm_count, s);
        });
      }
    }
  });
}

void LoadRowsF32(const DeviceRows& r, int64_t first, int64_t n, float* out, cudaStream_t s) {
  if (n <= 0) return;
  const int64_t threads = n * r.n_kv * r.dim / 8;
  WithFormat(r.fmt, [&](auto f) {
    LoadRowsKernel<decltype(f)::value><<<unsigned((threads + 255) / 256), 256, 0, s>>>(r, first, n, out);
  });
}

void KiviPack(const DeviceRows& k, const DeviceRows& v, int64_t first, int groups, const DeviceRows& pk,
              const DeviceRows& pv, int64_t to, cudaStream_t s) {
  if (groups <= 0) return;
  const int64_t keys = int64_t(groups) * k.n_kv * (k.dim / 8);
  const int64_t values = int64_t(groups) * pk.group * k.n_kv * (k.dim / pk.group);
  WithFormat(k.fmt, [&](auto f) {
    constexpr KvFormat F = decltype(f)::value;
    if constexpr (F == KvFormat::kF32 || F == KvFormat::kF16 || F == KvFormat::kBF16) {
      WithFormat(pk.fmt, [&](auto pf) {
        constexpr KvFormat P = decltype(pf)::value;
        if constexpr (IsKiviF(P)) {
          KiviPackKeysKernel<F, KiviBits(P)><<<unsigned((keys + 127) / 128), 128, 0, s>>>(k, first, groups, pk, to);
          KiviPackValuesKernel<F, KiviBits(P)><<<unsigned((values + 127) / 128), 128, 0, s>>>(v, first, groups, pv, to);
        }
      });
    }
  });
}

}  // namespace atp::cuda
