// `mx`: OCP Microscaling Formats (MX) v1.0 for K and V rows, and NVFP4. Each row (one KV head's
// head_dim elements) is split into blocks of 32 sharing an E8M0 power-of-two scale; the last block
// is shorter when 32 does not divide the row. NVFP4: blocks of 16 E2M1 elements with an FP8 E4M3
// scale and an FP32 scale per row (NVIDIA's recipe has one per tensor; a KV row is our tensor).
//
// Conversion (spec section 6.3): X = floor(log2(max|V_i|)) - emax_elem, clamped to E8M0's
// [-127, 127]; P_i = V_i / 2^X rounded to nearest, ties to even, saturating to +-max normal (the
// spec's default for FP8/FP6/FP4; MX INT8 saturates to +-127/64). Special cases, as the spec and
// its reference implementation (microxcaling) do: a block holding NaN or +-Inf gets the NaN scale
// 0xFF (every element then reads NaN); an all-zero block gets X = -127 (0x00) and zero elements;
// subnormal inputs are ordinary small numbers (X clamps at -127, elements below the element
// format's smallest subnormal round to zero). NVFP4 marks such blocks with the E4M3 NaN scale 0x7F.
#pragma once
#include <memory>
#include <string>

#include "kernels/packed_attention.h"
#include "kv/composite.h"
#include "kv/policy_config.h"

namespace atp {

// emax_elem: exponent of the format's largest normal (E4M3 8, E5M2 15, E2M3 2, E3M2 4, E2M1 2, INT8 0).
int MxEmax(MxFormat f);
// Largest finite magnitude: 448, 57344, 7.5, 28, 6, 127/64.
float MxMaxNormal(MxFormat f);
// Element code of x (already divided by the block scale; finite): round to nearest even,
// saturating at +-MxMaxNormal(f). The sign of zero is kept.
uint32_t MxQuantizeElement(MxFormat f, double x);
// FP8 E4M3 code of x >= 0 (round to nearest even, saturating at 448): NVFP4's block scale.
uint8_t E4M3Quantize(double x);

// Encodes dim values into MxRowBytes(f, dim) bytes (layout: kernels/packed_attention.h).
void MxEncodeRow(MxFormat f, const float* x, int dim, uint8_t* out);

std::shared_ptr<const RowCodec> MakeMxCodec(MxFormat f);

}  // namespace atp
