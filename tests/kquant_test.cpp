// core/kquant: llama.cpp's Q4_1/Q5_0/Q5_1/IQ4_NL blocks and the Q2_K..Q6_K/IQ4_XS super-blocks.
// Dequantization: blocks packed here from the layout (codes and scales chosen by the test, fields
// written bit by bit), decoded by the library and compared bit for bit with the value the layout
// defines, computed here; scales are powers of two so every product is exact and the comparison
// cannot depend on rounding order. A few elements are also checked against numbers worked out by
// hand. Quantization: all-zero and non-finite blocks, small hand-worked inputs, and the round-trip
// error on random rows against each format's uniform-quantization noise.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/kquant.h"
#include "numeric_test_util.h"

namespace atp {
namespace {

const DType kNewTypes[] = {DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kIQ4_NL, DType::kQ2_K,
                           DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kIQ4_XS};

void PutF16(uint8_t* p, float v) {
  const uint16_t h = F32ToF16(v);
  p[0] = uint8_t(h), p[1] = uint8_t(h >> 8);
}
void SetBit(uint8_t* bytes, int bit, bool on) {
  if (on) bytes[bit / 8] = uint8_t(bytes[bit / 8] | 1 << (bit % 8));
}

std::vector<float> Decode(DType t, const std::vector<uint8_t>& block) {
  std::vector<float> y(size_t(DTypeBlockElems(t)));
  ToF32(t, block.data(), y.data(), y.size());
  return y;
}

// Bit-for-bit equality (a NaN or a -0 would not slip through a float ==).
void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    EXPECT_EQ(a, b) << what << " element " << i << ": got " << got[i] << " want " << want[i];
  }
}

std::mt19937 rng(1234);
int Rand(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// ---- 32-element blocks: element j < 16 is the low nibble of qs[j], j + 16 the high nibble ----

void PackNibbles(uint8_t* qs, const int* q) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 15) | (q[j + 16] & 15) << 4);
}

TEST(KQuant, Q4_1And5BitBlocksDecodeAsTheLayoutSays) {
  for (int trial = 0; trial < 20; ++trial) {
    int q[32];
    for (int& v : q) v = Rand(0, 31);
    const float d = 0.5f, m = -3.25f;
    {  // Q4_1: f16 d, f16 m, nibbles; x = q * d + m
      std::vector<uint8_t> b(20, 0);
      PutF16(&b[0], d), PutF16(&b[2], m);
      int q4[32];
      for (int j = 0; j < 32; ++j) q4[j] = q[j] & 15;
      PackNibbles(&b[4], q4);
      std::vector<float> want(32);
      for (int j = 0; j < 32; ++j) want[size_t(j)] = float(q4[j]) * d + m;
      ExpectSameBits(Decode(DType::kQ4_1, b), want, "q4_1");
    }
    {  // Q5_0: f16 d, u32 qh (bit j = bit 4 of element j), nibbles; x = (q - 16) * d
      std::vector<uint8_t> b(22, 0);
      PutF16(&b[0], d);
      for (int j = 0; j < 32; ++j) SetBit(&b[2], j, q[j] & 16);
      PackNibbles(&b[6], q);
      std::vector<float> want(32);
      for (int j = 0; j < 32; ++j) want[size_t(j)] = float(q[j] - 16) * d;
      ExpectSameBits(Decode(DType::kQ5_0, b), want, "q5_0");
    }
    {  // Q5_1: f16 d, f16 m, u32 qh, nibbles; x = q * d + m
      std::vector<uint8_t> b(24, 0);
      PutF16(&b[0], d), PutF16(&b[2], m);
      for (int j = 0; j < 32; ++j) SetBit(&b[4], j, q[j] & 16);
      PackNibbles(&b[8], q);
      std::vector<float> want(32);
      for (int j = 0; j < 32; ++j) want[size_t(j)] = float(q[j]) * d + m;
      ExpectSameBits(Decode(DType::kQ5_1, b), want, "q5_1");
    }
    {  // IQ4_NL: f16 d, nibbles indexing the non-linear table
      std::vector<uint8_t> b(18, 0);
      PutF16(&b[0], d);
      int q4[32];
      for (int j = 0; j < 32; ++j) q4[j] = q[j] & 15;
      PackNibbles(&b[2], q4);
      std::vector<float> want(32);
      for (int j = 0; j < 32; ++j) want[size_t(j)] = d * float(kIq4NlValues[q4[j]]);
      ExpectSameBits(Decode(DType::kIQ4_NL, b), want, "iq4_nl");
    }
  }
  // By hand: Q5_0 with qh = 1 << 20 and qs[4] = 0x3a: element 4 = 0xa = 10 -> (10 - 16) * 0.5 = -3;
  // element 20 = 0x3 | 16 = 19 -> (19 - 16) * 0.5 = 1.5; element 0 = 0 -> -8.
  std::vector<uint8_t> b(22, 0);
  PutF16(&b[0], 0.5f);
  b[2 + 2] = 0x10;  // bit 20 of the little-endian qh
  b[6 + 4] = 0x3a;
  const auto y = Decode(DType::kQ5_0, b);
  EXPECT_EQ(y[4], -3.f);
  EXPECT_EQ(y[20], 1.5f);
  EXPECT_EQ(y[0], -8.f);
}

// ---- 256-element super-blocks ----

// Q2_K/Q3_K: element 128 h + 32 j + l keeps 2 bits at bits 2j of qs[32 h + l]; sub-block of 16 is
// 8 h + 2 j + l / 16.
void Pack2(uint8_t* qs, const int* low2) {
  for (int e = 0; e < 256; ++e) qs[32 * (e / 128) + e % 32] = uint8_t(qs[32 * (e / 128) + e % 32] | (low2[e] & 3) << (2 * (e % 128 / 32)));
}
int Sub16(int e) { return 8 * (e / 128) + 2 * (e % 128 / 32) + e % 32 / 16; }

TEST(KQuant, Q2_KDecodesAsTheLayoutSays) {
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> b(84, 0);
    int q[256], sc[16], mn[16];
    for (int& v : q) v = Rand(0, 3);
    for (int s = 0; s < 16; ++s) sc[s] = Rand(0, 15), mn[s] = Rand(0, 15), b[size_t(s)] = uint8_t(sc[s] | mn[s] << 4);
    Pack2(&b[16], q);
    const float d = 0.5f, dmin = 0.25f;
    PutF16(&b[80], d), PutF16(&b[82], dmin);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) want[size_t(e)] = d * float(sc[Sub16(e)]) * float(q[e]) - dmin * float(mn[Sub16(e)]);
    ExpectSameBits(Decode(DType::kQ2_K, b), want, "q2_k");
  }
  // By hand: element 170 = 128 + 32 * 1 + 10 is bits 2..3 of qs[32 + 10], sub-block 8 + 2 + 0 = 10.
  // qs[42] = 0b1100 -> code 3; scales[10] = 0x25 -> scale 5, min 2; d = 0.5, dmin = 0.25:
  // 0.5 * 5 * 3 - 0.25 * 2 = 7.
  std::vector<uint8_t> b(84, 0);
  b[10] = 0x25;
  b[16 + 42] = 0x0c;
  PutF16(&b[80], 0.5f), PutF16(&b[82], 0.25f);
  EXPECT_EQ(Decode(DType::kQ2_K, b)[170], 7.f);
}

// Q3_K's 16 signed 6-bit scales, stored + 32: low 4 bits in nibbles of scales[0..7], high 2 bits in
// scales[8..11].
void PackQ3Scales(uint8_t* sc12, const int* stored) {
  for (int s = 0; s < 16; ++s) {
    const int low = stored[s] & 15, high = stored[s] >> 4;
    if (s < 8) sc12[s] = uint8_t(sc12[s] | low);
    else sc12[s - 8] = uint8_t(sc12[s - 8] | low << 4);
    sc12[8 + s % 4] = uint8_t(sc12[8 + s % 4] | high << (2 * (s / 4)));
  }
}

TEST(KQuant, Q3_KDecodesAsTheLayoutSays) {
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> b(110, 0);
    int q[256], low2[256], stored[16];
    for (int e = 0; e < 256; ++e) {
      q[e] = Rand(-4, 3);
      low2[e] = (q[e] + 4) & 3;
      SetBit(&b[0], 8 * (e % 32) + e / 32, (q[e] + 4) & 4);  // hmask[e % 32], bit e / 32
    }
    Pack2(&b[32], low2);
    for (int& s : stored) s = Rand(0, 63);
    PackQ3Scales(&b[96], stored);
    const float d = 0.25f;
    PutF16(&b[108], d);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) want[size_t(e)] = d * float(stored[Sub16(e)] - 32) * float(q[e]);
    ExpectSameBits(Decode(DType::kQ3_K, b), want, "q3_k");
  }
  // By hand: element 150 = 128 + 0 + 22: low bits 0..1 of qs[32 + 22], high bit 4 * 1 + 0 = 4 of
  // hmask[22], sub-block 8 + 0 + 1 = 9. qs[54] = 0b10 and hmask bit set -> code 2 + 4 - 4 = 2.
  // Scale 9: low nibble = high nibble of scales[1] = 0x7, high bits = bits 4..5 of scales[9] = 0b10
  // -> stored 0x27 = 39 -> 7. d = 0.25: 0.25 * 7 * 2 = 3.5.
  std::vector<uint8_t> b(110, 0);
  b[32 + 54] = 0x02;
  b[22] = 0x10;
  b[96 + 1] = 0x70;
  b[96 + 9] = 0x20;
  PutF16(&b[108], 0.25f);
  EXPECT_EQ(Decode(DType::kQ3_K, b)[150], 3.5f);
}

// Q4_K/Q5_K: 8 sub-blocks of 32 with 6-bit scale and min. s < 4: scale in bits 0..5 of byte s, min
// in bits 0..5 of byte s + 4; s >= 4: low 4 bits in the nibbles of byte s + 4, high 2 bits in bits
// 6..7 of bytes s - 4 (scale) and s (min).
void PackK4Scales(uint8_t* sc12, const int* scale, const int* min) {
  for (int s = 0; s < 8; ++s) {
    if (s < 4) {
      sc12[s] = uint8_t(sc12[s] | scale[s]);
      sc12[s + 4] = uint8_t(sc12[s + 4] | min[s]);
    } else {
      sc12[s + 4] = uint8_t((scale[s] & 15) | (min[s] & 15) << 4);
      sc12[s - 4] = uint8_t(sc12[s - 4] | (scale[s] >> 4) << 6);
      sc12[s] = uint8_t(sc12[s] | (min[s] >> 4) << 6);
    }
  }
}

TEST(KQuant, Q4_KAndQ5_KDecodeAsTheLayoutSays) {
  for (int bits : {4, 5})
    for (int trial = 0; trial < 20; ++trial) {
      const size_t size = bits == 4 ? 144 : 176, qs_at = bits == 4 ? 16 : 48;
      std::vector<uint8_t> b(size, 0);
      int q[256], scale[8], min[8];
      for (int& v : q) v = Rand(0, (1 << bits) - 1);
      for (int s = 0; s < 8; ++s) scale[s] = Rand(0, 63), min[s] = Rand(0, 63);
      const float d = 0.5f, dmin = 0.125f;
      PutF16(&b[0], d), PutF16(&b[2], dmin);
      PackK4Scales(&b[4], scale, min);
      for (int e = 0; e < 256; ++e) {  // element 64 c + 32 k + l: nibble k of qs[32 c + l], qh bit 2 c + k
        const int c = e / 64, k = e % 64 / 32, l = e % 32;
        b[qs_at + size_t(32 * c + l)] = uint8_t(b[qs_at + size_t(32 * c + l)] | (q[e] & 15) << (4 * k));
        if (bits == 5) SetBit(&b[16], 8 * l + 2 * c + k, q[e] & 16);
      }
      std::vector<float> want(256);
      for (int e = 0; e < 256; ++e) want[size_t(e)] = d * float(scale[e / 32]) * float(q[e]) - dmin * float(min[e / 32]);
      ExpectSameBits(Decode(bits == 4 ? DType::kQ4_K : DType::kQ5_K, b), want, bits == 4 ? "q4_k" : "q5_k");
    }
  // By hand (Q5_K): element 229 = 64 * 3 + 32 + 5, sub-block 7: high nibble of qs[96 + 5] = 0x9,
  // bit 7 of qh[5] set -> 25. Scale 7 = (byte 11 & 15) | (byte 3 >> 6) << 4 = 0x3 | 1 << 4 = 19;
  // min 7 = (byte 11 >> 4) | (byte 7 >> 6) << 4 = 0x2 | 2 << 4 = 34. d = 0.5, dmin = 0.125:
  // 0.5 * 19 * 25 - 0.125 * 34 = 237.5 - 4.25 = 233.25.
  std::vector<uint8_t> b(176, 0);
  PutF16(&b[0], 0.5f), PutF16(&b[2], 0.125f);
  b[4 + 11] = 0x23;
  b[4 + 3] = 0x40;
  b[4 + 7] = 0x80;
  b[16 + 5] = 0x80;
  b[48 + 101] = 0x90;
  EXPECT_EQ(Decode(DType::kQ5_K, b)[229], 233.25f);
}

TEST(KQuant, Q6_KDecodesAsTheLayoutSays) {
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> b(210, 0);
    int q[256], sc[16];
    for (int& v : q) v = Rand(0, 63);
    for (int s = 0; s < 16; ++s) sc[s] = Rand(-128, 127), b[192 + size_t(s)] = uint8_t(int8_t(sc[s]));
    for (int e = 0; e < 256; ++e) {  // 128 h + 32 k + l
      const int h = e / 128, k = e % 128 / 32, l = e % 32;
      uint8_t& low = b[size_t(64 * h + l + 32 * (k % 2))];
      low = uint8_t(low | (q[e] & 15) << (k < 2 ? 0 : 4));
      b[128 + size_t(32 * h + l)] = uint8_t(b[128 + size_t(32 * h + l)] | (q[e] >> 4) << (2 * k));
    }
    const float d = 0.25f;
    PutF16(&b[208], d);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) want[size_t(e)] = d * float(sc[Sub16(e)]) * float(q[e] - 32);
    ExpectSameBits(Decode(DType::kQ6_K, b), want, "q6_k");
  }
  // By hand: element 200 = 128 + 64 + 8 (h 1, k 2, l 8): high nibble of ql[64 + 8] = 0xf, bits 4..5
  // of qh[32 + 8] = 0b11 -> 63 - 32 = 31; sub-block 8 + 4 + 0 = 12, scale -3. d = 0.25:
  // 0.25 * -3 * 31 = -23.25.
  std::vector<uint8_t> b(210, 0);
  b[72] = 0xf0;
  b[128 + 40] = 0x30;
  b[192 + 12] = uint8_t(int8_t(-3));
  PutF16(&b[208], 0.25f);
  EXPECT_EQ(Decode(DType::kQ6_K, b)[200], -23.25f);
}

TEST(KQuant, Iq4XsDecodesAsTheLayoutSays) {
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> b(136, 0);
    int q[256], ls[8];
    for (int& v : q) v = Rand(0, 15);
    const float d = 0.5f;
    PutF16(&b[0], d);
    uint16_t sh = 0;
    for (int s = 0; s < 8; ++s) {
      ls[s] = Rand(0, 63);
      b[4 + size_t(s / 2)] = uint8_t(b[4 + size_t(s / 2)] | (ls[s] & 15) << (4 * (s % 2)));
      sh = uint16_t(sh | (ls[s] >> 4) << (2 * s));
      PackNibbles(&b[8 + size_t(16 * s)], q + 32 * s);
    }
    b[2] = uint8_t(sh), b[3] = uint8_t(sh >> 8);
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) want[size_t(e)] = d * float(ls[e / 32] - 32) * float(kIq4NlValues[q[e]]);
    ExpectSameBits(Decode(DType::kIQ4_XS, b), want, "iq4_xs");
  }
}

TEST(KQuant, SizesNamesAndGgmlBlockCounts) {
  const std::pair<DType, size_t> sizes[] = {{DType::kQ4_1, 20}, {DType::kQ5_0, 22}, {DType::kQ5_1, 24},
                                            {DType::kIQ4_NL, 18}, {DType::kQ2_K, 84}, {DType::kQ3_K, 110},
                                            {DType::kQ4_K, 144}, {DType::kQ5_K, 176}, {DType::kQ6_K, 210},
                                            {DType::kIQ4_XS, 136}};
  for (auto [t, bytes] : sizes) {
    EXPECT_TRUE(IsBlockDType(t));
    EXPECT_EQ(DTypeBytes(t, DTypeBlockElems(t) * 3), 3 * bytes) << DTypeName(t);
    DType back;
    ASSERT_TRUE(ParseDType(DTypeName(t), &back)) << DTypeName(t);
    EXPECT_EQ(back, t);
  }
  EXPECT_EQ(DTypeBlockElems(DType::kQ5_1), 32);
  EXPECT_EQ(DTypeBlockElems(DType::kQ6_K), 256);
  DType t;
  EXPECT_TRUE(ParseDType("Q4_K", &t) && t == DType::kQ4_K);
  EXPECT_FALSE(ParseDType("q4_K", &t));
  EXPECT_FALSE(ParseDType("q4_k_m", &t));  // a file mix, not a dtype
  const Status s = CheckDTypeCount(DType::kQ4_K, 288);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("256"), std::string::npos) << s.message();
}

// ---- quantizers ----

using testing::Quantize;
std::vector<float> RoundTrip(DType t, const std::vector<float>& x) {
  const auto b = Quantize(t, x);
  std::vector<float> y(x.size());
  ToF32(t, b.data(), y.data(), y.size());
  return y;
}

TEST(KQuant, ZeroBlocksDecodeToZero) {
  for (DType t : kNewTypes) {
    const std::vector<float> x(512, 0.f);
    for (float v : RoundTrip(t, x)) ASSERT_EQ(v, 0.f) << DTypeName(t);
  }
}

// A block holding NaN or inf decodes to NaN everywhere (zeros with a NaN scale) and leaves the
// neighbouring blocks as they would be alone.
TEST(KQuant, NonFiniteInputPoisonsOnlyItsBlock) {
  std::normal_distribution<float> g;
  for (DType t : kNewTypes) {
    const int64_t be = DTypeBlockElems(t);
    std::vector<float> x(size_t(3 * be));
    for (auto& v : x) v = g(rng);
    const auto clean = RoundTrip(t, x);
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      auto y = x;
      y[size_t(be + 7)] = bad;
      const auto out = RoundTrip(t, y);
      for (int64_t i = 0; i < 3 * be; ++i) {
        if (i >= be && i < 2 * be) EXPECT_TRUE(std::isnan(out[size_t(i)])) << DTypeName(t) << " " << i;
        else EXPECT_EQ(out[size_t(i)], clean[size_t(i)]) << DTypeName(t) << " " << i;
      }
    }
  }
}

// Q4_1/Q5_1 of a block spanning -FLT_MAX..FLT_MAX: the range overflows f32 and the block is
// poisoned like a non-finite one (ggml's float-to-int casts are undefined there).
TEST(KQuant, RangeBeyondF32PoisonsQ4_1AndQ5_1) {
  std::vector<float> x(32, 0.f);
  x[3] = FLT_MAX, x[9] = -FLT_MAX;
  for (DType t : {DType::kQ4_1, DType::kQ5_1})
    for (float v : RoundTrip(t, x)) EXPECT_TRUE(std::isnan(v)) << DTypeName(t);
}

// Inputs whose quantization is worked out by hand.
TEST(KQuant, HandWorkedQuantizations) {
  // Q4_1 of 0, 1, ..., 15, 0, ..., 15: min 0, max 15 -> d = 1, m = 0, codes = values: exact.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j % 16);
  auto b = Quantize(DType::kQ4_1, x);
  EXPECT_EQ(F16ToF32(uint16_t(b[0] | b[1] << 8)), 1.f);
  EXPECT_EQ(F16ToF32(uint16_t(b[2] | b[3] << 8)), 0.f);
  EXPECT_EQ(b[4 + 3], 0x33);  // elements 3 and 19
  EXPECT_EQ(RoundTrip(DType::kQ4_1, x), x);
  // Q5_1 of j - 8 (j < 32): min -8, max 23 -> d = 31 / 31 = 1, m = -8, code j: exact; bit 4 of
  // elements 16..31 lands in qh bits 16..31.
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j - 8);
  b = Quantize(DType::kQ5_1, x);
  EXPECT_EQ(b[4] | b[5] << 8 | b[6] << 16 | uint32_t(b[7]) << 24, 0xffff0000u);
  EXPECT_EQ(RoundTrip(DType::kQ5_1, x), x);
  // Q5_0 of a block whose extreme is -16 at element 0 and whose other values are multiples of 1:
  // d = -16 / -16 = 1, q = trunc(x + 16.5) -> x + 16; -16 -> 0 and 15 -> 31 exactly.
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j - 16);
  x[0] = -16;
  EXPECT_EQ(RoundTrip(DType::kQ5_0, x), x);
  // Q6_K of (4k - 32) / 8, k < 16, repeated: every 16-group has extreme -4, so the first scale is
  // -32 / -4 = 8 codes per unit, the codes 4k - 32 fit [-32, 31] and the fit is exact (scale 1/8); the
  // super-block scale d = 1 / (-128 / (1/8)) = -1/1024 and group scales -128 store it exactly.
  std::vector<float> y(256);
  for (int e = 0; e < 256; ++e) y[size_t(e)] = float(4 * (e % 16) - 32) / 8;
  EXPECT_EQ(RoundTrip(DType::kQ6_K, y), y);
}

// Round-trip error on Gaussian rows against uniform-quantization noise. For a group whose codes
// span its values with step h, rounding leaves an error spread evenly over [-h/2, h/2]: RMS h/sqrt(12).
// The estimate uses each group's own step: (max - min) / (2^bits - 1) for the formats with a min,
// 2 amax / (2^bits - 1) for the symmetric ones (IQ4's non-uniform grid is finer near zero and
// coarser at the ends: counted as 4 bits). The search quantizers land near or below it; quantizing
// the group scales themselves to 4-8 bits and the ends of the range adds error, so a correct
// implementation stays within 1.3x (measured ratios are printed), while a misplaced bit or scale
// gives errors of the size of the values themselves (ratios of 5-50).
TEST(KQuant, RoundTripErrorNearUniformQuantizationNoise) {
  struct Case {
    DType t;
    int bits, group;
    bool with_min;
  };
  const Case cases[] = {{DType::kQ4_1, 4, 32, true},   {DType::kQ5_0, 5, 32, false}, {DType::kQ5_1, 5, 32, true},
                        {DType::kIQ4_NL, 4, 32, false}, {DType::kQ2_K, 2, 16, true},  {DType::kQ3_K, 3, 16, false},
                        {DType::kQ4_K, 4, 32, true},   {DType::kQ5_K, 5, 32, true},  {DType::kQ6_K, 6, 16, false},
                        {DType::kIQ4_XS, 4, 32, false}};
  std::normal_distribution<float> g(0.f, 0.02f);
  std::vector<float> x(256 * 64);
  for (auto& v : x) v = g(rng);
  for (const Case& c : cases) {
    const auto y = RoundTrip(c.t, x);
    double err2 = 0, est2 = 0;
    for (size_t b = 0; b < x.size(); b += size_t(c.group)) {
      float lo = x[b], hi = x[b], amax = 0;
      for (size_t i = b; i < b + size_t(c.group); ++i) {
        lo = std::min(lo, x[i]), hi = std::max(hi, x[i]), amax = std::max(amax, std::fabs(x[i]));
        err2 += double(y[i] - x[i]) * (y[i] - x[i]);
      }
      const double h = (c.with_min ? hi - std::min(lo, 0.f) : 2 * amax) / ((1 << c.bits) - 1);
      est2 += h * h / 12 * c.group;
    }
    const double ratio = std::sqrt(err2 / est2);
    std::printf("  %-7s rms error / uniform-noise estimate = %.3f\n", DTypeName(c.t).data(), ratio);
    EXPECT_LT(ratio, 1.3) << DTypeName(c.t);
  }
}

}  // namespace
}  // namespace atp
