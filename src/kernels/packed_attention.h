// Attention kernels on packed KV rows, dequantizing in registers: KIVI integer codes (keys per
// channel over a token group, values per token over channel groups) and OCP MX / NVFP4 blocks.
// The scalar decoders below define each byte layout; the AVX-512 and AVX2 kernels must agree with them.
// Encoding lives with the policies (kv/kivi_codec.h, kv/mx_codec.h); nothing here allocates.
#pragma once
#include <cstdint>

namespace atp {

enum class PackedLayout : uint8_t {
  kNone,          // not packed: the segment's plain KvRows hold the rows
  kKiviChannel,   // KIVI keys: rows of codes sharing one per-channel scale/zero (one token group)
  kKiviToken,     // KIVI values: each row carries its own scale/zero per group of channels
  kMx,            // MX / NVFP4: each row carries its block scales
};

enum class MxFormat : uint8_t { kFp8E4M3, kFp8E5M2, kFp6E2M3, kFp6E3M2, kFp4E2M1, kInt8, kNvFp4 };

// Row layouts (all little-endian; element i of a bit stream occupies bits [i*w, i*w+w) counting
// from bit 0 of byte 0; with w = 2, 4, 8 no element straddles a byte, with w = 6 four elements
// fill three bytes):
//   kKiviChannel: ceil(dim*bits/8) bytes of codes; value = zero[c] + scale[c] * code (f16 scale/zero).
//   kKiviToken:   ng = ceil(dim/group) f16 scales, ng f16 zeros, then ceil(dim*bits/8) bytes of codes;
//                 value = zero[c/group] + scale[c/group] * code.
//   kMx (MX):     nb = ceil(dim/32) E8M0 scale bytes (2^(byte-127); 0xFF = NaN), then the element
//                 stream (8, 6 or 4 bits per element); value = 2^X * element. The last block may be
//                 shorter than 32 when 32 does not divide dim.
//   kMx (NVFP4):  f32 row scale, nb = ceil(dim/16) FP8 E4M3 block scales, then 4-bit E2M1 elements;
//                 value = row_scale * e4m3(block scale) * element.
struct PackedRows {
  PackedLayout layout = PackedLayout::kNone;
  int dim = 0;                      // elements per row
  int bits = 0;                     // KIVI: 2, 4 or 8
  int group = 0;                    // kKiviToken: channels per scale group
  MxFormat mx = MxFormat::kFp8E4M3; // kMx
  const uint8_t* data = nullptr;    // row j at data + j * stride bytes
  int64_t stride = 0;               // bytes between rows
  int64_t count = 0;
  const uint16_t* scale = nullptr;  // kKiviChannel: (dim) f16 per-channel scale
  const uint16_t* zero = nullptr;   // kKiviChannel: (dim) f16 per-channel zero point (the group minimum)
};

// Bits per element of an MX format, its block size, and bytes of one packed row of `dim` elements.
int MxElementBits(MxFormat f);
int MxBlockSize(MxFormat f);
int64_t MxRowBytes(MxFormat f, int dim);
int64_t KiviCodeBytes(int bits, int dim);
int64_t KiviTokenRowBytes(int bits, int group, int dim);

// Value of one element code (sign included) of format f, before the block scale; MX INT8 codes are
// two's complement with 6 fraction bits. NVFP4 elements are E2M1.
float MxElementValue(MxFormat f, uint32_t code);
// 2^(e - 127) for an E8M0 byte; NaN for 0xFF.
float E8M0Value(uint8_t e);
// The value of an FP8 E4M3 byte (0x7F / 0xFF are NaN).
float E4M3Value(uint8_t b);
// Element i of a bit stream of w-bit codes.
uint32_t ReadCode(const uint8_t* stream, int64_t i, int w);

// Scalar reference: row j of `r` as dim f32 values.
void DecodePackedRow(const PackedRows& r, int64_t j, float* out);

// scores[j] = scale * dot(q, row_j) for j in [0, k.count); q has k.dim elements.
void PackedScores(const float* q, const PackedRows& k, float scale, float* scores);
// out[0..v.dim) += sum_j p[j] * row_j.
void PackedAccumulate(const float* p, const PackedRows& v, float* out);

}  // namespace atp
