// The decode GEMV's integer dot products (kernels/q8_dot.h): the activation quantizer against its
// error bound, each weight type's integer decomposition against the library's bit-exact dequantizer,
// the scalar reference dot against the f64 dot of the dequantized weights with the exact activations,
// and the AVX2 kernels against the scalar reference. Needs core/ and kernels/ alone, so it also runs
// in the AVX2 build (atp_tests_avx2).
//
// Tolerances (u = 2^-24, f32's unit roundoff):
// - activations: |x - d q| <= d (1/2 + 2^-16), the quantizer's contract;
// - a weight from the decomposition, a * scale * v - b * min evaluated in double, against the f32
//   dequantizer: within 3 u (|a scale v| + |b min|) (the dequantizer rounds at most three times);
// - the reference dot against sum w_i x_i in double: sum_i |w_i| d_i (1/2 + 2^-16) for the
//   activations' quantization, the previous bound times |x^_i| for the dequantizer's rounding, plus
//   the dot's own f32 rounding: with M = sum over the chunks of the magnitudes
//   of their terms (|a d v q scale| and |b min s|, summed), at most 2 (chunks + 8) u M (recursive
//   summation of a row's chunks and blocks, Higham's gamma_n, doubled; the integer parts are exact);
// - DotRowQ8 against DotRowQ8Ref: both form the same integers and round only in the floats, each
//   within the previous bound of the exact real value of the terms, so within twice that; the same
//   for DotRowsQ8x8 over the rows interleaved in groups of 8 (Q8_0, Q4_0, Q4_K, Q5_K and Q6_K).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/interleave.h"
#include "numeric_test_util.h"
#include "kernels/q8_dot.h"

namespace atp {
namespace {

using testing::kF32UnitRoundoff;
const DType kQ8Types[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kIQ4_NL,
                          DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kIQ4_XS};

// Byte offsets of a block's f16 fields (scales and mins), per core/quant.h and core/kquant.h.
std::vector<int> F16Fields(DType t) {
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K: return {0, 2};
    case DType::kQ2_K: return {80, 82};
    case DType::kQ3_K: return {108};
    case DType::kQ6_K: return {208};
    default: return {0};
  }
}

std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float scale = 1) {
  std::normal_distribution<float> g(0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

// Rows of weight blocks: quantized from Gaussian values by the library's quantizer, or random bytes
// (every code and sub-block scale pattern, Q8_0's -128 included) with the f16 scales set to finite
// values in [2^-12, 2^-6]. One byte of padding in front: the kernels must take any alignment.
struct Weights {
  std::vector<uint8_t> bytes;
  const uint8_t* data;
  std::vector<float> w;  // the library's dequantization
};
Weights MakeWeights(DType t, int64_t rows, int64_t in, bool random_bytes, std::mt19937& rng) {
  Weights r;
  const size_t n = size_t(rows * in), total = DTypeBytes(t, int64_t(n));
  r.bytes.assign(total + 1, 0);
  uint8_t* p = r.bytes.data() + 1;
  if (!random_bytes) {
    const auto v = RandomFloats(n, rng);
    FromF32(t, v.data(), p, n);
  } else {
    for (size_t i = 0; i < total; ++i) p[i] = uint8_t(rng());
    const int64_t elems = DTypeBlockElems(t);
    const size_t bb = DTypeBytes(t, elems);
    const std::vector<int> scale_at = F16Fields(t);
    std::uniform_real_distribution<float> e(-12, -6);
    for (size_t b = 0; b < total / bb; ++b)
      for (int at : scale_at) {
        const uint16_t h = F32ToF16(std::exp2(e(rng)));
        std::memcpy(p + b * bb + size_t(at), &h, 2);
      }
  }
  r.data = p;
  r.w.resize(n);
  ToF32(t, p, r.w.data(), n);
  return r;
}

TEST(Q8Dot, ActivationQuantizationWithinBound) {
  std::mt19937 rng(1);
  const int64_t in = 32 * 8;
  auto x = RandomFloats(size_t(3 * in), rng, 3);
  for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0;  // an all-zero block
  x[100] = 1e30f;                                        // a block with one huge value
  x[in + 70] = NAN;                                      // non-finite values in row 1
  x[2 * in + 5] = -INFINITY;
  Q8Buffer buf;
  const Q8Rows q = buf.Quantize(x.data(), 3, in);
  ASSERT_EQ(q.blocks, in / 32);
  for (int64_t b = 0; b < 3 * q.blocks; ++b) {
    const float* xb = x.data() + 32 * b;
    const int8_t* qb = q.q + 32 * b;
    float amax = 0;
    bool finite = true;
    int sum[2] = {0, 0};
    for (int j = 0; j < 32; ++j) {
      amax = std::max(amax, std::abs(xb[j]));
      finite = finite && std::isfinite(xb[j]);
      sum[j / 16] += qb[j];
    }
    if (!finite) {
      EXPECT_TRUE(std::isnan(q.d[b])) << "block " << b;
      continue;
    }
    EXPECT_EQ(q.d[b], amax / 127) << "block " << b;
    for (int j = 0; j < 32; ++j)
      ASSERT_LE(std::abs(double(xb[j]) - double(q.d[b]) * qb[j]), double(q.d[b]) * (0.5 + 1.0 / 65536))
          << "block " << b << " element " << j;
    EXPECT_EQ(q.half[2 * b], q.d[b] * float(sum[0]));
    EXPECT_EQ(q.half[2 * b + 1], q.d[b] * float(sum[1]));
    EXPECT_EQ(q.sum[b], q.d[b] * float(sum[0] + sum[1]));
  }
  EXPECT_EQ(q.d[1], 0.0f);
  EXPECT_TRUE(std::isnan(q.d[q.blocks + 2]) && std::isnan(q.d[2 * q.blocks]));
  const Q8Rows r1 = q.From(1);
  EXPECT_EQ(r1.q, q.q + 32 * q.blocks);
  EXPECT_EQ(r1.half, q.half + 2 * q.blocks);
}

TEST(Q8Dot, TermsReproduceTheDequantizer) {
  std::mt19937 rng(2);
  for (DType t : kQ8Types)
    for (bool random_bytes : {false, true}) {
      const int64_t in = 2 * DTypeBlockElems(t);
      const Weights w = MakeWeights(t, 4, in, random_bytes, rng);
      const size_t bb = DTypeBytes(t, DTypeBlockElems(t));
      for (size_t b = 0; b < w.w.size() / size_t(DTypeBlockElems(t)); ++b) {
        Q8Terms terms;
        DecodeQ8Terms(t, w.data + b * bb, &terms);
        ASSERT_EQ(terms.chunks * 32, DTypeBlockElems(t));
        for (int k = 0; k < terms.chunks; ++k)
          for (int j = 0; j < 32; ++j) {
            const Q8Chunk& c = terms.c[k];
            const double sv = double(terms.a) * c.scale[j / 16] * c.v[j], bm = double(terms.b) * c.min[j / 16];
            const double want = w.w[b * size_t(terms.chunks * 32) + size_t(32 * k + j)];
            ASSERT_LE(std::abs(sv - bm - want), 3 * kF32UnitRoundoff * (std::abs(sv) + std::abs(bm)))
                << DTypeName(t) << (random_bytes ? " random bytes" : " quantized") << " block " << b << " chunk " << k
                << " element " << j;
          }
      }
    }
}

// Exact sums for one weight row against activation row r: the f64 dot with the exact activations,
// the activation-error bound, and M (see the top of the file).
struct Expected {
  double dot = 0, act_err = 0, mag = 0;
  double deq = 0;  // the decomposition's weights against the f32 dequantized ones, times |x^|
};
Expected Expect(DType t, const uint8_t* row, const float* wrow, int64_t in, const float* x, const Q8Rows& xq) {
  Expected e;
  for (int64_t i = 0; i < in; ++i) {
    e.dot += double(wrow[i]) * x[i];
    e.act_err += std::abs(double(wrow[i])) * xq.d[i / 32] * (0.5 + 1.0 / 65536);
  }
  const int64_t elems = DTypeBlockElems(t);
  const size_t bb = DTypeBytes(t, elems);
  for (int64_t b = 0; b < in / elems; ++b) {
    Q8Terms terms;
    DecodeQ8Terms(t, row + size_t(b) * bb, &terms);
    for (int k = 0; k < terms.chunks; ++k) {
      const Q8Chunk& c = terms.c[k];
      const int64_t i = b * terms.chunks + k;
      for (int j = 0; j < 32; ++j) {
        const double sv = std::abs(double(terms.a) * c.scale[j / 16] * c.v[j]), xj = std::abs(double(xq.d[i]) * xq.q[32 * i + j]);
        e.mag += sv * xj;
        e.deq += 3 * kF32UnitRoundoff * (sv + std::abs(double(terms.b) * c.min[j / 16])) * xj;
      }
      // The min term per half, and per chunk (a kernel may use the chunk's sum instead of its halves).
      for (int h = 0; h < 2; ++h) e.mag += std::abs(double(terms.b) * c.min[h] * xq.half[2 * i + h]);
      e.mag += std::abs(double(terms.b) * c.min[0] * xq.sum[i]);
    }
  }
  return e;
}

TEST(Q8Dot, ReferenceWithinActivationErrorOfExactDot) {
  std::mt19937 rng(3);
  for (DType t : kQ8Types)
    for (bool random_bytes : {false, true})
      for (int64_t blocks : {1, 3, 8}) {
        // 9 weight rows: DotRowQ8 takes them 4 (one activation row) or 2 (two) at a time, and the rest
        // singly; interleaved (CanInterleave), one group of 8 and a row after it.
        const int64_t in = blocks * DTypeBlockElems(t), out = 9;
        const Weights w = MakeWeights(t, out, in, random_bytes, rng);
        std::vector<uint8_t> grouped(CanInterleave(t) ? DTypeBytes(t, out * in) + 1 : 0);  // one byte off alignment
        if (CanInterleave(t)) InterleaveRows(t, w.data, out, in, grouped.data() + 1);
        for (int rows = 1; rows <= 8; ++rows) {
          const auto x = RandomFloats(size_t(rows * in), rng);
          Q8Buffer buf;
          const Q8Rows xq = buf.Quantize(x.data(), rows, in);
          const size_t row_bytes = DTypeBytes(t, in);
          std::vector<float> y(size_t(rows * out)), y_fast(size_t(rows * out));
          DotRowQ8Ref(t, w.data, out, in, xq, rows, y.data(), out);
          DotRowQ8(t, w.data, out, in, xq, rows, y_fast.data(), out);
          std::vector<float> y_group(size_t(rows * out));
          if (CanInterleave(t)) DotRowsQ8x8(t, grouped.data() + 1, 1, in, xq, rows, y_group.data(), out);
          for (int r = 0; r < rows; ++r)
            for (int64_t o = 0; o < out; ++o) {
              const Expected e = Expect(t, w.data + size_t(o) * row_bytes, w.w.data() + o * in, in, x.data() + r * in,
                                        xq.From(r));
              const double round = 2 * double(in / 32 + 8) * kF32UnitRoundoff * e.mag;
              const float got = y[size_t(r * out + o)], fast = y_fast[size_t(r * out + o)];
              const std::string where = std::string(DTypeName(t)) + (random_bytes ? " random bytes" : " quantized") +
                                        " in=" + std::to_string(in) + " rows=" + std::to_string(rows) +
                                        " r=" + std::to_string(r) + " o=" + std::to_string(o);
              ASSERT_LE(std::abs(got - e.dot), e.act_err + e.deq + round) << where << ": ref " << got << " want " << e.dot;
              ASSERT_LE(std::abs(fast - got), 2 * round) << where << ": fast " << fast << " ref " << got;
              if (CanInterleave(t) && o < kInterleaveRows) {
                ASSERT_LE(std::abs(y_group[size_t(r * out + o)] - got), 2 * round)
                    << where << ": interleaved " << y_group[size_t(r * out + o)] << " ref " << got;
              }
            }
        }
      }
}

// The interleaved layout holds the same blocks: every row range reads back as ggml's layout decodes
// it (exactly: the same bytes go to the same dequantizer), the group's bytes have moved, and the
// rows after the last whole group have not.
TEST(Interleave, RowsReadBackExactlyAndOnlyWholeGroupsMove) {
  std::mt19937 rng(4);
  for (DType t : kQ8Types)
    for (int64_t rows : {8, 13, 24}) {
      ASSERT_TRUE(CanInterleave(t)) << DTypeName(t);
      const int64_t in = 3 * DTypeBlockElems(t);
      const Weights w = MakeWeights(t, rows, in, false, rng);
      const size_t bytes = DTypeBytes(t, rows * in), row_bytes = DTypeBytes(t, in);
      std::vector<uint8_t> grouped(bytes);
      InterleaveRows(t, w.data, rows, in, grouped.data());
      const size_t whole = size_t(rows / kInterleaveRows * kInterleaveRows) * row_bytes;
      EXPECT_NE(std::memcmp(grouped.data(), w.data, whole), 0) << DTypeName(t);
      EXPECT_EQ(std::memcmp(grouped.data() + whole, w.data + whole, bytes - whole), 0) << DTypeName(t);
      const TensorView view{t, {rows, in}, grouped.data(), true};
      for (int64_t r0 = 0; r0 < rows; r0 += 3)
        for (int64_t n = 1; r0 + n <= rows; n += 5) {
          std::vector<float> got(size_t(n * in));
          RowsToF32(view, r0, n, got.data());
          for (int64_t i = 0; i < n * in; ++i)
            ASSERT_EQ(got[size_t(i)], w.w[size_t(r0 * in + i)]) << DTypeName(t) << " rows " << r0 << "+" << n << " at " << i;
        }
    }
}

}  // namespace
}  // namespace atp
