// llama.cpp's other weight blocks, bit for bit (so GGUF files as users download them load as they
// are): the 32-element Q4_1/Q5_0/Q5_1/IQ4_NL blocks and the 256-element "k-quant" super-blocks
// Q2_K..Q6_K and IQ4_XS, each with ggml's reference dequantizer (dequantize_row_*) and the quantizer
// llama-quantize runs when it has no importance matrix (quantize_row_*_ref; for IQ4_NL/IQ4_XS
// quantize_iq4_nl/quantize_iq4_xs, which search 7 scales either side). Written from ggml's layout
// descriptions; the arithmetic follows ggml's expressions operation for operation in f32, with no
// fused multiply-adds (this file is compiled with -ffp-contract=off), so equal input gives equal
// bytes and equal floats.
//
// All multi-byte fields are little-endian; "f16" is IEEE half. A block's elements are numbered from 0.
//
// Q4_1   (20 bytes / 32): f16 d, f16 m, qs[16]. Element j < 16 is the low nibble of qs[j], element
//        j + 16 its high nibble; x = d * q + m.
// Q5_0   (22 bytes / 32): f16 d, qh (u32), qs[16]. The low 4 bits as Q4_1; bit j of qh is bit 4 of
//        element j; x = d * (q - 16).
// Q5_1   (24 bytes / 32): f16 d, f16 m, qh (u32), qs[16]; codes as Q5_0; x = d * q + m.
// IQ4_NL (18 bytes / 32): f16 d, qs[16]; nibbles as Q4_1 index the non-linear table
//        kIq4NlValues; x = d * kIq4NlValues[q].
// Q2_K   (84 bytes / 256): scales[16], qs[64], f16 d, f16 dmin. 16 sub-blocks of 16; scales[s]
//        holds sub-block s's scale (low nibble) and min (high nibble). Element e = 128 h + 32 j + l
//        (h < 2, j < 4, l < 32) is the 2-bit field j of qs[32 h + l] (bits 2j, 2j+1) and lies in
//        sub-block s = 8 h + 2 j + l / 16; x = (d * scale_s) * q - dmin * min_s.
// Q3_K   (110 bytes / 256): hmask[32], qs[64], scales[12], f16 d. Element e = 128 h + 32 j + l as
//        Q2_K: its low 2 bits come from qs the same way, its bit 2 is bit 4 h + j of hmask[l], and
//        q = low2 + 4 * bit2 - 4 (in [-4, 3]). 16 signed 6-bit scales stored + 32: scale s has its
//        low 4 bits in scales[s] (s < 8, low nibble) or scales[s - 8] (high nibble), its high 2 bits
//        in bits 2 (s / 4), 2 (s / 4) + 1 of scales[8 + s % 4]; x = (d * (scale_s - 32)) * q.
// Q4_K   (144 bytes / 256): f16 d, f16 dmin, scales[12], qs[128]. 8 sub-blocks of 32 with 6-bit
//        scale and min: for s < 4, scale = scales[s] & 63, min = scales[s + 4] & 63; for s >= 4,
//        scale = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4, min = (scales[s + 4] >> 4) |
//        (scales[s] >> 6) << 4. Element 64 c + l (c < 4, l < 32) is the low nibble of qs[32 c + l]
//        (sub-block 2 c), element 64 c + 32 + l its high nibble (sub-block 2 c + 1);
//        x = (d * scale) * q - dmin * min.
// Q5_K   (176 bytes / 256): f16 d, f16 dmin, scales[12], qh[32], qs[128]. As Q4_K, plus bit 4 of
//        element 64 c + l in bit 2 c of qh[l] and of element 64 c + 32 + l in bit 2 c + 1.
// Q6_K   (210 bytes / 256): ql[128], qh[64], scales[16] (int8), f16 d. Per half h < 2 (elements
//        128 h..): for l < 32 and k < 4, element 128 h + 32 k + l has low 4 bits in
//        ql[64 h + l + 32 (k % 2)] (low nibble for k < 2, high for k >= 2), high 2 bits in bits 2k,
//        2k+1 of qh[32 h + l], q = code - 32, sub-block s = 8 h + 2 k + l / 16;
//        x = (d * scales[s]) * q.
// IQ4_XS (136 bytes / 256): f16 d, scales_h (u16), scales_l[4], qs[128]. 8 sub-blocks of 32 with a
//        6-bit scale stored + 32: low 4 bits in nibble s % 2 of scales_l[s / 2], high 2 bits in bits
//        2 s, 2 s + 1 of scales_h. Sub-block s's codes are qs[16 s..] as IQ4_NL;
//        x = (d * (scale - 32)) * kIq4NlValues[q].
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace atp {

constexpr int64_t kSuperBlock = 256;  // elements per k-quant super-block (ggml's QK_K)

// IQ4_NL's and IQ4_XS's 16 code values.
inline constexpr int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// How one block dtype is stored and converted. n counts elements and is a multiple of `elems`
// (callers check with CheckDTypeCount; the functions abort otherwise).
// to_f32 is ggml's dequantize_row_*. from_f32 is ggml's reference quantizer; a block holding a
// non-finite value is written as zeros with a NaN scale, so it decodes to NaN everywhere instead of
// plausible numbers (ggml's result is undefined there), as core/quant.h does for Q8_0/Q4_0; so is
// a Q4_1/Q5_1 block whose range max - min overflows f32.
struct BlockCodec {
  int64_t elems;  // per block
  size_t bytes;   // per block
  void (*to_f32)(const void* src, float* y, int64_t n);
  void (*from_f32)(const float* x, void* dst, int64_t n);
};

// The codec of every block dtype (Q8_0 and Q4_0 included, from core/quant.h); null for f32/f16/bf16.
const BlockCodec* FindBlockCodec(DType t);

// Q4_K/Q5_K: the 6-bit scale and min of sub-block s < 8 from the block's 12 scale bytes (ggml's
// get_scale_min_k4; layout above). Inline: the GEMV kernels read it once per sub-block.
inline void ScaleMinK4(const uint8_t* q, int s, int* sc, int* m) {
  if (s < 4) {
    *sc = q[s] & 63;
    *m = q[s + 4] & 63;
  } else {
    *sc = (q[s + 4] & 0xf) | (q[s - 4] >> 6) << 4;
    *m = (q[s + 4] >> 4) | (q[s] >> 6) << 4;
  }
}

}  // namespace atp
