// MX / NVFP4 and KIVI codecs against hand-computed encodings (round to nearest even, saturation,
// subnormals, NaN/Inf, zero blocks, partial blocks and groups), and the packed attention kernels
// (AVX-512, dequantizing in registers) against their scalar reference decoders.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/dtype.h"
#include "kernels/packed_attention.h"
#include "kv/kivi_codec.h"
#include "kv/mx_codec.h"

namespace atp {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

std::vector<uint8_t> EncodeMx(MxFormat f, const std::vector<float>& x) {
  std::vector<uint8_t> row(size_t(MxRowBytes(f, int(x.size()))));
  MxEncodeRow(f, x.data(), int(x.size()), row.data());
  return row;
}

std::vector<float> DecodeMx(MxFormat f, const std::vector<uint8_t>& row, int dim) {
  PackedRows r;
  r.layout = PackedLayout::kMx;
  r.mx = f;
  r.dim = dim;
  r.data = row.data();
  r.stride = int64_t(row.size());
  r.count = 1;
  std::vector<float> out(static_cast<size_t>(dim));
  DecodePackedRow(r, 0, out.data());
  return out;
}

TEST(MxElement, Fp8E4M3RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, 1.0), 0x38u);    // 0 0111 000
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, 448.0), 0x7Eu);  // max normal 1.75 * 2^8
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, 464.0), 0x7Eu);  // RNE would give 480 = the NaN code: saturate
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, 1e9), 0x7Eu);
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, -448.0), 0xFEu);
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, 1.0625), 0x38u);  // tie between 1 and 1.125 -> even mantissa 0
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, 1.1875), 0x3Au);  // tie between 1.125 and 1.25 -> mantissa 2
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, std::ldexp(1.0, -9)), 0x01u);   // smallest subnormal
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, std::ldexp(1.0, -10)), 0x00u);  // half of it: tie -> 0
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, std::ldexp(3.0, -11)), 0x01u);  // 0.75 units -> 1
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, std::ldexp(15.5, -10)), 0x08u); // 7.75 units -> 8 = min normal
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E4M3, -0.0), 0x80u);
  EXPECT_EQ(MxElementValue(MxFormat::kFp8E4M3, 0x7E), 448.0f);
  EXPECT_EQ(MxElementValue(MxFormat::kFp8E4M3, 0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(MxElementValue(MxFormat::kFp8E4M3, 0x7F)));
  EXPECT_TRUE(std::isnan(MxElementValue(MxFormat::kFp8E4M3, 0xFF)));
}

TEST(MxElement, Fp8E5M2Fp6Fp4Int8HandValues) {
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E5M2, 1.0), 0x3Cu);      // 0 01111 00
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E5M2, 57344.0), 0x7Bu);  // max normal 1.75 * 2^15
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E5M2, 1e6), 0x7Bu);      // saturates, not Inf (0x7C)
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp8E5M2, std::ldexp(1.0, -16)), 0x01u);
  EXPECT_EQ(MxElementValue(MxFormat::kFp8E5M2, 0x7C), kInf);
  EXPECT_TRUE(std::isnan(MxElementValue(MxFormat::kFp8E5M2, 0x7D)));
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E2M3, 7.5), 0x1Fu);     // 0 11 111
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E2M3, 9.0), 0x1Fu);     // saturates
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E2M3, 0.875), 0x07u);   // subnormal 7/8
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E2M3, 1.0), 0x08u);     // 0 01 000
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E2M3, -0.125), 0x21u);  // sign bit 5, smallest subnormal
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E3M2, 28.0), 0x1Fu);    // 0 111 11
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E3M2, 1.0), 0x0Cu);     // 0 011 00
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp6E3M2, 0.0625), 0x01u);  // smallest subnormal 2^-4
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp4E2M1, 6.0), 0x7u);
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp4E2M1, 0.5), 0x1u);
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp4E2M1, 0.25), 0x0u);  // tie between 0 and 0.5 -> 0
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp4E2M1, 0.75), 0x2u);  // tie between 0.5 and 1 -> 1 (even)
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp4E2M1, 5.0), 0x6u);   // tie between 4 and 6 -> 4
  EXPECT_EQ(MxQuantizeElement(MxFormat::kFp4E2M1, -3.0), 0xDu);
  EXPECT_EQ(MxQuantizeElement(MxFormat::kInt8, 1.0), 64u);
  EXPECT_EQ(MxQuantizeElement(MxFormat::kInt8, -2.5), 0x81u);       // saturates at -127/64
  EXPECT_EQ(MxQuantizeElement(MxFormat::kInt8, 1.0 / 128), 0u);     // half a unit: tie -> 0
  EXPECT_EQ(MxQuantizeElement(MxFormat::kInt8, 3.0 / 128), 2u);     // 1.5 units -> 2
  EXPECT_EQ(MxElementValue(MxFormat::kInt8, 0x81), -127.0f / 64);
}

TEST(MxBlock, SharedScaleIsFloorLog2AmaxMinusEmax) {
  std::vector<float> x(32);
  for (int i = 0; i < 31; ++i) x[size_t(i)] = float(i % 16 + 1);  // <= 4 significant bits: exact in E4M3
  x[31] = 32;                                                     // amax 32: X = 5 - 8 = -3
  auto row = EncodeMx(MxFormat::kFp8E4M3, x);
  ASSERT_EQ(row.size(), 33u);
  EXPECT_EQ(row[0], 127 - 3);
  EXPECT_EQ(row[1], 0x50);   // 1 * 8 = 1.0 * 2^3
  EXPECT_EQ(row[3], 0x5C);   // 3 * 8 = 1.5 * 2^4
  EXPECT_EQ(row[32], 0x78);  // 32 * 8 = 2^8
  EXPECT_EQ(DecodeMx(MxFormat::kFp8E4M3, row, 32), x);  // small integers are exact
  // FP4: amax 6 gives X = 2 - 2 = 0 and elements as they are.
  std::vector<float> y(32, 0.f);
  y[0] = 6;
  y[1] = -1.5f;
  y[2] = 0.5f;
  y[3] = 2.5f;  // tie between 2 and 3 -> 2 (mantissa 0)
  auto r4 = EncodeMx(MxFormat::kFp4E2M1, y);
  ASSERT_EQ(r4.size(), 1u + 16u);
  EXPECT_EQ(r4[0], 127);
  EXPECT_EQ(r4[1], 0x7 | 0xB << 4);  // element 0 in the low nibble: 6 = 0111, -1.5 = 1011
  EXPECT_EQ(r4[2], 0x1 | 0x4 << 4);  // 0.5 = 0001, 2 = 0100
  // INT8: amax 1 gives X = 0 - 0 = 0.
  std::vector<float> z(32, 0.f);
  z[0] = 1;
  z[1] = -1;
  z[2] = 0.5f;
  auto r8 = EncodeMx(MxFormat::kInt8, z);
  EXPECT_EQ(r8[0], 127);
  EXPECT_EQ(r8[1], 64);
  EXPECT_EQ(r8[2], 0xC0);
  EXPECT_EQ(r8[3], 32);
}

TEST(MxBlock, Fp6PacksFourElementsInThreeBytes) {
  std::vector<float> x(32, 0.f);
  x[0] = 7.5f;   // 0x1F
  x[1] = -1.0f;  // 0x28
  x[2] = 0.875f; // 0x07
  x[3] = 2.0f;   // 0x10 (0 10 000)
  auto row = EncodeMx(MxFormat::kFp6E2M3, x);  // amax 7.5: X = 2 - 2 = 0
  ASSERT_EQ(row.size(), 1u + 24u);
  EXPECT_EQ(row[0], 127);
  EXPECT_EQ(row[1], uint8_t(0x1F | (0x28 & 3) << 6));
  EXPECT_EQ(row[2], uint8_t(0x28 >> 2 | (0x07 & 15) << 4));
  EXPECT_EQ(row[3], uint8_t(0x07 >> 4 | 0x10 << 2));
  auto back = DecodeMx(MxFormat::kFp6E2M3, row, 32);
  EXPECT_EQ(back[0], 7.5f);
  EXPECT_EQ(back[1], -1.0f);
  EXPECT_EQ(back[2], 0.875f);
  EXPECT_EQ(back[3], 2.0f);
}

TEST(MxBlock, EdgeCases) {
  // All-zero block: X = -127 (E8M0 0x00), zero elements.
  auto zero = EncodeMx(MxFormat::kFp8E4M3, std::vector<float>(32, 0.f));
  EXPECT_EQ(zero[0], 0x00);
  for (float v : DecodeMx(MxFormat::kFp8E4M3, zero, 32)) EXPECT_EQ(v, 0.f);
  // Beyond the element max after scaling: amax 511 = 1.996 * 2^8 gives X = 0, and 511 saturates to
  // 448 instead of rounding to 512 (not representable) or to the NaN code.
  std::vector<float> big(32, 1.f);
  big[5] = 511.f;
  auto sat = DecodeMx(MxFormat::kFp8E4M3, EncodeMx(MxFormat::kFp8E4M3, big), 32);
  EXPECT_EQ(sat[5], 448.f);
  EXPECT_EQ(sat[0], 1.f);
  // FP4: amax 7 -> X = 0, 7 saturates to 6.
  std::vector<float> f4(32, 0.f);
  f4[0] = 7.f;
  EXPECT_EQ(DecodeMx(MxFormat::kFp4E2M1, EncodeMx(MxFormat::kFp4E2M1, f4), 32)[0], 6.f);
  // NaN or Inf anywhere in a block: the NaN scale 0xFF, every element of that block reads NaN,
  // the other block (dim 40 = a block of 32 and one of 8) is untouched.
  for (float bad : {kNaN, kInf, -kInf}) {
    std::vector<float> x(40, 1.f);
    x[3] = bad;
    auto row = EncodeMx(MxFormat::kFp8E5M2, x);
    ASSERT_EQ(row.size(), 2u + 40u);
    EXPECT_EQ(row[0], 0xFF);
    EXPECT_EQ(row[1], 127 - 15);  // ones under E5M2: X = 0 - 15
    auto back = DecodeMx(MxFormat::kFp8E5M2, row, 40);
    for (int i = 0; i < 32; ++i) EXPECT_TRUE(std::isnan(back[size_t(i)])) << i;
    for (int i = 32; i < 40; ++i) EXPECT_EQ(back[size_t(i)], 1.f);
  }
  // f32 subnormal inputs: X clamps at -127 and the scaled elements are ordinary E4M3 values.
  std::vector<float> sub(32, 0.f);
  sub[0] = 1e-40f;                    // 2^-132.9: scaled by 2^127 to 2^-5.9
  sub[1] = -3e-41f;
  auto rs = EncodeMx(MxFormat::kFp8E4M3, sub);
  EXPECT_EQ(rs[0], 0x00);
  auto bs = DecodeMx(MxFormat::kFp8E4M3, rs, 32);
  const float half_unit = std::ldexp(1.0f, -10 - 127);  // half an E4M3 unit (2^-9) at this scale
  EXPECT_NEAR(bs[0], 1e-40f, half_unit);
  EXPECT_NEAR(bs[1], -3e-41f, half_unit);
  EXPECT_NE(bs[1], 0.f);
  // A block mixing 1 and a subnormal: the subnormal flushes to zero under X = -8.
  sub[2] = 1.f;
  EXPECT_EQ(DecodeMx(MxFormat::kFp8E4M3, EncodeMx(MxFormat::kFp8E4M3, sub), 32)[0], 0.f);
}

TEST(MxBlock, PartialLastBlockHasItsOwnScale) {
  std::vector<float> x(40, 0.f);
  x[0] = 1.f;     // block 0: amax 1 -> X = -8 (E4M3)
  x[33] = 64.f;   // block 1 (8 elements): amax 64 -> X = -2
  auto row = EncodeMx(MxFormat::kFp8E4M3, x);
  EXPECT_EQ(row[0], 127 - 8);
  EXPECT_EQ(row[1], 127 - 2);
  EXPECT_EQ(DecodeMx(MxFormat::kFp8E4M3, row, 40), x);
}

TEST(NvFp4, BlockScaleAndRowScale) {
  // Row amax 6: row scale 6 / (448 * 6); the block scale E4M3(6 / (6 * rs)) = 448 = 0x7E, so the
  // elements keep their values.
  std::vector<float> x(32, 0.f);
  x[0] = 6;
  x[1] = 3;
  x[2] = -1.5f;
  x[16] = 0.75f;  // second block: amax 0.75 -> block scale 0.75 / 6 / rs = 56 (exact E4M3)
  auto row = EncodeMx(MxFormat::kNvFp4, x);
  ASSERT_EQ(row.size(), 4u + 2u + 16u);
  float rs;
  std::memcpy(&rs, row.data(), 4);
  EXPECT_EQ(rs, 6.0f / 2688.0f);
  EXPECT_EQ(row[4], 0x7E);
  EXPECT_EQ(E4M3Value(row[5]), 56.f);
  EXPECT_EQ(row[6], 0x7 | 0x5 << 4);  // 6 = 0111, 3 = 0101
  auto back = DecodeMx(MxFormat::kNvFp4, row, 32);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(back[size_t(i)], x[size_t(i)], 1e-5) << i;  // f32 products of the scales
  // NaN marks only its block (E4M3 NaN scale 0x7F); zero rows decode to zero.
  x[20] = kNaN;
  auto bad = DecodeMx(MxFormat::kNvFp4, EncodeMx(MxFormat::kNvFp4, x), 32);
  EXPECT_NEAR(bad[0], 6.f, 1e-5);
  EXPECT_TRUE(std::isnan(bad[17]));
  for (float v : DecodeMx(MxFormat::kNvFp4, EncodeMx(MxFormat::kNvFp4, std::vector<float>(32, 0.f)), 32)) EXPECT_EQ(v, 0.f);
}

TEST(KiviCodec, ParamsAndCodesByHand) {
  uint16_t s, z;
  KiviParamsFor(0.f, 3.f, 2, &s, &z);  // zero 0, scale 3 / 3 = 1
  EXPECT_EQ(F16ToF32(z), 0.f);
  EXPECT_EQ(F16ToF32(s), 1.f);
  EXPECT_EQ(KiviCode(0.f, s, z, 2), 0u);
  EXPECT_EQ(KiviCode(1.4f, s, z, 2), 1u);
  EXPECT_EQ(KiviCode(1.5f, s, z, 2), 2u);  // ties to even
  EXPECT_EQ(KiviCode(2.5f, s, z, 2), 2u);
  EXPECT_EQ(KiviCode(3.f, s, z, 2), 3u);
  // Zero rounds down and scale up in f16, so every value of [lo, hi] gets a code in range.
  KiviParamsFor(0.1f, 0.7f, 8, &s, &z);
  EXPECT_LE(F16ToF32(z), 0.1f);
  EXPECT_GE(F16ToF32(s) * 255, 0.7f - F16ToF32(z));
  EXPECT_LE(KiviCode(0.7f, s, z, 8), 255u);
  // Non-finite range: NaN metadata.
  KiviParamsFor(kNaN, 1.f, 4, &s, &z);
  EXPECT_TRUE(std::isnan(F16ToF32(s)) && std::isnan(F16ToF32(z)));
}

TEST(KiviCodec, KeyGroupPerChannel) {
  // Two tokens, three channels, 2 bits: channel 0 spans [0, 3] (scale 1), channel 1 is constant
  // (scale 0: every code 0, reads back exactly), channel 2 spans [-1, 1] (scale f16(2/3) rounded up).
  const float rows[2][3] = {{0, 10, -1}, {3, 10, 1}};
  uint16_t s[3], z[3];
  uint8_t codes[2];
  KiviEncodeKeyGroup(&rows[0][0], 3, 2, 3, 2, s, z, codes);
  EXPECT_EQ(F16ToF32(s[0]), 1.f);
  EXPECT_EQ(F16ToF32(z[1]), 10.f);
  EXPECT_EQ(F16ToF32(s[1]), 0.f);
  EXPECT_EQ(F16ToF32(z[2]), -1.f);
  EXPECT_GE(F16ToF32(s[2]), 2.f / 3);
  EXPECT_EQ(codes[0], 0x00);                 // codes 0, 0, 0
  EXPECT_EQ(codes[1], 3 | 0 << 2 | 3 << 4);  // codes 3, 0, 3
  PackedRows r;
  r.layout = PackedLayout::kKiviChannel;
  r.dim = 3;
  r.bits = 2;
  r.data = codes;
  r.stride = 1;
  r.count = 2;
  r.scale = s;
  r.zero = z;
  float out[3];
  DecodePackedRow(r, 1, out);
  EXPECT_EQ(out[0], 3.f);
  EXPECT_EQ(out[1], 10.f);
  EXPECT_NEAR(out[2], 1.f, F16ToF32(s[2]) / 2);
}

TEST(KiviCodec, ValueRowWithGroupThatDoesNotDivide) {
  // dim 5, group 2: channel groups {0,1}, {2,3}, {4}; 4 bits.
  const float x[5] = {0, 15, -1, -1, 7};
  const int rb = int(KiviTokenRowBytes(4, 2, 5));
  ASSERT_EQ(rb, 3 * 4 + 3);
  std::vector<uint8_t> row(static_cast<size_t>(rb));
  KiviEncodeValueRow(x, 5, 4, 2, row.data());
  uint16_t s0, z0;
  std::memcpy(&s0, &row[0], 2);
  std::memcpy(&z0, &row[6], 2);
  EXPECT_EQ(F16ToF32(s0), 1.f);  // (15 - 0) / 15
  EXPECT_EQ(F16ToF32(z0), 0.f);
  EXPECT_EQ(row[12], 0 | 15 << 4);  // codes of channels 0 and 1
  PackedRows r;
  r.layout = PackedLayout::kKiviToken;
  r.dim = 5;
  r.bits = 4;
  r.group = 2;
  r.data = row.data();
  r.stride = rb;
  r.count = 1;
  float out[5];
  DecodePackedRow(r, 0, out);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], x[i]) << i;  // each group is exact: constant or two-valued
}

TEST(KiviCodec, ErrorAtMostHalfAScale) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 3);
  for (int bits : {2, 4, 8}) {
    std::vector<float> rows(32 * 20);
    for (auto& v : rows) v = n(rng);
    rows[7] = 4000.f;  // a wide range is still within f16
    std::vector<uint16_t> s(20), z(20);
    std::vector<uint8_t> codes(size_t(32 * KiviCodeBytes(bits, 20)));
    KiviEncodeKeyGroup(rows.data(), 20, 32, 20, bits, s.data(), z.data(), codes.data());
    PackedRows r;
    r.layout = PackedLayout::kKiviChannel;
    r.dim = 20;
    r.bits = bits;
    r.data = codes.data();
    r.stride = KiviCodeBytes(bits, 20);
    r.count = 32;
    r.scale = s.data();
    r.zero = z.data();
    std::vector<float> out(20);
    for (int j = 0; j < 32; ++j) {
      DecodePackedRow(r, j, out.data());
      for (int c = 0; c < 20; ++c)  // half a step, plus f32 rounding of z + s * code
        EXPECT_LE(std::fabs(out[size_t(c)] - rows[size_t(j * 20 + c)]), F16ToF32(s[size_t(c)]) * 0.5f + 1e-3f)
            << "bits " << bits << " row " << j << " channel " << c;
    }
  }
}

// Packs `n` random rows in `layout`/format and checks the AVX-512 kernels against the scalar
// decoder followed by plain f32 arithmetic.
void CheckKernels(PackedRows r, std::vector<uint8_t>* storage, std::vector<uint16_t>* meta, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  const int dim = r.dim;
  std::vector<float> x(size_t(n) * dim);
  for (auto& v : x) v = nd(rng);
  if (r.layout == PackedLayout::kMx) {
    r.stride = MxRowBytes(r.mx, dim);
    storage->assign(size_t(n * r.stride), 0);
    for (int j = 0; j < n; ++j) MxEncodeRow(r.mx, &x[size_t(j) * dim], dim, storage->data() + j * r.stride);
  } else if (r.layout == PackedLayout::kKiviToken) {
    r.stride = KiviTokenRowBytes(r.bits, r.group, dim);
    storage->assign(size_t(n * r.stride), 0);
    for (int j = 0; j < n; ++j) KiviEncodeValueRow(&x[size_t(j) * dim], dim, r.bits, r.group, storage->data() + j * r.stride);
  } else {
    r.stride = KiviCodeBytes(r.bits, dim);
    storage->assign(size_t(n * r.stride), 0);
    meta->assign(size_t(2 * dim), 0);
    KiviEncodeKeyGroup(x.data(), dim, n, dim, r.bits, meta->data(), meta->data() + dim, storage->data());
    r.scale = meta->data();
    r.zero = meta->data() + dim;
  }
  r.data = storage->data();
  r.count = n;
  std::vector<float> q(static_cast<size_t>(dim)), p(static_cast<size_t>(n)), dec(static_cast<size_t>(dim));
  for (auto& v : q) v = nd(rng);
  for (auto& v : p) v = std::fabs(nd(rng)) / float(n);
  std::vector<float> want_s(static_cast<size_t>(n)), want_o(static_cast<size_t>(dim), 0.5f), got_s(static_cast<size_t>(n)),
      got_o(static_cast<size_t>(dim), 0.5f);
  for (int j = 0; j < n; ++j) {
    DecodePackedRow(r, j, dec.data());
    double s = 0;
    for (int i = 0; i < dim; ++i) {
      s += double(q[size_t(i)]) * dec[size_t(i)];
      want_o[size_t(i)] += p[size_t(j)] * dec[size_t(i)];
    }
    want_s[size_t(j)] = float(s * 0.125);
  }
  PackedScores(q.data(), r, 0.125f, got_s.data());
  PackedAccumulate(p.data(), r, got_o.data());
  for (int j = 0; j < n; ++j) EXPECT_NEAR(got_s[size_t(j)], want_s[size_t(j)], 1e-4) << "row " << j;
  for (int i = 0; i < dim; ++i) EXPECT_NEAR(got_o[size_t(i)], want_o[size_t(i)], 1e-5) << "col " << i;
}

TEST(PackedKernels, MatchScalarDecoders) {
  // 1e-4 / 1e-5: the kernels reorder f32 sums over <= 72 products of O(1) values (and fold
  // scales into q), ~1e-6 relative each; the decoded values themselves are identical.
  std::vector<uint8_t> st;
  std::vector<uint16_t> meta;
  uint32_t seed = 1;
  for (int dim : {64, 40, 16}) {
    for (MxFormat f : {MxFormat::kFp8E4M3, MxFormat::kFp8E5M2, MxFormat::kFp6E2M3, MxFormat::kFp6E3M2,
                       MxFormat::kFp4E2M1, MxFormat::kInt8, MxFormat::kNvFp4}) {
      SCOPED_TRACE(std::string(MxFormatName(f)) + " dim " + std::to_string(dim));
      PackedRows r;
      r.layout = PackedLayout::kMx;
      r.mx = f;
      r.dim = dim;
      CheckKernels(r, &st, &meta, 9, seed++);
    }
    for (int bits : {2, 4, 8}) {
      SCOPED_TRACE("kivi bits " + std::to_string(bits) + " dim " + std::to_string(dim));
      PackedRows k;
      k.layout = PackedLayout::kKiviChannel;
      k.dim = dim;
      k.bits = bits;
      CheckKernels(k, &st, &meta, 32, seed++);
      for (int group : {16, 32, 24}) {
        PackedRows v;
        v.layout = PackedLayout::kKiviToken;
        v.dim = dim;
        v.bits = bits;
        v.group = group;
        CheckKernels(v, &st, &meta, 9, seed++);
      }
    }
  }
}

}  // namespace
}  // namespace atp
