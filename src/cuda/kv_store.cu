// Kernels behind cuda/attention.h's StoreKv, KiviPack and LoadRowsF32: rows written in every form
// (exact, MX, KIVI codes) and read back as f32.
#include <algorithm>
#include <cmath>

#include "cuda/attention.h"
#include "cuda/convert.cuh"
#include "cuda/kv_rows.cuh"
#include "cuda/pdl.cuh"

namespace atp::cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;

// Where a store kernel's jobs come from: a batch in device memory (blocks with blockIdx.y = i do job
// i), or StoreKv's one job by value. blockIdx.z: 0 stores K into k, 1 stores V into v (nothing when
// v.elems is null). Every kernel below serves both.
struct StoreArgs {
  const StoreJob* jobs = nullptr;
  StoreJob one;
};
__device__ __forceinline__ StoreJob JobOf(const StoreArgs& a) {
  StoreJob j;  // copied field by field as used (a select of the two addresses would spill args)
  if (a.jobs) j = a.jobs[blockIdx.y];
  else j = a.one;
  return j;
}

template <typename T>
__global__ void StoreExactKernel(StoreArgs args) {
  LetNextStart();
  WaitForPrevious();
  const StoreJob j = JobOf(args);
  const DeviceRows& dst = blockIdx.z ? j.v : j.k;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, per_token = int64_t(dst.n_kv) * dst.dim;
  if (dst.elems && i < j.n * per_token)
    reinterpret_cast<T*>(dst.elems)[j.row * per_token + i] = FromFloat<T>((blockIdx.z ? j.V : j.K)[i]);
}

// kv/mx_codec.cpp's QuantizeMini for E4M3 (ebits 4, mbits 3, bias 7, max 448), E5M2 (5, 2, 15,
// 57344), E2M3 (2, 3, 1, 7.5), E3M2 (3, 2, 3, 28) and E2M1 (2, 1, 1, 6), in double like the CPU so
// the codes agree bit for bit.
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
template <KvFormat F>
__global__ void StoreMxKernel(StoreArgs args) {
  LetNextStart();
  WaitForPrevious();
  const StoreJob j = JobOf(args);
  const DeviceRows& dst = blockIdx.z ? j.v : j.k;
  const float* src = blockIdx.z ? j.V : j.K;
  const int64_t start = j.row, n_blocks = j.n * dst.n_kv * (dst.dim / 32);
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (!dst.elems || b >= n_blocks) return;  // whole warps exit together: n_blocks counts warps
  const int lane = threadIdx.x % 32, per_row = dst.dim / 32;
  const int64_t row = b / per_row;  // (token - start) * n_kv + head
  const int blk = int(b % per_row);
  const float x = src[row * dst.dim + blk * 32 + lane];
  const int64_t out_row = start * dst.n_kv + row;
  const bool finite = __all_sync(kFull, isfinite(x));
  float amax = finite ? fabsf(x) : 0.f;
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, o));
  constexpr int kEmax = F == KvFormat::kMxFp8E4M3 ? 8 : F == KvFormat::kMxFp8E5M2 ? 15 : F == KvFormat::kMxInt8 ? 0
                        : F == KvFormat::kMxFp6E3M2 ? 4 : 2;  // E2M3 and E2M1: 2
  const int X = amax == 0 ? -127 : min(max(ilogbf(amax) - kEmax, -127), 127);
  if (lane == 0) dst.scales[out_row * per_row + blk] = finite ? uint8_t(X + 127) : uint8_t(0xFF);
  uint32_t code = 0;  // a non-finite block keeps zero codes, like the CPU's memset row
  if (finite) {
    const double y = ldexp(double(x), -X);
    if constexpr (F == KvFormat::kMxFp8E4M3) code = QuantizeMini<4, 3, 7>(y, 448.0);
    if constexpr (F == KvFormat::kMxFp8E5M2) code = QuantizeMini<5, 2, 15>(y, 57344.0);
    if constexpr (F == KvFormat::kMxInt8) code = uint8_t(int8_t(fmin(fmax(nearbyint(y * 64), -127.0), 127.0)));
    if constexpr (F == KvFormat::kMxFp6E2M3) code = QuantizeMini<2, 3, 1>(y, 7.5);
    if constexpr (F == KvFormat::kMxFp6E3M2) code = QuantizeMini<3, 2, 3>(y, 28.0);
    if constexpr (F == KvFormat::kMxFp4) code = QuantizeMini<2, 1, 1>(y, 6.0);
  }
  const int64_t at = out_row * dst.dim + blk * 32 + lane;  // element index
  if constexpr (F == KvFormat::kMxFp4) {
    const uint32_t next = __shfl_down_sync(kFull, code, 1);
    if (lane % 2 == 0) dst.elems[at / 2] = uint8_t(code | next << 4);
  } else if constexpr (IsFp6(F)) {  // lanes 4k .. 4k+3: 24 bits, three bytes from byte 6 * at / 8
    uint32_t v = code;
    for (int i = 1; i < 4; ++i) v |= __shfl_down_sync(kFull, code, i) << (6 * i);
    if (lane % 4 == 0)
      for (int i = 0; i < 3; ++i) dst.elems[at * 6 / 8 + i] = uint8_t(v >> (8 * i));
  } else {
    dst.elems[at] = uint8_t(code);
  }
}

// kv/mx_codec.cpp's EncodeNvFp4, bit for bit: one warp per (token, head) row; lane l holds elements
// l * kPer .. l * kPer + kPer - 1 (kPer = dim / 32), so a 16-element block is 16 / kPer neighbouring
// lanes. The row scale maps the largest finite magnitude to E4M3 max times E2M1 max; a block with a
// NaN or Inf gets the E4M3 NaN scale 0x7F and zero codes.
template <int kPer>
__global__ void StoreNvFp4Kernel(StoreArgs args) {
  LetNextStart();
  WaitForPrevious();
  const StoreJob j = JobOf(args);
  const DeviceRows& dst = blockIdx.z ? j.v : j.k;
  const float* src = blockIdx.z ? j.V : j.K;
  const int64_t start = j.row, rows = j.n * dst.n_kv;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (!dst.elems || row >= rows) return;  // whole warps exit together
  const int lane = threadIdx.x % 32;
  constexpr int kLanes = 16 / kPer;  // lanes per block
  float x[kPer], amax = 0, bmax = 0;
  int finite = 1;
#pragma unroll
  for (int t = 0; t < kPer; ++t) {
    x[t] = src[row * 32 * kPer + lane * kPer + t];
    if (isfinite(x[t])) amax = fmaxf(amax, fabsf(x[t]));
    else finite = 0;
    bmax = fmaxf(bmax, fabsf(x[t]));
  }
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, o));
  for (int o = 1; o < kLanes; o <<= 1) {
    bmax = fmaxf(bmax, __shfl_xor_sync(kFull, bmax, o));
    finite &= __shfl_xor_sync(kFull, finite, o);
  }
  const float rs = amax > 0 ? amax / (448.0f * 6.0f) : 1.0f;
  uint8_t sb = 0x7F;
  uint32_t codes = 0;
  if (finite) {
    sb = uint8_t(QuantizeMini<4, 3, 7>(double(bmax) / (6.0 * double(rs)), 448.0));
    const double d = double(E4M3(sb)) * double(rs);
    if (d != 0)
#pragma unroll
      for (int t = 0; t < kPer; ++t) codes |= QuantizeMini<2, 1, 1>(double(x[t]) / d, 6.0) << (4 * t);
  }
  const int64_t out_row = start * dst.n_kv + row;
  uint8_t* s = dst.scales + out_row * (4 + 2 * kPer);  // 4 + dim / 16 bytes
  if (lane == 0) {
    const uint32_t b = __float_as_uint(rs);
    reinterpret_cast<uint16_t*>(s)[0] = uint16_t(b), reinterpret_cast<uint16_t*>(s)[1] = uint16_t(b >> 16);
  }
  if (lane % kLanes == 0) s[4 + lane / kLanes] = sb;
  uint8_t* e = dst.elems + out_row * 16 * kPer;  // dim / 2 bytes of codes
  if constexpr (kPer == 1) {
    const uint32_t next = __shfl_down_sync(kFull, codes, 1);
    if (lane % 2 == 0) e[lane / 2] = uint8_t(codes | next << 4);
  } else if constexpr (kPer == 2) {
    e[lane] = uint8_t(codes);
  } else {
    reinterpret_cast<uint16_t*>(e)[lane] = uint16_t(codes);
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

// Launches the store kernel of form f over grid (x, n_jobs, 2) blocks of 256 threads, x covering
// max_elems elements of one job (dim: NVFP4's row width; its kernel is compiled per width).
void LaunchStore(KvFormat f, int dim, const StoreArgs& args, int n_jobs, int64_t max_elems, cudaStream_t s) {
  const auto grid = [&](int64_t threads) { return dim3(unsigned((threads + 255) / 256), unsigned(n_jobs), 2); };
  switch (f) {
    case KvFormat::kF32: return LaunchAfter(StoreExactKernel<float>, grid(max_elems), dim3(256), 0, s, args);
    case KvFormat::kF16: return LaunchAfter(StoreExactKernel<__half>, grid(max_elems), dim3(256), 0, s, args);
    case KvFormat::kBF16: return LaunchAfter(StoreExactKernel<__nv_bfloat16>, grid(max_elems), dim3(256), 0, s, args);
    case KvFormat::kNvFp4: {  // one warp per row of head_dim 32, 64 or 128 (CheckAttnShape)
      const dim3 g = grid(max_elems / dim * 32);
      if (dim == 32) LaunchAfter(StoreNvFp4Kernel<1>, g, dim3(256), 0, s, args);
      if (dim == 64) LaunchAfter(StoreNvFp4Kernel<2>, g, dim3(256), 0, s, args);
      if (dim == 128) LaunchAfter(StoreNvFp4Kernel<4>, g, dim3(256), 0, s, args);
      return;
    }
    default:  // the E8M0 MX forms, one warp per 32-element block; KIVI rows are packed from exact
              // ones (KiviPack), never stored directly
      WithFormat(f, [&](auto ff) {
        constexpr KvFormat F = decltype(ff)::value;
        if constexpr (IsMxE8M0(F)) LaunchAfter(StoreMxKernel<F>, grid(max_elems), dim3(256), 0, s, args);
      });
  }
}

}  // namespace

bool IsMx(KvFormat f) { return IsMxE8M0(f) || f == KvFormat::kNvFp4; }

int64_t TokenElemBytes(KvFormat f, int dim, int n_kv) { return int64_t(n_kv) * dim * ElementBits(f) / 8; }
int64_t TokenScaleBytes(KvFormat f, int dim, int n_kv) {
  if (f == KvFormat::kNvFp4) return int64_t(n_kv) * (4 + dim / 16);
  return IsMx(f) ? int64_t(n_kv) * (dim / 32) : 0;
}

void StoreKv(const DeviceRows& k, const DeviceRows& v, int64_t start, const float* K, const float* V, int64_t n,
             cudaStream_t s) {
  if (n <= 0) return;
  StoreArgs args;
  args.one = StoreJob{k, v, start, n, K, V};
  LaunchStore(k.fmt, k.dim, args, 1, n * k.n_kv * k.dim, s);
}

void StoreKvBatch(KvFormat f, int dim, const StoreJob* jobs, int n_jobs, int64_t max_elems, cudaStream_t s) {
  constexpr int kMaxGridY = 65535;
  for (int first = 0; first < n_jobs; first += kMaxGridY) {
    StoreArgs args;
    args.jobs = jobs + first;
    LaunchStore(f, dim, args, std::min(kMaxGridY, n_jobs - first), max_elems, s);
  }
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
    if constexpr (IsExact(F)) {
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
