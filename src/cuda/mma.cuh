// Warp-level bf16 tensor-core fragments (sm_80+): mma.sync.aligned.m16n8k16 with f32 accumulation,
// fed by ldmatrix from shared memory, and cp.async for global-to-shared copies. Layouts from the
// PTX ISA, "Warp Level Matrix Multiply-Accumulate Instructions": "Matrix Fragments for
// mma.m16n8k16 with floating point type" and "Warp-level matrix load instruction: ldmatrix".
//
// Within a warp, lane = 4 * g + t (g = lane / 4, the "groupID", 0..7; t = lane % 4, the
// "threadID_in_group"). Two bf16 share a 32-bit register, the lower column (or k) index in the low
// half. For D (16 x 8) = A (16 x 16) B (16 x 8) + C:
//   A: a[0] = A[g][2t, 2t+1]    a[1] = A[g+8][2t, 2t+1]    a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//   B: b[0] = B[2t, 2t+1][g]    b[1] = B[2t+8, 2t+9][g]
//   C, D: c[0], c[1] = C[g][2t], C[g][2t+1]    c[2], c[3] = C[g+8][2t], C[g+8][2t+1]
// ldmatrix.x4 loads four 8 x 8 b16 matrices; lanes 8i .. 8i+7 give the addresses of matrix i's
// eight rows (16 contiguous bytes each), and register i of lane 4g + t receives matrix i's row g,
// elements 2t, 2t+1; with .trans, its column g, elements (rows) 2t, 2t+1.
// Hence, for a 16 x 16 block at (r0, c0) of a row-major bf16 array, lane l pointing at
// row r0 + l % 16, column c0 + (l / 16) * 8 (LdsmAddrA):
//   - ldmatrix.x4 gives the A fragment (matrices: rows 0-7/8-15 by columns 0-7, then 8-15);
//   - ldmatrix.x4.trans of a block of B stored k-major (B[k][n] at row k, the 16 x 16 block is k 0-15
//     by n 0-15) gives the B fragments of two n8 tiles: {r[0], r[1]} for n 0-7, {r[2], r[3]} for n 8-15.
// And for B stored n-major (B[k][n] = M[n][k], rows n of a row-major M, as keys K are for S = Q K^T),
// lane l pointing at row r0 + l % 8 + (l / 16) * 8, column c0 + ((l / 8) % 2) * 8 (LdsmAddrBn),
// plain ldmatrix.x4 gives {r[0], r[1]} for n r0 .. r0+7 and {r[2], r[3]} for n r0+8 .. r0+15.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace atp::cuda {

// Element offsets (row-major, row stride ld elements) of the address lane l gives ldmatrix.x4 for
// the 16 x 16 block at (r0, c0): A operands and k-major B (with .trans), and n-major B.
__device__ __forceinline__ int LdsmAddrA(int r0, int c0, int ld, int lane) {
  return (r0 + lane % 16) * ld + c0 + (lane / 16) * 8;
}
__device__ __forceinline__ int LdsmAddrBn(int r0, int c0, int ld, int lane) {
  return (r0 + lane % 8 + (lane / 16) * 8) * ld + c0 + (lane / 8) % 2 * 8;
}

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void Ldsm4(uint32_t (&r)[4], const __nv_bfloat16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void Ldsm4T(uint32_t (&r)[4], const __nv_bfloat16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

// d += A B for one m16n8k16 step (layouts above).
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair (round to nearest even), x in the low half: one register of A or B.
__device__ __forceinline__ uint32_t PackBf16(float x, float y) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// 16 bytes from global to shared memory without a register stop (cp.async.cg: cached in L2 only);
// with valid false nothing is read and the 16 bytes are zeroed (src-size 0).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

}  // namespace atp::cuda
