// `kivi` (Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"):
// keys quantized per channel over groups of G tokens, values per token over groups of G channels,
// b = 2, 4 or 8 bits, asymmetric (zero point = group minimum, scale = range / (2^b - 1), both f16
// as in the paper). The newest R rows stay exact: a query whose newest visible row is n-1 reads
// token group g packed iff its rows all lie before n - R, so every query sees at least R exact
// rows (fewer than R + G) and the form depends only on n: prefill and decode agree.
// Not supported: inputs beyond the f16 range (|x| > 65504) overflow the f16 metadata.
#pragma once
#include <cstdint>
#include <memory>

#include "core/dtype.h"
#include "kv/composite.h"
#include "kv/policy_config.h"

namespace atp {

// Asymmetric parameters for values in [lo, hi]: zero = f16 of lo rounded down, scale = f16 of
// (hi - zero) / (2^bits - 1) rounded up, so every code rint((x - zero) / scale) lies in
// [0, 2^bits - 1] and |x - decoded| <= scale / 2. Non-finite lo or hi: both NaN (the group reads NaN).
void KiviParamsFor(float lo, float hi, int bits, uint16_t* scale, uint16_t* zero);
// Code of x under (scale, zero): rint((x - zero) / scale) clamped to [0, 2^bits - 1]; 0 when scale is 0.
uint32_t KiviCode(float x, uint16_t scale, uint16_t zero, int bits);

// Keys of one token group: rows (n, dim) at stride; per channel c, scale[c] and zero[c] over the
// n rows; codes (n, KiviCodeBytes(bits, dim)) in the kKiviChannel layout.
void KiviEncodeKeyGroup(const float* rows, int64_t stride, int64_t n, int dim, int bits, uint16_t* scale,
                        uint16_t* zero, uint8_t* codes);
// One value row in the kKiviToken layout (KiviTokenRowBytes(bits, group, dim) bytes); the last
// channel group is shorter when group does not divide dim.
void KiviEncodeValueRow(const float* x, int dim, int bits, int group, uint8_t* out);

std::shared_ptr<const RowCodec> MakeKiviCodec(const KiviParams& p);

}  // namespace atp
