// The block-tiled implicit GEMM behind every conv2d kernel: a problem (conv2d_problems.cuh) says how to load
// its operand tiles and where each result goes; this file stages the tiles in shared memory and multiplies
// them, in fp32/fp64 SIMT or on tensor cores (TF32, float16, bfloat16; nvcuda::wmma, sm_80+; TF32 also on
// mma.sync directly: Tf32SyncMma).
#pragma once
#include <mma.h>

#include <type_traits>

#include "cuda/conv2d_mma.cuh"       // tf32_round, mma_tf32, MmaSyncLayout
#include "cuda/conv2d_problems.cuh"  // Src, ToRegisters
#include "cuda/conv2d_tile.cuh"
#include "cuda/cuda_utils.cuh"

namespace pixelops::cuda::conv {

// The tensor-core products' epilogue: their tile, left in shared memory (Cs, kLd floats a row), walked row by
// row, consecutive threads on consecutive columns (pixels, contiguous in y and grad_x), so that each warp's
// stores are coalesced: f(row, column, value).
template <class Tl, int kLd, class F>
__device__ __forceinline__ void walk_tile(const float (*Cs)[kLd], int tid, F&& f) {
  __syncthreads();
#pragma unroll 4
  for (int e = tid; e < Tl::BM * Tl::BN; e += kGemmThreads) f(e / Tl::BN, e % Tl::BN, Cs[e / Tl::BN][e % Tl::BN]);
}

// Tensor-core product of the staged tiles (nvcuda::wmma, sm_80+): TF32 for float (Stage float, fragments
// of precision::tf32, k = 8), or float16/bfloat16 (Stage = Elem, k = 16), accumulating in float. Eight warps
// as BM/32 (rows) x 256/BM (columns); each warp owns a 32-row piece of the tile as 2 x kFN 16x16 accumulators.
template <class StageT, class Elem, int kK, class TileT>
struct WmmaMma {
  using Stage = StageT;  // element type of the shared tiles
  using Tl = TileT;
  static constexpr int kWarpsM = Tl::BM / 32, kWarpsN = 8 / kWarpsM;  // warps along rows and columns
  static constexpr int kWarpN = Tl::BN / kWarpsN;                      // columns of one warp's piece
  static constexpr int kFM = 2, kFN = kWarpN / 16;                     // accumulators per warp
  static_assert(kFN >= 1 && kWarpN % 16 == 0, "warp piece");
  // Shared rows padded (wmma needs ldm to be a multiple of 16 bytes and 32-byte aligned tiles). A TF32 fragment
  // load reads 4 k-rows x 8 columns: with rows 8 floats past a multiple of 32 banks they fall in 32 distinct
  // banks, where a 4-float pad puts rows 0 and 1 (and 2 and 3) on the same ones, a 2-way conflict.
  static constexpr int kPad = std::is_same_v<Stage, float> ? 8 : 16 / int(sizeof(Stage));
  static constexpr int kLdA = Tl::BM + kPad, kLdB = Tl::BN + kPad;
  static constexpr int kLdC = Tl::BN + 4;
  // A value as the shared tiles hold it. TF32 operands are rounded here, once a value, rather than in every
  // fragment loaded from the tiles (each A value is loaded by 256/BM warps, each B value by BM/32: for the 64 x
  // 128 tile 32 conversions a thread a K step, against 12 here); the same values reach the MMAs.
  static __device__ __forceinline__ Stage stage(float v) {
    if constexpr (std::is_same_v<Elem, nvcuda::wmma::precision::tf32>) return nvcuda::wmma::__float_to_tf32(v);
    else if constexpr (std::is_same_v<Stage, float>) return v;
    else return from_float<Stage>(v);  // exact: the value was loaded from a Stage
  }
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, kK, float> c[kFM][kFN];
  __device__ WmmaMma() {
#pragma unroll
    for (int i = 0; i < kFM; ++i)
#pragma unroll
      for (int j = 0; j < kFN; ++j) nvcuda::wmma::fill_fragment(c[i][j], 0.0f);
  }
  __device__ void step(const Stage (*As)[kLdA], const Stage (*Bs)[kLdB], int tid) {
    using namespace nvcuda;
    const int warp = tid / 32, wm = warp % kWarpsM, wn = warp / kWarpsM;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += kK) {
      // A[m][k] sits at As[k][m]: column-major with leading dimension kLdA; B[k][n] at Bs[k][n]: row-major.
      wmma::fragment<wmma::matrix_a, 16, 16, kK, Elem, wmma::col_major> fa[kFM];
#pragma unroll
      for (int i = 0; i < kFM; ++i) {
        wmma::load_matrix_sync(fa[i], &As[kk][32 * wm + 16 * i], kLdA);  // (TF32: rounded by stage())
      }
#pragma unroll
      for (int j = 0; j < kFN; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, kK, Elem, wmma::row_major> fb;
        wmma::load_matrix_sync(fb, &Bs[kk][kWarpN * wn + 16 * j], kLdB);
#pragma unroll
        for (int i = 0; i < kFM; ++i) wmma::mma_sync(c[i][j], fa[i], fb, c[i][j]);
      }
    }
  }
  // Through shared memory (scratch: kScratch bytes, 32-byte aligned, free for the epilogue), then walk_tile.
  static constexpr size_t kScratch = sizeof(float) * Tl::BM * kLdC;
  template <class F> __device__ void finish(int tid, unsigned char* scratch, F&& f) {
    using namespace nvcuda;
    float (*Cs)[kLdC] = reinterpret_cast<float (*)[kLdC]>(scratch);
    const int warp = tid / 32, wm = warp % kWarpsM, wn = warp / kWarpsM;
#pragma unroll
    for (int i = 0; i < kFM; ++i)
#pragma unroll
      for (int j = 0; j < kFN; ++j)
        wmma::store_matrix_sync(&Cs[32 * wm + 16 * i][kWarpN * wn + 16 * j], c[i][j], kLdC,
                                wmma::mem_row_major);
    walk_tile<Tl>(Cs, tid, f);
  }
};
template <class Tl> using Tf32Mma = WmmaMma<float, nvcuda::wmma::precision::tf32, 8, Tl>;

// TF32 product of the staged tiles on mma.sync.m16n8k8 itself, by default (PIXELOPS_CONV_GEMM_MMA=0: WMMA's):
// the warps and their pieces as WmmaMma's (MmaSyncLayout), each fragment register read from the tiles with a
// 32-bit shared load, conflict-free in WmmaMma's padded rows. Through WMMA (SASS for sm_90 of the 64 x 128 TF32
// kernels) the fragment loads compiled to generic loads on 64-bit addresses (32 LD.E, and ST for the
// epilogue's store_matrix_sync), and the m16n16k8 products to 32 HMMA.1684 a K step where this takes 16
// HMMA.1688.
template <class TileT>
struct Tf32SyncMma {
  using Stage = float;
  using Tl = TileT;
  using L = MmaSyncLayout<Tl>;
  static constexpr int kLdA = Tl::BM + 8, kLdB = Tl::BN + 8, kLdC = Tl::BN + 4;
  static __device__ __forceinline__ float stage(float v) { return tf32_round(v); }  // once a value
  float acc[2][L::kNJ][4];
  __device__ Tf32SyncMma() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < L::kNJ; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
  }
  // Register r of fragment p of a tile (ld floats a row): the value at (k, index) = at(p, r).
  template <int P, int R, int kLd, class At>
  static __device__ __forceinline__ void gather(uint32_t (&frag)[P][R], const float (*tile)[kLd], At&& at) {
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        int k, index;
        at(p, r, k, index);
        frag[p][r] = __float_as_uint(tile[k][index]);
      }
  }
  __device__ __forceinline__ void step(const float (*As)[kLdA], const float (*Bs)[kLdB], int tid) {
    const int warp = tid / 32, lane = tid % 32;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 8) {
      uint32_t a[2][4], b[L::kNJ][2];
      gather(a, As, [&](int i, int r, int& k, int& row) { L::a_at(warp, lane, i, kk, r, k, row); });
      gather(b, Bs, [&](int j, int r, int& k, int& col) { L::b_at(warp, lane, j, kk, r, k, col); });
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < L::kNJ; ++j) mma_tf32(acc[i][j], a[i], b[j]);
    }
  }
  // As WmmaMma's: the tile through shared memory, then walked row by row.
  static constexpr size_t kScratch = sizeof(float) * Tl::BM * kLdC;
  template <class F> __device__ __forceinline__ void finish(int tid, unsigned char* scratch, F&& f) {
    float (*Cs)[kLdC] = reinterpret_cast<float (*)[kLdC]>(scratch);
    const int warp = tid / 32, lane = tid % 32;
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < L::kNJ; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          int row, col;
          L::c_at(warp, lane, i, j, r, row, col);
          Cs[row][col] = acc[i][j][r];
        }
    walk_tile<Tl>(Cs, tid, f);
  }
};
template <class H, class Tl> using HalfMma = WmmaMma<H, H, 16, Tl>;  // H: __half or __nv_bfloat16

// Grid: x over N tiles, y over M tiles, z over groups x K splits. Tiles of the next K step are fetched into
// registers while the current ones are multiplied. At most 128 registers a thread, so that two blocks share
// an SM (measured on an H200: grad_weight's 64 x 128 TF32 kernel otherwise took 170 and ran one block an SM).
//
// Measured on an H200 (2026-11-26) against two other ways to stage the tiles: copying each slot global ->
// shared by a 4-byte cp.async through a 3- or 4-stage ring was as fast or slower on every suite shape, fp32 and
// TF32 (up to 13% per forward + backward), once the loaders were cheap; two shared buffers with one barrier per
// K step were 5% slower on the forwards. So this is the one mechanism.
//
// gemm_block is one block's work: the tile at (blockIdx.x, blockIdx.y) of group and K split z_of() (read
// again where the row sums need it, rather than kept live through the loop: see there), for gemm_kernel (one
// problem a launch) and gemm_set_kernel (several).
template <class P, class Mma, class ZOf>
__device__ __forceinline__ void gemm_block(const P& p, ZOf&& z_of) {
  using A = typename P::Acc;
  using Tl = typename P::Tl;
  using SA = Slot<P::kFetchA, Tl::BM>;
  using SB = Slot<P::kFetchB, Tl::BN>;
  using Stage = typename Mma::Stage;
  __shared__ __align__(32) Stage As[kBK][Mma::kLdA];
  __shared__ __align__(32) Stage Bs[kBK][Mma::kLdB];
  __shared__ __align__(32) unsigned char scratch[Mma::kScratch > 0 ? Mma::kScratch : 32];
  const int tid = threadIdx.x;
  const int g = z_of() / p.splits, split = z_of() % p.splits;
  const int64_t m0 = int64_t(blockIdx.y) * Tl::BM, n0 = int64_t(blockIdx.x) * Tl::BN;
  const int64_t kbeg = int64_t(split) * p.kchunk;
  const int64_t kend = p.splits == 1 ? p.K : (kbeg + p.kchunk < p.K ? kbeg + p.kchunk : p.K);

  const typename P::Loader loader(p, g, m0, n0, tid);
  A ra[SA::kSlots], rb[SB::kSlots];
  ToRegisters<A, typename P::Elem> put{ra, rb};
  if (kbeg < kend) loader.fetch(p, kbeg, kend, tid, put);
  Mma mma;
  for (int64_t k0 = kbeg; k0 < kend; k0 += kBK) {
#pragma unroll
    for (int r = 0; r < SA::kSlots; ++r) As[SA::k(tid, r)][SA::mn(tid, r)] = Mma::stage(ra[r]);
#pragma unroll
    for (int r = 0; r < SB::kSlots; ++r) Bs[SB::k(tid, r)][SB::mn(tid, r)] = Mma::stage(rb[r]);
    __syncthreads();
    if (k0 + kBK < kend) loader.fetch(p, k0 + kBK, kend, tid, put);
    mma.step(As, Bs, tid);
    __syncthreads();
  }
  mma.finish(tid, scratch, [&](int i, int j, A v) {
    if (m0 + i < p.M && n0 + j < p.N) p.store(g, split, m0 + i, n0 + j, v);
  });
  // Row sums of A over the split's K (problems with kRowSums, where p.bias: grad_weight's grad_bias
  // column), once the accumulators are done with: the column tiles of a row tile and split each add up a share
  // of its rows (row_sum_plan, as the halo and pointwise weight gradients do), from A's values read again. The
  // block's place is worked out again from blockIdx: kept from the top, kbeg and the rest stayed live through
  // the loop and the float32 64 x 128 weight gradient spilled 24 bytes (ptxas).
  if constexpr (P::kRowSums) {
    if (p.bias) {
      const RowSumPlan r = row_sum_plan(int(blockIdx.x), int(gridDim.x), Tl::BM, kGemmThreads);
      if (r.rows) {
        const int gs = z_of() / p.splits, ss = z_of() % p.splits;
        const int64_t ms = int64_t(blockIdx.y) * Tl::BM, ks = int64_t(ss) * p.kchunk;
        const int64_t ke = p.splits == 1 ? p.K : (ks + p.kchunk < p.K ? ks + p.kchunk : p.K);
        const A v = row_sum_part<A>(r, ks, ke, int(threadIdx.x), [&](int row, int64_t k) {
          return ms + row < p.M ? p.grad_at(gs, ms + row, k) : A(0);
        });
        store_row_sums(r, v, int(threadIdx.x), [&](int row, A sum) {
          if (ms + row < p.M) p.store_row_sum(gs, ss, ms + row, sum);
        });
      }
    }
  }
}

template <class P, class Mma>
__global__ void __launch_bounds__(kGemmThreads, 2) gemm_kernel(P p) {
  gemm_block<P, Mma>(p, [] { return int(blockIdx.z); });
}

// Several problems of one type in one launch (a strided layer's grad_input, a GEMM per stride phase, where
// PIXELOPS_CONV_GI_ONE_LAUNCH=1): grid z over members x groups x K splits, member-major, so that the blocks of
// the first member (the phase with the most taps, by the host's order) start first; x over the widest member's
// column tiles (a block past its own member's exits). One launch of all the phases' blocks keeps the SMs
// busy where a launch per phase ran each as a partial wave: res_s2's phases had 196 blocks each, for the 264
// block slots of an H100, and ran one after another. The problems stay in the launch's parameter space
// (__grid_constant__: read where they are, not copied per thread).
constexpr int kGemmSetMost = 4;  // problems a set holds (a stride of 2 x 2 has four phases)
template <class P>
struct GemmSet {
  P p[kGemmSetMost];
  int count = 0;
  int per = 1;  // blocks along z a member: groups x K splits
};

template <class P, class Mma>
__global__ void __launch_bounds__(kGemmThreads, 2) gemm_set_kernel(const __grid_constant__ GemmSet<P> set) {
  static_assert(!P::kRowSums, "row sums read gridDim.x, which is the widest member's here");
  const int member = int(blockIdx.z) / set.per;
  const P& p = set.p[member];
  if (int64_t(blockIdx.x) * P::Tl::BN >= p.N) return;
  gemm_block<P, Mma>(p, [&] { return int(blockIdx.z) - member * set.per; });
}

}  // namespace pixelops::cuda::conv
