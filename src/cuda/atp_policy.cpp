// The GPU twin of kv/atp_policy.cpp for proj=dense: blocks of B tokens, each complete block's
// principal rows U_r^T K_b and U_r^T V_b from the top left singular vectors of its layer input X_b
// (basis=input) or of each KV head's keys (basis=key; cuda/block_basis.h), exact rows for the
// window. A query sees them through cuda::Visibility, so the same decode and prefill kernels serve
// dense and ATP. Everything the CPU policy keeps is kept here in the same amounts (Bytes() agrees):
// exact rows from the first position some future query sees exactly, the filling block's X
// (basis=input), principal rows and per-head block ends. The work of a prefill's many blocks is
// batched: one basis launch per 64 blocks. A block completed by a decode step is compressed on a
// low-priority side stream: no query needs it before `window` more tokens (Jacobi takes ~1.5 ms on
// one SM), so decode steps do not wait for it.
// keep=E (issue 19): the E tokens of a block its top-r directions summarize worst stay exact, chosen
// on the device by the basis kernel with the CPU's rule (cuda/block_basis.h); the other B - E tokens
// are gathered (cuda::GatherSplit) and get their own bases and principal rows, as on the CPU. A
// block's kept rows follow its principal rows in the same buffer (cuda::PrincipalRows' extra rows),
// so a query reads them as principal rows, through the same visibility, and they count as the CPU's
// kept rows do (same form, same number).
// residual=kiviN|mx_FMT (GEAR): each summarized token's residual after projection, K_i - (U_r)_i P_k
// against the principal rows as stored (and V's), packed in KIVI's groups (cuda::KiviRows) or stored
// as MX/NVFP4 rows (the CPU codecs' codes either way) beside U_r's rows (f32 coefficients, as the CPU
// keeps them). A query reads every summarized token rebuilt, (U_r)_i P + decoded residual: Prepare
// rebuilds the tokens of the blocks the call's last query sees compressed into one scratch per thread
// (cuda/atp_rows.h; rows of the exact form, so the attention kernels read them as principal rows, B
// per block: the summarized tokens, then the kept rows copied as stored), and View hands them out.
// The scratch holds what dense KV in the policy's dtype would hold for those tokens, for one layer at a
// time (every layer of a thread reuses it; it is not counted in Bytes(), as the CPU's Summarize
// copies are not). rope=pre: the keys are turned back to before RoPE when a block is compressed, and
// each rebuilt key is rotated at its own position (the CPU's BlockRope arithmetic; with keep=, the
// summarized tokens' offsets are kept as the CPU keeps them); kept keys stay as appended. Such a
// policy's decode steps stay on the per-item path (DecodePlanner::Batches). tau= (ranks from the data)
// compresses on the forward's stream, reading the ranks back. keep=block (every token exact: dense),
// tau= with basis=key, and proj=lowrank run on the CPU only.
#include "cuda/atp_policy.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "cuda/atp_rows.h"
#include "cuda/block_basis.h"
#include "cuda/device_policy.h"
#include "kv/policy_config.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::KvFormat;

constexpr int kBlocksPerLaunch = 64;  // bounds the f32 scratch of one basis launch

// The stream all ATP policies compress on in the background, at the lowest priority, not ordered
// with the legacy default stream the forward pass runs on (events order the two where needed).
cudaStream_t SideStream() {
  static const cudaStream_t s = [] {
    int least = 0, greatest = 0;
    cudaDeviceGetStreamPriorityRange(&least, &greatest);
    cudaStream_t st = nullptr;
    cudaStreamCreateWithPriority(&st, cudaStreamNonBlocking, least);
    return st;
  }();
  return s;
}

// The summarized tokens' residuals (residual=), n per compressed block, token after token in the
// form f: KIVI's packed groups of `group` tokens (cuda::KiviRows, packed by cuda::KiviPack) or MX or
// NVFP4 rows (a RowBuffer pair, stored by cuda::StoreKv), the CPU codecs' codes bit for bit.
class ResidualRows {
 public:
  ResidualRows(KvFormat f, int group, int dim, int n_kv)
      : f_(f), group_(group), dim_(dim), n_kv_(n_kv),
        kivi_(cuda::KiviBits(f), group, dim, n_kv), k_(f, dim, n_kv),
        v_(f, dim, n_kv) {}
  // Room for `tokens` tokens, the first `kept` kept (a multiple of the group for KIVI).
  Status Reserve(int64_t tokens, int64_t kept) {
    if (cuda::IsKiviF(f_)) return kivi_.Reserve(tokens / group_, kept / group_);
    ATP_RETURN_IF_ERROR(k_.Reserve(tokens, kept));
    return v_.Reserve(tokens, kept);
  }
  cuda::DeviceRows rows(bool keys) const { return cuda::IsKiviF(f_) ? kivi_.rows(keys) : keys ? k_.rows() : v_.rows(); }
  // Bytes of `tokens` tokens, as the CPU's codec store counts them.
  int64_t Bytes(int64_t tokens) const {
    return cuda::IsKiviF(f_) ? kivi_.Bytes(tokens / group_) : tokens * (k_.TokenBytes() + v_.TokenBytes());
  }
  // Tokens [to, to + n) from K and V (n rows of all KV heads, f32 device), on stream s.
  void Store(const float* K, const float* V, int64_t n, int64_t to, cudaStream_t s) const {
    if (!cuda::IsKiviF(f_)) {
      cuda::StoreKv(k_.rows(), v_.rows(), to, K, V, n, s);
      return;
    }
    const cuda::DeviceRows rk{KvFormat::kF32, reinterpret_cast<uint8_t*>(const_cast<float*>(K)), nullptr, dim_, n_kv_};
    const cuda::DeviceRows rv{KvFormat::kF32, reinterpret_cast<uint8_t*>(const_cast<float*>(V)), nullptr, dim_, n_kv_};
    cuda::KiviPack(rk, rv, 0, int(n / group_), kivi_.rows(true), kivi_.rows(false), to, s);
  }

 private:
  KvFormat f_;
  int group_, dim_, n_kv_;
  cuda::KiviRows kivi_;
  cuda::RowBuffer k_, v_;
};

class CudaAtpPolicy : public cuda::DevicePolicy {
 public:
  struct Params {
    int block = 64, rank = 16, window = 64;
    double tau = 0;
    KvFormat fmt = KvFormat::kF32;
    bool key_basis = false;  // one basis per KV head from its keys (else from the layer input)
    int keep = 0;            // keep=E: exact rows kept per compressed block, below block
    std::optional<KvFormat> residual;  // residual=kiviN (kKiviN) or mx_FMT (its MX form); none: no residual
    bool rope_pre = false;   // compress keys turned back to before RoPE (needs residual=)
    int summarized() const { return block - keep; }  // tokens of a block the principal rows stand for
  };
  CudaAtpPolicy(const KvShape& s, const Params& p)
      : DevicePolicy(s, "atp"), p_(p), exact_(p.fmt, s.head_dim, s.n_kv_heads), pk_(p.fmt, s.head_dim, s.n_kv_heads),
        pv_(p.fmt, s.head_dim, s.n_kv_heads),
        residual_(p.residual.value_or(KvFormat::kKivi8), AtpResidualGroup(p.summarized()), s.head_dim, s.n_kv_heads) {
    cudaEventCreateWithFlags(&stored_, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&compressed_, cudaEventDisableTiming);
  }
  ~CudaAtpPolicy() override {
    cudaEventSynchronize(compressed_);  // the side stream may still write into this policy's buffers
    cudaEventDestroy(stored_);
    cudaEventDestroy(compressed_);
  }
  static Status CheckShape(const KvShape& s, const Params& p) {
    const int width = p.key_basis ? s.head_dim : s.d_model;
    if (width < p.block)
      return Status::Unsupported("cuda atp: block=" + std::to_string(p.block) + " is wider than " +
                                 (p.key_basis ? "head_dim " : "d_model ") + std::to_string(width) +
                                 " (the GPU bases need rows at least as wide as a block)");
    const int g = AtpResidualGroup(p.summarized());
    if (p.residual && cuda::IsKiviF(*p.residual) && (g % 8 != 0 || s.head_dim % g != 0))
      return Status::Unsupported("cuda atp: residual=kivi packs groups of " + std::to_string(g) + " tokens (block=" +
                                 std::to_string(p.block) + ", keep=" + std::to_string(p.keep) +
                                 "), which must be a multiple of 8 dividing head_dim " + std::to_string(s.head_dim));
    if (p.rope_pre && s.rope_inv_freq.size() * 2 != size_t(s.head_dim))
      return Status::InvalidArgument("kv policy 'atp': rope=pre needs the model's RoPE frequencies (head_dim/2 = " +
                                     std::to_string(s.head_dim / 2) + "), and layer " + std::to_string(s.layer) +
                                     " came with " + std::to_string(s.rope_inv_freq.size()));
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, p.fmt);
  }

  // As the CPU policy counts: exact rows, the filling block's X (f32, basis=input), principal rows and
  // keep='s kept rows (principal_ counts both; the CPU keeps them in the same form), and one 8-byte
  // block end per KV head and compressed block; with residual=, the residuals of the summarized tokens,
  // the f32 residual rows of the last compressed block that the CPU's KIVI store keeps until its next
  // Trim (Update), U_r's rows (f32, r_b per summarized token and basis: one per block, or one per KV
  // head and block; held with room for the most) and, with rope=pre and keep=, the summarized tokens'
  // offsets (int32, per basis and block).
  size_t Bytes() const override {
    const int64_t row = pk_.TokenBytes() + pv_.TokenBytes(), len = Length(), d = shape().d_model;
    const int64_t blocks = int64_t(pre_end_host_.size()), B = p_.block, n = p_.summarized(), kvd = shape().kv_dim();
    int64_t bytes = exact_.Bytes(len) + (p_.key_basis ? 0 : (len % B) * d * int64_t(sizeof(float))) + principal_ * row +
                    blocks * shape().n_kv_heads * int64_t(sizeof(int64_t));
    if (p_.residual)
      bytes += residual_.Bytes(blocks * n) +
               (untrimmed_ && cuda::IsKiviF(*p_.residual) ? n * 2 * kvd * int64_t(sizeof(float)) : 0) +
               Bases() * (principal_ - blocks * p_.keep) * n * int64_t(sizeof(float)) +
               (Offsets() ? blocks * Bases() * n * int64_t(sizeof(int32_t)) : 0);
    return size_t(bytes);
  }
  Status Update() override {  // as the CPU policy: no later query reads compressed blocks' exact rows
    exact_.Release(CompressedBlocks(Length()) * p_.block);
    untrimmed_ = false;  // the CPU's residual stores Trim
    return Status::Ok();
  }
  bool ReadsInput() const override { return !p_.key_basis; }
  bool Batches() const override { return !p_.residual; }

 private:
  // Room for T tokens from position first (= Length()): their exact rows (no query from first on
  // sees the blocks below this one exactly, kv/atp_policy.cpp; a replaced buffer is released after
  // the forward's stream, which waits for background readers first). Planned (one token): its X into
  // the filling block's buffer (B > 1), and room for the principal rows of the block it may complete.
  Status Reserve(int64_t first, int64_t T, bool planned, std::vector<cuda::RowStore>* stores) override {
    const int B = p_.block;
    if (p_.rope_pre && !inv_freq_.get()) {  // the model's RoPE frequencies, for compression and rebuilding
      const std::vector<float>& f = shape().rope_inv_freq;
      ATP_RETURN_IF_ERROR(CheckShape(shape(), p_));
      ATP_RETURN_IF_ERROR(inv_freq_.Grow(f.size()));
      ATP_CUDA_RETURN(cudaMemcpy(inv_freq_.get(), f.data(), f.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    ATP_ASSIGN_OR_RETURN(const int64_t row,
                         exact_.Room(first, CompressedBlocks(first) * B, T, [&] { AwaitCompression(); }));
    stores->push_back({exact_.k(), exact_.v(), row, T});
    if (!p_.key_basis) ATP_RETURN_IF_ERROR(GrowInput());
    if (!planned) return Status::Ok();  // Finish copies the chunk's X
    if (B > 1 && !p_.key_basis) {
      const cuda::DeviceRows x{KvFormat::kF32, reinterpret_cast<uint8_t*>(x_fill_.get()), nullptr, shape().d_model, 1};
      stores->push_back({x, {}, first % B, 1, true});
    }
    if ((first + 1) % B == 0) ATP_RETURN_IF_ERROR(ReservePrincipal(MaxRank() + p_.keep, 1));
    return Status::Ok();
  }

  int64_t CompressedBlocks(int64_t p) const { return cuda::CompressedBlocks(p_.block, p_.window, p); }
  // The most principal rows of a block: its summarized tokens' rank (the GPU's bases are at least as wide).
  int MaxRank() const { return p_.tau > 0 ? p_.summarized() : std::clamp(p_.rank, 1, p_.summarized()); }
  // Bases per block: one per KV head (basis=key) or one for all (basis=input).
  int Bases() const { return p_.key_basis ? shape().n_kv_heads : 1; }
  // Whether the summarized tokens' offsets in their block are kept (rope=pre rotates each rebuilt key
  // at its own position; without keep= token i of a block is at offset i).
  bool Offsets() const { return p_.rope_pre && p_.keep > 0; }

  // Both X buffers (one filling, one read by a background compression), allocated up front.
  Status GrowInput() {
    ATP_RETURN_IF_ERROR(x_fill_.Grow(size_t(p_.block) * size_t(shape().d_model)));
    return x_fill_next_.Grow(size_t(p_.block) * size_t(shape().d_model));
  }

  // The second half of appending T tokens (their exact rows stored): their layer input dx (T,
  // d_model, device; basis=input, else null) into the filling block, and the blocks they complete
  // compressed. A planned step's X row is in x_fill_ already (B > 1: Reserve's store).
  Status Finish(int64_t T, const float* dx, bool planned) override {
    const int B = p_.block, d = shape().d_model;
    const bool x_stored = (planned && B > 1) || p_.key_basis;  // basis=key keeps no X
    const int64_t len = Length();
    // X of the blocks this chunk completes: the first may have begun in an earlier call (x_fill_).
    const int64_t filled = len % B, complete = (filled + T) / B;
    const float* first = nullptr;
    const float* rest = dx;
    if (complete > 0 && filled > 0 && !p_.key_basis) {
      if (!x_stored)
        ATP_CUDA_RETURN(cudaMemcpyAsync(x_fill_.get() + filled * d, dx, size_t((B - filled) * d) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, nullptr));
      first = x_fill_.get(), rest = dx + (B - filled) * d;
    }
    // In the background only when the one block completed lies in x_fill_ (a decode step: the chunk's X,
    // the forward's buffer, is rewritten by the next layer) and its ranks are known without reading them.
    const bool background = complete == 1 && filled > 0 && p_.tau <= 0;
    for (int64_t done = 0; done < complete; done += kBlocksPerLaunch) {
      const int n = int(std::min<int64_t>(kBlocksPerLaunch, complete - done));
      const float* group_first = done == 0 ? first : nullptr;
      const float* group_rest = rest ? rest + (first && done > 0 ? done - 1 : done) * B * d : nullptr;
      ATP_RETURN_IF_ERROR(CompressBlocks(len / B + done, n, group_first, group_rest, background));
    }
    // The rows of the block still filling (into the other X buffer when x_fill_ is being compressed).
    if (background) std::swap(x_fill_, x_fill_next_);
    const int64_t tail = (filled + T) % B, from = complete > 0 ? T - tail : 0, at = complete > 0 ? 0 : filled;
    if (tail > 0 && T - from > 0 && !x_stored)
      ATP_CUDA_RETURN(cudaMemcpyAsync(x_fill_.get() + at * d, dx + from * d, size_t((T - from) * d) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, nullptr));
    return cuda::LastLaunch("atp append");
  }

  // residual=: the summarized tokens of the blocks a query at `last` sees compressed, rebuilt into the
  // thread's scratch (after a background compression of one of them).
  Status Prepare(int64_t last) override {
    if (!p_.residual) return Status::Ok();
    const int64_t nb = CompressedBlocks(last);
    if (pending_ && nb > pending_block_) AwaitCompression();
    const int64_t bytes = nb * p_.block * pk_.TokenBytes();  // pk_'s rows: all KV heads, exact form
    cuda::RebuiltRows& out = cuda::ThreadRebuiltRows();
    ATP_RETURN_IF_ERROR(out.k.Grow(size_t(std::max<int64_t>(bytes, 1))));
    ATP_RETURN_IF_ERROR(out.v.Grow(size_t(std::max<int64_t>(bytes, 1))));
    cuda::RebuildArgs a;
    a.coefs = reinterpret_cast<const float*>(coefs_.get());
    a.groups = Bases(), a.B = p_.block, a.n = p_.summarized(), a.r = MaxRank(), a.nb = nb;
    a.pk = pk_.rows(), a.pv = pv_.rows();
    a.rk = residual_.rows(true), a.rv = residual_.rows(false);
    a.ends = p_.tau > 0 ? pre_end_.get() : nullptr;  // ranks from the data: per block
    a.offsets = Offsets() ? reinterpret_cast<const int32_t*>(offsets_.get()) : nullptr;
    a.inv_freq = p_.rope_pre ? inv_freq_.get() : nullptr;
    a.out_k = RebuiltView(out.k), a.out_v = RebuiltView(out.v);
    cuda::RebuildRows(a, nullptr);
    return cuda::LastLaunch("atp rebuild");
  }
  cuda::DeviceRows RebuiltView(const DeviceArray<uint8_t>& a) const {
    return {p_.fmt, a.get(), nullptr, shape().head_dim, shape().n_kv_heads};
  }

  // What a query at `last` sees: the principal and kept rows of its compressed blocks (residual=:
  // their tokens, rebuilt or kept, by Prepare, B rows per block), then exact rows (waiting on the
  // device for a background compression of a block it sees compressed).
  cuda::DecodeQuery View(int64_t last) override {
    const int64_t nb = CompressedBlocks(last);
    if (pending_ && nb > pending_block_) AwaitCompression();
    cuda::DecodeQuery q;
    q.k = exact_.k(), q.v = exact_.v(), q.pos = last;
    cuda::Visibility& vis = q.vis;
    vis.first = exact_.first(), vis.block = p_.block, vis.window = p_.window;
    if (p_.residual) {
      const cuda::RebuiltRows& r = cuda::ThreadRebuiltRows();
      vis.pk = RebuiltView(r.k), vis.pv = RebuiltView(r.v), vis.rows_per_block = p_.block;
      vis.last_pre = nb * p_.block;
      return q;
    }
    vis.pk = pk_.rows(), vis.pv = pv_.rows(), vis.pre_end = pre_end_.get();
    vis.last_pre = nb > 0 ? pre_end_host_[size_t(nb - 1)] : 0;
    return q;
  }

  // The forward's stream waits (on the device) for the last background compression.
  void AwaitCompression() {
    if (pending_) cudaStreamWaitEvent(nullptr, compressed_, 0);
    pending_ = false;
  }

  // Blocks b0 .. b0 + n - 1 (complete, their exact rows stored): bases from their X, principal
  // rows appended, block ends recorded; on the side stream when `background` (block ends and
  // capacity are settled here first, so that nothing but the kernels runs there).
  Status CompressBlocks(int64_t b0, int n, const float* first, const float* rest, bool background) {
    // The last background compression read the X buffer now filling, used the scratch and wrote
    // principal rows: the forward's stream waits for it before touching those (long done by now:
    // a block takes B decode steps).
    AwaitCompression();
    const int B = p_.block, kvd = shape().kv_dim(), e = p_.keep, ns = p_.summarized();
    const int max_rank = MaxRank();
    for (auto [buf, count] : {std::pair{&u_, size_t(n) * Bases() * B * B}, {&kb_, size_t(n) * B * kvd},
                              {&vb_, size_t(n) * B * kvd}, {&ppk_, size_t(n) * (max_rank + e) * kvd},
                              {&ppv_, size_t(n) * (max_rank + e) * kvd}})
      ATP_RETURN_IF_ERROR(buf->Grow(count));
    ATP_RETURN_IF_ERROR(ranks_.Grow(size_t(n) * Bases()));
    if (e > 0) {  // keep=: the split, the summarized rows and the kept ones apart
      ATP_RETURN_IF_ERROR(split_.Grow(size_t(n) * Bases() * B));
      for (auto [buf, count] : {std::pair{&sum_k_, size_t(n) * ns * kvd}, {&sum_v_, size_t(n) * ns * kvd},
                                {&kept_k_, size_t(n) * e * kvd}, {&kept_v_, size_t(n) * e * kvd}})
        ATP_RETURN_IF_ERROR(buf->Grow(count));
      if (!p_.key_basis) ATP_RETURN_IF_ERROR(sum_x_.Grow(size_t(n) * ns * shape().d_model));
      if (p_.rope_pre) ATP_RETURN_IF_ERROR(stored_k_.Grow(size_t(n) * B * kvd));
    }
    if (p_.residual) {  // room for the blocks' residuals, coefficients and offsets (Record adds the blocks)
      const int64_t blocks = int64_t(pre_end_host_.size());
      ATP_RETURN_IF_ERROR(residual_.Reserve((blocks + n) * ns, blocks * ns));
      const size_t per_block = size_t(Bases()) * ns * max_rank * sizeof(float);
      ATP_RETURN_IF_ERROR(cuda::GrowKeeping(&coefs_, size_t(blocks + n) * per_block, size_t(blocks) * per_block));
      const size_t offsets = size_t(Bases()) * ns * sizeof(int32_t);
      if (Offsets())
        ATP_RETURN_IF_ERROR(cuda::GrowKeeping(&offsets_, size_t(blocks + n) * offsets, size_t(blocks) * offsets));
      untrimmed_ = true;
    }
    if (!background) return Compress(b0, n, first, rest, max_rank);
    // Principal rows of a fixed rank: row counts and capacity need no result of the kernels.
    ATP_RETURN_IF_ERROR(Record(std::vector<int32_t>(size_t(n), max_rank)));
    ATP_CUDA_RETURN(cudaEventRecord(stored_, nullptr));  // the block's K, V and X are in place
    ATP_CUDA_RETURN(cudaStreamWaitEvent(SideStream(), stored_, 0));
    const int64_t rows = int64_t(n) * (max_rank + e);
    ATP_RETURN_IF_ERROR(Launch(b0, n, first, rest, max_rank, principal_ - rows, rows, true, SideStream()));
    ATP_CUDA_RETURN(cudaEventRecord(compressed_, SideStream()));
    pending_ = true, pending_block_ = b0 + n - 1;
    return cuda::LastLaunch("atp compress");
  }

  // The kernels of CompressBlocks on stream s: the blocks' rows in f32 (rope=pre: their keys turned
  // back), bases (unless computed already), keep=: the rows split (summarized ones gathered, the
  // summarized rows' own bases for basis=key), `rows` rows written from principal row `at` on (each
  // block's principal rows, then its kept rows, keys as stored); residual=: the summarized tokens'
  // residuals against the principal rows as stored, stored from residual row b0 * summarized on, and
  // U_r's rows kept (the blocks' coefficients, MaxRank() columns each; with rope=pre and keep=, the
  // summarized tokens' offsets).
  Status Launch(int64_t b0, int n, const float* first, const float* rest, int max_rank, int64_t at, int64_t rows,
                bool bases, cudaStream_t s) {
    const int B = p_.block, kvd = shape().kv_dim(), hd = shape().head_dim, nkv = shape().n_kv_heads;
    const int e = p_.keep, ns = p_.summarized();
    // The block's rows as the CPU reads them back: f32 of the stored (rounded) values.
    cuda::LoadRowsF32(exact_.k(), b0 * B - exact_.first(), int64_t(n) * B, kb_.get(), s);
    cuda::LoadRowsF32(exact_.v(), b0 * B - exact_.first(), int64_t(n) * B, vb_.get(), s);
    if (p_.rope_pre && e > 0)  // kept keys stay as appended
      cuda::LoadRowsF32(exact_.k(), b0 * B - exact_.first(), int64_t(n) * B, stored_k_.get(), s);
    if (p_.rope_pre) cuda::UnrotateKeys(kb_.get(), int64_t(n) * B, nkv, hd, b0 * B, inv_freq_.get(), s);
    if (bases && p_.key_basis)
      cuda::BlockBases(nullptr, kb_.get(), n, nkv, B, hd, kvd, p_.rank, p_.tau, u_.get(), ranks_.get(), s, e, split_.get());
    if (bases && !p_.key_basis) BasesFromInput(first, rest, n, s);
    const int width = p_.key_basis ? hd : kvd;  // the columns one basis serves
    float *K = kb_.get(), *V = vb_.get();       // the summarized rows, ns per block
    if (e > 0) {
      cuda::GatherSplit(nullptr, kb_.get(), n, B, e, kvd, width, split_.get(), sum_k_.get(),
                        p_.rope_pre ? nullptr : kept_k_.get(), s);
      if (p_.rope_pre)
        cuda::GatherSplit(nullptr, stored_k_.get(), n, B, e, kvd, width, split_.get(), nullptr, kept_k_.get(), s);
      cuda::GatherSplit(nullptr, vb_.get(), n, B, e, kvd, width, split_.get(), sum_v_.get(), kept_v_.get(), s);
      K = sum_k_.get(), V = sum_v_.get();
      if (bases && p_.key_basis)  // the summarized rows' own bases, as the CPU's second SVD
        cuda::BlockBases(nullptr, K, n, nkv, ns, hd, kvd, p_.rank, p_.tau, u_.get(), ranks_.get(), s);
    }
    cuda::PrincipalRows(u_.get(), ranks_.get(), n, Bases(), ns, max_rank, K, V, width, kvd, ppk_.get(), ppv_.get(), at,
                        pre_end_.get() + (pre_end_host_.size() - size_t(n)), s, e, kept_k_.get(), kept_v_.get());
    cuda::StoreKv(pk_.rows(), pv_.rows(), at, ppk_.get(), ppv_.get(), rows, s);
    if (!p_.residual) return Status::Ok();
    cuda::LoadRowsF32(pk_.rows(), at, rows, ppk_.get(), s);  // as stored (dtype-rounded), as the CPU subtracts them
    cuda::LoadRowsF32(pv_.rows(), at, rows, ppv_.get(), s);
    cuda::SubtractProjection(u_.get(), ranks_.get(), n, ns, e, width, ppk_.get(), ppv_.get(), kvd, K, V, s);
    residual_.Store(K, V, int64_t(n) * ns, b0 * ns, s);
    // U_r's rows of each basis: (ns, max_rank) of every (ns, ns) U, blocks b0 .. in order.
    const size_t per_block = size_t(Bases()) * ns * max_rank;
    ATP_CUDA_RETURN(cudaMemcpy2DAsync(reinterpret_cast<float*>(coefs_.get()) + size_t(b0) * per_block,
                                      size_t(max_rank) * sizeof(float), u_.get(), size_t(ns) * sizeof(float),
                                      size_t(max_rank) * sizeof(float), size_t(n) * Bases() * ns, cudaMemcpyDeviceToDevice,
                                      s));
    if (Offsets())  // the summarized tokens' offsets: the first ns of each split
      ATP_CUDA_RETURN(cudaMemcpy2DAsync(reinterpret_cast<int32_t*>(offsets_.get()) + size_t(b0) * Bases() * ns,
                                        size_t(ns) * sizeof(int32_t), split_.get(), size_t(B) * sizeof(int32_t),
                                        size_t(ns) * sizeof(int32_t), size_t(n) * Bases(), cudaMemcpyDeviceToDevice, s));
    return Status::Ok();
  }

  // The bases of blocks from their layer input: block 0 at `first` when not null, the rest from `rest`;
  // keep=: the split, then the summarized rows' own bases (the CPU's second SVD).
  void BasesFromInput(const float* first, const float* rest, int n, cudaStream_t s) {
    const int d = shape().d_model, B = p_.block, e = p_.keep, ns = p_.summarized();
    cuda::BlockBases(first, rest, n, 1, B, d, d, p_.rank, p_.tau, u_.get(), ranks_.get(), s, e, split_.get());
    if (e == 0) return;
    cuda::GatherSplit(first, rest, n, B, e, d, d, split_.get(), sum_x_.get(), nullptr, s);
    cuda::BlockBases(nullptr, sum_x_.get(), n, 1, ns, d, d, p_.rank, p_.tau, u_.get(), ranks_.get(), s);
  }

  // Compression on the forward's stream; ranks from the data (tau) are read back first.
  Status Compress(int64_t b0, int n, const float* first, const float* rest, int max_rank) {
    std::vector<int32_t> ranks(size_t(n), max_rank);
    if (p_.tau > 0) {  // the row counts depend on the bases (basis=input): compute them, read the ranks, then the rows
      BasesFromInput(first, rest, n, nullptr);
      ATP_CUDA_RETURN(cudaMemcpy(ranks.data(), ranks_.get(), size_t(n) * sizeof(int32_t), cudaMemcpyDeviceToHost));
    }
    const int64_t at = principal_;
    ATP_RETURN_IF_ERROR(Record(ranks));
    ATP_RETURN_IF_ERROR(Launch(b0, n, first, rest, max_rank, at, principal_ - at, p_.tau <= 0, nullptr));
    return cuda::LastLaunch("atp compress");
  }

  // Room for `rows` more principal rows and `blocks` more block ends (capacities double, so growth
  // is rare; a planned step reserves ahead so that its compression moves no buffer its attention reads).
  Status ReservePrincipal(int64_t rows, size_t blocks) {
    ATP_RETURN_IF_ERROR(pk_.Reserve(principal_ + rows, principal_));
    ATP_RETURN_IF_ERROR(pv_.Reserve(principal_ + rows, principal_));
    const size_t old = pre_end_host_.size();
    if (pre_end_.size() < old + blocks) {  // grow by doubling, keeping the ends so far
      DeviceArray<int32_t> next;
      ATP_RETURN_IF_ERROR(next.Grow(std::max<size_t>(2 * (old + blocks), 256)));
      if (old > 0) ATP_CUDA_RETURN(cudaMemcpy(next.get(), pre_end_.get(), old * sizeof(int32_t), cudaMemcpyDeviceToDevice));
      pre_end_ = std::move(next);
    }
    return Status::Ok();
  }

  // Appends n blocks of the given ranks to the bookkeeping: block ends (the host's; Launch writes the
  // device's) and room for their principal and kept rows and ends.
  Status Record(const std::vector<int32_t>& ranks) {
    int64_t rows = 0;
    for (int32_t r : ranks) rows += r + p_.keep;
    ATP_RETURN_IF_ERROR(ReservePrincipal(rows, ranks.size()));
    rows = 0;
    for (int32_t r : ranks) pre_end_host_.push_back(int32_t(principal_ + (rows += r + p_.keep)));
    principal_ += rows;
    return Status::Ok();
  }

  Params p_;
  cuda::ExactTail exact_;    // from the first position some future query sees exactly
  cuda::RowBuffer pk_, pv_;  // per block its principal rows, then its kept rows (keep=), all KV heads per row
  int64_t principal_ = 0;    // rows of pk_, pv_ (principal and kept)
  std::vector<int32_t> pre_end_host_;  // rows of pk_ standing for blocks 0..b
  DeviceArray<int32_t> pre_end_;
  DeviceArray<float> x_fill_;       // (B, d_model): X of the filling block
  DeviceArray<float> x_fill_next_;  // the other buffer: X of a block compressed in the background
  cudaEvent_t stored_ = nullptr, compressed_ = nullptr;  // forward's stream -> side stream, and back
  bool pending_ = false;            // a background compression the forward's stream has not waited for
  int64_t pending_block_ = 0;       // its last block
  DeviceArray<float> u_, kb_, vb_, ppk_, ppv_;  // scratch of compression
  DeviceArray<int32_t> ranks_;
  // keep='s scratch: per block (and basis) its rows split (summarized, then kept; cuda::BlockBases),
  // the summarized rows' X, K and V gathered, the kept rows' K (as stored) and V, and with rope=pre
  // the blocks' keys as stored (kb_ holds them turned back).
  DeviceArray<int32_t> split_;
  DeviceArray<float> sum_x_, sum_k_, sum_v_, kept_k_, kept_v_, stored_k_;
  ResidualRows residual_;            // residual=: the summarized tokens' residuals, summarized() per compressed block
  DeviceArray<uint8_t> coefs_;       // residual=: f32 U_r rows, (Bases(), summarized(), rank) per compressed block
  DeviceArray<uint8_t> offsets_;     // rope=pre with keep=: int32 (Bases(), summarized()) per compressed block
  bool untrimmed_ = false;           // residual=: a block compressed since the last Update()
  DeviceArray<float> inv_freq_;      // rope=pre: the model's RoPE frequencies (head_dim / 2)
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaAtpFactory(const AtpParams& a, const std::string& describe) {
  if (a.proj_lowrank || a.block > cuda::kMaxBasisBlock)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels; --device cuda supports atp with "
                               "proj=dense and block <= " + std::to_string(cuda::kMaxBasisBlock));
  if (a.keep == a.block)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels: atp's keep=block keeps every token "
                               "exact, which is dense attention (use dense, or keep= below block)");
  // Ranks from the data would differ per KV head (basis=key), whose rows share the principal rows' buffer.
  if (a.tau > 0 && a.key_basis)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels: atp's tau= with basis=key "
                               "runs on the CPU only (give rank=)");
  CudaAtpPolicy::Params p;
  p.block = a.block, p.rank = a.rank, p.tau = a.tau, p.window = a.window;
  p.key_basis = a.key_basis, p.keep = a.keep, p.rope_pre = a.rope_pre;
  p.fmt = cuda::ExactFormat(a.dtype);
  if (a.residual) {
    if (auto* k = std::get_if<KiviParams>(&*a.residual))
      p.residual = k->bits == 2 ? KvFormat::kKivi2 : k->bits == 4 ? KvFormat::kKivi4 : KvFormat::kKivi8;
    else
      p.residual = cuda::MxRowsFormat(std::get<MxForm>(*a.residual).fmt);
  }
  return cuda::MakeDevicePolicyFactory<CudaAtpPolicy>(p, describe);
}

}  // namespace atp
