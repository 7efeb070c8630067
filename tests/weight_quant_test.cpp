// core/quant: ggml's Q8_0/Q4_0 blocks against hand-computed bytes (zero block, a negative signed
// maximum, halves, an outlier, non-finite input), the round-trip error bound on random rows, the
// vectorized dequantizers against a scalar reading of the bytes, and the block-aware size helpers.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "numeric_test_util.h"

namespace atp {
namespace {

uint16_t ScaleBits(const uint8_t* blk) { return uint16_t(blk[0] | blk[1] << 8); }

// The element j of a block read straight from its bytes: the layout spelled out once more,
// independently of the library's (vectorized) dequantizers.
float ScalarQ8_0(const uint8_t* blk, int j) { return F16ToF32(ScaleBits(blk)) * float(int8_t(blk[2 + j])); }
float ScalarQ4_0(const uint8_t* blk, int j) {
  const int q = (blk[2 + j % 16] >> (j < 16 ? 0 : 4)) & 0xf;
  return F16ToF32(ScaleBits(blk)) * float(q - 8);
}

using testing::Quantize;

TEST(WeightQuant, BlockSizesAndNames) {
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 32), 34u);
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 32), 18u);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 96), 102u);
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 0), 0u);
  EXPECT_EQ(DTypeBytes(DType::kBF16, 7), 14u);
  EXPECT_EQ(DTypeBlockElems(DType::kQ4_0), 32);
  EXPECT_EQ(DTypeBlockElems(DType::kF16), 1);
  EXPECT_TRUE(IsBlockDType(DType::kQ8_0) && IsBlockDType(DType::kQ4_0) && !IsBlockDType(DType::kBF16));
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    DType back;
    ASSERT_TRUE(ParseDType(DTypeName(t), &back));
    EXPECT_EQ(back, t);
  }
  EXPECT_EQ((TensorView{DType::kQ4_0, {3, 64}, nullptr}.nbytes()), 3u * 2 * 18);
}

TEST(WeightQuant, CountsThatSplitABlockAreRejected) {
  EXPECT_TRUE(CheckDTypeCount(DType::kQ8_0, 64).ok());
  EXPECT_TRUE(CheckDTypeCount(DType::kF32, 33).ok());
  Status s = CheckDTypeCount(DType::kQ4_0, 688);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("q4_0"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("688"), std::string::npos) << s.message();
  EXPECT_FALSE(CheckDTypeCount(DType::kF16, -1).ok());
}

// Misuse of the size API is a bug, and loud: no silent per-element size for a block dtype.
TEST(WeightQuantDeathTest, SizeMisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(DTypeSize(DType::kQ8_0), "DTypeBytes");
  EXPECT_DEATH(DTypeBytes(DType::kQ4_0, 33), "multiple of the 32-element block");
  float x[33] = {};
  uint8_t out[64];
  EXPECT_DEATH(FromF32(DType::kQ8_0, x, out, 33), "32-element block");
}

TEST(WeightQuant, ZeroBlock) {
  const std::vector<float> x(32, 0.f);
  auto q8 = Quantize(DType::kQ8_0, x);
  EXPECT_EQ(ScaleBits(q8.data()), 0x0000);  // d = 0 / 127
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q8[size_t(2 + j)], 0);
  auto q4 = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(ScaleBits(q4.data()), 0x8000);  // d = 0 / -8 = -0, as ggml stores it
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q4[size_t(2 + j)], 0x88);  // trunc(0 + 8.5) = 8 in both nibbles
  std::vector<float> y(32, 1.f);
  ToF32(DType::kQ4_0, q4.data(), y.data(), 32);
  for (float v : y) EXPECT_EQ(v, 0.f);
}

// Q4_0's scale is signed: the element of largest magnitude (here -16) maps to q = 0 exactly, so the
// other side has only 7 steps and clips at q = 15.
TEST(WeightQuant, Q4_0SignedScaleFromANegativeMaximum) {
  std::vector<float> x(32, 0.f);
  x[0] = 8, x[1] = -8, x[2] = 3, x[5] = -16, x[16] = 15, x[17] = 16, x[18] = -15.9f;
  auto b = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(ScaleBits(b.data()), 0x4000);  // d = -16 / -8 = 2
  // q = min(15, trunc(x / 2 + 8.5)).
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = 8;
  q[0] = 12, q[1] = 4, q[2] = 10, q[5] = 0, q[16] = 15, q[17] = 15, q[18] = 0;  // 16.0 -> 16 and 16.5 -> 16 clip
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[size_t(2 + j)], q[j] | q[j + 16] << 4) << "byte " << j;
  std::vector<float> y(32);
  ToF32(DType::kQ4_0, b.data(), y.data(), 32);
  EXPECT_EQ(y[5], -16.f);
  EXPECT_EQ(y[0], 8.f);
  EXPECT_EQ(y[2], 4.f);   // 3 -> 1.5 steps + 8.5 = 10: rounds half up
  EXPECT_EQ(y[16], 14.f);  // clipped: 15 -> 7.5 steps would need q = 16
  EXPECT_EQ(y[17], 14.f);
  EXPECT_EQ(y[18], -16.f);
  // The same block mirrored: a positive maximum gives a negative scale and the same magnitudes.
  for (float& v : x) v = -v;
  auto m = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(ScaleBits(m.data()), 0xC000);  // -2
  for (int j = 0; j < 16; ++j) EXPECT_EQ(m[size_t(2 + j)], b[size_t(2 + j)]);
}

// Ties: Q8_0 rounds half away from zero (roundf); Q4_0's trunc(x / d + 8.5) rounds half up.
TEST(WeightQuant, HalvesRoundAsGgml) {
  std::vector<float> x(32, 0.f);
  x[0] = 127, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.5f, x[4] = -0.5f, x[5] = 1.5f;  // d = 1
  auto b8 = Quantize(DType::kQ8_0, x);
  EXPECT_EQ(ScaleBits(b8.data()), 0x3C00);  // 1.0
  const int8_t want8[6] = {127, 3, -3, 1, -1, 2};
  for (int j = 0; j < 6; ++j) EXPECT_EQ(int8_t(b8[size_t(2 + j)]), want8[j]) << j;
  x[0] = -8;  // Q4_0: d = 1
  auto b4 = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(ScaleBits(b4.data()), 0x3C00);
  const float want4[6] = {-8, 3, -2, 1, 0, 2};  // 2.5 -> 11, -2.5 -> 6, 0.5 -> 9, -0.5 -> 8, 1.5 -> 10
  for (int j = 0; j < 6; ++j) EXPECT_EQ(ScalarQ4_0(b4.data(), j), want4[j]) << j;
}

// ggml rounds x * (1/d) to f32 before adding 8.5. With d = 0.75, 1/d = 1.33333337f is above 4/3, so
// x = -5.625 gives x * (1/d) = -7.5 - 2^-22 exactly, a tie that rounds to -7.5: q = trunc(1.0) = 1.
// Contracted into one fused multiply-add it is trunc(1 - 2^-22) = 0 (as a build with -march=native
// did: llama-quantize's Q4_0 files of atp-40m then differed from atp's in ~0.02% of the bytes). The
// other three are the same case one step up; the expected codes are also x / d + 8.5 exactly.
TEST(WeightQuant, Q4_0CodesRoundTheProductBeforeTheOffset) {
  std::vector<float> x(32, 0.f);
  x[0] = -6;  // d = 0.75
  const float xs[4] = {-5.625f, -4.875f, -4.125f, -3.375f};
  for (int j = 0; j < 4; ++j) x[size_t(1 + j)] = xs[j];
  auto b = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(F16ToF32(ScaleBits(b.data())), 0.75f);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(ScalarQ4_0(b.data(), 1 + j), 0.75f * float(j + 1 - 8)) << xs[j];
}

// One huge value sets the scale; small neighbours flush to zero, the outlier itself survives to
// within f16's rounding of the scale.
TEST(WeightQuant, OutlierBlock) {
  std::vector<float> x(32, 1.f);
  x[7] = 1000, x[8] = 4;
  auto b8 = Quantize(DType::kQ8_0, x);
  EXPECT_EQ(ScaleBits(b8.data()), 0x47E0);  // f16(1000 / 127 = 7.87402) = 7.875
  std::vector<float> y(32);
  ToF32(DType::kQ8_0, b8.data(), y.data(), 32);
  EXPECT_EQ(y[7], 127 * 7.875f);  // 1000.125
  EXPECT_EQ(y[8], 7.875f);        // 4 / 7.874 = 0.508 -> 1
  EXPECT_EQ(y[0], 0.f);           // 0.127 -> 0
  x[7] = -1000;
  auto b4 = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(F16ToF32(ScaleBits(b4.data())), 125.f);
  ToF32(DType::kQ4_0, b4.data(), y.data(), 32);
  EXPECT_EQ(y[7], -1000.f);
  EXPECT_EQ(y[8], 0.f);
}

// Policy (core/quant.h): a block holding NaN or +-inf decodes to NaN everywhere; other blocks of the
// row are untouched.
TEST(WeightQuant, NonFiniteInputPoisonsOnlyItsBlock) {
  for (DType t : {DType::kQ8_0, DType::kQ4_0})
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> x(64, 0.5f);
      x[40] = bad;
      auto b = Quantize(t, x);
      std::vector<float> y(64);
      ToF32(t, b.data(), y.data(), 64);
      for (int j = 0; j < 32; ++j) EXPECT_NEAR(y[size_t(j)], 0.5f, 0.01f) << DTypeName(t) << " " << j;
      for (int j = 32; j < 64; ++j) EXPECT_TRUE(std::isnan(y[size_t(j)])) << DTypeName(t) << " " << bad << " " << j;
    }
}

// Random rows of widely varying scale: every element decodes within the quantization step, and the
// vectorized dequantizer equals the scalar reading of the bytes exactly. Bounds, with d the block's
// f32 scale: Q8_0 |x - y| <= d/2 (rounding) + 127 d 2^-11 (f16 rounding of d, times |q| <= 127);
// Q4_0 |x - y| <= |d| (the clipped side loses up to one step) + 8 |d| 2^-11.
TEST(WeightQuant, RoundTripWithinOneStep) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  std::uniform_int_distribution<int> e(-5, 15);  // scales stay normal f16 (subnormal ones lose precision, as in ggml)
  const int64_t n = 32 * 40;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / 32; ++b) {
    const float s = std::ldexp(1.f, e(rng));
    for (int j = 0; j < 32; ++j) x[size_t(b * 32 + j)] = s * u(rng);
  }
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    auto q = Quantize(t, x);
    std::vector<float> y(static_cast<size_t>(n));
    ToF32(t, q.data(), y.data(), size_t(n));
    const size_t bb = DTypeBytes(t, 32);
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[size_t(b * 32 + j)]));
      const double d = t == DType::kQ8_0 ? amax / 127.0 : amax / 8.0;
      const double bound = t == DType::kQ8_0 ? d / 2 + 127 * d * std::ldexp(1.0, -11) : d + 8 * d * std::ldexp(1.0, -11);
      for (int j = 0; j < 32; ++j) {
        const size_t i = size_t(b * 32 + j);
        ASSERT_LE(std::fabs(double(x[i]) - y[i]), bound) << DTypeName(t) << " block " << b << " elem " << j;
        const float s = t == DType::kQ8_0 ? ScalarQ8_0(q.data() + size_t(b) * bb, j) : ScalarQ4_0(q.data() + size_t(b) * bb, j);
        ASSERT_EQ(y[i], s) << DTypeName(t) << " block " << b << " elem " << j;
      }
    }
  }
}

}  // namespace
}  // namespace atp
