// TF32 on mma.sync.m16n8k8, shared by the conv2d kernels that run on it (the halo forward and grad_input, the
// halo and pointwise weight gradients, and the GEMM's Tf32SyncMma): the rounding of an operand to TF32, the
// instruction, and where its fragments sit in a GEMM tile. The rounding and the placement compile on the host
// too, for tests/cuda_host.
#pragma once
#include <cstdint>
#include <cstring>

namespace pixelops::cuda::conv {

// TF32 rounding (to nearest, ties away from zero, as cvt.rna.tf32.f32) for the host emulation and the packer.
__host__ __device__ __forceinline__ float tf32_round(float v) {
#ifdef __CUDA_ARCH__
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
#else
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&v, &u, 4);
  return v;
#endif
}

// Where mma.m16n8k8's fragments sit in a BM x BN GEMM tile (the register layouts of the PTX ISA; lane (gq, tig) =
// (lane / 4, lane % 4)), for the GEMM's mma.sync product: eight warps as BM/32 (rows) x 256/BM (columns), as
// WmmaMma places them, warp w owning rows 32*(w % kWarpsM) + [0, 32) and columns kWarpN*(w / kWarpsM) +
// [0, kWarpN) as 2 x kNJ pieces of 16 x 8.
template <class TileT>
struct MmaSyncLayout {
  static constexpr int kWarpsM = TileT::BM / 32, kWarpsN = 8 / kWarpsM, kWarpN = TileT::BN / kWarpsN;
  static constexpr int kNJ = kWarpN / 8;
  // A register r of piece i at k step kk: the k and row of its value (As[k][row])
  __host__ __device__ static void a_at(int warp, int lane, int i, int kk, int r, int& k, int& row) {
    k = kk + lane % 4 + 4 * (r / 2);
    row = 32 * (warp % kWarpsM) + 16 * i + lane / 4 + 8 * (r % 2);
  }
  // B register r of piece j at k step kk: the k and column of its value (Bs[k][col])
  __host__ __device__ static void b_at(int warp, int lane, int j, int kk, int r, int& k, int& col) {
    k = kk + lane % 4 + 4 * r;
    col = kWarpN * (warp / kWarpsM) + 8 * j + lane / 4;
  }
  // accumulator register r of piece (i, j): its row and column in the tile
  __host__ __device__ static void c_at(int warp, int lane, int i, int j, int r, int& row, int& col) {
    row = 32 * (warp % kWarpsM) + 16 * i + lane / 4 + 8 * (r / 2);
    col = kWarpN * (warp / kWarpsM) + 8 * j + 2 * (lane % 4) + r % 2;
  }
};

#ifdef __CUDACC__
// d += a * b on the tensor cores (a: 16 x 8, b: 8 x 8, TF32 values; d: 16 x 8, float).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

}  // namespace pixelops::cuda::conv
