// Pieces every GPU KV policy (cuda/backend.h's MakeCudaKvFactory) is built from: rows of one layer
// in device memory, the staging that lets tests drive a policy with host buffers, DevicePolicy, the
// steps (append, attend, a planned decode step) written once for the policies that keep rows, and
// the factory every such policy is made by.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "cuda/attention.h"
#include "cuda/check.h"
#include "kernels/packed_attention.h"
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
// The GPU form of rows the CPU's MX codec (kv/mx_codec.h) keeps in format f: the same codes.
KvFormat MxRowsFormat(MxFormat f);

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
  // Rows chosen per KV head moved to the front of a new buffer with room for `tokens` rows and up to 64
  // more: row j of head h becomes row idx[h * n + j] of head h (idx device memory; a policy evicting rows
  // per head).
  Status Gather(const int32_t* idx, int64_t n, int64_t tokens);
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

// Grows `a` to at least `bytes` bytes (at least doubling), keeping its first `keep` bytes (copied on
// the legacy stream; work on other streams that touches `a` must be ordered before, as DeviceArray says).
Status GrowKeeping(DeviceArray<uint8_t>* a, size_t bytes, size_t keep);

// The rows a query reads rebuilt from a compact form (atp residual=, lowrank mode=online), keys and
// values: one pair per thread, reused by every such policy the thread drives, counted by none (as the
// CPU policies' per-call copies are not). A policy's Attend rebuilds into it (Prepare) and then queues
// the attention that reads it, in order on the legacy stream, and a buffer that grows is released
// after the work queued before (DeviceArray), so no call overwrites rows another still reads; such a
// policy stays on the per-item path (DecodePlanner::Batches), whose items would share the pair.
struct RebuiltRows {
  DeviceArray<uint8_t> k, v;
};
RebuiltRows& ThreadRebuiltRows();

// KIVI's packed token groups (kv/kivi_codec.h) in device memory, in cuda::DeviceRows' KIVI layout:
// per token the b-bit codes of every KV head's key and value row, f16 scale and zero per key channel
// and token group of `group` rows, per value row and channel group of `group` channels. The packed
// groups of `kivi` and the quantized residuals of `atp ...,residual=kiviN`; rows are packed into it
// by cuda::KiviPack.
class KiviRows {
 public:
  KiviRows(int bits, int group, int dim, int n_kv) : bits_(bits), group_(group), dim_(dim), n_kv_(n_kv) {}
  // Room for `groups` token groups, the first `kept` kept (buffers grow by doubling).
  Status Reserve(int64_t groups, int64_t kept);
  // The key rows (channel parameters) or the value rows.
  DeviceRows rows(bool keys) const;
  // Bytes of `groups` groups, as the CPU's KIVI store counts them: codes, key and value parameters.
  int64_t Bytes(int64_t groups) const { return groups * (KeyParamBytes() + group_ * (2 * CodeBytes() + ValueParamBytes())); }

 private:
  int64_t CodeBytes() const { return int64_t(n_kv_) * dim_ * bits_ / 8; }            // one token's codes
  int64_t ValueParamBytes() const { return int64_t(n_kv_) * (dim_ / group_) * 4; }   // one token's
  int64_t KeyParamBytes() const { return int64_t(n_kv_) * dim_ * 4; }                // one group's
  int bits_, group_, dim_, n_kv_;
  DeviceArray<uint8_t> kcodes_, vcodes_, kparams_, vparams_;
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
  // After the step's attention: work that reads the token's query q (device, n_heads * head_dim f32),
  // h2o's votes. Default: nothing.
  virtual Status ObserveDecode(const float* q) {
    (void)q;
    return Status::Ok();
  }
  // Whether the batched path may plan this policy's steps; false keeps it on the per-item path
  // (atp residual= and online lowrank: the rows their queries read are rebuilt, per call, into one
  // scratch per thread, which the items of a batch would share). Default: true.
  virtual bool Batches() const { return true; }
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
  // Room for T rows at position len, rows before keep_from no longer needed, and the row index they
  // go to. before_move runs before a full buffer is replaced (a background reader must be done).
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

// A GPU KV policy whose steps are written here once; a policy supplies only where a step's rows go
// (Reserve), what a query sees (View) and the rest of an append (Finish), and its Bytes(), Update()
// and ReadsInput().
//   Append: positions continue Length() (else an error naming the policy) and X is given when
//     ReadsInput(); Reserve makes room and lists the stores; host K, V (and X) are staged; StoreRows
//     stores them; Finish; then Length() counts the tokens.
//   Attend: Prepare(last query); host Q and O staged, the decode workspace sized for the rows
//     View(last query) sees, then cuda::Attend; O is not written when staging, the workspace or the launch fails.
//   PlanDecode / FinishDecode (DecodePlanner): the same for one token, Reserve's stores run by the
//     batched path (cuda/decode_batch.h) between the two.
// Ownership: the policy owns every device buffer it reserves and the staging buffers here; the
// caller's K, V, X, Q and O (device or host memory) are borrowed for the call. Every copy and launch
// here runs on the legacy default stream, in call order (a policy's work elsewhere, ATP's background
// compression, is ordered with it by events). Threads: one sequence's, calls serialized
// (KvPolicy's rule). After an error the policy is mid-step, as KvPolicy::Append leaves it.
class DevicePolicy : public KvPolicy, public DecodePlanner {
 public:
  // `name` names the policy in errors (a string literal: "atp" gives "atp: position 5 appended ...").
  DevicePolicy(const KvShape& s, const char* name) : shape_(s), name_(name) {}

  Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) final;
  // Positions must be contiguous (p0, p0 + 1, ...), as every ForwardItem's are.
  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) final;
  Status PlanDecode(int32_t pos, std::vector<RowStore>* stores, DecodeQuery* query) final;
  Status FinishDecode(const float* X) final;
  Status ObserveDecode(const float* q) final { return Observe(q, 1, len_ - 1); }
  int64_t Length() const final { return len_; }

 protected:
  const KvShape& shape() const { return shape_; }

 private:
  // Room for T tokens at positions first .. first + T - 1 (first = Length()): settles every buffer
  // their rows go to and adds those stores to `stores` (source rows 0 .. T - 1 of the step's K and
  // V). `planned`: a decode step for the batched path (T = 1): also adds the store of the token's X
  // where the policy keeps it, and settles every buffer Finish writes or the step's attention reads,
  // so that the rows and pointers given stay valid through FinishDecode and the attention.
  virtual Status Reserve(int64_t first, int64_t T, bool planned, std::vector<RowStore>* stores) = 0;
  // What a query at position `last` sees once every position up to it is appended.
  virtual DecodeQuery View(int64_t last) = 0;
  // The rest of appending T tokens once their stores ran, Length() not yet counting them (KIVI packs
  // the groups they complete, ATP keeps their X and compresses the blocks they complete). X: their
  // layer input (device, (T, d_model) f32), null unless ReadsInput(); `planned` as Reserve's.
  // Default: nothing more.
  virtual Status Finish(int64_t T, const float* X, bool planned) {
    (void)T, (void)X, (void)planned;
    return Status::Ok();
  }
  // Work Attend queues before View describes what a query at `last` sees (atp residual=: the tokens
  // it reads, rebuilt); the batched path never calls it, so a policy that needs it returns false from
  // Batches(). Default: nothing.
  virtual Status Prepare(int64_t last) {
    (void)last;
    return Status::Ok();
  }
  // Work after Attend's launch, given its queries (device, (T, n_heads * head_dim) f32) at positions
  // start .. start + T - 1: h2o and snapkv compute the votes they evict by. The batched path calls it
  // for a step's one token after the layer's attention (ObserveDecode). Default: nothing.
  virtual Status Observe(const float* Q, int64_t T, int64_t start) {
    (void)Q, (void)T, (void)start;
    return Status::Ok();
  }

  // Ok unless ReadsInput() and X is null.
  Status CheckInput(const float* X) const;

  KvShape shape_;
  const char* name_;
  int64_t len_ = 0;
  DeviceInput k_in_, v_in_, x_in_, q_in_;
  DeviceOutput o_out_;
  DeviceArray<float> ws_;  // the attention's decode workspace
};

// The factory of a DevicePolicy P made as P(shape, params) from its parameters P::Params: CheckShape
// is P::CheckShape(shape, params), Describe() `describe` (the policy's canonical string),
// NeedsWholePrompt() `whole_prompt` (KvPolicyConfig::NeedsWholePrompt).
template <class P>
class DevicePolicyFactory final : public KvPolicyFactory {
 public:
  DevicePolicyFactory(const typename P::Params& p, std::string describe, bool whole_prompt)
      : p_(p), describe_(std::move(describe)), whole_prompt_(whole_prompt) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<P>(s, p_); }
  Status CheckShape(const KvShape& s) const override { return P::CheckShape(s, p_); }
  std::string Describe() const override { return describe_; }
  bool NeedsWholePrompt() const override { return whole_prompt_; }

 private:
  typename P::Params p_;
  std::string describe_;
  bool whole_prompt_;
};

template <class P>
std::shared_ptr<KvPolicyFactory> MakeDevicePolicyFactory(const typename P::Params& p, std::string describe,
                                                         bool whole_prompt = false) {
  return std::make_shared<DevicePolicyFactory<P>>(p, std::move(describe), whole_prompt);
}

}  // namespace atp::cuda
