// KV policies whose rows live in GPU memory (cuda/backend.h): every token's K and V rows in one
// form, dense or MX, the GPU twin of `dense` and of `mx` alone (kv/composite.h's codec policy); and
// calibrated `lowrank`, whose coefficient rows are rows of width r in any of those forms (or KIVI's),
// between per-head changes of basis; `atp`, `kivi`, `streaming`, `h2o`/`snapkv` and online `lowrank`
// live in cuda/atp_policy.cpp, cuda/kivi_policy.cpp, cuda/streaming_policy.cpp, cuda/evict_policy.cpp
// and cuda/lowrank_policy.cpp. They accept device or host pointers; host buffers are staged, which
// only tests should do. The rows policy (like atp, kivi, streaming, h2o and snapkv) is a
// cuda::DevicePolicy, whose decode steps the forward pass batches; calibrated lowrank is not (its
// queries and outputs change basis per item) and runs per item.
#include <algorithm>
#include <cmath>

#include "cuda/atp_policy.h"
#include "cuda/attention.h"
#include "cuda/backend.h"
#include "cuda/check.h"
#include "cuda/kivi_policy.h"
#include "cuda/lowrank_policy.h"
#include "cuda/device_policy.h"
#include "cuda/evict_policy.h"
#include "cuda/ops.h"
#include "cuda/streaming_policy.h"
#include "kv/lowrank_policy.h"
#include "kv/policy_config.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::DeviceInput;
using cuda::DeviceOutput;
using cuda::KvFormat;
using cuda::RowBuffer;

class CudaRowsPolicy : public cuda::DevicePolicy {
 public:
  using Params = KvFormat;  // the rows' form
  CudaRowsPolicy(const KvShape& s, KvFormat f)
      : DevicePolicy(s, "kv"), k_(f, s.head_dim, s.n_kv_heads), v_(f, s.head_dim, s.n_kv_heads) {}
  static Status CheckShape(const KvShape& s, KvFormat f) {
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, f);
  }

  size_t Bytes() const override { return size_t(Length() * (k_.TokenBytes() + v_.TokenBytes())); }
  bool ReadsInput() const override { return false; }

 private:
  // Room for T tokens from position first (= Length()), stored at rows first .. first + T - 1.
  Status Reserve(int64_t first, int64_t T, bool, std::vector<cuda::RowStore>* stores) override {
    ATP_RETURN_IF_ERROR(k_.Reserve(first + T, first));
    ATP_RETURN_IF_ERROR(v_.Reserve(first + T, first));
    stores->push_back({k_.rows(), v_.rows(), first, T});
    return Status::Ok();
  }
  // What a query at `last` sees: every row up to it.
  cuda::DecodeQuery View(int64_t last) override {
    cuda::DecodeQuery q;
    q.k = k_.rows(), q.v = v_.rows(), q.pos = last;
    return q;
  }

  RowBuffer k_, v_;
};

// `lowrank:rk=R,rv=R,mode=calib` (kv/lowrank_policy.h): each token keeps c = k P_k and e = v P_v (R per
// KV head) as rows of an inner rows policy of head_dim R, in the form the CPU keeps them (dtype=, or
// the codec of `lowrank+B`: mx, nvfp4 or kivi), the GPU's policy of that form (`inner`); a query
// becomes q P_k, scaled by sqrt(R / head_dim) because the inner kernels divide scores by sqrt(R) where
// the model means sqrt(head_dim), and the output (sum_j a_j e_j) P_v^T is reconstructed once per
// query head.
class CudaLowRankPolicy : public KvPolicy {
 public:
  // pk, pv: this layer's bases (n_kv, head_dim, R) row-major, uploaded at the first Append; inner: the
  // coefficient rows' policy, for layers of head_dim R.
  CudaLowRankPolicy(const KvShape& s, int r, std::vector<float> pk, std::vector<float> pv, std::unique_ptr<KvPolicy> inner)
      : s_(s), r_(r), pk_host_(std::move(pk)), pv_host_(std::move(pv)), inner_(std::move(inner)) {}

  Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return Status::Ok();
    if (!pk_.get()) {
      ATP_RETURN_IF_ERROR(pk_.Grow(pk_host_.size()));
      ATP_RETURN_IF_ERROR(pv_.Grow(pv_host_.size()));
      ATP_CUDA_RETURN(cudaMemcpy(pk_.get(), pk_host_.data(), pk_host_.size() * sizeof(float), cudaMemcpyHostToDevice));
      ATP_CUDA_RETURN(cudaMemcpy(pv_.get(), pv_host_.data(), pv_host_.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    const size_t n = size_t(T) * size_t(s_.kv_dim()), nc = size_t(T) * size_t(s_.n_kv_heads) * size_t(r_);
    const float* dk = k_in_.Get(K, n);
    const float* dv = v_in_.Get(V, n);
    if (!dk || !dv || !c_.Grow(nc).ok() || !e_.Grow(nc).ok())
      return Status::ResourceExhausted("cuda lowrank policy: cannot stage appended rows");
    const int hd = s_.head_dim;
    cuda::ProjectHeads(dk, T, s_.n_kv_heads, hd, pk_.get(), 1, r_, r_, 1, 1.f, c_.get(), nullptr);
    cuda::ProjectHeads(dv, T, s_.n_kv_heads, hd, pv_.get(), 1, r_, r_, 1, 1.f, e_.get(), nullptr);
    ATP_RETURN_IF_ERROR(cuda::LastLaunch("lowrank append"));
    return inner_->Append(positions, X, c_.get(), e_.get());
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int64_t T = int64_t(positions.size());
    if (T == 0) return Status::Ok();
    const int hd = s_.head_dim, group = s_.n_heads / s_.n_kv_heads;
    const size_t nq = size_t(T) * size_t(s_.q_dim()), nr = size_t(T) * size_t(s_.n_heads) * size_t(r_);
    const float* dq = q_in_.Get(Q, nq);
    float* o = o_out_.Get(O, nq);
    if (!dq || !o) return Status::ResourceExhausted("GPU lowrank attention: staging the queries or the output failed");
    ATP_RETURN_IF_ERROR(qr_.Grow(nr));
    ATP_RETURN_IF_ERROR(or_.Grow(nr));
    cuda::ProjectHeads(dq, T, s_.n_heads, hd, pk_.get(), group, r_, r_, 1, std::sqrt(float(r_) / float(hd)), qr_.get(),
                       nullptr);
    ATP_RETURN_IF_ERROR(inner_->Attend(positions, qr_.get(), or_.get()));
    cuda::ProjectHeads(or_.get(), T, s_.n_heads, r_, pv_.get(), group, hd, 1, r_, 1.f, o, nullptr);
    ATP_RETURN_IF_ERROR(cuda::LastLaunch("lowrank attention"));
    o_out_.Finish(O, nq);
    return Status::Ok();
  }

  // No Update: the CPU's calibrated lowrank trims its coefficient rows (KIVI's exact copies of packed
  // groups) only at its next Append, and the inner policy's Reserve releases the same rows then, so
  // Bytes() agrees at every point; forwarding Update would release them a step sooner than the CPU.
  size_t Bytes() const override { return inner_->Bytes(); }  // calibrated bases belong to the model, as on the CPU
  int64_t Length() const override { return inner_->Length(); }
  bool ReadsInput() const override { return false; }

 private:
  KvShape s_;
  int r_;
  std::vector<float> pk_host_, pv_host_;
  DeviceArray<float> pk_, pv_;
  std::unique_ptr<KvPolicy> inner_;
  DeviceArray<float> c_, e_, qr_, or_;  // coefficients, reduced queries and outputs
  DeviceInput k_in_, v_in_, q_in_;
  DeviceOutput o_out_;
};

class CudaLowRankFactory : public KvPolicyFactory {
 public:
  // rows: the GPU's policy of the coefficient rows' form.
  CudaLowRankFactory(std::shared_ptr<const KvBasis> basis, int r, std::shared_ptr<KvPolicyFactory> rows,
                     std::string describe)
      : basis_(std::move(basis)), r_(r), rows_(std::move(rows)), describe_(std::move(describe)) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override {
    return std::make_unique<CudaLowRankPolicy>(s, r_, Columns(basis_->k[size_t(s.layer)], s),
                                               Columns(basis_->v[size_t(s.layer)], s), rows_->Create(Inner(s)));
  }
  Status CheckShape(const KvShape& s) const override {
    if (s.layer >= basis_->layers || s.n_kv_heads != basis_->kv_heads || s.head_dim != basis_->head_dim)
      return Status::InvalidArgument("cuda lowrank: the basis file does not match layer " + std::to_string(s.layer) +
                                     " (" + std::to_string(s.n_kv_heads) + " KV heads x head_dim " +
                                     std::to_string(s.head_dim) + ")");
    return rows_->CheckShape(Inner(s));
  }
  std::string Describe() const override { return describe_; }

 private:
  // The coefficient rows' layer: head_dim R.
  KvShape Inner(KvShape s) const {
    s.head_dim = r_;
    return s;
  }
  // The first r_ columns of each KV head's (head_dim x head_dim) basis: (n_kv, head_dim, r_).
  std::vector<float> Columns(const std::vector<float>& full, const KvShape& s) const {
    const size_t d = size_t(s.head_dim);
    std::vector<float> out;
    for (int h = 0; h < s.n_kv_heads; ++h) {
      const auto head = FirstBasisColumns(full.data() + size_t(h) * d * d, int(d), r_);
      out.insert(out.end(), head.begin(), head.end());
    }
    return out;
  }
  std::shared_ptr<const KvBasis> basis_;
  int r_;
  std::shared_ptr<KvPolicyFactory> rows_;
  std::string describe_;
};

// The GPU form of exact or MX rows, or an error naming `describe` (the policy string) and what is supported.
Result<KvFormat> RowsFormat(const RowForm& form, const std::string& describe, const std::string& supported) {
  if (auto* e = std::get_if<ExactForm>(&form)) return cuda::ExactFormat(e->dtype);
  if (auto* m = std::get_if<MxForm>(&form)) return cuda::MxRowsFormat(m->fmt);
  return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels yet; " + supported);
}

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKvFactory(const KvPolicyConfig& config) {
  const std::string canon = config.Describe();
  const std::string supported =
      "--device cuda supports dense:dtype=f32|f16|bf16, mx (every format), atp (proj=dense, block <= "
      "64; keep= below block, residual=kivi2|kivi4|kivi8|mx_FMT and rope=pre too), kivi alone, lowrank:rk=R,rv=R (calibrated, R = 16, 32, 64 or 128; coefficients in any dtype, +mx or +kivi), lowrank mode=online (f32) and "
      "streaming, h2o and snapkv alone or +dense:dtype=... or +mx:fmt=...";
  if (auto* p = std::get_if<AtpParams>(&config.params)) return MakeCudaAtpFactory(*p, canon);
  if (auto* p = std::get_if<RowsParams>(&config.params)) {
    if (auto* k = std::get_if<KiviParams>(&p->form)) return MakeCudaKiviFactory(*k, canon);
    ATP_ASSIGN_OR_RETURN(KvFormat rows, RowsFormat(p->form, canon, supported));
    return cuda::MakeDevicePolicyFactory<CudaRowsPolicy>(rows, canon);
  }
  if (auto* p = std::get_if<EvictParams>(&config.params)) {
    ATP_ASSIGN_OR_RETURN(KvFormat rows, RowsFormat(p->codec.value_or(ExactForm{}), canon, supported));
    if (p->kind == EvictParams::Kind::kStreaming) return MakeCudaStreamingFactory(*p, rows, canon);
    return MakeCudaEvictFactory(*p, rows, canon);
  }
  const LowRankParams& p = std::get<LowRankParams>(config.params);
  if (p.online) return MakeCudaOnlineLowRankFactory(p, canon);
  if (p.rk != p.rv || (p.rk != 16 && p.rk != 32 && p.rk != 64 && p.rk != 128))
    return Status::Unsupported("kv policy '" + canon + "' has no CUDA kernels; " + supported);
  KvPolicyConfig rows;
  rows.params = RowsParams{p.codec.value_or(ExactForm{p.dtype})};
  ATP_ASSIGN_OR_RETURN(std::shared_ptr<KvPolicyFactory> inner, MakeCudaKvFactory(rows));
  return std::shared_ptr<KvPolicyFactory>(std::make_shared<CudaLowRankFactory>(p.basis, p.rk, std::move(inner), canon));
}

Result<std::shared_ptr<KvPolicyFactory>> ParseCudaKvPolicy(const std::string& spec, const std::string& model_dir) {
  ATP_ASSIGN_OR_RETURN(KvPolicyConfig config, ParseKvConfig(spec, model_dir));
  return MakeCudaKvFactory(config);
}

Status CudaDeviceStatus() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return Status::Unsupported(std::string("no usable CUDA device: ") + cudaGetErrorString(e));
  }
  if (n == 0) return Status::Unsupported("no CUDA device found");
  return Status::Ok();
}

}  // namespace atp
