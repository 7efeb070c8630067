// Which blocks a query sees compressed: the rule atp (and, on the GPU, KIVI's groups, StreamingLLM's
// window and online lowrank's blocks through cuda::Visibility) is defined by, written once for the host
// policies and the GPU's kernels (compiled by nvcc too, hence host and device).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ATP_HOST_DEVICE __host__ __device__
#else
#define ATP_HOST_DEVICE
#endif

namespace atp {

// nb(p): the blocks b of `block` positions with (b + 1) * block + window <= p, which a query at position
// p sees only in their compressed form (0 when block is 0). docs/design.md section 4.
inline ATP_HOST_DEVICE int64_t CompressedBlocks(int block, int window, int64_t p) {
  return block > 0 && p >= window ? (p - window) / block : 0;
}

}  // namespace atp
