// KV policies whose rows live in GPU memory (cuda/backend.h): every token's K and V rows in one
// form, dense or MX, the GPU twin of `dense` and of `mx` alone (kv/composite.h's codec policy).
// They accept device or host pointers; host buffers are staged, which only tests should do.
#include <algorithm>
#include <cmath>

#include "cuda/attention.h"
#include "cuda/backend.h"
#include "cuda/check.h"
#include "kv/policy_spec.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::DeviceRows;
using cuda::KvFormat;

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

bool PointerKind::Query(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();  // a plain host pointer may report an error on old drivers; it is not sticky
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

int SmCount() {
  static const int n = [] {
    int dev = 0, v = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
    return std::max(v, 1);
  }();
  return n;
}

// f32 data at p, on the device: p itself, or a copy of n floats into `stage`.
const float* Staged(const float* p, size_t n, PointerKind* kind, DeviceArray<float>* stage) {
  if (kind->OnDevice(p)) return p;
  if (!stage->Grow(n).ok()) return nullptr;
  cudaMemcpy(stage->get(), p, n * sizeof(float), cudaMemcpyHostToDevice);
  return stage->get();
}

// K or V rows of one layer, grown by doubling so that appends cost amortized O(1) copies.
class RowBuffer {
 public:
  RowBuffer(KvFormat f, int dim, int n_kv) : f_(f), dim_(dim), n_kv_(n_kv) {}
  Status Reserve(int64_t tokens, int64_t keep) {
    if (tokens <= cap_) return Status::Ok();
    const int64_t cap = std::max<int64_t>(tokens, std::max<int64_t>(2 * cap_, 256));
    const int64_t eb = cuda::TokenElemBytes(f_, dim_, n_kv_), sb = cuda::TokenScaleBytes(f_, dim_, n_kv_);
    DeviceArray<uint8_t> next;
    ATP_RETURN_IF_ERROR(next.Grow(size_t(cap * (eb + sb))));
    if (keep > 0) {
      ATP_CUDA_RETURN(cudaMemcpy(next.get(), buf_.get(), size_t(keep * eb), cudaMemcpyDeviceToDevice));
      if (sb) ATP_CUDA_RETURN(cudaMemcpy(next.get() + cap * eb, buf_.get() + cap_ * eb, size_t(keep * sb),
                                         cudaMemcpyDeviceToDevice));
    }
    buf_ = std::move(next);
    cap_ = cap;
    return Status::Ok();
  }
  DeviceRows rows() const {
    const int64_t eb = cuda::TokenElemBytes(f_, dim_, n_kv_);
    return {f_, buf_.get(), cuda::IsMx(f_) ? buf_.get() + cap_ * eb : nullptr, dim_, n_kv_};
  }
  int64_t TokenBytes() const { return cuda::TokenElemBytes(f_, dim_, n_kv_) + cuda::TokenScaleBytes(f_, dim_, n_kv_); }

 private:
  KvFormat f_;
  int dim_, n_kv_;
  int64_t cap_ = 0;
  DeviceArray<uint8_t> buf_;  // (cap_, elem bytes) then (cap_, scale bytes)
};

class CudaRowsPolicy : public KvPolicy {
 public:
  CudaRowsPolicy(const KvShape& s, KvFormat f)
      : shape_(s), k_(f, s.head_dim, s.n_kv_heads), v_(f, s.head_dim, s.n_kv_heads) {}

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    if (positions[0] != len_)
      return Status::InvalidArgument("kv policy: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(len_) + " tokens");
    const int64_t T = int64_t(positions.size()), n = T * shape_.kv_dim();
    ATP_RETURN_IF_ERROR(k_.Reserve(len_ + T, len_));
    ATP_RETURN_IF_ERROR(v_.Reserve(len_ + T, len_));
    const float* dk = Staged(K, size_t(n), &kind_k_, &stage_k_);
    const float* dv = Staged(V, size_t(n), &kind_v_, &stage_v_);
    if (!dk || !dv) return Status::ResourceExhausted("cuda kv policy: cannot stage appended rows");
    cuda::StoreKv(k_.rows(), v_.rows(), len_, dk, dv, T, nullptr);
    ATP_RETURN_IF_ERROR(cuda::LastLaunch("kv append"));
    len_ += T;
    return Status::Ok();
  }

  // Positions must be contiguous (p0, p0 + 1, ...), as every ForwardItem's are.
  void Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    if (positions.empty()) return;
    const int64_t T = int64_t(positions.size()), start = positions[0];
    const size_t nq = size_t(T) * size_t(shape_.q_dim());
    const cuda::AttnShape a{shape_.n_heads, shape_.n_kv_heads, shape_.head_dim};
    const bool host_out = !kind_o_.OnDevice(O);
    const float* dq = Staged(Q, nq, &kind_q_, &stage_q_);
    if (host_out) (void)stage_o_.Grow(nq);
    (void)ws_.Grow(size_t(cuda::AttendWorkspaceFloats(a, start + T, SmCount())));
    cuda::Attend(a, k_.rows(), v_.rows(), dq, T, start, host_out ? stage_o_.get() : O, ws_.get(), SmCount(), nullptr);
    if (host_out) cudaMemcpy(O, stage_o_.get(), nq * sizeof(float), cudaMemcpyDeviceToHost);
  }

  size_t Bytes() const override { return size_t(len_ * (k_.TokenBytes() + v_.TokenBytes())); }
  int64_t Length() const override { return len_; }

 private:
  KvShape shape_;
  int64_t len_ = 0;
  RowBuffer k_, v_;
  DeviceArray<float> ws_;  // decode split partials
  DeviceArray<float> stage_k_, stage_v_, stage_q_, stage_o_;  // host-pointer staging (tests)
  PointerKind kind_k_, kind_v_, kind_q_, kind_o_;
};

class CudaRowsFactory : public KvPolicyFactory {
 public:
  CudaRowsFactory(KvFormat f, std::string describe) : f_(f), describe_(std::move(describe)) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<CudaRowsPolicy>(s, f_); }
  Status CheckShape(const KvShape& s) const override {
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, f_);
  }
  std::string Describe() const override { return describe_; }

 private:
  KvFormat f_;
  std::string describe_;
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKvFactory(const std::string& spec, const std::string& model_dir) {
  // The CPU registry validates the string and gives its canonical form; the GPU reads that form.
  ATP_ASSIGN_OR_RETURN(auto cpu, ParseKvPolicy(spec, model_dir));
  const std::string canon = cpu->Describe();
  ATP_ASSIGN_OR_RETURN(PolicySpec ps, PolicySpec::Parse(canon));
  Result<KvFormat> f = Status::Unsupported("kv policy '" + canon +
                                           "' has no CUDA kernels yet; --device cuda supports dense:dtype=f32|f16|bf16 "
                                           "and mx:fmt=fp8_e4m3|fp4");
  if (ps.name() == "dense") {
    ATP_ASSIGN_OR_RETURN(DType dt, ps.Dtype("dtype", DType::kF32));
    f = dt == DType::kF32 ? KvFormat::kF32 : dt == DType::kF16 ? KvFormat::kF16 : KvFormat::kBF16;
  } else if (canon == "mx:fmt=fp8_e4m3") {
    f = KvFormat::kMxFp8E4M3;
  } else if (canon == "mx:fmt=fp4") {
    f = KvFormat::kMxFp4;
  }
  if (!f.ok()) return f.status();
  return std::shared_ptr<KvPolicyFactory>(std::make_shared<CudaRowsFactory>(f.value(), canon));
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
