// The weight gradient from a shared-memory halo, the counterpart of halo_conv_kernel (conv2d_halo.cuh) for
// grad_weight, where the implicit GEMM gathered each (channel, tap, pixel) element of x from global memory on
// its own and took half of a 3x3 layer's TF32 forward + backward:
//
//   gw[g*Mg+m, c, j] = sum over pixels n of grad_y[img(n), g*Mg+m, n] * xpad[img(n), g*Cg+c, corner(n) + shift(j)]
//
// A GEMM with M = Mg rows, N = (channel, tap) columns and K = all output pixels, split over blocks. Block
// (split, m tile, (group, chunk of 8 channels, tap group)) walks its split's tiles of 128 consecutive pixels;
// per tile one shared stage holds grad_y's 64 x 128 tile (rows padded to 132 floats), the 8 channels' halo of
// x for those pixels (as the forward stages it) and the pixels' halo corners. Two stages: the next tile is
// copied (cp.async) while one is multiplied. The block writes its partial sums ([split][row][channel * ntaps +
// tap], as the GEMM's split-K does), which reduce_grad_weight adds in order. grad_y without a ReLU gate only,
// each image's plane contiguous. With bias, the blocks of a row tile and split then also sum a share each of
// grad_y's rows over the split's pixels (row_sum_plan): grad_bias's partial sums, one more workspace column.
//
// Two products behind the one pipeline (a Math policy, as in the forward):
// - GwTf32 (sm_80+, mma.sync.m16n8k8): an n8 accumulator tile is the 8 channels at one tap, so a B fragment is
//   8 channels at the lanes' two pixels, read at the tap's shift. Warp (wm, wk) = (warp % 2, warp / 2) owns
//   rows 32*wm + [0, 32) (two m16 fragments) at up to kGwMaxNt taps and takes every fourth k8 step of a tile
//   (wk, wk + 4, ...): 72 accumulators a thread (128 registers, no spills). At the end the four wk warps of a
//   row half add their sums in order through shared memory.
// - GwSimt (float32 FMAs, for float32 without TF32): warp w owns rows 8*w + [0, 8); lane (c, p) = (lane % 8,
//   lane / 8) channel c and the pixels 32*i + 8*p + [0, 8) of each tile, at every tap of the group (the same
//   72 accumulators). A step of two pixels is 8 two-float loads of grad_y (broadcast: a warp reads one row at
//   four places), one of two corners and 2 x nt loads of x (channel c at the lane's pixels; a channel's halo
//   is CS = 1 mod 32 floats long, so the 8 channels x 4 pixel runs fall in 32 distinct banks), for 16 x nt
//   FMAs. The four p lanes of a channel add their sums by two butterfly shuffles. The halo is copied element
//   by element (16-byte copies would need CS = 0 mod 4).
//
// Everything but the kernel is plain C++ over host/device functions: tests/cuda_host runs the same staging,
// fragment and reduction math (and GwSimt's per-thread product itself) against a naive sum.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/conv2d_halo.cuh"

namespace pixelops::cuda::conv {

constexpr int kGwRows = 64, kGwPix = 128, kGwLd = kGwPix + 4;  // grad_y tile; rows = 4 mod 32: conflict-free A loads
constexpr int kGwMaxNt = 9;                                   // taps a block takes (n8 tiles a warp accumulates)
constexpr int kGwAcc = 2 * kGwMaxNt * 4;                      // accumulators a thread
constexpr int kGwRedFloats = kHaloThreads * kGwAcc;           // the final reduction's shared buffer
constexpr size_t kGwSmem = 113 * 1024;                        // two blocks an SM on Hopper

struct HaloGradWeight {
  HaloConv h;  // x's halo: h.q is the convolution (forward geometry, q.gs grad_y's strides), 8 channels a chunk
  const float* gy = nullptr;
  float* ws = nullptr;   // partial sums, [split][q.M][ncol()]
  bool bias = false;     // grad_bias's partial sums as the rows' last column
  bool gy_vec = false;   // grad_y rows copied 16 bytes at a time
  bool simt = false;     // float32 FMAs (GwSimt) instead of TF32 mma.sync (GwTf32)
  int tgroups = 1, nt = 1;  // tap groups (blocks along the taps) and taps a group
  int64_t tiles = 0;        // tiles of kGwPix pixels
  int64_t tiles_per_split = 1;
  int splits = 1;

  __host__ __device__ int stage_floats() const { return kGwRows * kGwLd + h.kc * h.CS + kGwPix; }
  size_t smem_bytes() const {  // GwTf32 reduces through the stages' memory at the end; GwSimt by shuffles
    return std::max<size_t>(size_t(h.stages) * stage_floats(), simt ? 0 : kGwRedFloats) * sizeof(float);
  }
  __host__ __device__ int64_t ncol() const { return h.q.Cg * h.q.ntaps + (bias ? 1 : 0); }
  // How block (channel chunk cc, tap group tg) shares in the sums of grad_y's rows (none without bias).
  __host__ __device__ RowSumPlan bias_plan(int cc, int tg) const {
    return bias ? row_sum_plan(cc * tgroups + tg, h.nchunks * tgroups, kGwRows, kHaloThreads) : RowSumPlan{};
  }
};

// Whether p (h.q, h.x, gy set) can run on the halo kernel: two taps or more (a 1x1 layer reuses nothing from
// the halo: on an H100 res_1x1's grad_weight took 0.45 ms here against 0.13 on the GEMM), and two stages
// within smem_budget bytes (at one block an SM, as strided layers on small images would need, res_s2 took
// 0.18 ms against 0.15 on the GEMM). Fills the halo's shape, the tap groups and the tile count; splits are
// set by halo_gw_split.
inline bool halo_gw_fits(HaloGradWeight& p, size_t smem_budget) {
  HaloConv& h = p.h;
  const Geometry& q = h.q;
  if (q.Cg < 4 || q.ntaps < 2 || q.ntaps > kHaloMaxTaps || q.OH < 1 || q.OW < 1) return false;
  if (q.OW >= (1 << 16) || q.OH >= (1 << 16)) return false;
  if (q.gs[3] != 1 || q.gs[2] != q.OW) return false;  // each grad_y plane one run
  h.ntaps = q.ntaps;
  halo_shape(h, 8, p.simt ? 1 : 4);
  if (int64_t(h.rows) * h.RL >= (1 << 20)) return false;
  h.stages = 2;
  if (size_t(h.stages) * p.stage_floats() * sizeof(float) > smem_budget) return false;
  p.tgroups = (q.ntaps + kGwMaxNt - 1) / kGwMaxNt;
  p.nt = (q.ntaps + p.tgroups - 1) / p.tgroups;
  if (h.mtiles > 65535 || q.G * h.nchunks * p.tgroups > 65535) return false;
  p.tiles = (h.pixels() + kGwPix - 1) / kGwPix;
  const int64_t opix = q.OH * q.OW;
  p.gy_vec = planes_in_16_bytes(opix, q.gs, p.gy);
  return true;
}

// Sets p up for the weight gradient of q (x, grad_y at q.gs) with q's active taps, on GwSimt where simt (else
// GwTf32); false where it does not fit.
inline bool halo_gw_setup(HaloGradWeight& p, const Geometry& q, const float* x, const float* gy, size_t smem_budget,
                          bool simt = false) {
  p = HaloGradWeight{};
  p.h.q = q; p.h.x = x; p.gy = gy; p.simt = simt;
  p.h.vec = !simt && halo_rows_vectorizable(q.xs, x);
  if (!halo_gw_fits(p, smem_budget)) return false;
  for (int j = 0; j < q.ntaps; ++j) p.h.tap_off[j] = (j / q.KW) * q.dh * p.h.RL + (j % q.KW) * q.dw;
  return true;
}

// Splits the tiles into about `want` runs of equal length, none empty.
inline void halo_gw_split(HaloGradWeight& p, int64_t want) {
  const int64_t splits = std::clamp<int64_t>(want, 1, std::max<int64_t>(1, p.tiles));
  p.tiles_per_split = std::max<int64_t>(1, (p.tiles + splits - 1) / splits);
  p.splits = int(std::max<int64_t>(1, (p.tiles + p.tiles_per_split - 1) / p.tiles_per_split));
}

// Copies tile `tile` (pixels from n0 = tile * kGwPix) of row tile mt, channel chunk cc, group g into stage st:
// grad_y's rows (zero past the rows or pixels), the chunk's halo (padding slots zeroed) and the pixels' corners
// (plain stores; a corner of 0 past the last pixel, whose grad_y is zero). copy16 and copy4 as for
// halo_load_rows.
template <class Copy16, class Copy4>
__host__ __device__ __forceinline__ void halo_gw_load_tile(const HaloGradWeight& p, int g, int mt, int cc, int64_t tile,
                                                           float* st, int tid, Copy16&& copy16, Copy4&& copy4) {
  const HaloConv& h = p.h;
  const Geometry& q = h.q;
  const int64_t n0 = tile * kGwPix, npix = h.pixels(), opix = q.OH * q.OW, row0 = int64_t(mt) * kGwRows;
  const float* gyg = p.gy + (g * q.Mg + row0) * q.gs[1];
  // A thread copies the same pixels (a piece of 4, or one) of every 8th (or 2nd) row: where they sit in their
  // image is worked out once, and each row adds a channel stride. (Worked out again for every copy, a division
  // and 64-bit index math, the copies of a tile took about as many instructions as its product.)
  constexpr int kPer = kHaloThreads / kGwPix;  // threads a row, one pixel each, in element copies
  const int kp = p.gy_vec ? 4 * (tid % (kGwPix / 4)) : tid % kGwPix;  // the thread's pixel(s) in the tile
  const int64_t n = n0 + kp;
  const float* col = nullptr;  // grad_y's pixel n in row 0 of the tile, null past the last pixel
  if (n < npix) {
    const int64_t img = q.by_opix(n);
    col = gyg + img * q.gs[0] + (n - img * opix);
  }
  // rows r0, r0 + rstep, ... (those below `rows` are inside Mg)
  const int r0 = p.gy_vec ? tid / (kGwPix / 4) : tid / kGwPix, rstep = p.gy_vec ? kHaloThreads / (kGwPix / 4) : kPer;
  const int rows = col ? int(std::min<int64_t>(kGwRows, q.Mg - row0)) : 0;
#pragma unroll 1
  for (int r = r0; r < kGwRows; r += rstep) {
    const bool valid = r < rows;
    const float* src = valid ? col + r * q.gs[1] : p.gy;
    if (p.gy_vec) copy16(st + r * kGwLd + kp, src, valid ? 4 : 0);  // a row's 32 pieces across a warp
    else copy4(st + r * kGwLd + kp, src, valid);
  }
  const int64_t first_row = halo_first_row(h, n0);
  float* hs = st + kGwRows * kGwLd;
  halo_load_rows(h, g, int64_t(cc) * h.kc, first_row, hs, tid, true, copy16, copy4);
  int* corners = reinterpret_cast<int*>(hs + h.kc * h.CS);
  for (int k = tid; k < kGwPix; k += kHaloThreads) corners[k] = halo_corner(h, n0 + k, first_row);
}

// Where thread (warp, lane) leaves accumulator idx = (i * kGwMaxNt + t) * 4 + r for the final reduction.
__host__ __device__ __forceinline__ int halo_gw_red(int warp, int lane, int idx) {
  return (warp * kGwAcc + idx) * 32 + lane;
}
// The accumulator behind the block's output (row, channel ch of the chunk, tap t of the group) in warp
// (2 * wk + row / 32): its lane and idx. (mma's D fragment: register r holds row gq + 8 * (r / 2), column
// 2 * tig + r % 2.)
__host__ __device__ __forceinline__ void halo_gw_owner(int row, int ch, int t, int& lane, int& idx) {
  const int i = (row % 32) / 16, rr = row % 16, r = 2 * (rr / 8) + ch % 2;
  lane = 4 * (rr % 8) + ch / 2;
  idx = (i * kGwMaxNt + t) * 4 + r;
}

// The block's partial sums into the workspace from the reduction buffer red (the wk warps' sums added in
// order); outputs (row, channel, tap) with the tap fastest, a row's (channel, tap) columns being one run of
// the workspace. Thread tid of nthreads.
__host__ __device__ __forceinline__ void halo_gw_store(const HaloGradWeight& p, const float* red, int64_t split, int g,
                                                       int mt, int cc, int j0, int nt, int tid, int nthreads) {
  const Geometry& q = p.h.q;
  const int64_t ncol = p.ncol();
  for (int o = tid; o < kGwRows * 8 * nt; o += nthreads) {
    const int row = o / (8 * nt), ch = (o / nt) % 8, tt = o % nt;
    const int64_t m = int64_t(mt) * kGwRows + row, c = int64_t(cc) * 8 + ch;
    if (m >= q.Mg || c >= q.Cg) continue;
    int ln, idx;
    halo_gw_owner(row, ch, tt, ln, idx);
    float s = 0.f;
    for (int k = 0; k < 4; ++k) s += red[halo_gw_red(2 * k + row / 32, ln, idx)];
    p.ws[(split * q.M + g * q.Mg + m) * ncol + c * q.ntaps + j0 + tt] = s;
  }
}
// Thread tid's part of block (split, m tile mt, group g, channel chunk cc, tap group tg)'s share of grad_bias
// (bias_plan): its row's grad_y over the split's pixels.
__host__ __device__ __forceinline__ float halo_gw_bias_part(const HaloGradWeight& p, const RowSumPlan& r, int64_t split,
                                                            int g, int mt, int tid) {
  const int64_t n0 = split * p.tiles_per_split * kGwPix;
  const int64_t n1 = std::min(p.h.pixels(), (split + 1) * p.tiles_per_split * kGwPix);
  return grad_y_row_part(p.h.q, p.gy, r, g, int64_t(mt) * kGwRows, n0, n1, tid);
}
// Row `row` of m tile mt's grad_y sum over the split: grad_bias's partial sum, the last column.
__host__ __device__ __forceinline__ void halo_gw_store_bias(const HaloGradWeight& p, int64_t split, int g, int mt,
                                                            int row, float v) {
  const Geometry& q = p.h.q;
  const int64_t m = int64_t(mt) * kGwRows + row;
  if (m < q.Mg) p.ws[(split * q.M + g * q.Mg + m) * p.ncol() + q.Cg * q.ntaps] = v;
}

// Calls f with the block's tap count as a compile-time constant where it is a common one (9: a 3x3 layer, or a
// group of 9 taps of a larger kernel; 5: a 3x3 mask-B layer), else with 0 (nt at run time): the products' steps
// (GwTf32's, GwSimt's) of a known count neither load nor multiply past it, nor test the taps one by one (SASS
// for sm_90: a TF32 k8 step is 78 instructions for 9 taps, 62 for 5, 108 for a count known only at run time).
template <class F>
__host__ __device__ __forceinline__ void gw_with_taps(int nt, F&& f) {
  if (nt == kGwMaxNt) f(std::integral_constant<int, kGwMaxNt>{});
  else if (nt == 5) f(std::integral_constant<int, 5>{});
  else f(std::integral_constant<int, 0>{});
}
// The taps' shifts in bytes for the products (gw_tf32_operands, gw_simt_steps): taps j0 + tt, tt < nt; 0 past them.
__host__ __device__ __forceinline__ void gw_tap_bytes(const HaloConv& h, int j0, int nt, int (&offb)[kGwMaxNt]) {
#pragma unroll
  for (int tt = 0; tt < kGwMaxNt; ++tt) offb[tt] = tt < nt ? 4 * h.tap_off[j0 + tt] : 0;
}

// ---- GwSimt's product, plain C++ so that the host emulation runs it as the kernel does ----------------------
constexpr int kGwSimtRows = 8;  // rows a warp

// Two consecutive elements (8-byte aligned: one 8-byte load on the device).
template <class E>
struct Pair;
#ifdef __CUDA_ARCH__
template <>
struct Pair<float> { using type = float2; };
template <>
struct Pair<int> { using type = int2; };
#endif
template <class E>
__host__ __device__ __forceinline__ void gw_load2(const E* p, E& a, E& b) {
#ifdef __CUDA_ARCH__
  const auto v = *reinterpret_cast<const typename Pair<E>::type*>(p);
  a = v.x; b = v.y;
#else
  a = p[0]; b = p[1];
#endif
}

// Whether warp `warp` of m tile mt has rows to compute (a tile's last warps may have none).
__host__ __device__ __forceinline__ bool gw_simt_rows(const HaloGradWeight& p, int mt, int warp) {
  return int64_t(mt) * kGwRows + kGwSimtRows * warp < p.h.q.Mg;
}

// Adds stage st's tile to lane (c, p) = (lane % 8, lane / 8) of warp `warp`: rows 8*warp + r, channel c, taps
// j0 + tt (tt < nt) over the pixels 32*i + 8*p + [0, 8) of the tile, two at a time. With the tap count known
// when compiling (gw_with_taps) and the taps' shifts in bytes, each x value is one shared load from a register
// and a uniform register and no tap is tested (SASS for sm_90, 9 taps: a loop of two steps was 477 instructions
// for 288 FFMA with a branch a tap and the index math of each load).
template <int kNt>
__host__ __device__ __forceinline__ void gw_simt_steps(const HaloGradWeight& p, const float* st, int warp, int lane,
                                                       int nt, const int (&offb)[kGwMaxNt],
                                                       float (&acc)[kGwSimtRows][kGwMaxNt]) {
  const HaloConv& h = p.h;
  const int c = lane % 8, pg = lane / 8;
  const float* gyw = st + kGwSimtRows * warp * kGwLd + 8 * pg;
  const char* hb = reinterpret_cast<const char*>(st + kGwRows * kGwLd + c * h.CS);
  const int* corners = reinterpret_cast<const int*>(st + kGwRows * kGwLd + h.kc * h.CS) + 8 * pg;
#pragma unroll 2
  for (int k = 0; k < kGwPix / 4; k += 2) {  // k: the pair's place among the lane's 32 pixels
    const int px = 32 * (k / 8) + k % 8;      // its pixel in the tile, less 8 * pg
    int c0, c1;
    gw_load2(corners + px, c0, c1);
    const char* p0 = hb + 4 * c0;
    const char* p1 = hb + 4 * c1;
    float g0[kGwSimtRows], g1[kGwSimtRows];
#pragma unroll
    for (int r = 0; r < kGwSimtRows; ++r) gw_load2(gyw + r * kGwLd + px, g0[r], g1[r]);
#pragma unroll
    for (int tt = 0; tt < kGwMaxNt; ++tt) {
      if (kNt > 0 ? tt < kNt : tt < nt) {
        const float x0 = *reinterpret_cast<const float*>(p0 + offb[tt]);
        const float x1 = *reinterpret_cast<const float*>(p1 + offb[tt]);
#pragma unroll
        for (int r = 0; r < kGwSimtRows; ++r) acc[r][tt] = fmaf(g1[r], x1, fmaf(g0[r], x0, acc[r][tt]));
      }
    }
  }
}
__host__ __device__ __forceinline__ void gw_simt_tile(const HaloGradWeight& p, const float* st, int warp, int lane,
                                                      int j0, int nt, float (&acc)[kGwSimtRows][kGwMaxNt]) {
  int offb[kGwMaxNt];
  gw_tap_bytes(p.h, j0, nt, offb);
  gw_with_taps(nt, [&](auto known) { gw_simt_steps<decltype(known)::value>(p, st, warp, lane, nt, offb, acc); });
}

// Lane (c, p)'s share of the block's partial sums, `sum` being its channel's total over the four p lanes:
// rows 8*warp + r, channel c of the chunk, the taps tt = p mod 4 of the group.
__host__ __device__ __forceinline__ void gw_simt_store(const HaloGradWeight& p, const float (&sum)[kGwSimtRows][kGwMaxNt],
                                                       int64_t split, int g, int mt, int cc, int j0, int nt, int warp,
                                                       int lane) {
  const Geometry& q = p.h.q;
  const int64_t c = int64_t(cc) * 8 + lane % 8, ncol = p.ncol();
  if (c >= q.Cg) return;
#pragma unroll
  for (int r = 0; r < kGwSimtRows; ++r) {
    const int64_t m = int64_t(mt) * kGwRows + kGwSimtRows * warp + r;
    if (m >= q.Mg) continue;
    float* out = p.ws + (split * q.M + g * q.Mg + m) * ncol + c * q.ntaps + j0;
#pragma unroll
    for (int tt = 0; tt < kGwMaxNt; ++tt)
      if (tt < nt && tt % 4 == lane / 8) out[tt] = sum[r][tt];
  }
}

// GwTf32Preround's tile rounded to TF32 in shared memory once, thread tid's share (between two barriers, after
// the tile's copies have landed): the grad_y rows (A) and the halo (B). Each value is then read by its k8
// steps as it is: rounded at every read, grad_y's 8 A values cost a k8 step 16 of its instructions (SASS for
// sm_90: an FSETP and an add each; 62 instructions for 10 HMMA with pcnn_maskB's 5 taps). grad_bias reads grad_y
// from global memory, unrounded.
__host__ __device__ __forceinline__ void gw_round_tile(const HaloGradWeight& p, float* st, int tid) {
  halo_round_stage(st, kGwRows * kGwLd, tid);
  halo_round_stage(st + kGwRows * kGwLd, p.h.kc * p.h.CS, tid);
}

// ---- GwTf32's operands, plain C++ so that the host emulation reads them as the kernel does ------------------
// What GwTf32's tile hands mma.sync at k8 step kb for lane (gq, tig) = (lane / 4, lane % 4) of a warp of row
// half wm (rows 32*wm + [0, 32) of the tile): A's two m16 fragments and B's two values at each of the block's
// nt taps, channel gq at the lane's pixels 8*kb + tig and + 4, each at the tap's shift offb[tt] in bytes
// (gw_tap_bytes); all rounded to TF32 here, unless kPreround (gw_round_tile rounded the tile in shared memory);
// 0 past the nt taps. kNt: nt where it is known when compiling (gw_with_taps), else 0. Every B load
// is independent of the products, so the tile issues all of them before its MMAs; with the shifts in bytes,
// each is one shared load from a register and a uniform register.
template <bool kPreround, int kNt>
__host__ __device__ __forceinline__ void gw_tf32_operands(const HaloGradWeight& p, const float* st, int wm, int lane,
                                                          int kb, int nt, const int (&offb)[kGwMaxNt], float (&a)[2][4],
                                                          float (&b)[kGwMaxNt][2]) {
  const int gq = lane / 4, tig = lane % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float* ar = st + (32 * wm + 16 * i + gq) * kGwLd + 8 * kb + tig;
    const float a0 = ar[0], a1 = ar[8 * kGwLd], a2 = ar[4], a3 = ar[8 * kGwLd + 4];
    a[i][0] = kPreround ? a0 : tf32_round(a0);
    a[i][1] = kPreround ? a1 : tf32_round(a1);
    a[i][2] = kPreround ? a2 : tf32_round(a2);
    a[i][3] = kPreround ? a3 : tf32_round(a3);
  }
  const int* corners = reinterpret_cast<const int*>(st + kGwRows * kGwLd + p.h.kc * p.h.CS);
  const char* hb = reinterpret_cast<const char*>(st + kGwRows * kGwLd + gq * p.h.CS);  // channel gq's halo
  const char* p0 = hb + 4 * corners[8 * kb + tig];
  const char* p1 = hb + 4 * corners[8 * kb + tig + 4];
#pragma unroll
  for (int tt = 0; tt < kGwMaxNt; ++tt) {
    const bool tap = kNt > 0 ? tt < kNt : tt < nt;
    const float b0 = tap ? *reinterpret_cast<const float*>(p0 + offb[tt]) : 0.f;
    const float b1 = tap ? *reinterpret_cast<const float*>(p1 + offb[tt]) : 0.f;
    b[tt][0] = kPreround ? b0 : tf32_round(b0);
    b[tt][1] = kPreround ? b1 : tf32_round(b1);
  }
}
#ifdef __CUDACC__
// The TF32 product (see the top of the file); its fragments rounded as they are read, or, where kPreround, in
// shared memory once a tile (gw_round_tile).
template <bool kPreround>
struct GwTf32T {
  static constexpr bool kRoundHalo = kPreround;
  float acc[2][kGwMaxNt][4] = {};
  // Warp (wm, wk) takes k8 steps wk, wk + 4, ... of the tile: per step its operands (gw_tf32_operands, every
  // load first), then two MMAs a tap, in the same order on each accumulator as a tap at a time would (the sums
  // are the same to the bit). (SASS for sm_90: with 9 taps a k8 step is 78 instructions for 18 HMMA, where
  // loading each tap's B just before its MMAs, under a branch, took 216.)
  __device__ __forceinline__ void tile(const HaloGradWeight& p, const float* st, int, int tid, int j0, int nt) {
    const int warp = tid / 32, lane = tid % 32, wm = warp % 2, wk = warp / 2;
    int offb[kGwMaxNt];
    gw_tap_bytes(p.h, j0, nt, offb);
    gw_with_taps(nt, [&](auto known) {
      constexpr int kNt = decltype(known)::value;
#pragma unroll 1
      for (int kb = wk; kb < kGwPix / 8; kb += 4) {
        float a[2][4], b[kGwMaxNt][2];
        gw_tf32_operands<kPreround, kNt>(p, st, wm, lane, kb, nt, offb, a, b);
        mmas<kNt>(a, b, nt);
      }
    });
  }
  template <int kNt>
  __device__ __forceinline__ void mmas(const float (&a)[2][4], const float (&b)[kGwMaxNt][2], int nt) {
    uint32_t ua[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int r = 0; r < 4; ++r) ua[i][r] = __float_as_uint(a[i][r]);
#pragma unroll
    for (int tt = 0; tt < kGwMaxNt; ++tt) {
      if (kNt > 0 ? tt < kNt : tt < nt) {
        const uint32_t ub[2] = {__float_as_uint(b[tt][0]), __float_as_uint(b[tt][1])};
        mma_tf32(acc[0][tt], ua[0], ub);
        mma_tf32(acc[1][tt], ua[1], ub);
      }
    }
  }
  // The four wk warps of a row half add their sums in order through shared memory (the stages, free by now).
  __device__ __forceinline__ void finish(const HaloGradWeight& p, float* smem, int64_t split, int g, int mt, int cc,
                                         int j0, int nt, int tid) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int tt = 0; tt < kGwMaxNt; ++tt)
#pragma unroll
        for (int r = 0; r < 4; ++r) smem[halo_gw_red(tid / 32, tid % 32, (i * kGwMaxNt + tt) * 4 + r)] = acc[i][tt][r];
    __syncthreads();
    halo_gw_store(p, smem, split, g, mt, cc, j0, nt, tid, kHaloThreads);
  }
};

using GwTf32 = GwTf32T<false>;
using GwTf32Preround = GwTf32T<true>;

// The float32 product (see the top of the file).
struct GwSimt {
  static constexpr bool kRoundHalo = false;
  float acc[kGwSimtRows][kGwMaxNt] = {};
  __device__ __forceinline__ void tile(const HaloGradWeight& p, const float* st, int mt, int tid, int j0, int nt) {
    if (gw_simt_rows(p, mt, tid / 32)) gw_simt_tile(p, st, tid / 32, tid % 32, j0, nt, acc);
  }
  __device__ __forceinline__ void finish(const HaloGradWeight& p, float*, int64_t split, int g, int mt, int cc, int j0,
                                         int nt, int tid) {
    if (!gw_simt_rows(p, mt, tid / 32)) return;
#pragma unroll
    for (int r = 0; r < kGwSimtRows; ++r)
#pragma unroll
      for (int tt = 0; tt < kGwMaxNt; ++tt) {
        acc[r][tt] += __shfl_xor_sync(0xffffffffu, acc[r][tt], 8);
        acc[r][tt] += __shfl_xor_sync(0xffffffffu, acc[r][tt], 16);
      }
    gw_simt_store(p, acc, split, g, mt, cc, j0, nt, tid / 32, tid % 32);
  }
};

template <class Math>
__global__ void __launch_bounds__(kHaloThreads, 2) halo_grad_weight_kernel(const __grid_constant__ HaloGradWeight p) {
  extern __shared__ __align__(16) float smem[];
  const HaloConv& h = p.h;
  const int tid = threadIdx.x;
  const int mt = int(blockIdx.y);
  const int zc = int(blockIdx.z), tg = zc % p.tgroups, cc = (zc / p.tgroups) % h.nchunks;
  const int g = zc / (p.tgroups * h.nchunks);
  const int j0 = tg * p.nt, nt = min(p.nt, h.ntaps - j0);
  const int64_t t0 = int64_t(blockIdx.x) * p.tiles_per_split, t1 = min(p.tiles, t0 + p.tiles_per_split);
  const int stage = p.stage_floats();

  // The halo's padding columns are never copied: zero them (all of each stage's halo) once.
  for (int st = 0; st < 2; ++st)
    for (int i = tid; i < h.kc * h.CS; i += kHaloThreads) smem[st * stage + kGwRows * kGwLd + i] = 0.f;
  __syncthreads();

  const CpAsync16 copy16;
  const CpAsync4 copy4;
  if (t0 < t1) halo_gw_load_tile(p, g, mt, cc, t0, smem, tid, copy16, copy4);
  asm volatile("cp.async.commit_group;" ::: "memory");

  Math math;
  int cur = 0;
  for (int64_t t = t0; t < t1; ++t) {
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    if constexpr (Math::kRoundHalo) {
      __syncthreads();
      gw_round_tile(p, smem + cur * stage, tid);
    }
    __syncthreads();  // tile t (copies and corners) visible to all; every warp is done with the other stage
    if (t + 1 < t1) halo_gw_load_tile(p, g, mt, cc, t + 1, smem + (1 - cur) * stage, tid, copy16, copy4);
    asm volatile("cp.async.commit_group;" ::: "memory");
    math.tile(p, smem + cur * stage, mt, tid, j0, nt);
    cur = 1 - cur;
  }
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncthreads();  // the stages are free: GwTf32's reduction reuses them
  math.finish(p, smem, blockIdx.x, g, mt, cc, j0, nt, tid);
  const RowSumPlan bias = p.bias_plan(cc, tg);  // then grad_bias's share, the accumulators done with
  if (bias.rows)
    store_row_sums(bias, halo_gw_bias_part(p, bias, blockIdx.x, g, mt, tid), tid,
                   [&](int row, float v) { halo_gw_store_bias(p, blockIdx.x, g, mt, row, v); });
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
