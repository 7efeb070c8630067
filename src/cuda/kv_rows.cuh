// The storage forms of GPU KV rows (cuda/attention.h's DeviceRows), for kernels only: every kernel
// reads rows through Load8<F> (or LoadRaw8 + Decode8, to put several rows' loads in flight), the one
// place that knows a form, so attention, packing and conversion share the dequantization
// (FlashInfer's split of data from math, STYLE.md 6).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention.h"

namespace atp::cuda {

inline int ElementBits(KvFormat f) {
  switch (f) {
    case KvFormat::kF32: return 32;
    case KvFormat::kF16:
    case KvFormat::kBF16: return 16;
    case KvFormat::kMxFp8E4M3:
    case KvFormat::kMxFp8E5M2:
    case KvFormat::kMxInt8: return 8;
    case KvFormat::kMxFp6E2M3:
    case KvFormat::kMxFp6E3M2: return 6;
    case KvFormat::kMxFp4:
    case KvFormat::kNvFp4: return 4;
    case KvFormat::kKivi2: return 2;
    case KvFormat::kKivi4: return 4;
    case KvFormat::kKivi8: return 8;
  }
  return 0;
}

__host__ __device__ constexpr bool IsExact(KvFormat f) {
  return f == KvFormat::kF32 || f == KvFormat::kF16 || f == KvFormat::kBF16;
}
// OCP MX forms: blocks of 32 elements under an E8M0 scale (NVFP4, the other MX-like form, is not one).
__host__ __device__ constexpr bool IsMxE8M0(KvFormat f) {
  return f == KvFormat::kMxFp8E4M3 || f == KvFormat::kMxFp8E5M2 || f == KvFormat::kMxInt8 ||
         f == KvFormat::kMxFp6E2M3 || f == KvFormat::kMxFp6E3M2 || f == KvFormat::kMxFp4;
}
__host__ __device__ constexpr bool IsFp6(KvFormat f) { return f == KvFormat::kMxFp6E2M3 || f == KvFormat::kMxFp6E3M2; }

// Calls fn with std::integral_constant<KvFormat, f>: one instantiation per form.
template <typename Fn>
void WithFormat(KvFormat f, Fn&& fn) {
  using K = KvFormat;
  switch (f) {
    case K::kF32: return fn(std::integral_constant<K, K::kF32>{});
    case K::kF16: return fn(std::integral_constant<K, K::kF16>{});
    case K::kBF16: return fn(std::integral_constant<K, K::kBF16>{});
    case K::kMxFp8E4M3: return fn(std::integral_constant<K, K::kMxFp8E4M3>{});
    case K::kMxFp8E5M2: return fn(std::integral_constant<K, K::kMxFp8E5M2>{});
    case K::kMxInt8: return fn(std::integral_constant<K, K::kMxInt8>{});
    case K::kMxFp6E2M3: return fn(std::integral_constant<K, K::kMxFp6E2M3>{});
    case K::kMxFp6E3M2: return fn(std::integral_constant<K, K::kMxFp6E3M2>{});
    case K::kMxFp4: return fn(std::integral_constant<K, K::kMxFp4>{});
    case K::kNvFp4: return fn(std::integral_constant<K, K::kNvFp4>{});
    case K::kKivi2: return fn(std::integral_constant<K, K::kKivi2>{});
    case K::kKivi4: return fn(std::integral_constant<K, K::kKivi4>{});
    case K::kKivi8: return fn(std::integral_constant<K, K::kKivi8>{});
  }
}

// 2^(e - 127) for an E8M0 byte, built from bits (exact, the subnormal 2^-127 included); 0xFF is NaN.
__device__ inline float E8M0(uint8_t e) {
  if (e == 0xFF) return __int_as_float(0x7fc00000);
  return e == 0 ? __int_as_float(0x00400000) : __int_as_float(int(e) << 23);
}

// An E4M3 byte's value (hardware conversion, exact; 0x7F and 0xFF are NaN).
__device__ inline float E4M3(uint8_t b) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(b), __NV_E4M3)));
}

// Elements 8c .. 8c+7 of one row as stored: 32, 16, 8 or 4 bytes of elements (and the MX block
// scale byte). Loading (LoadRaw8) and decoding (Decode8) are apart so that a loop can put many
// rows' loads in flight before decoding any.
template <KvFormat F>
struct Raw8 {
  uint4 u;  // f32: the first 4 elements in u and the next 4 in v; f16/bf16: all 8 in u
  uint4 v;  // f32 only
};
// MX forms with 8-bit and 6-bit elements: the 8 codes (64 or 48 bits) and the block's scale byte.
struct RawMx8 {
  uint2 u;
  uint8_t scale;
};
template <>
struct Raw8<KvFormat::kMxFp8E4M3> : RawMx8 {};
template <>
struct Raw8<KvFormat::kMxFp8E5M2> : RawMx8 {};
template <>
struct Raw8<KvFormat::kMxInt8> : RawMx8 {};
template <>
struct Raw8<KvFormat::kMxFp6E2M3> : RawMx8 {};
template <>
struct Raw8<KvFormat::kMxFp6E3M2> : RawMx8 {};
template <>
struct Raw8<KvFormat::kMxFp4> {
  uint32_t u;
  uint8_t scale;
};
template <>
struct Raw8<KvFormat::kNvFp4> {
  uint32_t u;
  uint8_t scale;   // E4M3, of the 16-element block
  float row_scale;
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

// Rows of a form kept in flight per lane by the decode loops: 64 bytes for f32 and the 16-bit forms,
// 32 for the packed ones. The packed forms took 64 bytes too (8 rows of MX's 8-bit codes, fp8/fp6/
// int8; 16 of fp4) until the one-pass decode kernel held its query and accumulator beside them: MX
// fp8's kernel then took 199 registers, 2 blocks per SM instead of 3, and got slower than two passes.
// Measured on an H100 (atp_cuda_attn, llama-3.2-1b's attention, us per layer at 1k / 8k / 32k, 2
// rounds): mx fp8 at 8 rows 8.9 / 19.1 / 54.6, at 6 10.2 / 19.0 / 47.5, at 4 9.1 / 17.4 / 44.0, at 2
// 9.2 / 18.2 / 47.9; mx fp4 at 16 rows 12.1 / 21.8 / 65.3, at 8 9.7 / 22.1 / 59.7; nvfp4 (atp bench,
// ms per token at 32k) 2.65 at 16 rows, 2.59 at 8.
template <KvFormat F>
constexpr int kRowsInFlight = F == KvFormat::kF32                             ? 2
                              : F == KvFormat::kMxFp4 || F == KvFormat::kNvFp4 ? 8
                                                                             : 4;

// A KIVI row's 8 parameters of elements 8c .. 8c+7 (see DeviceRows).
__device__ inline void KiviParams8(const DeviceRows& r, int64_t j, int h, int c, uint4* s, uint4* z) {
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
    if constexpr (IsFp6(F)) {  // element i in bits [6i, 6i+6): 6 bytes from byte 6 * (first / 8), 2-aligned
      const uint16_t* p = reinterpret_cast<const uint16_t*>(r.elems) + first / 8 * 3;
      raw.u = make_uint2(uint32_t(p[0]) | uint32_t(p[1]) << 16, p[2]);
    } else if constexpr (std::is_base_of_v<RawMx8, Raw8<F>>) {
      raw.u = reinterpret_cast<const uint2*>(r.elems)[first / 8];
    } else {  // kMxFp4, kNvFp4: element i in bits [4i, 4i+4) of the row's little-endian stream
      raw.u = reinterpret_cast<const uint32_t*>(r.elems)[first / 8];
    }
    if constexpr (F == KvFormat::kNvFp4) {  // rows of 4 + dim/16 bytes: the f32 scale is 2-byte aligned
      const uint8_t* s = r.scales + row * (4 + r.dim / 16);
      const uint16_t* h = reinterpret_cast<const uint16_t*>(s);
      raw.row_scale = __uint_as_float(uint32_t(h[0]) | uint32_t(h[1]) << 16);
      raw.scale = s[4 + c / 2];
    } else {
      raw.scale = r.scales[row * (r.dim / 32) + c / 4];
    }
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
  } else if constexpr (IsFp6(F)) {
    // E2M3 (bias 1) or E3M2 (bias 3), no Inf or NaN codes: magnitude = significand * 2^(e - bias - m),
    // with the implicit bit for e > 0 and e = 1 for subnormals; powers of two built from bits (exact).
    constexpr int kM = F == KvFormat::kMxFp6E2M3 ? 3 : 2, kBias = F == KvFormat::kMxFp6E2M3 ? 1 : 3;
    const float sc = E8M0(raw.scale);
    const uint64_t bits = uint64_t(raw.u.x) | uint64_t(raw.u.y) << 32;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t code = uint32_t(bits >> (6 * i)) & 63u, e = (code & 31u) >> kM, m = code & ((1u << kM) - 1);
      const float mag = float(e ? m | 1u << kM : m) * __int_as_float(int(127 + (e ? e : 1) - kBias - kM) << 23);
      o[i] = (code & 32u ? -mag : mag) * sc;
    }
  } else if constexpr (F == KvFormat::kMxInt8) {
    // Two's complement with 6 fraction bits: the 1/64 folds into the power-of-two scale (exact).
    const float sc = E8M0(raw.scale) * (1.f / 64);
    const uint32_t w[2] = {raw.u.x, raw.u.y};
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = float(int8_t(uint8_t(w[i / 4] >> (8 * (i % 4))))) * sc;
  } else if constexpr (std::is_base_of_v<RawMx8, Raw8<F>>) {
    const float sc = E8M0(raw.scale);
    const uint32_t w[2] = {raw.u.x, raw.u.y};
    constexpr __nv_fp8_interpretation_t kind = F == KvFormat::kMxFp8E5M2 ? __NV_E5M2 : __NV_E4M3;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // Hardware E4M3/E5M2 -> f16 is exact (every such value is an f16 value; NaN stays NaN).
      const __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i / 2] >> (16 * (i % 2))), kind);
      const float2 f = __half22float2(__half2(hr));
      o[2 * i] = f.x * sc, o[2 * i + 1] = f.y * sc;
    }
  } else {
    // E2M1 magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 doubled are the nibbles of 0xC8643210: no table
    // in memory; the halving folds into the block scale (exactly: a power of two). NVFP4's scale is
    // the CPU's row scale times the E4M3 block scale, in that order.
    float sc;
    if constexpr (F == KvFormat::kNvFp4) {
      sc = 0.5f * (raw.row_scale * E4M3(raw.scale));
    } else {
      sc = 0.5f * E8M0(raw.scale);
    }
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

}  // namespace atp::cuda
