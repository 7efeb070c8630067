// Programmatic dependent launch (sm_90): a kernel launched with LaunchAfter's attribute may start
// while the kernel before it in the stream is still running, once that one has called LetNextStart.
// It must call WaitForPrevious before it reads anything earlier kernels wrote and before it writes
// anything they might still read; work before that point may only touch data no kernel writes
// (weights). WaitForPrevious returns once the previous grid has completed and its writes are
// visible, so the stream's order holds for everything after it. Both are no-ops when the kernel was
// launched without the attribute, or on older GPUs.
#pragma once
#include <cuda_runtime.h>

namespace atp::cuda {

__device__ __forceinline__ void WaitForPrevious() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
#endif
}

__device__ __forceinline__ void LetNextStart() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

// Launches kernel<<<grid, block, smem, s>>>(args...) allowed to overlap the previous kernel's tail.
template <typename... Params, typename... Args>
void LaunchAfter(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  cudaLaunchKernelEx(&cfg, kernel, Params(args)...);
}

}  // namespace atp::cuda
