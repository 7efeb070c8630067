// Every fast kernel against a plain scalar reference written here (double accumulation, scalar
// dtype conversions), at sizes that hit vector tails: widths not a multiple of 16, 1..9 and 33 rows,
// unaligned weights and strided KV rows. Tolerances are the f32 summation bound
// |err| <= k * 2^-24 * sum|a_i b_i| for k terms (Higham's gamma_k), doubled for margin: it cannot
// fail for a correct kernel whatever its order of summation, and any indexing or tail error is
// orders of magnitude larger.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/interleave.h"
#include "core/tensor.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/q8_dot.h"
#include "kernels/simd.h"
#if !defined(ATP_KERNELS_ONLY)  // the AVX2 build (atp_tests_avx2) links the kernels alone
#include "kv/kv_policy.h"
#endif

#if defined(ATP_EXPECT_SIMD_WIDTH)
static_assert(ATP_SIMD_WIDTH == ATP_EXPECT_SIMD_WIDTH, "this build must compile the kernels' vector paths at that width");
#endif

namespace atp {
namespace {

constexpr double kU = 1.0 / (1 << 24);  // f32 unit roundoff
const DType kDTypes[] = {DType::kF32, DType::kF16, DType::kBF16};
// Weights may also be ggml blocks. On the GEMM path (prefill) a block is dequantized to f32 by the
// library's bit-exact dequantizer, so the bound above applies to the decoded weights. On the GEMV path
// (few rows of x) every block dtype takes the integer kernels (kernels/q8_dot.h, tested term by term in
// q8_dot_avx2_test.cpp), which see x quantized to 8-bit blocks: element i of x is replaced by x^ with
// |x - x^| <= d_i * (1/2 + 2^-16), d_i = amax / 127 of its 32-block, so the product moves by at most
// sum_i |w_i| d_i (1/2 + 2^-16). RefMatMul adds that term (and, in the rounding term,
// |x^| <= |x| + d_i / 2) when told the path quantizes x; the kernels' own rounding (the f32 product of
// a block's scales, a sum per 32 elements) stays well inside the in + 1 roundings per term allowed.
const DType kWeightDTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0, DType::kQ4_0,
                               DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kIQ4_NL, DType::kQ2_K,
                               DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kIQ4_XS};

// Row widths for the matmul tests: vector tails for element dtypes; for block dtypes 1, 2, 3, 5 and
// 9 blocks (odd counts leave a tail after the kernels' two-block steps); 1, 2 and 3 super-blocks.
std::vector<int64_t> Widths(DType t) {
  if (DTypeBlockElems(t) == 256) return {256, 512, 768};
  if (IsBlockDType(t)) return {32, 64, 96, 160, 288};
  return {1, 7, 16, 17, 63, 100, 259};
}

std::vector<float> Random(size_t n, std::mt19937& rng, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Values stored in `t`, as the raw buffer a kernel reads, plus their exact f32 decoding for the
// reference (scalar conversions only). `offset` elements of padding in front make the data unaligned.
struct Stored {
  std::vector<uint8_t> bytes;
  const void* data = nullptr;
  std::vector<float> decoded;
};
// Block dtypes: quantized by the library (its quantizers are tested in weight_quant_test.cpp and
// kquant_test.cpp); Q8_0/Q4_0 decoded here by reading the bytes as ggml lays them out, the others by
// the library's reference dequantizer (bit-exact against the layout in kquant_test.cpp); `offset` is
// in bytes for them.
Stored StoreBlocks(DType t, const std::vector<float>& v, size_t offset) {
  Stored s;
  s.bytes.assign(offset + DTypeBytes(t, int64_t(v.size())), 0);
  uint8_t* p = s.bytes.data() + offset;
  FromF32(t, v.data(), p, v.size());
  s.decoded.resize(v.size());
  s.data = p;
  if (t != DType::kQ8_0 && t != DType::kQ4_0) {
    ToF32(t, p, s.decoded.data(), v.size());
    return s;
  }
  const size_t bb = DTypeBytes(t, 32);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint8_t* blk = p + i / 32 * bb;
    const float d = F16ToF32(uint16_t(blk[0] | blk[1] << 8));
    const size_t j = i % 32;
    s.decoded[i] = t == DType::kQ8_0 ? d * float(int8_t(blk[2 + j])) : d * float(((blk[2 + j % 16] >> (j / 16 * 4)) & 0xf) - 8);
  }
  return s;
}

Stored Store(DType t, const std::vector<float>& v, size_t offset = 1) {
  if (IsBlockDType(t)) return StoreBlocks(t, v, offset);
  Stored s;
  const size_t es = DTypeSize(t);
  s.bytes.assign((v.size() + offset) * es, 0);
  uint8_t* p = s.bytes.data() + offset * es;
  s.decoded.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kF32) {
      std::memcpy(p + i * 4, &v[i], 4);
      s.decoded[i] = v[i];
    } else {
      uint16_t h = t == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
      std::memcpy(p + i * 2, &h, 2);
      s.decoded[i] = t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
    }
  }
  s.data = p;
  return s;
}

// y = x W^T (+ bias) in double, and the bound on a correct f32 result's error; q8x: the kernel
// quantizes x to 8-bit blocks (see kWeightDTypes).
void RefMatMul(const std::vector<float>& x, int64_t n, const std::vector<float>& w, int64_t out, int64_t in,
               const float* bias, std::vector<double>* y, std::vector<double>* tol, bool q8x = false) {
  y->assign(size_t(n * out), 0);
  tol->assign(size_t(n * out), 0);
  std::vector<double> dx(size_t(n * in), 0);  // per element, its activation block's d (0 if x stays f32)
  if (q8x)
    for (size_t b = 0; b < dx.size(); b += 32) {
      double amax = 0;
      for (size_t j = b; j < b + 32; ++j) amax = std::max(amax, double(std::abs(x[j])));
      for (size_t j = b; j < b + 32; ++j) dx[j] = amax / 127 * (1 + kU);
    }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0, a = 0, e = 0;
      for (int64_t i = 0; i < in; ++i) {
        const double wi = w[size_t(o * in + i)], di = dx[size_t(r * in + i)];
        double p = double(x[size_t(r * in + i)]) * wi;
        s += p;
        a += std::abs(p) + std::abs(wi) * di / 2;
        e += std::abs(wi) * di * (0.5 + 1.0 / 65536);
      }
      if (bias) s += bias[o], a += std::abs(bias[o]);
      (*y)[size_t(r * out + o)] = s;
      (*tol)[size_t(r * out + o)] = 2 * double(in + 1) * kU * a + e + 1e-30;
    }
}

// A copy of w's matrix with its rows interleaved in groups of 8 (core/interleave.h), one byte off
// alignment as Store's; view() reads it.
struct Interleaved {
  std::vector<uint8_t> bytes;
  TensorView view;
  Interleaved(const TensorView& w) : bytes(w.nbytes() + 1), view(w) {
    InterleaveRows(w.dtype, static_cast<const uint8_t*>(w.data), w.rows(), w.cols(), bytes.data() + 1);
    view.data = bytes.data() + 1;
    view.interleaved = true;
  }
};

using MatFn = void (*)(const float*, int64_t, const TensorView&, float*);

void CheckMatMul(const char* name, MatFn fn, bool with_bias) {
  std::mt19937 rng(42);
  for (DType dt : kWeightDTypes)
    for (int64_t in : Widths(dt))
      for (int64_t out : {1, 5, 33})
        for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 33})
        for (bool interleaved : {false, true}) {  // Q8_0/Q4_0 also with rows in groups of 8 (33 = 4 groups + 1)
          if (interleaved && !CanInterleave(dt)) continue;
          auto x = Random(size_t(n * in), rng);
          Stored w = Store(dt, Random(size_t(out * in), rng));
          auto bias = Random(size_t(out), rng);
          TensorView tv{dt, {out, in}, w.data};
          std::optional<Interleaved> inter;
          if (interleaved) tv = inter.emplace(tv).view;
          std::vector<float> y(size_t(n * out), -777.f);
          if (fn) fn(x.data(), n, tv, y.data());
          else MatMul(x.data(), n, tv, with_bias ? bias.data() : nullptr, y.data());
          std::vector<double> ref, tol;
          const bool q8x = HasQ8Dot(dt) && (fn == GemvRows || (!fn && (n <= kGemvMaxRows || IntegerPrefill(tv))));
          RefMatMul(x, n, w.decoded, out, in, with_bias ? bias.data() : nullptr, &ref, &tol, q8x);
          int bad = 0;
          for (size_t i = 0; i < y.size() && bad < 3; ++i)
            if (!(std::abs(y[i] - ref[i]) <= tol[i])) {
              ++bad;
              ADD_FAILURE() << name << " " << DTypeName(dt) << (interleaved ? " interleaved" : "") << " n=" << n
                            << " out=" << out << " in=" << in
                            << " at (" << i / size_t(out) << ", " << i % size_t(out) << "): got " << y[i]
                            << " want " << ref[i] << " tol " << tol[i];
            }
        }
}

TEST(Kernels, GemvRowsMatchesScalar) { CheckMatMul("GemvRows", GemvRows, false); }
TEST(Kernels, GemmRowsMatchesScalar) { CheckMatMul("GemmRows", GemmRows, false); }
TEST(Kernels, MatMulWithBiasMatchesScalar) { CheckMatMul("MatMul", nullptr, true); }

// Several weights sharing x in one call (the fused q/k/v and gate/up products), with and without bias.
TEST(Kernels, MatMulSharedMatchesScalar) {
  std::mt19937 rng(8);
  // The generic block path once for a 32- and a 256-element block (the others share it).
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ5_1, DType::kQ4_K, DType::kQ6_K})
    for (int64_t in : DTypeBlockElems(dt) == 256 ? std::vector<int64_t>{256, 2048}
                      : IsBlockDType(dt)         ? std::vector<int64_t>{32, 288, 2048}
                                                 : std::vector<int64_t>{17, 64, 259})
      for (int64_t n : {1, 3, 8, 9, 33})
      for (bool interleaved : {false, true}) {  // Q8_0/Q4_0 also in groups of 8 rows: the chunks are whole groups
        if (interleaved && !CanInterleave(dt)) continue;
        const int64_t outs[3] = {5, 33, 700};  // 700 rows of 259 (f32) or 2048 (q4_0): more than one 256 KiB chunk
        auto x = Random(size_t(n * in), rng);
        std::vector<Stored> ws;
        std::vector<std::vector<float>> bias, ys;
        std::vector<TensorView> views;
        for (int64_t out : outs) {
          ws.push_back(Store(dt, Random(size_t(out * in), rng)));
          bias.push_back(Random(size_t(out), rng));
          ys.emplace_back(size_t(n * out), -777.f);
        }
        std::vector<Interleaved> inter;
        inter.reserve(3);
        for (int j = 0; j < 3; ++j) {
          views.push_back(TensorView{dt, {outs[j], in}, ws[size_t(j)].data});
          if (interleaved) views.back() = inter.emplace_back(views.back()).view;
        }
        const MatMulJob jobs[3] = {{&views[0], bias[0].data(), ys[0].data()},
                                   {&views[1], nullptr, ys[1].data()},
                                   {&views[2], bias[2].data(), ys[2].data()}};
        MatMulShared(x.data(), n, jobs);
        for (int j = 0; j < 3; ++j) {
          std::vector<double> ref, tol;
          RefMatMul(x, n, ws[size_t(j)].decoded, outs[j], in, j == 1 ? nullptr : bias[size_t(j)].data(), &ref, &tol,
                    HasQ8Dot(dt) && (n <= kGemvMaxRows || IntegerPrefill(views[size_t(j)])));
          for (size_t i = 0; i < ref.size(); ++i)
            ASSERT_LE(std::abs(ys[size_t(j)][i] - ref[i]), tol[i])
                << DTypeName(dt) << (interleaved ? " interleaved" : "") << " job " << j << " n=" << n << " in=" << in
                << " at " << i;
        }
      }
}

// One call whose jobs take both prefill paths (a Q3_K_M file's Q4_K and Q3_K matrices with their rows
// grouped, integer; the same Q4_K matrix in ggml's row order and an f16 one, sgemm): each job's result
// is MatMul's on that matrix alone, bit for bit (the same kernel per output either way).
TEST(Kernels, MatMulSharedMixesIntegerAndSgemmJobs) {
  std::mt19937 rng(9);
  const int64_t n = 33, in = 512;
  const DType types[4] = {DType::kQ4_K, DType::kQ3_K, DType::kQ4_K, DType::kF16};
  const bool grouped[4] = {true, true, false, false}, integer[4] = {true, true, false, false};
  const int64_t outs[4] = {40, 24, 16, 17};
  auto x = Random(size_t(n * in), rng);
  std::vector<Stored> ws;
  std::vector<Interleaved> inter;
  inter.reserve(4);
  std::vector<TensorView> views;
  std::vector<std::vector<float>> ys, alone;
  for (int j = 0; j < 4; ++j) ws.push_back(Store(types[j], Random(size_t(outs[j] * in), rng)));
  for (int j = 0; j < 4; ++j) {
    views.push_back(TensorView{types[j], {outs[j], in}, ws[size_t(j)].data});
    if (grouped[j]) views.back() = inter.emplace_back(views.back()).view;
    ASSERT_EQ(IntegerPrefill(views.back()), integer[j]) << j;
    ys.emplace_back(size_t(n * outs[j]), -777.f);
    alone.emplace_back(size_t(n * outs[j]), -777.f);
    MatMul(x.data(), n, views.back(), nullptr, alone.back().data());
  }
  const MatMulJob jobs[4] = {{&views[0], nullptr, ys[0].data()}, {&views[1], nullptr, ys[1].data()},
                             {&views[2], nullptr, ys[2].data()}, {&views[3], nullptr, ys[3].data()}};
  MatMulShared(x.data(), n, jobs);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(ys[size_t(j)], alone[size_t(j)]) << DTypeName(types[j]) << " job " << j;
}

// More output rows than one converted f32 panel of GemmRows holds (8 MiB / (in * 4) = 127 rows
// here; each of 2 threads gets 150), so the panel loop runs more than once per thread, and a panel
// of blocks starts mid-tensor.
TEST(Kernels, GemmRowsSpansSeveralPanels) {
  std::mt19937 rng(5);
  const int64_t n = 9, out = 300;
  for (DType dt : {DType::kBF16, DType::kF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_K}) {
    const int64_t in = DTypeBlockElems(dt) == 256 ? 16640 : IsBlockDType(dt) ? 16416 : 16411;  // 65 / 513 blocks
    auto x = Random(size_t(n * in), rng);
    Stored w = Store(dt, Random(size_t(out * in), rng));
    std::vector<double> ref, tol;
    RefMatMul(x, n, w.decoded, out, in, nullptr, &ref, &tol);
    for (bool interleaved : {false, true}) {  // a panel of interleaved rows starts mid-group too
      if (interleaved && !CanInterleave(dt)) continue;
      TensorView tv{dt, {out, in}, w.data};
      std::optional<Interleaved> inter;
      if (interleaved) tv = inter.emplace(tv).view;
      std::vector<float> y(size_t(n * out));
      GemmRows(x.data(), n, tv, y.data());
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_LE(std::abs(y[i] - ref[i]), tol[i]) << DTypeName(dt) << (interleaved ? " interleaved" : "") << " at " << i;
    }
  }
}

TEST(Kernels, RmsNormMatchesScalar) {
  std::mt19937 rng(1);
  for (DType dt : kDTypes)
    for (int64_t d : {1, 7, 64, 100, 2048}) {
      const int64_t n = 3;
      auto x = Random(size_t(n * d), rng, -4, 4);
      Stored w = Store(dt, Random(size_t(d), rng, 0.5f, 1.5f));
      std::vector<float> out(size_t(n * d));
      const float eps = 1e-5f;
      RmsNorm(x.data(), n, d, TensorView{dt, {d}, w.data}, eps, out.data());
      for (int64_t r = 0; r < n; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < d; ++i) ss += double(x[size_t(r * d + i)]) * x[size_t(r * d + i)];
        const double inv = 1 / std::sqrt(ss / double(d) + eps);
        for (int64_t i = 0; i < d; ++i) {
          const double want = x[size_t(r * d + i)] * inv * w.decoded[size_t(i)];
          // A few roundings of an O(1) value: 1e-5 relative is 100x the f32 error.
          ASSERT_NEAR(out[size_t(r * d + i)], want, 1e-5 * std::abs(want) + 1e-6)
              << DTypeName(dt) << " d=" << d << " row " << r << " col " << i;
        }
      }
    }
}

TEST(Kernels, ApplyRopeMatchesScalar) {
  std::mt19937 rng(2);
  for (int hd : {2, 8, 18, 64, 128}) {
    const int heads = 3;
    const std::vector<int32_t> pos = {0, 1, 17, 511, 4000};
    const int64_t n = int64_t(pos.size());
    std::vector<float> inv(size_t(hd / 2));
    for (int i = 0; i < hd / 2; ++i) inv[size_t(i)] = float(1.0 / std::pow(10000.0, 2.0 * i / hd));
    auto x = Random(size_t(n * heads * hd), rng);
    auto y = x;
    ApplyRope(y.data(), n, heads, hd, pos.data(), inv.data());
    for (int64_t r = 0; r < n; ++r)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < hd / 2; ++i) {
          // rotate_half layout: pair (i, i + hd/2). The angle is formed in f32 like PyTorch
          // (position * inv_freq as f32); at position 4000 its f32 rounding alone is ~1e-4 rad, so
          // this also checks the kernel follows the reference's convention.
          const float angle = float(pos[size_t(r)]) * inv[size_t(i)];
          const double c = std::cos(double(angle)), s = std::sin(double(angle));
          const size_t base = size_t((r * heads + h) * hd);
          const double a = x[base + size_t(i)], b = x[base + size_t(i + hd / 2)];
          ASSERT_NEAR(y[base + size_t(i)], a * c - b * s, 2e-6) << "hd=" << hd << " pos " << pos[size_t(r)] << " i " << i;
          ASSERT_NEAR(y[base + size_t(i + hd / 2)], b * c + a * s, 2e-6) << "hd=" << hd << " pos " << pos[size_t(r)];
        }
  }
}

TEST(Kernels, SiluMulMatchesScalar) {
  std::mt19937 rng(3);
  for (int64_t n : {1, 15, 16, 17, 100}) {
    auto g = Random(size_t(n), rng, -12, 12);
    auto up = Random(size_t(n), rng, -3, 3);
    g[0] = n > 1 ? -100.f : g[0];  // exp overflow side
    if (n > 2) g[1] = 100.f;
    auto out = g;
    SiluMul(out.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(g[size_t(i)]) / (1 + std::exp(-double(g[size_t(i)]))) * up[size_t(i)];
      ASSERT_NEAR(out[size_t(i)], want, 1e-6 * std::abs(want) + 1e-7) << "n=" << n << " i=" << i << " g=" << g[size_t(i)];
    }
  }
}

TEST(Kernels, SoftmaxMatchesScalar) {
  std::mt19937 rng(4);
  for (int64_t n : {1, 2, 15, 16, 17, 100, 4096}) {
    auto x = Random(size_t(n), rng, -30, 30);
    x[0] = 1000.f;  // would overflow without the max shift
    if (n > 1) x[1] = 999.f;
    auto y = x;
    Softmax(y.data(), n);
    double mx = *std::max_element(x.begin(), x.end()), sum = 0;
    for (float v : x) sum += std::exp(double(v) - mx);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(double(x[size_t(i)]) - mx) / sum;
      // exp is good to a few ulp; the f32 sum of n terms to n * 2^-24 relative (gamma_n), doubled.
      ASSERT_NEAR(y[size_t(i)], want, (8 + 2 * double(n)) * kU * want + 1e-12) << "n=" << n << " i=" << i;
      total += y[size_t(i)];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

// `count` rows of `dim` elements, `stride` apart, stored in `dt` (the gap between rows holds junk).
struct Rows {
  Stored s;
  KvRows view;
  float at(int64_t j, int i) const { return s.decoded[size_t(j * view.stride + i)]; }
};
Rows MakeRows(DType dt, int64_t count, int dim, int64_t stride, std::mt19937& rng) {
  Rows r;
  r.s = Store(dt, Random(size_t(count * stride), rng, -2, 2));
  r.view = KvRows{dt, r.s.data, stride, count};
  return r;
}

TEST(Kernels, AttnScoresMatchesScalar) {
  std::mt19937 rng(6);
  for (DType dt : kDTypes)
    for (int dim : {8, 16, 17, 64, 100, 128})
      for (int64_t count : {1, 5, 37})
        for (int64_t extra : {0, 13}) {
          Rows k = MakeRows(dt, count, dim, dim + extra, rng);
          auto q = Random(size_t(dim), rng);
          const float scale = 0.125f;
          std::vector<float> s(size_t(count), -1.f);
          AttnScores(q.data(), dim, k.view, scale, s.data());
          for (int64_t j = 0; j < count; ++j) {
            double want = 0, a = 0;
            for (int i = 0; i < dim; ++i) want += double(q[size_t(i)]) * k.at(j, i), a += std::abs(double(q[size_t(i)]) * k.at(j, i));
            ASSERT_NEAR(s[size_t(j)], want * scale, 2 * (dim + 1) * kU * a * scale + 1e-30)
                << DTypeName(dt) << " dim=" << dim << " count=" << count << " stride=" << dim + extra << " row " << j;
          }
        }
}

TEST(Kernels, AttnAccumulateMatchesScalar) {
  std::mt19937 rng(7);
  for (DType dt : kDTypes)
    for (int dim : {8, 16, 17, 64, 80, 100, 128})
      for (int64_t count : {1, 5, 37})
        for (int64_t extra : {0, 13}) {
          Rows v = MakeRows(dt, count, dim, dim + extra, rng);
          auto p = Random(size_t(count), rng, 0, 1);
          auto out = Random(size_t(dim), rng);  // accumulates into what is there
          auto o = out;
          AttnAccumulate(p.data(), v.view, dim, o.data());
          for (int i = 0; i < dim; ++i) {
            double want = out[size_t(i)], a = std::abs(want);
            for (int64_t j = 0; j < count; ++j) want += p[size_t(j)] * double(v.at(j, i)), a += std::abs(p[size_t(j)] * v.at(j, i));
            ASSERT_NEAR(o[size_t(i)], want, 2 * double(count + 1) * kU * a + 1e-30)
                << DTypeName(dt) << " dim=" << dim << " count=" << count << " stride=" << dim + extra << " col " << i;
          }
        }
}

// Scores and the weighted sum of a query's rows are the same bit for bit however the rows are split
// into calls (page runs, segments), given each call's index in the whole list: this is what keeps
// paged KV rows chunk invariant (kv/page_store.h).
TEST(Kernels, AttentionDoesNotDependOnHowRowsAreSplit) {
  std::mt19937 rng(11);
  for (DType dt : kDTypes)
    for (int dim : {17, 64, 128}) {
      const int64_t count = 150, ld = count, nq = 4;
      Rows v = MakeRows(dt, count, dim, dim + 5, rng);
      auto p = Random(size_t(nq * ld), rng, 0, 1);
      const auto rows = [&](int64_t b, int64_t e) {  // rows [b, e) of v
        KvRows part = v.view;
        part.data = static_cast<const uint8_t*>(part.data) + size_t(b * part.stride) * DTypeSize(dt);
        part.count = e - b;
        return part;
      };
      auto whole = [&](std::vector<int64_t> cuts) {
        std::vector<float> out(size_t(nq * dim), 0.f), odd(out.size(), 0.f);
        cuts.push_back(count);
        int64_t b = 0;
        for (int64_t e : cuts) {
          AttnAccumulateGroup(p.data() + b, ld, int(nq), rows(b, e), dim, out.data(), odd.data(), b);
          b = e;
        }
        for (size_t i = 0; i < out.size(); ++i) out[i] += odd[i];
        return out;
      };
      auto q = Random(size_t(nq * dim), rng);
      auto scores = [&](std::vector<int64_t> cuts) {
        std::vector<float> s(size_t(nq * ld));
        cuts.push_back(count);
        int64_t b = 0;
        for (int64_t e : cuts) {
          AttnScoresGroup(q.data(), int(nq), dim, rows(b, e), 0.125f, s.data() + b, ld);
          b = e;
        }
        return s;
      };
      EXPECT_EQ(scores({}), scores({1, 2, 3, 5, 70})) << DTypeName(dt) << " dim " << dim;
      const auto once = whole({});
      EXPECT_EQ(once, whole({1, 2, 3})) << DTypeName(dt) << " dim " << dim;
      EXPECT_EQ(once, whole({7, 64, 65, 129})) << DTypeName(dt) << " dim " << dim;
      EXPECT_EQ(once, whole({33, 97})) << DTypeName(dt) << " dim " << dim;
    }
}

TEST(Kernels, GroupedAttentionMatchesPerHeadCalls) {
  std::mt19937 rng(9);
  for (DType dt : kDTypes)
    for (int dim : {17, 64})
      for (int64_t count : {1, 31, 32, 33, 100})
        for (int nq : {1, 4}) {
          Rows k = MakeRows(dt, count, dim, dim + 7, rng), v = MakeRows(dt, count, dim, dim + 7, rng);
          const int64_t ld = count + 3;
          auto q = Random(size_t(nq * dim), rng);
          auto p = Random(size_t(nq * ld), rng, 0, 1);
          std::vector<float> s(size_t(nq * ld), -1.f), s1(static_cast<size_t>(count));
          AttnScoresGroup(q.data(), nq, dim, k.view, 0.3f, s.data(), ld);
          auto out = Random(size_t(nq * dim), rng), o1 = out;
          std::vector<float> odd(out.size(), 0.f);
          AttnAccumulateGroup(p.data(), ld, nq, v.view, dim, out.data(), odd.data(), 0);
          for (size_t i = 0; i < out.size(); ++i) out[i] += odd[i];
          for (int g = 0; g < nq; ++g) {
            AttnScores(q.data() + g * dim, dim, k.view, 0.3f, s1.data());
            for (int64_t j = 0; j < count; ++j)
              ASSERT_EQ(s[size_t(g * ld + j)], s1[size_t(j)]) << DTypeName(dt) << " head " << g << " key " << j;
            AttnAccumulate(p.data() + g * ld, v.view, dim, o1.data() + g * dim);
          }
          // Same terms, summed in blocks of 32 rows: the summation bound over count + 1 terms.
          for (size_t i = 0; i < out.size(); ++i) {
            double a = std::abs(o1[i]);
            for (int64_t j = 0; j < count; ++j) a += p[size_t(i / size_t(dim)) * size_t(ld) + size_t(j)] * 2.0;
            ASSERT_NEAR(out[i], o1[i], 4 * double(count + 1) * kU * a) << DTypeName(dt) << " dim " << dim << " at " << i;
          }
        }
}

#if !defined(ATP_KERNELS_ONLY)
// ---------------------------------------------------------------------------------------------
// The dense KV policy against brute-force softmax attention with grouped-query heads.

struct AttnCase {
  KvShape shape{0, 32, 6, 2, 20};  // 6 query heads share 2 KV heads (groups of 3); head_dim 20
  int64_t T = 13;
  std::vector<float> Q, K, V;      // (T, q_dim), (T, kv_dim), (T, kv_dim)
  explicit AttnCase(uint32_t seed) {
    std::mt19937 rng(seed);
    Q = Random(size_t(T * shape.q_dim()), rng, -2, 2);
    K = Random(size_t(T * shape.kv_dim()), rng, -2, 2);
    V = Random(size_t(T * shape.kv_dim()), rng, -2, 2);
  }
};

// O (T, q_dim): query t (position t) of head h attends to keys 0..t of KV head h / group.
std::vector<double> BruteForce(const AttnCase& c, DType dt) {
  const int hd = c.shape.head_dim, H = c.shape.n_heads, group = H / c.shape.n_kv_heads, kvd = c.shape.kv_dim();
  auto round = [&](float v) {
    return dt == DType::kF32 ? double(v) : dt == DType::kBF16 ? double(Bf16ToF32(F32ToBf16(v))) : double(F16ToF32(F32ToF16(v)));
  };
  std::vector<double> O(size_t(c.T * c.shape.q_dim()), 0);
  for (int64_t t = 0; t < c.T; ++t)
    for (int h = 0; h < H; ++h) {
      const int kvh = h / group;
      std::vector<double> s(size_t(t + 1));
      double mx = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += double(c.Q[size_t((t * H + h) * hd + i)]) * round(c.K[size_t(j * kvd + kvh * hd + i)]);
        s[size_t(j)] = d / std::sqrt(double(hd));
        mx = std::max(mx, s[size_t(j)]);
      }
      double z = 0;
      for (auto& v : s) z += v = std::exp(v - mx);
      for (int64_t j = 0; j <= t; ++j)
        for (int i = 0; i < hd; ++i)
          O[size_t((t * H + h) * hd + i)] += s[size_t(j)] / z * round(c.V[size_t(j * kvd + kvh * hd + i)]);
    }
  return O;
}

std::vector<int32_t> Iota(int64_t b, int64_t e) {
  std::vector<int32_t> p;
  for (int64_t i = b; i < e; ++i) p.push_back(int32_t(i));
  return p;
}

TEST(DensePolicy, AttendMatchesBruteForceWithGqa) {
  AttnCase c(11);
  for (const char* spec : {"dense", "dense:dtype=bf16", "dense:dtype=f16"}) {
    auto f = ParseKvPolicy(spec);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    const DType dt = std::string(spec).find("bf16") != std::string::npos ? DType::kBF16
                     : std::string(spec).find("f16") != std::string::npos ? DType::kF16 : DType::kF32;
    auto kv = (*f)->Create(c.shape);
    const int qd = c.shape.q_dim(), kvd = c.shape.kv_dim();
    std::vector<float> O(size_t(c.T * qd), -5.f);
    // Two appends (a prefill chunk of 7, then 6 more) each followed by the attention of its queries.
    for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 7}, {7, 13}}) {
      auto pos = Iota(b, e);
      ASSERT_TRUE(kv->Append(pos, nullptr, &c.K[size_t(b * kvd)], &c.V[size_t(b * kvd)]).ok());
      ASSERT_TRUE(kv->Attend(pos, &c.Q[size_t(b * qd)], &O[size_t(b * qd)]).ok());
    }
    EXPECT_EQ(kv->Length(), c.T);
    EXPECT_EQ(kv->Bytes(), size_t(c.T) * 2 * size_t(kvd) * DTypeSize(dt)) << spec;
    auto want = BruteForce(c, dt);
    // Outputs are convex combinations of values in [-2, 2]: |O| <= 2. The softmax and sums of
    // <= 13 f32 terms err by ~1e-6; 1e-5 absolute is ten times that. The reference rounds K and V
    // to the storage type, so the bound is the same for 16-bit storage.
    for (size_t i = 0; i < O.size(); ++i) ASSERT_NEAR(O[i], want[i], 1e-5) << spec << " at element " << i;
  }
}

TEST(DensePolicy, AttendIsCausal) {
  AttnCase a(12), b(12);
  const int64_t cut = 5;
  const int kvd = a.shape.kv_dim(), qd = a.shape.q_dim();
  for (int64_t j = cut + 1; j < b.T; ++j)  // keys and values after the cut differ
    for (int i = 0; i < kvd; ++i) b.K[size_t(j * kvd + i)] += 1.5f, b.V[size_t(j * kvd + i)] -= 3.f;
  auto f = ParseKvPolicy("dense");
  ASSERT_TRUE(f.ok());
  std::vector<float> Oa(size_t(a.T * qd)), Ob(Oa.size());
  auto pos = Iota(0, a.T);
  auto ka = (*f)->Create(a.shape), kb = (*f)->Create(b.shape);
  ASSERT_TRUE(ka->Append(pos, nullptr, a.K.data(), a.V.data()).ok());
  ASSERT_TRUE(kb->Append(pos, nullptr, b.K.data(), b.V.data()).ok());
  ASSERT_TRUE(ka->Attend(pos, a.Q.data(), Oa.data()).ok());
  ASSERT_TRUE(kb->Attend(pos, b.Q.data(), Ob.data()).ok());
  for (int64_t i = 0; i < (cut + 1) * qd; ++i) ASSERT_EQ(Oa[size_t(i)], Ob[size_t(i)]) << "query row " << i / qd;
  double later = 0;
  for (size_t i = size_t((cut + 1) * qd); i < Oa.size(); ++i) later = std::max(later, double(std::abs(Oa[i] - Ob[i])));
  EXPECT_GT(later, 0.1) << "changed keys must change the later rows";
}

TEST(DensePolicy, RejectsOutOfOrderAppend) {
  AttnCase c(13);
  auto f = ParseKvPolicy("dense");
  ASSERT_TRUE(f.ok());
  auto kv = (*f)->Create(c.shape);
  auto pos = Iota(3, 5);  // nothing appended yet: must start at 0
  Status s = kv->Append(pos, nullptr, c.K.data(), c.V.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("position 3"), std::string::npos) << s.ToString();
}

#endif  // !ATP_KERNELS_ONLY

}  // namespace
}  // namespace atp
