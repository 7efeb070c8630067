// The packed attention kernels against their scalar decoders on random packed rows, with no codec:
// any bytes are a valid row (scale bytes and FP8 elements drawn away from NaN/Inf), so this needs
// kernels/ alone and also runs in the AVX2 build (atp_tests_avx2); in atp_tests it checks the
// AVX-512 kernels. Widths cover every register-tile run (8, 4, 2, 1 vectors) and scalar tails;
// quant_codec_test.cpp checks the same kernels on real encodings.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "numeric_test_util.h"
#include "kernels/packed_attention.h"

namespace atp {
namespace {

using testing::kF32UnitRoundoff;

struct Packed {
  PackedRows rows;
  std::vector<uint8_t> bytes;       // one byte of padding in front (unaligned rows), then count rows stride apart
  std::vector<uint16_t> scale, zero;  // kKiviChannel: (dim) f16 each
  // Per element, the magnitude of the terms a kernel may sum to form it (|z| + |s * code| for
  // KIVI, whose kernels split the two; |value| for MX): the scale of its rounding error.
  std::vector<float> mag;           // (count, dim)
};

uint16_t RandomF16(std::mt19937& rng, float lo, float hi) {
  return F32ToF16(std::uniform_real_distribution<float>(lo, hi)(rng));
}

Packed MakePacked(PackedLayout layout, MxFormat mx, int bits, int group, int dim, int count, std::mt19937& rng) {
  Packed p;
  PackedRows& r = p.rows;
  r.layout = layout;
  r.dim = dim;
  r.bits = bits;
  r.group = group;
  r.mx = mx;
  r.count = count;
  r.stride = layout == PackedLayout::kMx          ? MxRowBytes(mx, dim)
             : layout == PackedLayout::kKiviToken ? KiviTokenRowBytes(bits, group, dim)
                                                  : KiviCodeBytes(bits, dim);
  const int64_t row_bytes = r.stride;
  r.stride += 3;  // a gap of junk between rows; none after the last, so a sanitizer sees any over-read
  std::uniform_int_distribution<int> byte(0, 255);
  p.bytes.resize(size_t(1 + (count - 1) * r.stride + row_bytes));
  for (auto& b : p.bytes) b = uint8_t(byte(rng));
  uint8_t* base = p.bytes.data() + 1;
  r.data = base;
  const int ng = group > 0 ? (dim + group - 1) / group : 0;
  for (int j = 0; j < count; ++j) {
    uint8_t* row = base + j * r.stride;
    if (layout == PackedLayout::kMx) {
      const int nb = (dim + MxBlockSize(mx) - 1) / MxBlockSize(mx);
      uint8_t* el = row;
      if (mx == MxFormat::kNvFp4) {
        const float rs = std::uniform_real_distribution<float>(0.5f, 2.f)(rng);
        std::memcpy(row, &rs, 4);
        for (int b = 0; b < nb; ++b) row[4 + b] = uint8_t(std::uniform_int_distribution<int>(0x28, 0x50)(rng));
        el = row + 4 + nb;
      } else {
        for (int b = 0; b < nb; ++b) row[b] = uint8_t(std::uniform_int_distribution<int>(120, 134)(rng));
        el = row + nb;
      }
      const int64_t el_bytes = (int64_t(dim) * MxElementBits(mx) + 7) / 8;
      for (int64_t i = 0; i < el_bytes; ++i) {
        if (mx == MxFormat::kFp8E4M3 && (el[i] & 0x7F) == 0x7F) el[i] ^= 1;  // not NaN
        if (mx == MxFormat::kFp8E5M2 && (el[i] & 0x7C) == 0x7C) el[i] ^= 0x40;  // not Inf/NaN
      }
    } else if (layout == PackedLayout::kKiviToken) {
      for (int g = 0; g < ng; ++g) {
        const uint16_t s = RandomF16(rng, 0.01f, 0.5f), z = RandomF16(rng, -2.f, 0.f);
        std::memcpy(row + 2 * g, &s, 2);
        std::memcpy(row + 2 * (ng + g), &z, 2);
      }
    }
  }
  if (layout == PackedLayout::kKiviChannel) {
    for (int c = 0; c < dim; ++c) p.scale.push_back(RandomF16(rng, 0.01f, 0.5f)), p.zero.push_back(RandomF16(rng, -2.f, 0.f));
    r.scale = p.scale.data();
    r.zero = p.zero.data();
  }
  // Magnitudes from the decoded rows; KIVI's z and s * code recomputed from the row's fields.
  p.mag.resize(size_t(count) * size_t(dim));
  std::vector<float> dec(static_cast<size_t>(dim));
  for (int j = 0; j < count; ++j) {
    DecodePackedRow(r, j, dec.data());
    const uint8_t* row = base + j * r.stride;
    for (int c = 0; c < dim; ++c) {
      float m = std::abs(dec[size_t(c)]);
      if (layout == PackedLayout::kKiviChannel) {
        m = std::abs(F16ToF32(p.zero[size_t(c)])) + F16ToF32(p.scale[size_t(c)]) * float(ReadCode(row, c, bits));
      } else if (layout == PackedLayout::kKiviToken) {
        uint16_t s, z;
        std::memcpy(&s, row + 2 * (c / group), 2);
        std::memcpy(&z, row + 2 * (ng + c / group), 2);
        m = std::abs(F16ToF32(z)) + F16ToF32(s) * float(ReadCode(row + 4 * ng, c, bits));
      }
      p.mag[size_t(j) * size_t(dim) + size_t(c)] = m;
    }
  }
  return p;
}

// PackedScores and PackedAccumulate against the decoded rows in double. Bounds: the f32 summation
// bound over dim + 4 terms (the kernels also fold scales into q or p, one more rounding per term),
// doubled; an indexing or decoding error is of the size of the terms themselves.
void Check(const Packed& pk, const std::string& what, std::mt19937& rng) {
  const PackedRows& r = pk.rows;
  const int dim = r.dim;
  const int64_t n = r.count;
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> q(static_cast<size_t>(dim)), p(static_cast<size_t>(n)), dec(static_cast<size_t>(dim));
  for (auto& v : q) v = nd(rng);
  for (auto& v : p) v = std::abs(nd(rng)) / float(n);
  std::vector<float> got_s(static_cast<size_t>(n), -7.f), out(static_cast<size_t>(dim));
  for (auto& v : out) v = nd(rng);
  std::vector<float> got_o = out;
  PackedScores(q.data(), r, 0.125f, got_s.data());
  PackedAccumulate(p.data(), r, got_o.data());
  std::vector<double> want_o(out.begin(), out.end()), bound_o(static_cast<size_t>(dim));
  for (int i = 0; i < dim; ++i) bound_o[size_t(i)] = std::abs(out[size_t(i)]);
  for (int64_t j = 0; j < n; ++j) {
    DecodePackedRow(r, j, dec.data());
    double s = 0, a = 0;
    for (int i = 0; i < dim; ++i) {
      const double m = pk.mag[size_t(j) * size_t(dim) + size_t(i)];
      s += double(q[size_t(i)]) * dec[size_t(i)];
      a += std::abs(double(q[size_t(i)])) * m;
      want_o[size_t(i)] += double(p[size_t(j)]) * dec[size_t(i)];
      bound_o[size_t(i)] += double(p[size_t(j)]) * m;
    }
    ASSERT_NEAR(got_s[size_t(j)], s * 0.125, 4 * (dim + 4) * kF32UnitRoundoff * a * 0.125 + 1e-30) << what << " score of row " << j;
  }
  for (int i = 0; i < dim; ++i)
    ASSERT_NEAR(got_o[size_t(i)], want_o[size_t(i)], 4 * double(n + 4) * kF32UnitRoundoff * bound_o[size_t(i)] + 1e-30)
        << what << " output column " << i;
}

const int kDims[] = {8, 16, 17, 24, 40, 64, 100, 120, 128, 136, 256};
const int kCounts[] = {1, 3, 4, 9, 33};

TEST(PackedKernelsRandomRows, MxMatchesScalarDecoder) {
  std::mt19937 rng(21);
  for (MxFormat f : {MxFormat::kFp8E4M3, MxFormat::kFp8E5M2, MxFormat::kFp6E2M3, MxFormat::kFp6E3M2,
                     MxFormat::kFp4E2M1, MxFormat::kInt8, MxFormat::kNvFp4})
    for (int dim : kDims)
      for (int count : kCounts) {
        const Packed pk = MakePacked(PackedLayout::kMx, f, 0, 0, dim, count, rng);
        Check(pk, "mx " + std::to_string(int(f)) + " dim " + std::to_string(dim) + " count " + std::to_string(count), rng);
        if (HasFatalFailure()) return;
      }
}

TEST(PackedKernelsRandomRows, KiviMatchesScalarDecoder) {
  std::mt19937 rng(22);
  for (int bits : {2, 4, 8})
    for (int dim : kDims)
      for (int count : kCounts) {
        const std::string at = " bits " + std::to_string(bits) + " dim " + std::to_string(dim) + " count " + std::to_string(count);
        Check(MakePacked(PackedLayout::kKiviChannel, MxFormat::kFp8E4M3, bits, 0, dim, count, rng), "kivi keys" + at, rng);
        if (HasFatalFailure()) return;
        for (int group : {8, 16, 24, 32, 40}) {
          Check(MakePacked(PackedLayout::kKiviToken, MxFormat::kFp8E4M3, bits, group, dim, count, rng),
                "kivi values group " + std::to_string(group) + at, rng);
          if (HasFatalFailure()) return;
        }
      }
}

}  // namespace
}  // namespace atp
