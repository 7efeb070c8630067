#include "core/interleave.h"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace atp {

namespace {

constexpr size_t kScaleBytes = 2, kUnit = 4;  // an f16 scale; codes move in 32-bit lanes

size_t CodeBytes(DType t) { return DTypeBytes(t, 32) - kScaleBytes; }

// Calls f(offset in the group's block, offset in ggml's block, bytes) for each piece of row j's block.
template <typename F>
void ForEachPiece(DType t, int j, F f) {
  f(kScaleBytes * size_t(j), size_t(0), kScaleBytes);
  for (size_t u = 0; u < CodeBytes(t) / kUnit; ++u)
    f(kScaleBytes * kInterleaveRows + kInterleaveRows * kUnit * u + kUnit * size_t(j), kScaleBytes + kUnit * u, kUnit);
}

}  // namespace

bool CanInterleave(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_0; }

void InterleaveRows(DType t, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  if (!CanInterleave(t)) std::abort();  // the caller's contract
  const size_t row_bytes = DTypeBytes(t, cols), block = DTypeBytes(t, 32);
  const int64_t blocks = cols / 32, groups = rows / kInterleaveRows;
  for (int64_t g = 0; g < groups; ++g)
    for (int j = 0; j < kInterleaveRows; ++j) {
      const size_t first = size_t(g * kInterleaveRows) * row_bytes;
      for (int64_t b = 0; b < blocks; ++b) {
        uint8_t* to = dst + first + kInterleaveRows * block * size_t(b);
        const uint8_t* from = src + first + size_t(j) * row_bytes + block * size_t(b);
        ForEachPiece(t, j, [&](size_t in_group, size_t in_row, size_t n) { std::memcpy(to + in_group, from + in_row, n); });
      }
    }
  const size_t done = size_t(groups * kInterleaveRows) * row_bytes;
  std::memcpy(dst + done, src + done, size_t(rows) * row_bytes - done);
}

void PlainRow(DType t, const uint8_t* group, int64_t cols, int j, uint8_t* row) {
  const size_t block = DTypeBytes(t, 32);
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* from = group + kInterleaveRows * block * size_t(b);
    uint8_t* to = row + block * size_t(b);
    ForEachPiece(t, j, [&](size_t in_group, size_t in_row, size_t n) { std::memcpy(to + in_row, from + in_group, n); });
  }
}

void RowsToF32(const TensorView& w, int64_t row0, int64_t n, float* out) {
  const int64_t cols = w.cols();
  const size_t row_bytes = DTypeBytes(w.dtype, cols);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const int64_t whole = w.interleaved ? w.rows() / kInterleaveRows * kInterleaveRows : 0;
  std::vector<uint8_t> plain(row0 < whole ? row_bytes : 0);  // one row in ggml's layout
  for (int64_t r = row0; r < row0 + n; ++r) {
    const uint8_t* row = base + size_t(r) * row_bytes;
    if (r < whole) {
      PlainRow(w.dtype, base + size_t(r / kInterleaveRows * kInterleaveRows) * row_bytes, cols, int(r % kInterleaveRows),
               plain.data());
      row = plain.data();
    }
    ToF32(w.dtype, row, out + (r - row0) * cols, size_t(cols));
  }
}

}  // namespace atp
