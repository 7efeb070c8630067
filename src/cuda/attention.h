// GPU attention over KV rows in device memory, in every form the CUDA policies keep: exact
// (f32/f16/bf16), OCP MX blocks (fp8 E4M3 and E5M2, int8, fp6 E2M3 and E3M2, fp4 E2M1) and NVFP4 or KIVI codes, dequantized in registers. One loader per
// form feeds two kernels: split-K decode (one query row per sequence, f32 math; each sequence split
// across blocks that read their rows once with an online softmax, a batch of sequences in one
// launch, then a combine) and tiled prefill
// (FlashAttention-2: online softmax with S and O in registers over double-buffered key tiles in
// shared memory, bf16 mma.sync tensor cores, cuda/mma.cuh). Which rows a query sees is a Visibility, kept
// apart from the kernels (FlashInfer's attention variants): plain causal, or ATP's principal rows
// plus an exact window. Launchers and host-side plans only; nothing here allocates device memory.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "kv/block_visibility.h"

namespace atp::cuda {

enum class KvFormat : uint8_t {
  kF32, kF16, kBF16,
  kMxFp8E4M3, kMxFp8E5M2, kMxInt8, kMxFp6E2M3, kMxFp6E3M2, kMxFp4, kNvFp4,
  kKivi2, kKivi4, kKivi8
};
// KIVI's packed forms and their bits per element (host code and kernels alike).
__host__ __device__ constexpr bool IsKiviF(KvFormat f) { return f == KvFormat::kKivi2 || f == KvFormat::kKivi4 || f == KvFormat::kKivi8; }
__host__ __device__ constexpr int KiviBits(KvFormat f) { return f == KvFormat::kKivi2 ? 2 : f == KvFormat::kKivi4 ? 4 : 8; }

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

// One store of a batch: rows [row, row + n) of k and v from K and V (n, n_kv * dim f32, device), as
// StoreKv does; v.elems null stores k alone (ATP keeps a token's layer input X as f32 rows of width
// d_model this way).
struct StoreJob {
  DeviceRows k, v;
  int64_t row = 0, n = 0;
  const float* K = nullptr;
  const float* V = nullptr;
};
// The jobs (n_jobs of them at `jobs`, device memory; every k of form f) in one launch: the same
// kernels and codes as StoreKv, whose single store is the batch of one. max_elems: the most elements
// (n * n_kv * dim) of one job's k; dim: for NVFP4, every job's row width (its kernel is compiled
// per width), ignored for the other forms, whose jobs may mix widths.
void StoreKvBatch(KvFormat f, int dim, const StoreJob* jobs, int n_jobs, int64_t max_elems, cudaStream_t s);

// Which rows the query at position p sees, beyond plain causal attention over rows 0..p (the
// default). Rows of k and v hold positions first, first + 1, ... (earlier ones were dropped, and no
// query sees before first; h2o and snapkv number their kept rows so, cuda/evict_policy.cpp). With
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

// nb(p), the blocks a query at position p sees only through principal rows, is kv/block_visibility.h's
// CompressedBlocks, which the host's atp, the kernels and the policies that fill a Visibility share.
using atp::CompressedBlocks;

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
// see (query head h reads KV head h / (n_heads / n_kv)). T == 1 runs split-K decode (the batch of
// one of RunDecodeBatch below, its descriptor passed by value) and needs ws
// (AttendWorkspaceFloats); T > 1 runs the tiled prefill kernel, whose Q, K, V and probabilities
// are rounded to bf16 (relative error ~4e-3 on outputs; decode reads every form exactly).
void Attend(const AttnShape& a, const DeviceRows& k, const DeviceRows& v, const Visibility& vis, const float* Q,
            int64_t T, int64_t start, float* O, float* ws, int sm_count, cudaStream_t s);

// --- Batched decode: plan on the host, run on the device (FlashInfer's plan/run) -----------------
// A decode step of many sequences attends in one launch per storage form (plus one combine): each
// sequence's query row is a DecodeQuery, what Attend takes for T == 1, and the plan turns a batch of
// them into device descriptors (DecodeTask per query, DecodeWork per block) that the caller copies
// to the device once for many launches (the forward pass: once per step for every layer).

// One query row: it sees rows k, v through vis (vis.last_pre for this query) at position pos, as
// Attend(a, k, v, vis, q, 1, pos, o, ...) would; q and o (n_heads * head_dim f32) are device memory.
struct DecodeQuery {
  DeviceRows k, v;
  Visibility vis;
  int64_t pos = 0;
  const float* q = nullptr;
  float* o = nullptr;
};

// What the blocks of one query read: principal rows [0, pre_rows) of pk, pv in pre_splits chunks,
// then rows [begin, end) of k, v in splits - pre_splits chunks; partial results (per query head and
// split: max, sum, head_dim outputs) at workspace float `part` on, in (head, split) order.
struct DecodeTask {
  DeviceRows pk, pv, k, v;
  int64_t pre_rows = 0, begin = 0, end = 0, part = 0;
  int pre_splits = 0, splits = 0;
  const float* q = nullptr;
  float* o = nullptr;
};
// One block's work (times n_kv heads): chunk `split` of task `task`.
struct DecodeWork {
  int32_t task = 0, split = 0;
};

// A planned batch: queries of one shape whose rows share a form (exact rows f, principal rows p:
// f itself except under KIVI's packed groups), every split `chunk` rows long. work[0, work_pre) read
// principal rows (form p), the rest exact rows; with p == f all run in one launch.
struct DecodeBatch {
  AttnShape a;
  KvFormat f = KvFormat::kF32, p = KvFormat::kF32;
  int chunk = 0, max_splits = 0;
  int64_t ws_floats = 0;  // workspace the batch's partial results take
  std::vector<DecodeTask> tasks;
  std::vector<DecodeWork> work;
  int work_pre = 0;
};

// Splits queries (of shape a, CheckAttnShape'd) into one batch per storage form, in first-seen order.
// The chunk: the smallest multiple of 32 in [64, 32768] at which the batch's blocks (n_kv per split
// of every query) fit the blocks sm_count SMs hold at once, so that the grid runs in one wave; 32768
// when none does. For one query that is the chunk Attend picks. chunk_override > 0 fixes it instead
// (tests compare a batch with each query alone at the same chunk, bit for bit). A query's output
// thus depends on its batch only through where its splits fall (f32 summation order, ~1e-6).
// Why a flat list of (task, split) blocks rather than a grid of (query, most splits) whose surplus
// blocks exit at once: with mixed lengths (a 5000-row sequence beside 1-row ones) most of such a
// grid would be empty blocks, each still scheduled and counted against the one-wave budget, while
// the list holds only blocks with rows, costs 8 bytes per block in the caller's one descriptor copy
// and lets the chunk be sized over the sum of every query's splits. (Reasoned, not measured.)
// (Pointer and count, not std::span: nvcc compiles the kernels as C++17.)
std::vector<DecodeBatch> PlanDecodeBatches(const AttnShape& a, const DecodeQuery* queries, size_t n, int sm_count,
                                           int chunk_override = 0);
// Launches a planned batch: tasks and work are device copies of b.tasks and b.work, ws holds
// b.ws_floats floats. Each query's o gets what Attend gives it, up to the summation order of other
// splits (the same chunk gives the same bits).
void RunDecodeBatch(const DecodeBatch& b, const DecodeTask* tasks, const DecodeWork* work, float* ws, cudaStream_t s);

}  // namespace atp::cuda
