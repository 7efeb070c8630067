#include "core/interleave.h"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace atp {

namespace {

// A block's fields in ggml's order: `units` units of `size` bytes from `offset`. In a group, a field
// starts at 8 * offset and its unit e of row j sits at (8 e + j) * size from there.
struct Field {
  size_t offset, size, units;
};
struct Layout {
  Field fields[5];
  int count;
};
const Layout* LayoutOf(DType t) {
  static const Layout kQ8_0 = {{{0, 2, 1}, {2, 4, 8}}, 2};                              // d, qs
  static const Layout kQ4_0 = {{{0, 2, 1}, {2, 4, 4}}, 2};                              // d, qs (IQ4_NL too)
  static const Layout kQ4_1 = {{{0, 2, 1}, {2, 2, 1}, {4, 4, 4}}, 3};                   // d, m, qs
  static const Layout kQ5_0 = {{{0, 2, 1}, {2, 4, 1}, {6, 4, 4}}, 3};                   // d, qh, qs
  static const Layout kQ5_1 = {{{0, 2, 1}, {2, 2, 1}, {4, 4, 1}, {8, 4, 4}}, 4};        // d, m, qh, qs
  static const Layout kQ2_K = {{{0, 1, 16}, {16, 4, 16}, {80, 2, 1}, {82, 2, 1}}, 4};   // scales, qs, d, dmin
  static const Layout kQ3_K = {{{0, 4, 8}, {32, 4, 16}, {96, 1, 12}, {108, 2, 1}}, 4};  // hmask, qs, scales, d
  static const Layout kQ4_K = {{{0, 2, 1}, {2, 2, 1}, {4, 1, 12}, {16, 4, 32}}, 4};  // d, dmin, scales, qs
  static const Layout kQ5_K = {{{0, 2, 1}, {2, 2, 1}, {4, 1, 12}, {16, 4, 8}, {48, 4, 32}}, 5};  // ... qh, qs
  static const Layout kQ6_K = {{{0, 4, 32}, {128, 4, 16}, {192, 1, 16}, {208, 2, 1}}, 4};  // ql, qh, scales, d
  static const Layout kIQ4_XS = {{{0, 2, 1}, {2, 2, 1}, {4, 1, 4}, {8, 4, 32}}, 4};  // d, scales_h, scales_l, qs
  switch (t) {
    case DType::kQ8_0: return &kQ8_0;
    case DType::kQ4_0:
    case DType::kIQ4_NL: return &kQ4_0;
    case DType::kQ4_1: return &kQ4_1;
    case DType::kQ5_0: return &kQ5_0;
    case DType::kQ5_1: return &kQ5_1;
    case DType::kQ2_K: return &kQ2_K;
    case DType::kQ3_K: return &kQ3_K;
    case DType::kQ4_K: return &kQ4_K;
    case DType::kQ5_K: return &kQ5_K;
    case DType::kQ6_K: return &kQ6_K;
    case DType::kIQ4_XS: return &kIQ4_XS;
    default: return nullptr;
  }
}

// Calls f(offset in the group, offset in row j, bytes) for each unit of row j (of `cols` elements of
// t), block by block: where the unit sits interleaved and where in ggml's layout. InterleaveRows and
// PlainRow walk the same units in opposite directions.
template <typename F>
void ForEachUnit(DType t, int64_t cols, int j, F f) {
  const Layout& l = *LayoutOf(t);
  const int64_t elems = DTypeBlockElems(t);
  const size_t block = DTypeBytes(t, elems);
  for (int64_t b = 0; b < cols / elems; ++b)
    for (int i = 0; i < l.count; ++i) {
      const Field& fd = l.fields[i];
      for (size_t e = 0; e < fd.units; ++e)
        f(kInterleaveRows * (block * size_t(b) + fd.offset) + (kInterleaveRows * e + size_t(j)) * fd.size,
          block * size_t(b) + fd.offset + e * fd.size, fd.size);
    }
}

// A unit's bytes (1, 2 or 4): sizes the compiler knows, so each copy is one move, not a call.
inline void CopyUnit(uint8_t* to, const uint8_t* from, size_t n) {
  switch (n) {
    case 4: std::memcpy(to, from, 4); return;
    case 2: std::memcpy(to, from, 2); return;
    default: std::memcpy(to, from, 1); return;
  }
}

}  // namespace

bool CanInterleave(DType t) { return LayoutOf(t) != nullptr; }

void InterleaveRows(DType t, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  if (!CanInterleave(t)) std::abort();  // the caller's contract
  const int64_t groups = rows / kInterleaveRows;
  const size_t row_bytes = DTypeBytes(t, cols);
  for (int64_t g = 0; g < groups; ++g) {
    uint8_t* group = dst + size_t(g * kInterleaveRows) * row_bytes;
    for (int j = 0; j < kInterleaveRows; ++j) {
      const uint8_t* row = src + size_t(g * kInterleaveRows + j) * row_bytes;
      ForEachUnit(t, cols, j, [&](size_t in_group, size_t in_row, size_t n) { CopyUnit(group + in_group, row + in_row, n); });
    }
  }
  const size_t done = size_t(groups * kInterleaveRows) * row_bytes;
  std::memcpy(dst + done, src + done, size_t(rows) * row_bytes - done);
}

void PlainRow(DType t, const uint8_t* group, int64_t cols, int j, uint8_t* row) {
  ForEachUnit(t, cols, j, [&](size_t in_group, size_t in_row, size_t n) { CopyUnit(row + in_row, group + in_group, n); });
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
