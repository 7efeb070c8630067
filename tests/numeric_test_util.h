// Numeric helpers shared by the kernel and quantization tests (also compiled into the AVX2 kernel
// test binary, so nothing here needs more than core/).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace atp::testing {

// f32 unit roundoff u = 2^-24: error bounds of the kernels are stated as multiples of it.
inline constexpr double kF32UnitRoundoff = 1.0 / (1 << 24);

// x quantized to blocks of type t by the library's own quantizer (FromF32).
inline std::vector<uint8_t> Quantize(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> b(DTypeBytes(t, int64_t(x.size())));
  FromF32(t, x.data(), b.data(), x.size());
  return b;
}

}  // namespace atp::testing
