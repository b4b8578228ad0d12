// grad_input of layers with few input channels a group (Cg <= 4), stride 1, as a tiled direct convolution of
// grad_y in shared memory (PIXELOPS_CONV_GI_TILED). Such a layer's grad_input has Cg output rows: as a GEMM
// (conv2d_problems.cuh) a 64-row tile would be mostly empty, so it runs by taps by default (conv2d_taps.cuh: a
// weight pack, a 1x1 GEMM into per-tap planes and a gather, three launches and a workspace of ntaps planes)
// or on grad_input_direct (conv2d_direct.cuh), which reads each grad_y value from global memory once for each
// tap that reaches it. On an H100 the taps took 0.037 ms for pcnn_maskA's layer (64 x 1 -> 64, 28 x 28, 7 x 7
// mask A) and the direct kernel 0.057, for 0.15 GFLOP and 13 MB of grad_y: 4 TFLOP/s.
//
// Here a block takes a tile of kGtTH x kGtTW input pixels of one image and one group, and brings the grad_y
// they read into shared memory kGtKc channels at a time (two stages, cp.async), together with those channels'
// weights, so that grad_y is read from global memory about once (the halo adds the kernel's reach around the
// tile). Thread (slice, row, tx) owns kGtP consecutive pixels of a tile row; the four slices split a chunk's
// channels (slice s takes s, s + 4, ...) and add their sums at the end in a fixed order. For each channel and
// kernel row, a thread reads the kGtP + KW - 1 halo values its pixels' taps reach into registers (one shared
// load each, conflict-free: a tile row's 8 threads read every fourth float, and the row length is 1 mod 4), then
// does kGtP x KW x CG multiply-adds with the row's weights, read as broadcasts: for a 7 x 7 kernel and one
// channel, 12 shared loads for 28 multiply-adds where grad_input_direct made a global load for each.
//
// The kernel width is a template argument (3, 5 or 7, dilation 1 along rows), so the taps index registers. The
// active taps are a row-major prefix (a PixelCNN mask): every kernel row above the last active one is whole,
// and the last is cut short. Stage, product and store are functions of their own, so that tests/cuda_host runs
// them for every thread in turn (in float64 there; the kernel is float32's alone: cp.async copies 4 bytes).
#pragma once
#include <cstdint>

#include "cuda/conv2d_problems.cuh"  // Geometry, store_as
#ifdef __CUDACC__
#include "cuda/conv2d_halo.cuh"  // CpAsync4, halo_wait
#endif

namespace pixelops::cuda::conv {

constexpr int kGtThreads = 256, kGtSlices = 4, kGtP = 4, kGtTW = 32, kGtTH = 8, kGtKc = 16, kGtKwPad = 8;
// The pixel threads of a slice tile the block's pixels: kGtTH rows of kGtTW / kGtP threads.
static_assert(kGtThreads / kGtSlices == kGtTH * (kGtTW / kGtP), "a slice's threads cover the tile");
static_assert(kGtKc % kGtSlices == 0, "a chunk's channels split evenly over the slices");

// The CG a grad_input_tiled instance is compiled for (1, 2 or 4: a Cg of 3 computes a fourth channel of zero
// weights and does not store it).
inline int grad_input_tiled_cg(int64_t Cg) { return Cg == 1 ? 1 : Cg == 2 ? 2 : 4; }

template <class T>
struct GiTiled {
  Geometry q;  // the convolution; q.gs grad_y's strides, q.ws the weights'; grad_x contiguous
  const T* w = nullptr;
  const T* gy = nullptr;
  T* gx = nullptr;
  int cg = 1;       // grad_input_tiled_cg(q.Cg)
  int kha = 1;      // kernel rows with an active tap
  int rows = 1;     // halo rows a channel: kGtTH + (kha - 1) * dh
  int cols = 1;     // halo columns a row: kGtTW + KW - 1
  int cs = 1;       // a halo row's length in shared memory: cols rounded up to 1 mod 4
  int nchunks = 0;  // ceil(Mg / kGtKc)
  int64_t tiles_w = 0, tiles_h = 0;  // tiles across an image's rows, down its columns

  __host__ __device__ int halo_floats() const { return kGtKc * rows * cs; }
  __host__ __device__ int weight_floats() const { return kGtKc * kha * kGtKwPad * cg; }
  __host__ __device__ int stage_floats() const { return halo_floats() + weight_floats(); }
  size_t smem_bytes() const { return 2 * size_t(stage_floats()) * sizeof(T); }
  int64_t blocks() const { return q.N * tiles_h * tiles_w; }
};

// Fills p for q, or returns false where the kernel does not take q: stride 1, dilation 1 along rows, a kernel
// 3, 5 or 7 wide, at most 4 input channels a group, and (the caller's part) no ReLU gate, float32, two stages
// within `smem_most` bytes.
template <class T>
inline bool grad_input_tiled_setup(GiTiled<T>& p, const Geometry& q, const T* w, const T* gy, T* gx,
                                   size_t smem_most) {
  if (q.sh != 1 || q.sw != 1 || q.dw != 1 || (q.KW != 3 && q.KW != 5 && q.KW != 7) || q.Cg > 4 || q.Mg < 1 ||
      q.ntaps < 1 || q.H >= (int64_t(1) << 30) || q.W >= (int64_t(1) << 30) || q.G > 65535)
    return false;
  p.q = q;
  p.w = w;
  p.gy = gy;
  p.gx = gx;
  p.cg = grad_input_tiled_cg(q.Cg);
  p.kha = (q.ntaps - 1) / q.KW + 1;
  const int64_t rows = kGtTH + int64_t(p.kha - 1) * q.dh;
  if (rows > 64) return false;  // (a tall dilated kernel: the halo would leave little of a stage for the tile)
  p.rows = int(rows);
  p.cols = kGtTW + q.KW - 1;
  p.cs = p.cols + ((1 - p.cols) % 4 + 4) % 4;
  p.nchunks = int((q.Mg + kGtKc - 1) / kGtKc);
  p.tiles_w = (q.W + kGtTW - 1) / kGtTW;
  p.tiles_h = (q.H + kGtTH - 1) / kGtTH;
  return p.smem_bytes() <= smem_most && p.blocks() > 0 && p.blocks() < (int64_t(1) << 31);
}

// Block b's tile: image n, first input row ih0 and column iw0.
struct GtTile {
  int64_t n, ih0, iw0;
};
template <class T>
__host__ __device__ __forceinline__ GtTile gt_tile(const GiTiled<T>& p, int64_t b) {
  const int64_t per_image = p.tiles_h * p.tiles_w, n = b / per_image, r = b - n * per_image, th = r / p.tiles_w;
  return {n, th * kGtTH, (r - th * p.tiles_w) * kGtTW};
}

// Thread tid's place: its slice, and the tile row and first column (kGtP * tx) of its pixels.
__host__ __device__ __forceinline__ void gt_place(int tid, int& slice, int& row, int& col0) {
  const int pt = tid % (kGtThreads / kGtSlices);
  slice = tid / (kGtThreads / kGtSlices);
  row = pt / (kGtTW / kGtP);
  col0 = kGtP * (pt % (kGtTW / kGtP));
}

// A lane's part in copying halo rows, the same for every row and chunk of a block: columns lane and lane + 32
// of a row (a row is at most 38 long), whether each is inside the output, and its offset in a grad_y row.
struct GtColumns {
  bool in[2];
  int64_t off[2];
};
template <class T>
__host__ __device__ __forceinline__ GtColumns gt_columns(const GiTiled<T>& p, const GtTile& t, int lane) {
  static_assert(kGtTW + 7 - 1 <= 64, "a halo row is two columns a lane");
  GtColumns k;
  for (int j = 0; j < 2; ++j) {
    const int64_t ow = t.iw0 + p.q.pw - (p.q.KW - 1) + lane + 32 * j;
    k.in[j] = lane + 32 * j < p.cols && ow >= 0 && ow < p.q.OW;
    k.off[j] = ow * p.q.gs[3];
  }
  return k;
}

// Thread tid's share of staging chunk cc (channels cc * kGtKc + [0, kGtKc) of group g) into stage st: the halo
// as [channel][row][cs] (halo row r is output row ih0 + ph - (kha-1)*dh + r, column k output column
// iw0 + pw - (KW-1) + k; zero outside the output, or past the group's channels), then the weights as
// [channel][kernel row][kGtKwPad][CG] (zero for padding taps and missing channels). copy4(dst,
// src, valid) copies one value, or writes zero where !valid (src is then an address that is not read). A warp
// copies one halo row at a time, its lanes along the row (cols: gt_columns); the warps take rows in turn,
// stepping through (channel, row) without a division (rows >= kGtTH: one step never crosses two channels).
template <int CG, class T, class Copy4>
__host__ __device__ __forceinline__ void gt_load_chunk(const GiTiled<T>& p, int64_t g, const GtTile& t,
                                                       const GtColumns& cols, int cc, T* st, int tid, Copy4&& copy4) {
  constexpr int kWarps = kGtThreads / 32;
  static_assert(kWarps <= kGtTH, "a warp's step crosses at most one channel");
  const Geometry& q = p.q;
  const int lane = tid % 32;
  const int64_t m0 = int64_t(cc) * kGtKc, oh0 = t.ih0 + q.ph - int64_t(p.kha - 1) * q.dh;
  const T* gy_img = p.gy + t.n * q.gs[0] + (g * q.Mg + m0) * q.gs[1];
  for (int c = 0, r = tid / 32; c < kGtKc;) {
    const int64_t oh = oh0 + r;
    const bool row_ok = m0 + c < q.Mg && oh >= 0 && oh < q.OH;
    const T* src = gy_img + c * q.gs[1] + oh * q.gs[2];
    T* dst = st + (c * p.rows + r) * p.cs + lane;
#pragma unroll
    for (int j = 0; j < 2; ++j)
      if (lane + 32 * j < p.cols) copy4(dst + 32 * j, row_ok && cols.in[j] ? src + cols.off[j] : p.gy, row_ok && cols.in[j]);
    r += kWarps;
    if (r >= p.rows) r -= p.rows, ++c;
  }
  T* wst = st + p.halo_floats();
  const int total = p.weight_floats();
  for (int e = tid; e < total; e += kGtThreads) {
    const int c = e % CG, rest = e / CG, kw = rest % kGtKwPad, rest2 = rest / kGtKwPad, kh = rest2 % p.kha,
              ml = rest2 / p.kha;
    const int64_t m = m0 + ml;
    const bool valid = m < q.Mg && c < q.Cg && kw < q.KW;  // (a mask's taps past ntaps: copied, never read)
    copy4(wst + e, valid ? p.w + (g * q.Mg + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3] : p.w, valid);
  }
}

// One kernel row of one channel: the kGtP + KW - 1 halo values at h (consecutive), the row's weights at wr
// ([kGtKwPad][CG]); taps [0, nact) of the row (all KW but for the last active row of a mask).
template <int KW, int CG, bool kWhole, class T, class A>
__host__ __device__ __forceinline__ void gt_row(const T* h, const T* wr, int nact, A (&acc)[CG][kGtP]) {
  A s[kGtP + KW - 1];
#pragma unroll
  for (int i = 0; i < kGtP + KW - 1; ++i) s[i] = A(h[i]);
#pragma unroll
  for (int kw = 0; kw < KW; ++kw) {
    if (!kWhole && kw >= nact) break;
    // input column x + kw' reads output column x + pw - kw': in the halo, x - iw0 + (KW - 1 - kw)
#pragma unroll
    for (int c = 0; c < CG; ++c) {
      const A wv = A(wr[kw * CG + c]);
#pragma unroll
      for (int i = 0; i < kGtP; ++i) acc[c][i] += wv * s[i + KW - 1 - kw];
    }
  }
}

// Thread tid's products with a staged chunk st (its slice's channels): acc[c][i] for input channel c of the
// group and pixel i of its run.
template <int KW, int CG, class T, class A>
__host__ __device__ __forceinline__ void gt_chunk(const GiTiled<T>& p, const T* st, int tid, A (&acc)[CG][kGtP]) {
  int slice, row, col0;
  gt_place(tid, slice, row, col0);
  const int whole = p.q.ntaps / KW, last = p.q.ntaps - whole * KW;  // whole rows; taps of a last, partial one
  const int64_t drow = int64_t(p.q.dh) * p.cs;                      // one kernel row up: dh halo rows down
  const T* wst = st + p.halo_floats();
  for (int ml = slice; ml < kGtKc; ml += kGtSlices) {
    // kernel row kh reads halo row row + (kha - 1 - kh) * dh
    const T* h = st + (ml * p.rows + row + int64_t(p.kha - 1) * p.q.dh) * p.cs + col0;
    const T* wr = wst + ml * p.kha * kGtKwPad * CG;
    for (int kh = 0; kh < whole; ++kh, h -= drow, wr += kGtKwPad * CG) gt_row<KW, CG, true>(h, wr, KW, acc);
    if (last) gt_row<KW, CG, false>(h, wr, last, acc);
  }
}

// The end of a block, in two steps with a barrier between (the stages are free then: red is stage 0): slices
// 1-3 put their sums in red (gt_put), then slice 0 adds them to its own in slice order and stores the pixels
// inside the image (gt_store).
template <int CG, class A>
__host__ __device__ __forceinline__ void gt_put(A* red, int tid, const A (&acc)[CG][kGtP]) {
  int slice, row, col0;
  gt_place(tid, slice, row, col0);
  if (slice == 0) return;
  A* r = red + ((slice - 1) * (kGtThreads / kGtSlices) + tid % (kGtThreads / kGtSlices)) * CG * kGtP;
#pragma unroll
  for (int c = 0; c < CG; ++c)
#pragma unroll
    for (int i = 0; i < kGtP; ++i) r[c * kGtP + i] = acc[c][i];
}
template <int CG, class T, class A>
__host__ __device__ __forceinline__ void gt_store(const GiTiled<T>& p, int64_t g, const GtTile& t, const A* red,
                                                  int tid, A (&acc)[CG][kGtP]) {
  int slice, row, col0;
  gt_place(tid, slice, row, col0);
  const Geometry& q = p.q;
  const int64_t ih = t.ih0 + row;
  if (slice != 0 || ih >= q.H) return;
  for (int s = 1; s < kGtSlices; ++s) {
    const A* r = red + ((s - 1) * (kGtThreads / kGtSlices) + tid) * CG * kGtP;
#pragma unroll
    for (int c = 0; c < CG; ++c)
#pragma unroll
      for (int i = 0; i < kGtP; ++i) acc[c][i] += r[c * kGtP + i];
  }
  const int64_t plane = q.H * q.W;
#pragma unroll
  for (int c = 0; c < CG; ++c) {
    if (c >= q.Cg) break;
    T* out = p.gx + (t.n * q.C + g * q.Cg + c) * plane + ih * q.W + t.iw0 + col0;
#pragma unroll
    for (int i = 0; i < kGtP; ++i)
      if (t.iw0 + col0 + i < q.W) out[i] = store_as<T>(acc[c][i]);
  }
}

#ifdef __CUDACC__
// Grid: x over tiles (image-major), y over groups. Two stages: chunk cc+1's copies fly while chunk cc is
// multiplied.
template <int KW, int CG>
__global__ void __launch_bounds__(kGtThreads, 3) grad_input_tiled(const __grid_constant__ GiTiled<float> p) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x;
  const int64_t g = blockIdx.y;
  const GtTile t = gt_tile(p, blockIdx.x);
  const int stage = p.stage_floats();
  const GtColumns cols = gt_columns(p, t, tid % 32);
  const CpAsync4 copy4;
  float acc[CG][kGtP];
#pragma unroll
  for (int c = 0; c < CG; ++c)
#pragma unroll
    for (int i = 0; i < kGtP; ++i) acc[c][i] = 0.f;
  gt_load_chunk<CG>(p, g, t, cols, 0, smem, tid, copy4);
  asm volatile("cp.async.commit_group;" ::: "memory");
  for (int cc = 0; cc < p.nchunks; ++cc) {
    if (cc + 1 < p.nchunks) gt_load_chunk<CG>(p, g, t, cols, cc + 1, smem + ((cc + 1) & 1) * stage, tid, copy4);
    asm volatile("cp.async.commit_group;" ::: "memory");  // (empty past the last chunk)
    halo_wait(1);     // chunk cc is in, for this thread's copies
    __syncthreads();  // ... and for every thread's
    gt_chunk<KW, CG>(p, smem + (cc & 1) * stage, tid, acc);
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }
  gt_put<CG>(smem, tid, acc);
  __syncthreads();
  gt_store<CG>(p, g, t, smem, tid, acc);
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
