// GPU attention over KV rows in device memory, in every form the CUDA policies keep: exact
// (f32/f16/bf16), OCP MX blocks (fp8 E4M3 and E5M2, int8, fp6 E2M3 and E3M2, fp4 E2M1) and NVFP4 or KIVI codes, dequantized in registers. One loader per
// form feeds two kernels: split-K decode (one query row, f32 math; the sequence split across
// blocks, then a combine) and tiled prefill (FlashAttention-style online softmax over key tiles in
// shared memory, bf16 tensor cores through WMMA). Which rows a query sees is a Visibility, kept
// apart from the kernels (FlashInfer's attention variants): plain causal, or ATP's principal rows
// plus an exact window. Launchers only; nothing here allocates.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace atp::cuda {

enum class KvFormat : uint8_t {
  kF32, kF16, kBF16,
  kMxFp8E4M3, kMxFp8E5M2, kMxInt8, kMxFp6E2M3, kMxFp6E3M2, kMxFp4, kNvFp4,
  kKivi2, kKivi4, kKivi8
};

// One layer's key (or value) rows for all KV heads. Row (token j, KV head h) holds `dim` elements
// at elems + (j * n_kv + h) * dim * bits / 8; MX rows also own dim / 32 E8M0 scale bytes at
// scales + (j * n_kv + h) * dim / 32 (element i uses scale i / 32). Elements and scales are kept
// apart (unlike the CPU's interleaved kMx rows, kernels/packed_attention.h) so that every lane's
// element load is naturally aligned; the byte count is the same. NVFP4 rows own 4 + dim / 16 scale
// bytes at scales + (j * n_kv + h) * (4 + dim / 16): the row's f32 scale, then one E4M3 scale per 16
// elements (kv/mx_codec.h).
// KIVI rows (kv/kivi_codec.h) hold b-bit codes, element = zero + scale * code with f16 scale and
// zero: keys per channel and token group (channel_params: dim scales then dim zeros at
// scales + ((j / group) * n_kv + h) * dim * 4 bytes), values per row and channel group (ng = dim /
// group scales then ng zeros at scales + (j * n_kv + h) * ng * 4 bytes). group % 8 == 0.
struct DeviceRows {
  KvFormat fmt = KvFormat::kF32;
  uint8_t* elems = nullptr;
  uint8_t* scales = nullptr;  // MX block scales, KIVI scales and zeros
  int dim = 0;
  int n_kv = 0;
  int group = 0;                // KIVI
  bool channel_params = false;  // KIVI: key rows (parameters per channel and token group)
};

bool IsMx(KvFormat f);
// Bytes of element data, and of scales, of one token (all KV heads).
int64_t TokenElemBytes(KvFormat f, int dim, int n_kv);
int64_t TokenScaleBytes(KvFormat f, int dim, int n_kv);

// Stores tokens [start, start + n) of k and v (one launch for both) from K and V (n, n_kv * dim)
// f32: exact forms round to nearest even; MX encodes exactly as kv/mx_codec.h's MxEncodeRow (bit
// for bit: the same scale choice, round-to-nearest-even and saturation; a block with a NaN or Inf
// gets scale 0xFF). k and v share form and geometry.
void StoreKv(const DeviceRows& k, const DeviceRows& v, int64_t start, const float* K, const float* V, int64_t n,
             cudaStream_t s);

// Which rows the query at position p sees, beyond plain causal attention over rows 0..p (the
// default). Rows of k and v hold positions first, first + 1, ... (earlier ones were dropped). With
// block > 0 the blocks b with (b + 1) * block + window <= p, nb(p) of them, are seen only through
// principal rows 0 .. pre_end[nb(p) - 1] - 1 of pk and pv, and exact rows from position
// nb(p) * block on: ATP's principal rows (docs/design.md section 4; k's form), or KIVI's packed token
// groups (block = group, window = residual - 1, one packed row per position: pre_end null and
// rows_per_block = group), or StreamingLLM's sinks and window (block 1, window W - 1, one row per
// position, max_pre = the sinks).
struct Visibility {
  int64_t first = 0;
  int block = 0, window = 0;
  DeviceRows pk, pv;
  const int32_t* pre_end = nullptr;  // device: principal rows standing for blocks 0..b, per block b
  int rows_per_block = 0;            // when pre_end is null: pre_end[b] = (b + 1) * rows_per_block
  int64_t max_pre = -1;              // >= 0: at most this many principal rows (StreamingLLM's sinks)
  int64_t last_pre = 0;              // host: pre_end[nb(p) - 1] for the last query's p (0 when nb(p) = 0)
};

// nb(p): the blocks a query at position p sees only through principal rows (the CPU's
// kv/atp_policy.cpp CompressedBlocks); the kernels and the policies that fill a Visibility share it.
inline __host__ __device__ int64_t CompressedBlocks(int block, int window, int64_t p) {
  return block > 0 && p >= window ? (p - window) / block : 0;
}

// Rows [first, first + n) of r (all KV heads) as f32: out (n, n_kv * dim), values as stored.
void LoadRowsF32(const DeviceRows& r, int64_t first, int64_t n, float* out, cudaStream_t s);

// KIVI: rows [first, first + groups * pk.group) of exact k and v packed into rows from `to` on of
// pk (keys, channel_params; parameters of token group to / group on) and pv (values), with the
// codes and f16 parameters of kv/kivi_codec.h's encoders bit for bit.
void KiviPack(const DeviceRows& k, const DeviceRows& v, int64_t first, int groups, const DeviceRows& pk,
              const DeviceRows& pv, int64_t to, cudaStream_t s);

struct AttnShape {
  int n_heads = 0, n_kv = 0, head_dim = 0;
};
// Whether the kernels cover this shape (head_dim 32/64/128, at most 8 query heads per KV head).
Status CheckAttnShape(const AttnShape& a, KvFormat f);

// f32 elements of decode scratch for one query row seeing `len` rows on a GPU of sm_count SMs.
int64_t AttendWorkspaceFloats(const AttnShape& a, int64_t len, int sm_count);

// O (T, n_heads * head_dim) f32 = softmax(Q K^T / sqrt(head_dim)) V for queries Q
// (T, n_heads * head_dim) f32 at positions start .. start + T - 1, each over the rows `vis` lets it
// see (query head h reads KV head h / (n_heads / n_kv)). T == 1 runs split-K decode and needs
// ws (AttendWorkspaceFloats); T > 1 runs the tiled prefill kernel, whose Q, K, V and probabilities
// are rounded to bf16 (relative error ~4e-3 on outputs; decode reads every form exactly).
void Attend(const AttnShape& a, const DeviceRows& k, const DeviceRows& v, const Visibility& vis, const float* Q,
            int64_t T, int64_t start, float* O, float* ws, int sm_count, cudaStream_t s);

}  // namespace atp::cuda
