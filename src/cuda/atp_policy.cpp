// The GPU twin of kv/atp_policy.cpp for basis=input, proj=dense: blocks of B tokens, each complete
// block's principal rows U_r^T K_b and U_r^T V_b from the top left singular vectors of its layer
// input X_b (cuda/block_basis.h), exact rows for the window. A query sees them through
// cuda::Visibility, so the same decode and prefill kernels serve dense and ATP. Everything the CPU
// policy keeps is kept here in the same amounts (Bytes() agrees): exact rows from the first
// position some future query sees exactly, the filling block's X, principal rows and per-head
// block ends. The work of a prefill's many blocks is batched: one basis launch per 64 blocks.
#include "cuda/atp_policy.h"

#include <algorithm>
#include <vector>

#include "cuda/block_basis.h"
#include "cuda/device_policy.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::KvFormat;
using cuda::Staged;

constexpr int kBlocksPerLaunch = 64;  // bounds the f32 scratch of one basis launch

struct Params {
  int block = 64, rank = 16, window = 64;
  double tau = 0;
  KvFormat fmt = KvFormat::kF32;
};

class CudaAtpPolicy : public KvPolicy {
 public:
  CudaAtpPolicy(const KvShape& s, const Params& p)
      : s_(s), p_(p), k_(p.fmt, s.head_dim, s.n_kv_heads), v_(p.fmt, s.head_dim, s.n_kv_heads),
        pk_(p.fmt, s.head_dim, s.n_kv_heads), pv_(p.fmt, s.head_dim, s.n_kv_heads) {}

  Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return Status::Ok();
    if (positions[0] != len_)
      return Status::InvalidArgument("atp: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(len_) + " tokens");
    if (!X) return Status::InvalidArgument("atp: the layer input X is needed (the paper's basis)");
    const int B = p_.block, d = s_.d_model, kvd = s_.kv_dim();
    const float* dk = Staged(K, size_t(T * kvd), &kind_k_, &stage_k_);
    const float* dv = Staged(V, size_t(T * kvd), &kind_v_, &stage_v_);
    const float* dx = Staged(X, size_t(T * d), &kind_x_, &stage_x_);
    if (!dk || !dv || !dx) return Status::ResourceExhausted("cuda atp policy: cannot stage appended rows");

    // No query from positions[0] on sees the blocks below this one exactly (kv/atp_policy.cpp).
    exact_begin_ = std::max(exact_begin_, CompressedBlocks(positions[0]) * B);
    if (len_ + T - phys0_ > k_.capacity()) {  // full: move the rows still seen to the front
      const int64_t keep = len_ - exact_begin_, from = exact_begin_ - phys0_;
      ATP_RETURN_IF_ERROR(k_.Compact(from, keep, keep + T));
      ATP_RETURN_IF_ERROR(v_.Compact(from, keep, keep + T));
      phys0_ = exact_begin_;
    }
    cuda::StoreKv(k_.rows(), v_.rows(), len_ - phys0_, dk, dv, T, nullptr);

    // X of the blocks this chunk completes: the first may have begun in an earlier call (x_fill_).
    ATP_RETURN_IF_ERROR(x_fill_.Grow(size_t(B) * size_t(d)));
    const int64_t filled = len_ % B, complete = (filled + T) / B;
    const float* first = nullptr;
    const float* rest = dx;
    if (complete > 0 && filled > 0) {
      ATP_CUDA_RETURN(cudaMemcpyAsync(x_fill_.get() + filled * d, dx, size_t((B - filled) * d) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, nullptr));
      first = x_fill_.get(), rest = dx + (B - filled) * d;
    }
    for (int64_t done = 0; done < complete; done += kBlocksPerLaunch) {
      const int n = int(std::min<int64_t>(kBlocksPerLaunch, complete - done));
      const float* group_first = done == 0 ? first : nullptr;
      const float* group_rest = rest + (first && done > 0 ? done - 1 : done) * B * d;
      ATP_RETURN_IF_ERROR(CompressBlocks(len_ / B + done, n, group_first, group_rest));
    }
    // The rows of the block still filling.
    const int64_t tail = (filled + T) % B, from = complete > 0 ? T - tail : 0, at = complete > 0 ? 0 : filled;
    if (tail > 0 && T - from > 0)
      ATP_CUDA_RETURN(cudaMemcpyAsync(x_fill_.get() + at * d, dx + from * d, size_t((T - from) * d) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, nullptr));
    len_ += T;
    return cuda::LastLaunch("atp append");
  }

  void Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return;
    const int64_t start = positions[0], last = start + T - 1;
    const size_t nq = size_t(T) * size_t(s_.q_dim());
    const cuda::AttnShape a{s_.n_heads, s_.n_kv_heads, s_.head_dim};
    const int64_t nb = CompressedBlocks(last);
    cuda::Visibility vis;
    vis.first = phys0_, vis.block = p_.block, vis.window = p_.window;
    vis.pk = pk_.rows(), vis.pv = pv_.rows(), vis.pre_end = pre_end_.get();
    vis.last_pre = nb > 0 ? pre_end_host_[size_t(nb - 1)] : 0;
    const bool host_out = !kind_o_.OnDevice(O);
    const float* dq = Staged(Q, nq, &kind_q_, &stage_q_);
    if (!dq || (host_out && !stage_o_.Grow(nq).ok())) return;
    if (!ws_.Grow(size_t(cuda::AttendWorkspaceFloats(a, vis.last_pre + last - nb * p_.block + 1, cuda::SmCount()))).ok())
      return;
    float* o = host_out ? stage_o_.get() : O;
    cuda::Attend(a, k_.rows(), v_.rows(), vis, dq, T, start, o, ws_.get(), cuda::SmCount(), nullptr);
    if (host_out) cudaMemcpy(O, o, nq * sizeof(float), cudaMemcpyDeviceToHost);
  }

  // As the CPU policy counts: exact rows, the filling block's X (f32), principal rows, and one
  // 8-byte block end per KV head and compressed block.
  size_t Bytes() const override {
    const int64_t row = k_.TokenBytes() + v_.TokenBytes();
    return size_t((len_ - exact_begin_) * row + (len_ % p_.block) * s_.d_model * int64_t(sizeof(float)) +
                  principal_ * row + int64_t(pre_end_host_.size()) * s_.n_kv_heads * int64_t(sizeof(int64_t)));
  }
  int64_t Length() const override { return len_; }
  bool ReadsInput() const override { return true; }

 private:
  int64_t CompressedBlocks(int64_t p) const { return p >= p_.window ? (p - p_.window) / p_.block : 0; }

  // Blocks b0 .. b0 + n - 1 (complete, their exact rows stored): bases from their X, principal
  // rows appended, block ends recorded.
  Status CompressBlocks(int64_t b0, int n, const float* first, const float* rest) {
    const int B = p_.block, kvd = s_.kv_dim();
    const int max_rank = p_.tau > 0 ? B : std::clamp(p_.rank, 1, B);
    for (auto [buf, count] : {std::pair{&u_, size_t(n) * B * B}, {&kb_, size_t(n) * B * kvd}, {&vb_, size_t(n) * B * kvd},
                              {&ppk_, size_t(n) * max_rank * kvd}, {&ppv_, size_t(n) * max_rank * kvd}})
      ATP_RETURN_IF_ERROR(buf->Grow(count));
    ATP_RETURN_IF_ERROR(ranks_.Grow(size_t(n)));
    cuda::BlockBases(first, rest, n, B, s_.d_model, p_.rank, p_.tau, u_.get(), ranks_.get(), nullptr);
    // The block's rows as the CPU reads them back: f32 of the stored (rounded) values.
    cuda::LoadRowsF32(k_.rows(), b0 * B - phys0_, int64_t(n) * B, kb_.get(), nullptr);
    cuda::LoadRowsF32(v_.rows(), b0 * B - phys0_, int64_t(n) * B, vb_.get(), nullptr);
    cuda::PrincipalRows(u_.get(), ranks_.get(), n, B, max_rank, kb_.get(), vb_.get(), kvd, ppk_.get(), ppv_.get(), nullptr);
    std::vector<int32_t> ranks(size_t(n), max_rank);
    if (p_.tau > 0)  // the ranks came from the data: the host needs them for the row counts
      ATP_CUDA_RETURN(cudaMemcpy(ranks.data(), ranks_.get(), size_t(n) * sizeof(int32_t), cudaMemcpyDeviceToHost));
    int64_t rows = 0;
    const size_t old = pre_end_host_.size();
    for (int32_t r : ranks) pre_end_host_.push_back(int32_t(principal_ + (rows += r)));
    ATP_RETURN_IF_ERROR(pk_.Reserve(principal_ + rows, principal_));
    ATP_RETURN_IF_ERROR(pv_.Reserve(principal_ + rows, principal_));
    cuda::StoreKv(pk_.rows(), pv_.rows(), principal_, ppk_.get(), ppv_.get(), rows, nullptr);
    principal_ += rows;
    if (pre_end_.size() < pre_end_host_.size()) {  // grow by doubling, keeping the ends so far
      DeviceArray<int32_t> next;
      ATP_RETURN_IF_ERROR(next.Grow(std::max<size_t>(2 * pre_end_host_.size(), 256)));
      if (old > 0) ATP_CUDA_RETURN(cudaMemcpy(next.get(), pre_end_.get(), old * sizeof(int32_t), cudaMemcpyDeviceToDevice));
      pre_end_ = std::move(next);
    }
    ATP_CUDA_RETURN(cudaMemcpy(pre_end_.get() + old, pre_end_host_.data() + old, size_t(n) * sizeof(int32_t),
                               cudaMemcpyHostToDevice));
    return cuda::LastLaunch("atp compress");
  }

  KvShape s_;
  Params p_;
  int64_t len_ = 0;
  int64_t exact_begin_ = 0;  // first position some future query sees exactly
  int64_t phys0_ = 0;        // position of row 0 of k_ and v_ (<= exact_begin_)
  cuda::RowBuffer k_, v_;    // exact rows
  cuda::RowBuffer pk_, pv_;  // principal rows, all KV heads per row (one U serves every head)
  int64_t principal_ = 0;
  std::vector<int32_t> pre_end_host_;  // principal rows standing for blocks 0..b
  DeviceArray<int32_t> pre_end_;
  DeviceArray<float> x_fill_;  // (B, d_model): X of the filling block
  DeviceArray<float> u_, kb_, vb_, ppk_, ppv_, ws_;  // scratch of compression and decode
  DeviceArray<int32_t> ranks_;
  DeviceArray<float> stage_k_, stage_v_, stage_x_, stage_q_, stage_o_;  // host-pointer staging (tests)
  cuda::PointerKind kind_k_, kind_v_, kind_x_, kind_q_, kind_o_;
};

class CudaAtpFactory : public KvPolicyFactory {
 public:
  CudaAtpFactory(const Params& p, std::string describe) : p_(p), describe_(std::move(describe)) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<CudaAtpPolicy>(s, p_); }
  Status CheckShape(const KvShape& s) const override {
    if (s.d_model < p_.block)
      return Status::Unsupported("cuda atp: block=" + std::to_string(p_.block) + " is wider than d_model " +
                                 std::to_string(s.d_model) + " (the GPU bases need d_model >= block)");
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, p_.fmt);
  }
  std::string Describe() const override { return describe_; }

 private:
  Params p_;
  std::string describe_;
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaAtpFactory(const PolicySpec& canon, const std::string& describe) {
  ATP_ASSIGN_OR_RETURN(std::string basis, canon.Choice("basis", "input", {"input", "key"}));
  ATP_ASSIGN_OR_RETURN(std::string proj, canon.Choice("proj", "dense", {"dense", "lowrank"}));
  Params p;
  ATP_ASSIGN_OR_RETURN(p.block, canon.Int("block", 64, 1, 1 << 16));
  if (basis != "input" || proj != "dense" || p.block > cuda::kMaxBasisBlock)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels; --device cuda supports atp with "
                               "basis=input, proj=dense and block <= " + std::to_string(cuda::kMaxBasisBlock));
  ATP_ASSIGN_OR_RETURN(p.rank, canon.Int("rank", 16, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.tau, canon.Float("tau", 0, 0, 1));
  ATP_ASSIGN_OR_RETURN(p.window, canon.Int("window", p.block, 0, 1 << 24));
  ATP_ASSIGN_OR_RETURN(DType dt, canon.Dtype("dtype", DType::kF32));
  p.fmt = dt == DType::kF32 ? KvFormat::kF32 : dt == DType::kF16 ? KvFormat::kF16 : KvFormat::kBF16;
  return std::shared_ptr<KvPolicyFactory>(std::make_shared<CudaAtpFactory>(p, describe));
}

}  // namespace atp
