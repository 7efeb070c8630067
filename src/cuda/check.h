// Error plumbing and device memory ownership shared by the CUDA backend's host code: CUDA and
// cuBLAS return codes become Status, and DeviceArray owns one cudaMalloc'd buffer.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

#include "core/status.h"

namespace atp::cuda {

inline Status FromCuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Status::IOError(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}
// The launch error of the last kernel (bad configuration, missing image for this GPU).
inline Status LastLaunch(const char* what) { return FromCuda(cudaGetLastError(), what); }

// Multiprocessors of the current device (decode splits and persistent grids are sized by it).
inline int SmCount() {
  static const int n = [] {
    int dev = 0, v = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
    return v > 0 ? v : 1;
  }();
  return n;
}

#define ATP_CUDA_RETURN(expr) ATP_RETURN_IF_ERROR(::atp::cuda::FromCuda((expr), #expr))

// Owns count elements of T in device memory (uninitialized). Grow() keeps nothing: it is for
// scratch whose contents are rewritten by every call. Allocation and release are stream-ordered on
// the legacy default stream, which the forward pass and the policies run on: a buffer is released
// after the work queued there, without waiting for the whole device (cudaFree would, and so would
// stall a decode step behind ATP's background compression). Work on any other stream must be
// ordered before a release by its owner (cuda/atp_policy.cpp does, with an event).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  ~DeviceArray() { Free(); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      Free();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  // At least count elements; reallocates (contents lost) only when larger than held.
  Status Grow(size_t count) {
    if (count <= n_) return Status::Ok();
    Free();
    void* p = nullptr;
    ATP_RETURN_IF_ERROR(FromCuda(cudaMallocAsync(&p, count * sizeof(T), nullptr), "cudaMallocAsync"));
    p_ = static_cast<T*>(p);
    n_ = count;
    return Status::Ok();
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void Free() {
    if (p_) cudaFreeAsync(p_, nullptr);  // after every kernel queued on the legacy stream that reads it
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Owns count elements of T in page-locked host memory (cudaMallocHost), so that a copy from the device
// runs asynchronously with the host and is waited for later (an event). Grow() keeps nothing, as
// DeviceArray's; the caller makes sure no copy into the old buffer is pending when it grows.
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  ~PinnedArray() { Free(); }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;

  Status Grow(size_t count) {
    if (count <= n_) return Status::Ok();
    Free();
    void* p = nullptr;
    ATP_RETURN_IF_ERROR(FromCuda(cudaMallocHost(&p, std::max<size_t>(count, 64) * sizeof(T)), "cudaMallocHost"));
    p_ = static_cast<T*>(p);
    n_ = std::max<size_t>(count, 64);
    return Status::Ok();
  }
  T* get() const { return p_; }

 private:
  void Free() {
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace atp::cuda
