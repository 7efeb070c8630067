#include "cuda/device_policy.h"

#include <algorithm>

namespace atp::cuda {

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

const float* Staged(const float* p, size_t n, PointerKind* kind, DeviceArray<float>* stage) {
  if (kind->OnDevice(p)) return p;
  if (!stage->Grow(n).ok()) return nullptr;
  cudaMemcpy(stage->get(), p, n * sizeof(float), cudaMemcpyHostToDevice);
  return stage->get();
}

Status RowBuffer::Move(int64_t cap, int64_t from, int64_t keep) {
  cap = std::max<int64_t>(cap, 256);
  const int64_t eb = TokenElemBytes(f_, dim_, n_kv_), sb = TokenScaleBytes(f_, dim_, n_kv_);
  DeviceArray<uint8_t> next;
  ATP_RETURN_IF_ERROR(next.Grow(size_t(cap * (eb + sb))));
  if (keep > 0) {
    ATP_CUDA_RETURN(cudaMemcpy(next.get(), buf_.get() + from * eb, size_t(keep * eb), cudaMemcpyDeviceToDevice));
    if (sb) ATP_CUDA_RETURN(cudaMemcpy(next.get() + cap * eb, buf_.get() + cap_ * eb + from * sb, size_t(keep * sb),
                                       cudaMemcpyDeviceToDevice));
  }
  buf_ = std::move(next);
  cap_ = cap;
  return Status::Ok();
}

Status ExactTail::Append(int64_t len, int64_t keep_from, const float* K, const float* V, int64_t T,
                         const std::function<void()>& before_move) {
  keep_from_ = std::max(keep_from_, keep_from);
  if (len + T - first_ > k_.capacity()) {  // full: move the rows still needed to the front
    before_move();
    const int64_t keep = len - keep_from_, from = keep_from_ - first_;
    ATP_RETURN_IF_ERROR(k_.Compact(from, keep, keep + T));
    ATP_RETURN_IF_ERROR(v_.Compact(from, keep, keep + T));
    first_ = keep_from_;
  }
  StoreKv(k_.rows(), v_.rows(), len - first_, K, V, T, nullptr);
  return LastLaunch("kv append");
}

void StagedAttention::Run(const KvShape& s, const DeviceRows& k, const DeviceRows& v, const Visibility& vis,
                          std::span<const int32_t> positions, int64_t seen, const float* Q, float* O) {
  const int64_t T = int64_t(positions.size());
  if (T == 0) return;
  const size_t nq = size_t(T) * size_t(s.q_dim());
  const AttnShape a{s.n_heads, s.n_kv_heads, s.head_dim};
  const bool host_out = !kind_o_.OnDevice(O);
  const float* dq = Staged(Q, nq, &kind_q_, &stage_q_);
  if (!dq || (host_out && !stage_o_.Grow(nq).ok())) return;
  if (!ws_.Grow(size_t(AttendWorkspaceFloats(a, seen, SmCount()))).ok()) return;
  float* o = host_out ? stage_o_.get() : O;
  Attend(a, k, v, vis, dq, T, positions[0], o, ws_.get(), SmCount(), nullptr);
  if (host_out) cudaMemcpy(O, o, nq * sizeof(float), cudaMemcpyDeviceToHost);
}

DeviceRows RowBuffer::rows() const {
  const int64_t eb = TokenElemBytes(f_, dim_, n_kv_);
  return {f_, buf_.get(), IsMx(f_) ? buf_.get() + cap_ * eb : nullptr, dim_, n_kv_};
}

}  // namespace atp::cuda
