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

DeviceRows RowBuffer::rows() const {
  const int64_t eb = TokenElemBytes(f_, dim_, n_kv_);
  return {f_, buf_.get(), IsMx(f_) ? buf_.get() + cap_ * eb : nullptr, dim_, n_kv_};
}

}  // namespace atp::cuda
