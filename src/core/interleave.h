// Weight rows interleaved in groups of 8, the layout the CPU's decode GEMV reads Q8_0 and Q4_0
// matrices in (kernels/q8_dot.h, DotRowsQ8x8): one pass over a group multiplies its 8 rows at once,
// each 32-bit lane of a vector holding 4 codes of one row, so the 8 rows' sums come out as the 8
// lanes with no horizontal sums, and their 8 scales convert in one instruction. Rows read one after
// another spent most of their time on exactly those per-row costs (atp-40m's rows are 16-48 blocks).
// The same reason llama.cpp repacks Q4_0 at load; this layout is our own.
//
// Layout of group g (rows 8g..8g+7), block b (32 elements of each row), in the bytes the 8 rows
// take in ggml's layout (a group starts where its first row did):
//   16 bytes: the 8 rows' f16 scales, row j's at 2j;
//   then the code bytes (Q8_0: 32 per row, Q4_0: 16) in units of 4: unit u of row j at 32u + 4j.
// Rows past the last whole group (rows % 8 of them) keep ggml's layout after the groups.
// TensorView::interleaved marks such a matrix; read its rows as floats through RowsToF32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace atp {

constexpr int64_t kInterleaveRows = 8;

// Whether matrices of t can be interleaved (Q8_0 and Q4_0).
bool CanInterleave(DType t);
// Writes the rows x cols matrix of t at src (ggml's layout) to dst in the interleaved layout; the same
// number of bytes. CanInterleave(t), cols whole blocks; src and dst do not overlap.
void InterleaveRows(DType t, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Row j (< 8) of the interleaved group at `group` (of rows of `cols` elements), in ggml's layout, to `row`.
void PlainRow(DType t, const uint8_t* group, int64_t cols, int j, uint8_t* row);
// Rows [row0, row0 + n) of w as f32 (n * cols values), whatever its layout.
void RowsToF32(const TensorView& w, int64_t row0, int64_t n, float* out);

}  // namespace atp
