// `lowrank:mode=online` on the GPU. Tokens stay exact rows (f32, all KV heads per row) until their
// block of B completes; then each KV head's block gets its own bases and coefficients by the rule the
// CPU policy uses, the same code (kv/lowrank_policy.h's OnlineBlockBases, run on the host over the
// block's rows read back: one synchronizing copy per completed block, every B tokens), and queries from
// position (b + 1) B on read block b only through them. What is kept is what the CPU keeps (Bytes()
// agrees): the exact rows from the first block some future query sees exactly, per completed block and
// KV head P_k (d, rk) and P_v^T (rv, d), per compressed token and KV head rk + rv coefficients, all f32.
// A query reads the compressed tokens rebuilt (k P_k P_k^T, v P_v P_v^T: cuda/lowrank_rows.h) into the
// thread's scratch (cuda::ThreadRebuiltRows) as principal rows, B per block, through the same
// visibility and attention kernels as atp (block = B, window = 0); so its decode steps stay on the
// per-item path.
#include "cuda/lowrank_policy.h"

#include <vector>

#include "cuda/device_policy.h"
#include "cuda/lowrank_rows.h"
#include "kv/lowrank_policy.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::KvFormat;

class CudaOnlineLowRankPolicy : public cuda::DevicePolicy {
 public:
  struct Params {
    int block = 64, rk = 16, rv = 32;
  };
  CudaOnlineLowRankPolicy(const KvShape& s, const Params& p)
      : DevicePolicy(s, "lowrank"), p_(p), exact_(KvFormat::kF32, s.head_dim, s.n_kv_heads) {}
  static Status CheckShape(const KvShape& s, const Params& p) {
    if (p.rk > s.head_dim || p.rv > s.head_dim)
      return Status::InvalidArgument("kv policy 'lowrank': rk and rv must be <= head_dim " + std::to_string(s.head_dim));
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, KvFormat::kF32);
  }

  size_t Bytes() const override {
    const int64_t per_head = int64_t(p_.rk + p_.rv) * int64_t(sizeof(float)), kv = shape().n_kv_heads;
    return size_t(exact_.Bytes(Length()) + blocks_ * kv * per_head * (p_.block + shape().head_dim));
  }
  Status Update() override {  // as the CPU policy: no later query reads completed blocks' exact rows
    exact_.Release(Length() / p_.block * p_.block);
    return Status::Ok();
  }
  bool ReadsInput() const override { return false; }
  bool Batches() const override { return false; }

 private:
  // Room for T exact rows at position first; no query from first on sees blocks below first's exactly.
  Status Reserve(int64_t first, int64_t T, bool, std::vector<cuda::RowStore>* stores) override {
    ATP_ASSIGN_OR_RETURN(const int64_t row, exact_.Room(first, first / p_.block * p_.block, T, [] {}));
    stores->push_back({exact_.k(), exact_.v(), row, T});
    return Status::Ok();
  }

  // The blocks the T stored tokens complete: their rows to the host, OnlineBlockBases per KV head,
  // bases and coefficients back.
  Status Finish(int64_t T, const float*, bool) override {
    const int B = p_.block, d = shape().head_dim, kv = shape().n_kv_heads, kvd = shape().kv_dim();
    const int64_t complete = (Length() + T) / B - blocks_;
    if (complete <= 0) return Status::Ok();
    const int64_t blocks = blocks_ + complete;
    const size_t f = sizeof(float);
    ATP_RETURN_IF_ERROR(cuda::GrowKeeping(&pk_, size_t(blocks * kv * d * p_.rk) * f, size_t(blocks_ * kv * d * p_.rk) * f));
    ATP_RETURN_IF_ERROR(cuda::GrowKeeping(&pvt_, size_t(blocks * kv * d * p_.rv) * f, size_t(blocks_ * kv * d * p_.rv) * f));
    ATP_RETURN_IF_ERROR(cuda::GrowKeeping(&ck_, size_t(blocks * B * kv * p_.rk) * f, size_t(blocks_ * B * kv * p_.rk) * f));
    ATP_RETURN_IF_ERROR(cuda::GrowKeeping(&cv_, size_t(blocks * B * kv * p_.rv) * f, size_t(blocks_ * B * kv * p_.rv) * f));
    ATP_RETURN_IF_ERROR(rows_.Grow(size_t(2 * B * kvd)));
    std::vector<float> K(size_t(B) * kvd), V(K.size()), kh(size_t(B) * d), vh(kh.size());
    std::vector<float> pk(size_t(kv) * d * p_.rk), pvt(size_t(kv) * d * p_.rv), c(size_t(B) * p_.rk), e(size_t(B) * p_.rv);
    std::vector<float> ck(size_t(B) * kv * p_.rk), cv(size_t(B) * kv * p_.rv);
    for (int64_t b = blocks_; b < blocks; ++b) {
      cuda::LoadRowsF32(exact_.k(), b * B - exact_.first(), B, rows_.get(), nullptr);
      cuda::LoadRowsF32(exact_.v(), b * B - exact_.first(), B, rows_.get() + size_t(B) * kvd, nullptr);
      ATP_CUDA_RETURN(cudaMemcpy(K.data(), rows_.get(), K.size() * f, cudaMemcpyDeviceToHost));
      ATP_CUDA_RETURN(cudaMemcpy(V.data(), rows_.get() + size_t(B) * kvd, V.size() * f, cudaMemcpyDeviceToHost));
      for (int h = 0; h < kv; ++h) {
        for (int i = 0; i < B; ++i) {
          std::copy_n(&K[size_t(i) * kvd + size_t(h) * d], d, &kh[size_t(i) * d]);
          std::copy_n(&V[size_t(i) * kvd + size_t(h) * d], d, &vh[size_t(i) * d]);
        }
        ATP_RETURN_IF_ERROR(OnlineBlockBases(kh.data(), vh.data(), B, d, p_.rk, p_.rv, &pk[size_t(h) * d * p_.rk],
                                             &pvt[size_t(h) * d * p_.rv], c.data(), e.data()));
        for (int i = 0; i < B; ++i) {
          std::copy_n(&c[size_t(i) * p_.rk], p_.rk, &ck[(size_t(i) * kv + size_t(h)) * p_.rk]);
          std::copy_n(&e[size_t(i) * p_.rv], p_.rv, &cv[(size_t(i) * kv + size_t(h)) * p_.rv]);
        }
      }
      ATP_CUDA_RETURN(cudaMemcpy(Floats(pk_) + size_t(b) * pk.size(), pk.data(), pk.size() * f, cudaMemcpyHostToDevice));
      ATP_CUDA_RETURN(cudaMemcpy(Floats(pvt_) + size_t(b) * pvt.size(), pvt.data(), pvt.size() * f, cudaMemcpyHostToDevice));
      ATP_CUDA_RETURN(cudaMemcpy(Floats(ck_) + size_t(b) * ck.size(), ck.data(), ck.size() * f, cudaMemcpyHostToDevice));
      ATP_CUDA_RETURN(cudaMemcpy(Floats(cv_) + size_t(b) * cv.size(), cv.data(), cv.size() * f, cudaMemcpyHostToDevice));
    }
    blocks_ = blocks;
    return Status::Ok();
  }

  // The tokens of the blocks a query at `last` sees compressed, rebuilt into the thread's scratch.
  Status Prepare(int64_t last) override {
    const int64_t n = last / p_.block * p_.block;
    const size_t bytes = size_t(std::max<int64_t>(n, 1)) * size_t(shape().kv_dim()) * sizeof(float);
    cuda::RebuiltRows& out = cuda::ThreadRebuiltRows();
    ATP_RETURN_IF_ERROR(out.k.Grow(bytes));
    ATP_RETURN_IF_ERROR(out.v.Grow(bytes));
    cuda::RebuildLowRank(Floats(ck_), Floats(cv_), Floats(pk_), Floats(pvt_), n, p_.block, shape().n_kv_heads,
                         shape().head_dim, p_.rk, p_.rv, reinterpret_cast<float*>(out.k.get()),
                         reinterpret_cast<float*>(out.v.get()), nullptr);
    return cuda::LastLaunch("lowrank rebuild");
  }

  // What a query at `last` sees: the rebuilt tokens of blocks b with (b + 1) B <= last, then exact rows.
  cuda::DecodeQuery View(int64_t last) override {
    cuda::DecodeQuery q;
    q.k = exact_.k(), q.v = exact_.v(), q.pos = last;
    cuda::Visibility& vis = q.vis;
    vis.first = exact_.first(), vis.block = p_.block, vis.window = 0, vis.rows_per_block = p_.block;
    const cuda::RebuiltRows& r = cuda::ThreadRebuiltRows();
    vis.pk = {KvFormat::kF32, r.k.get(), nullptr, shape().head_dim, shape().n_kv_heads};
    vis.pv = {KvFormat::kF32, r.v.get(), nullptr, shape().head_dim, shape().n_kv_heads};
    vis.last_pre = last / p_.block * p_.block;
    return q;
  }

  static float* Floats(const DeviceArray<uint8_t>& a) { return reinterpret_cast<float*>(a.get()); }

  Params p_;
  cuda::ExactTail exact_;  // positions from the first block some future query sees exactly
  int64_t blocks_ = 0;     // completed blocks, each with bases and coefficients
  // Per block and KV head P_k (d, rk) and P_v^T (rv, d); per token and KV head rk and rv coefficients.
  DeviceArray<uint8_t> pk_, pvt_, ck_, cv_;
  DeviceArray<float> rows_;  // a block's K then V rows in f32, read back
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaOnlineLowRankFactory(const LowRankParams& p, const std::string& describe) {
  if (p.codec || p.dtype != DType::kF32)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels: --device cuda keeps lowrank "
                               "mode=online's rows in f32 (drop dtype=)");
  CudaOnlineLowRankPolicy::Params q;
  q.block = p.block, q.rk = p.rk, q.rv = p.rv;
  return cuda::MakeDevicePolicyFactory<CudaOnlineLowRankPolicy>(q, describe);
}

}  // namespace atp
