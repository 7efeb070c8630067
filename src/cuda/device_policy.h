// Pieces every GPU KV policy (cuda/backend.h's MakeCudaKvFactory) is built from: rows of one layer
// in device memory, and the staging that lets tests drive a policy with host buffers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "cuda/attention.h"
#include "cuda/check.h"
#include "kv/kv_policy.h"

namespace atp::cuda {

// Whether p is device memory. The forward pass hands the same few device pointers every step, so
// the last answer per call site is kept (a driver query costs about as much as a kernel launch).
// A pointer value never changes kind while seen: device allocations come from their own range of
// the unified address space, disjoint from host heap addresses.
class PointerKind {
 public:
  bool OnDevice(const void* p) {
    if (p != last_) last_ = p, device_ = Query(p);
    return device_;
  }

 private:
  static bool Query(const void* p);
  const void* last_ = nullptr;
  bool device_ = false;
};

// One f32 input of a policy call (K, V, X, Q) as device memory: the caller's pointer, or a copy of
// a host buffer (tests drive policies through the plain KvPolicy interface; the forward pass hands
// device pointers and pays one cached pointer query).
class DeviceInput {
 public:
  // n floats at p on the device; null if staging them fails.
  const float* Get(const float* p, size_t n);

 private:
  PointerKind kind_;
  DeviceArray<float> stage_;
};

// One f32 output (O): Get gives where to write n floats (null if staging fails); Finish copies a
// staged result back to the caller's host buffer.
class DeviceOutput {
 public:
  float* Get(float* p, size_t n);
  void Finish(float* p, size_t n);

 private:
  PointerKind kind_;
  DeviceArray<float> stage_;
};

// The element form of exact rows in dtype f32, f16 or bf16 (the dtypes policy strings allow).
KvFormat ExactFormat(DType dt);

// Ok when appended positions continue at `len`, as KvPolicy::Append requires; `policy` names it.
Status CheckContinues(const char* policy, int64_t first, int64_t len);

// K or V rows of one layer, grown by doubling so that appends cost amortized O(1) copies.
class RowBuffer {
 public:
  RowBuffer(KvFormat f, int dim, int n_kv) : f_(f), dim_(dim), n_kv_(n_kv) {}
  // Room for `tokens` rows, keeping the first `keep`.
  Status Reserve(int64_t tokens, int64_t keep) { return tokens <= cap_ ? Status::Ok() : Move(std::max(2 * cap_, tokens), 0, keep); }
  // Rows [from, from + keep) moved to the front of a new buffer with room for `tokens` rows (a
  // policy dropping its oldest rows; the new buffer avoids an overlapping copy).
  Status Compact(int64_t from, int64_t keep, int64_t tokens) { return Move(2 * tokens, from, keep); }
  DeviceRows rows() const;
  int64_t capacity() const { return cap_; }
  int64_t TokenBytes() const { return TokenElemBytes(f_, dim_, n_kv_) + TokenScaleBytes(f_, dim_, n_kv_); }

 private:
  Status Move(int64_t cap, int64_t from, int64_t keep);
  KvFormat f_;
  int dim_, n_kv_;
  int64_t cap_ = 0;
  DeviceArray<uint8_t> buf_;  // (cap_, elem bytes) then (cap_, scale bytes)
};

// Where a policy stores new tokens: rows row .. row + n - 1 of k and v from the first n of the
// step's K and V rows (n_kv * dim f32 per token), or, with `input`, of k alone from the tokens' layer
// input X (d_model f32 per token; ATP keeps the filling block's X as such rows, v empty).
struct RowStore {
  DeviceRows k, v;
  int64_t row = 0, n = 0;
  bool input = false;
};

// The stores one after another from device K, V and X (a policy's own Append: one StoreKv each).
Status StoreRows(const std::vector<RowStore>& stores, const float* K, const float* V, const float* X);

// A GPU policy whose one-token steps the forward pass batches with other sequences' (FlashInfer's
// plan/run, cuda/decode_batch.h): the policy describes the step as data and the forward pass runs
// every planned item of a layer in a few launches. Policies without it keep Append/Attend per item.
// Both paths leave the same state and give the same output (up to the attention's summation order,
// cuda/attention.h's RunDecodeBatch).
class DecodePlanner {
 public:
  virtual ~DecodePlanner() = default;
  // Plans appending the token at position pos (= Length()) and attending its query: makes room and
  // settles every buffer the step writes or its attention reads, so that the rows and pointers given
  // stay valid through FinishDecode and the step's attention. Adds where the token's rows go to
  // `stores` (source row 0 of the step's K and V, or X) and sets query->k, v, vis and pos: what the
  // query sees once those rows are stored and FinishDecode ran (the caller sets q and o). Launches
  // nothing that reads the new rows; the forward pass plans every layer before the step runs.
  virtual Status PlanDecode(int32_t pos, std::vector<RowStore>* stores, DecodeQuery* query) = 0;
  // After the planned stores ran (legacy stream), before the attention: the rest of the append (KIVI
  // packs a group the token completes, ATP compresses a block). X: the token's layer input (device,
  // d_model f32), null unless the policy ReadsInput(). Length() counts the token from here on.
  virtual Status FinishDecode(const float* X) = 0;
};

// Rows a query sees through `view` (principal rows, then its exact rows): the decode workspace's size.
inline int64_t RowsSeen(const DecodeQuery& view) {
  const Visibility& v = view.vis;
  return v.last_pre + view.pos + 1 - CompressedBlocks(v.block, v.window, view.pos) * v.block;
}

// The exact rows of a policy that stops needing its oldest ones (ATP's window, KIVI's residual):
// positions [first(), len) in one buffer pair, where rows before the caller's keep_from are
// dropped lazily, moved out only when the buffer is full.
class ExactTail {
 public:
  ExactTail(KvFormat f, int dim, int n_kv) : k_(f, dim, n_kv), v_(f, dim, n_kv) {}
  // Appends T rows (device K, V (T, n_kv * dim)) at position len, rows before keep_from no longer
  // needed. before_move runs before a full buffer is replaced (a background reader must be done).
  Status Append(int64_t len, int64_t keep_from, const float* K, const float* V, int64_t T,
                const std::function<void()>& before_move);
  // Append's first half: room for T rows at position len, and the row index they go to.
  Result<int64_t> Room(int64_t len, int64_t keep_from, int64_t T, const std::function<void()>& before_move);
  // Rows before keep_from are no longer needed (KvPolicy::Update): out of Bytes() now, out of the
  // buffer at the next move.
  void Release(int64_t keep_from) { keep_from_ = std::max(keep_from_, keep_from); }
  DeviceRows k() const { return k_.rows(); }
  DeviceRows v() const { return v_.rows(); }
  int64_t first() const { return first_; }  // position of row 0
  // Bytes of the rows still needed (the CPU twins count those): positions [keep_from, len).
  int64_t Bytes(int64_t len) const { return (len - keep_from_) * (k_.TokenBytes() + v_.TokenBytes()); }

 private:
  RowBuffer k_, v_;
  int64_t first_ = 0, keep_from_ = 0;
};

// The attention call of a GPU policy: host Q and O staged (tests), the decode workspace sized for
// the rows the last query sees (`view`: its rows, visibility and position positions.back()), then
// cuda::Attend. An error when staging, the workspace or the launch fails (O is then not written).
class StagedAttention {
 public:
  Status Run(const KvShape& s, const DecodeQuery& view, std::span<const int32_t> positions, const float* Q, float* O);

 private:
  DeviceInput q_;
  DeviceOutput o_;
  DeviceArray<float> ws_;
};

}  // namespace atp::cuda
