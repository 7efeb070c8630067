// The kernel behind tests/cuda_mma_check.h.
#include <cuda_bf16.h>

#include "cuda/check.h"
#include "cuda/mma.cuh"
#include "cuda_mma_check.h"

namespace atp::cuda {
namespace {

constexpr int kLd = 24;  // padded as the prefill kernel pads (16 + 8 elements)

// C fragments of a 16 x 16 product (two n8 tiles) to a row-major 16 x 16 array (layouts in mma.cuh).
__device__ void StoreC(const float (&c)[2][4], float* out, int lane) {
  for (int n = 0; n < 2; ++n)
    for (int e = 0; e < 4; ++e) out[(lane / 4 + 8 * (e / 2)) * 16 + 8 * n + 2 * (lane % 4) + e % 2] = c[n][e];
}

__global__ void MmaKernel(const float* a, const float* b, const float* c, float* ab_t, float* ab_n, float* abc) {
  __shared__ __align__(16) __nv_bfloat16 As[16 * kLd], Bk[16 * kLd], Bn[16 * kLd], Ck[16 * kLd];
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) {
    const int r = i / 16, col = i % 16;
    As[r * kLd + col] = __float2bfloat16_rn(a[i]);
    Bk[r * kLd + col] = __float2bfloat16_rn(b[i]);    // B[k][n] at row k
    Bn[col * kLd + r] = __float2bfloat16_rn(b[i]);    // B[k][n] at row n
    Ck[r * kLd + col] = __float2bfloat16_rn(c[i]);
  }
  __syncwarp();
  uint32_t af[4], bt[4], bn[4], cf[4];
  Ldsm4(af, As + LdsmAddrA(0, 0, kLd, lane));
  Ldsm4T(bt, Bk + LdsmAddrA(0, 0, kLd, lane));
  Ldsm4(bn, Bn + LdsmAddrBn(0, 0, kLd, lane));
  Ldsm4T(cf, Ck + LdsmAddrA(0, 0, kLd, lane));
  float dt[2][4] = {}, dn[2][4] = {}, d2[2][4] = {};
  Mma16816(dt[0], af, bt[0], bt[1]);
  Mma16816(dt[1], af, bt[2], bt[3]);
  Mma16816(dn[0], af, bn[0], bn[1]);
  Mma16816(dn[1], af, bn[2], bn[3]);
  const uint32_t pa[4] = {PackBf16(dt[0][0], dt[0][1]), PackBf16(dt[0][2], dt[0][3]), PackBf16(dt[1][0], dt[1][1]),
                          PackBf16(dt[1][2], dt[1][3])};
  Mma16816(d2[0], pa, cf[0], cf[1]);
  Mma16816(d2[1], pa, cf[2], cf[3]);
  StoreC(dt, ab_t, lane);
  StoreC(dn, ab_n, lane);
  StoreC(d2, abc, lane);
}

}  // namespace

Status MmaFragmentCheck(const float* a, const float* b, const float* c, float* ab_t, float* ab_n, float* abc) {
  DeviceArray<float> d;
  ATP_RETURN_IF_ERROR(d.Grow(6 * 256));
  ATP_CUDA_RETURN(cudaMemcpy(d.get(), a, 256 * sizeof(float), cudaMemcpyHostToDevice));
  ATP_CUDA_RETURN(cudaMemcpy(d.get() + 256, b, 256 * sizeof(float), cudaMemcpyHostToDevice));
  ATP_CUDA_RETURN(cudaMemcpy(d.get() + 512, c, 256 * sizeof(float), cudaMemcpyHostToDevice));
  MmaKernel<<<1, 32>>>(d.get(), d.get() + 256, d.get() + 512, d.get() + 768, d.get() + 1024, d.get() + 1280);
  ATP_RETURN_IF_ERROR(LastLaunch("MmaKernel"));
  ATP_CUDA_RETURN(cudaMemcpy(ab_t, d.get() + 768, 256 * sizeof(float), cudaMemcpyDeviceToHost));
  ATP_CUDA_RETURN(cudaMemcpy(ab_n, d.get() + 1024, 256 * sizeof(float), cudaMemcpyDeviceToHost));
  ATP_CUDA_RETURN(cudaMemcpy(abc, d.get() + 1280, 256 * sizeof(float), cudaMemcpyDeviceToHost));
  return Status::Ok();
}

}  // namespace atp::cuda
