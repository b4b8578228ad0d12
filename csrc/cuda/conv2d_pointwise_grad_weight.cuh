// The weight gradient of a pointwise convolution (1x1, stride 1, unpadded): a plain GEMM whose reduction
// runs along the pixels of both operands,
//
//   gw[g*Mg+m, c] = sum over images img and pixels p of grad_y[img, g*Mg+m, p] * x[img, g*Cg+c, p],
//
// each channel's plane one contiguous run. The implicit GEMM (GradWeightGemm) loads every element on its own,
// with its pixel's decode, and stages it through registers: on an H100 it took res_1x1's weight gradient
// (32 x 256 -> 64 channels, 56 x 56; 3.3 GFLOP) 0.125 ms in float32 and 0.127 ms in TF32 alike, so its loads set
// the pace, where reading both operands once takes about 43 us at the copy bandwidth.
//
// Here block (column tile, row tile, group x split) walks its split's pixels kPwBK at a time: 16-byte cp.async
// copies of kPwBM grad_y rows and kPwBN x rows (rows of kPwLd floats: the products' shared loads fall in 32
// distinct banks) into a ring of kPwStages stages, multiplied by one of two products (a Math policy):
// - PwTf32 (sm_80+): 8 warps as 2 (rows) x 4 (columns) of 32 x 32 each, 2 x 4 mma.sync.m16n8k8 a k8 slice;
// - PwSimt (float32 FMAs): each thread 4 rows x 8 channels, four pixels a step (pointwise_gw_simt_step).
// Each split's partial sums go to the workspace as GradWeightGemm's do ([split][row][channel]), added in order
// by reduce_grad_weight; with bias, the column tiles of a row tile and split then also sum a share each of
// grad_y's rows over the split's pixels (row_sum_plan): grad_bias's partial sums, as the rows' last column.
// grad_y without a ReLU gate only.
//
// Everything but the kernel is plain C++ over host/device functions: tests/cuda_host runs the same staging,
// fragment addresses and stores against a naive sum.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/conv2d_halo.cuh"  // tf32_round, mma_tf32, CpAsync16, halo_wait
#include "cuda/conv2d_tile.cuh"  // Geometry, planes_in_16_bytes

namespace pixelops::cuda::conv {

constexpr int kPwBM = 64, kPwBN = 128, kPwBK = 32, kPwLd = kPwBK + 4, kPwStages = 3;

struct PointwiseGw {
  Geometry q;  // the convolution (1x1, stride 1, unpadded: OH = H, OW = W); q.gs grad_y's strides
  const float* x = nullptr;
  const float* gy = nullptr;
  float* ws = nullptr;  // partial sums, [split][q.M][ncol()]
  bool bias = false;    // grad_bias's partial sums as the rows' last column
  int64_t K = 0;        // pixels of all images
  int64_t k_per_split = kPwBK;
  int splits = 1, mtiles = 1, ntiles = 1;

  __host__ __device__ static constexpr int stage_floats() { return (kPwBM + kPwBN) * kPwLd; }
  static constexpr size_t smem_bytes() { return size_t(kPwStages) * stage_floats() * sizeof(float); }
  __host__ __device__ int64_t ncol() const { return q.Cg + (bias ? 1 : 0); }
  // How column tile nt shares in the sums of grad_y's rows (none without bias).
  __host__ __device__ RowSumPlan bias_plan(int nt) const {
    return bias ? row_sum_plan(nt, ntiles, kPwBM, 256) : RowSumPlan{};
  }
};

// Whether q's weight gradient can run here (x, grad_y at q.xs, q.gs): pointwise, every plane of both operands
// whole 16-byte pieces (planes_in_16_bytes), sizes within the grid's and the fast divisions' reach; fills p but
// for the splits (pointwise_gw_split).
inline bool pointwise_gw_setup(PointwiseGw& p, const Geometry& q, const float* x, const float* gy) {
  p = PointwiseGw{};
  p.q = q; p.x = x; p.gy = gy;
  if (q.KH != 1 || q.KW != 1 || q.ntaps != 1 || q.sh != 1 || q.sw != 1 || q.ph != 0 || q.pw != 0) return false;
  const int64_t opix = q.OH * q.OW;
  if (q.H != q.OH || q.W != q.OW || opix < 1 || q.N < 1 || q.Cg < 1 || q.Mg < 1) return false;
  if (q.xs[3] != 1 || q.xs[2] != q.W || q.gs[3] != 1 || q.gs[2] != q.OW) return false;  // planes one run each
  if (!planes_in_16_bytes(opix, q.xs, x) || !planes_in_16_bytes(opix, q.gs, gy)) return false;
  p.K = q.N * opix;
  p.mtiles = int((q.Mg + kPwBM - 1) / kPwBM);
  p.ntiles = int((q.Cg + kPwBN - 1) / kPwBN);
  return p.K < (int64_t(1) << 31) && p.mtiles <= 65535 && p.ntiles < (1 << 30) && q.G <= 65535;
}

// Splits the pixels into about `want` runs of whole kPwBK steps, at least kMinSteps each (but where there are
// fewer), none empty, and within the grid's z bound.
inline void pointwise_gw_split(PointwiseGw& p, int64_t want) {
  constexpr int64_t kMinSteps = 8;  // each block fills and drains its ring once
  const int64_t steps = (p.K + kPwBK - 1) / kPwBK;
  int64_t per = std::max<int64_t>(kMinSteps, (steps + std::max<int64_t>(1, want) - 1) / std::max<int64_t>(1, want));
  int64_t splits = std::clamp<int64_t>((steps + per - 1) / per, 1, std::max<int64_t>(1, 65535 / p.q.G));
  per = (steps + splits - 1) / splits;
  p.splits = int((steps + per - 1) / per);
  p.k_per_split = per * kPwBK;
}

// Copies the step of pixels [k0, k0 + kPwBK) (none from kend on) of row tile mt, column tile nt, group g into
// stage st: rows [0, kPwBM) grad_y's, rows kPwBM + [0, kPwBN) x's, kPwLd floats apart; zeros past the rows,
// channels or pixels. copy16(dst, src, n): 4 floats of which the first n are copied and the rest zeroed.
template <class Copy16>
__host__ __device__ __forceinline__ void pointwise_gw_load(const PointwiseGw& p, int g, int mt, int nt, int64_t k0,
                                                           int64_t kend, float* st, int tid, Copy16&& copy16) {
  const Geometry& q = p.q;
  const int64_t opix = q.OH * q.OW;
  constexpr int kPieces = kPwBK / 4;  // 16-byte pieces a row
  for (int e = tid; e < (kPwBM + kPwBN) * kPieces; e += 256) {
    const int row = e / kPieces, v = e % kPieces;
    const bool is_a = row < kPwBM;
    const int64_t k = k0 + 4 * v;
    const int64_t chan = is_a ? int64_t(mt) * kPwBM + row : int64_t(nt) * kPwBN + (row - kPwBM);
    const bool valid = k < kend && chan < (is_a ? q.Mg : q.Cg);
    const float* src = p.gy;
    if (valid) {  // (a piece never straddles two images: opix is a multiple of 4)
      const int64_t img = q.by_opix(k), pix = k - img * opix;
      src = is_a ? p.gy + img * q.gs[0] + (g * q.Mg + chan) * q.gs[1] + pix
                 : p.x + img * q.xs[0] + (g * q.Cg + chan) * q.xs[1] + pix;
    }
    copy16(st + row * kPwLd + 4 * v, src, valid ? 4 : 0);
  }
}

// Warp (wm, wn) = (warp % 2, warp / 2) of a block; its lane (gq, tig) = (lane / 4, lane % 4). In k8 slice kk of
// a stage, m16 fragment i's register r is grad_y row 32*wm + 16*i + gq + 8*(r%2) at pixel 8*kk + tig + 4*(r/2)
// (mma.m16n8k8's A layout), and n8 fragment j's register r is x row 32*wn + 8*j + gq at pixel 8*kk + tig + 4*r.
__host__ __device__ __forceinline__ int pointwise_gw_a(int wm, int i, int lane, int kk, int r) {
  return (32 * wm + 16 * i + lane / 4 + 8 * (r % 2)) * kPwLd + 8 * kk + lane % 4 + 4 * (r / 2);
}
__host__ __device__ __forceinline__ int pointwise_gw_b(int wn, int j, int lane, int kk, int r) {
  return (kPwBM + 32 * wn + 8 * j + lane / 4) * kPwLd + 8 * kk + lane % 4 + 4 * r;
}

// Accumulator r of fragments (i, j) of thread (warp, lane) into the workspace: row 32*wm + 16*i + gq + 8*(r/2),
// channel 32*wn + 8*j + 2*tig + r%2 of the tile (mma's D layout).
__host__ __device__ __forceinline__ void pointwise_gw_store(const PointwiseGw& p, const float (&acc)[2][4][4],
                                                            int64_t split, int g, int mt, int nt, int warp, int lane) {
  const Geometry& q = p.q;
  const int wm = warp % 2, wn = warp / 2;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int r = 0; r < 4; ++r) {
        const int64_t m = int64_t(mt) * kPwBM + 32 * wm + 16 * i + lane / 4 + 8 * (r / 2);
        const int64_t c = int64_t(nt) * kPwBN + 32 * wn + 8 * j + 2 * (lane % 4) + r % 2;
        if (m < q.Mg && c < q.Cg) p.ws[(split * q.M + g * q.Mg + m) * p.ncol() + c] = acc[i][j][r];
      }
}
// Thread tid's part of block (split, m tile mt, group g, column tile)'s share of grad_bias (bias_plan): its row's
// grad_y over the split's pixels.
__host__ __device__ __forceinline__ float pointwise_gw_bias_part(const PointwiseGw& p, const RowSumPlan& r,
                                                                 int64_t split, int g, int mt, int tid) {
  const int64_t n0 = split * p.k_per_split;
  return grad_y_row_part(p.q, p.gy, r, g, int64_t(mt) * kPwBM, n0, std::min(p.K, n0 + p.k_per_split), tid);
}
// Row `row` of m tile mt's grad_y sum over the split: grad_bias's partial sum, the last column.
__host__ __device__ __forceinline__ void pointwise_gw_store_bias(const PointwiseGw& p, int64_t split, int g, int mt,
                                                                 int row, float v) {
  const Geometry& q = p.q;
  const int64_t m = int64_t(mt) * kPwBM + row;
  if (m < q.Mg) p.ws[(split * q.M + g * q.Mg + m) * p.ncol() + q.Cg] = v;
}

// ---- the float32 product (PwSimt), plain C++ so that the host emulation runs it as the kernel does ----------
// Thread (tr, tc) = (tid / 16, tid % 16) owns rows tr + 16*i (i < 4) and channels tc + 16*j (j < 8) of the tile.
// Four pixels a step: 4 + 8 16-byte loads for 128 FMAs. A quarter warp (8 lanes: one tr, 8 tc) reads one row
// address (a broadcast) and 8 channel rows 36 = 4 mod 32 floats apart: 32 distinct banks.
// Four consecutive floats of a stage row (16-byte aligned: one 16-byte load on the device).
__host__ __device__ __forceinline__ void pointwise_gw_load4(const float* p, float (&out)[4]) {
#ifdef __CUDA_ARCH__
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
#else
  for (int i = 0; i < 4; ++i) out[i] = p[i];
#endif
}

__host__ __device__ __forceinline__ void pointwise_gw_simt_step(const float* st, int tid, float (&acc)[4][8]) {
  const int tr = tid / 16, tc = tid % 16;
#pragma unroll 2
  for (int k = 0; k < kPwBK; k += 4) {
    float a[4][4], b[8][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) pointwise_gw_load4(st + (tr + 16 * i) * kPwLd + k, a[i]);
#pragma unroll
    for (int j = 0; j < 8; ++j) pointwise_gw_load4(st + (kPwBM + tc + 16 * j) * kPwLd + k, b[j]);
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i][u], b[j][u], acc[i][j]);
  }
}
__host__ __device__ __forceinline__ void pointwise_gw_simt_store(const PointwiseGw& p, const float (&acc)[4][8],
                                                                 int64_t split, int g, int mt, int nt, int tid) {
  const Geometry& q = p.q;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j) {
      const int64_t m = int64_t(mt) * kPwBM + tid / 16 + 16 * i, c = int64_t(nt) * kPwBN + tid % 16 + 16 * j;
      if (m < q.Mg && c < q.Cg) p.ws[(split * q.M + g * q.Mg + m) * p.ncol() + c] = acc[i][j];
    }
}

#ifdef __CUDACC__
// The TF32 product (see the top of the file).
struct PwTf32 {
  float acc[2][4][4] = {};
  __device__ __forceinline__ void step(const float* st, int tid) {
    const int warp = tid / 32, lane = tid % 32, wm = warp % 2, wn = warp / 2;
#pragma unroll
    for (int kk = 0; kk < kPwBK / 8; ++kk) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int r = 0; r < 4; ++r) a[i][r] = __float_as_uint(tf32_round(st[pointwise_gw_a(wm, i, lane, kk, r)]));
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int r = 0; r < 2; ++r) b[j][r] = __float_as_uint(tf32_round(st[pointwise_gw_b(wn, j, lane, kk, r)]));
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32(acc[i][j], a[i], b[j]);
    }
  }
  __device__ __forceinline__ void store(const PointwiseGw& p, int64_t split, int g, int mt, int nt, int tid) const {
    pointwise_gw_store(p, acc, split, g, mt, nt, tid / 32, tid % 32);
  }
};
// The float32 product (above).
struct PwSimt {
  float acc[4][8] = {};
  __device__ __forceinline__ void step(const float* st, int tid) { pointwise_gw_simt_step(st, tid, acc); }
  __device__ __forceinline__ void store(const PointwiseGw& p, int64_t split, int g, int mt, int nt, int tid) const {
    pointwise_gw_simt_store(p, acc, split, g, mt, nt, tid);
  }
};

template <class Math>
__global__ void __launch_bounds__(256, 2) pointwise_grad_weight_kernel(const __grid_constant__ PointwiseGw p) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x;
  const int nt = int(blockIdx.x), mt = int(blockIdx.y), g = int(blockIdx.z) / p.splits;
  const int64_t split = int64_t(blockIdx.z) % p.splits;
  const int64_t kbeg = split * p.k_per_split, kend = min(p.K, kbeg + p.k_per_split);
  const int64_t steps = (kend - kbeg + kPwBK - 1) / kPwBK;
  constexpr int stage = PointwiseGw::stage_floats();
  const CpAsync16 copy16;

  // the ring's first kPwStages - 1 steps; one commit group a step, empty past the last
#pragma unroll
  for (int s = 0; s < kPwStages - 1; ++s) {
    if (s < steps) pointwise_gw_load(p, g, mt, nt, kbeg + s * kPwBK, kend, smem + s * stage, tid, copy16);
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
  Math math;
  for (int64_t t = 0; t < steps; ++t) {
    halo_wait(kPwStages - 2);  // step t is in
    __syncthreads();           // ... for every thread, and every warp is done with the stage refilled next
    const int64_t next = t + kPwStages - 1;
    if (next < steps)
      pointwise_gw_load(p, g, mt, nt, kbeg + next * kPwBK, kend, smem + int(next % kPwStages) * stage, tid, copy16);
    asm volatile("cp.async.commit_group;" ::: "memory");
    math.step(smem + int(t % kPwStages) * stage, tid);
  }
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  math.store(p, split, g, mt, nt, tid);
  const RowSumPlan bias = p.bias_plan(nt);  // then grad_bias's share, the accumulators done with
  if (bias.rows)
    store_row_sums(bias, pointwise_gw_bias_part(p, bias, split, g, mt, tid), tid,
                   [&](int row, float v) { pointwise_gw_store_bias(p, split, g, mt, row, v); });
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
