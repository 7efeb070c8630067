// Weight rows interleaved in groups of 8, the layout the CPU's integer GEMV reads every block type's
// matrices in (kernels/q8_dot.h, DotRowsQ8x8): one pass over a group multiplies its 8 rows at once,
// each 32-bit lane of a vector holding 4 codes of one row, so the 8 rows' sums come out as the 8
// lanes with no horizontal sums, and the float work of a block (its scales, the conversion of the
// integer sums) is done once for 8 rows. Rows read one after another spent most of their time on
// exactly those per-row costs (atp-40m's rows are 2-48 blocks). The same reason llama.cpp repacks
// Q4_0 and Q4_K at load; this layout is our own.
//
// Group g (rows 8g..8g+7) takes the bytes its 8 rows take in ggml's layout, block by block: block b
// of the group holds block b of each of the 8 rows, field by field in ggml's order (Q8_0/Q4_0/IQ4_NL:
// d, codes; Q4_1: d, m, codes; Q5_0/Q5_1 the same with the fifth bits before the codes; Q2_K: the 16
// scale bytes, codes, d, dmin; Q3_K: high bits, low codes, the 12 scale bytes, d; Q4_K: d, dmin, the
// 12 scale bytes, codes; Q5_K the same with the fifth bits before the codes; Q6_K: low codes, high
// codes, the 16 scales, d; IQ4_XS: d, the high scale bits, the 4 low scale bytes, codes). A field of
// `size`-byte units (f16 scales: 2, scale bytes: 1, codes: 4) at offset o of a ggml block starts at
// 8 o in the group's block, and its
// unit e of row j sits at (8 e + j) * size from there: the 8 rows' d, the 8 rows' first scale byte,
// the 8 rows' first 4 code bytes, and so on. Rows past the last whole group (rows % 8 of them) keep
// ggml's layout after the groups.
// TensorView::interleaved marks such a matrix; read its rows as floats through RowsToF32.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace atp {

constexpr int64_t kInterleaveRows = 8;

// Whether matrices of t can be interleaved (every block type: f32, f16 and bf16 have none).
bool CanInterleave(DType t);
// Writes the rows x cols matrix of t at src (ggml's layout) to dst in the interleaved layout; the same
// number of bytes. CanInterleave(t), cols whole blocks; src and dst do not overlap.
void InterleaveRows(DType t, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Row j (< 8) of the interleaved group at `group` (of rows of `cols` elements), in ggml's layout, to `row`.
void PlainRow(DType t, const uint8_t* group, int64_t cols, int j, uint8_t* row);
// Rows [row0, row0 + n) of w as f32 (n * cols values), whatever its layout.
void RowsToF32(const TensorView& w, int64_t row0, int64_t n, float* out);

}  // namespace atp
