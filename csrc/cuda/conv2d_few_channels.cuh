// The forward, grad_input and weight gradient of layers with few input channels a group (Cg <= 4: an image
// net's first layer, PixelCNN's mask-A input layer), stride 1, as direct convolutions of a tile staged in shared
// memory (PIXELOPS_CONV_FEW_TILED). All three are float32's alone (cp.async copies 4 bytes); not yet timed on a
// GPU.
//
// Such a layer is a poor GEMM: its forward has K = Cg x taps (24 for pcnn_maskA), its grad_input M = Cg rows,
// its weight gradient N = Cg x taps columns. By default its forward runs on forward_direct (conv2d_direct.cuh:
// per tap a global load, a table entry and 16 multiply-adds; about 7 instructions a multiply-add on mnist_c1's
// layer, 18 us for 0.12 GFLOP on an H100), its grad_input by taps (conv2d_taps.cuh: a weight pack, a 1x1 GEMM
// into per-tap planes and a gather, three launches and a workspace; pcnn_maskA's 0.037 ms, 4 TFLOP/s) and its
// weight gradient on grad_weight_direct (pcnn_maskA's 0.038 ms).
//
// Here a block takes a tile of kFcTH x kFcTW pixels of one image and one group. It copies the values those
// pixels' taps reach (the tile and the kernel's reach around it: the halo, [channel][row][cs]) into shared
// memory, with the weights or grad_y's tile. The kernel width is a template argument (3, 5 or 7; dilation 1
// along rows), so that the taps index registers: for each channel and kernel row a thread reads the
// kFcP + KW - 1 halo values that its kFcP consecutive pixels' taps reach (one shared load each, conflict-free:
// a tile row's 8 threads read every fourth float, and cs is 1 mod 4) and does kFcP x KW multiply-adds for each
// of its outputs. The active taps are a row-major prefix (a PixelCNN mask): every kernel row above the last
// active one is whole, the last cut short.
//  - forward: the halo is x's Cg channels, read once; thread (slice, row, tx) owns kFcP pixels of a tile row, and
//    each slice 8 of the block's kFwMB output channels (a grid dimension over channel blocks): per kernel row
//    and channel, kFcP + KW - 1 loads and 2 x KW 16-byte weight loads for 32 x KW multiply-adds.
//  - grad_input: the halo is grad_y's, kGiKc channels a chunk in two stages (cp.async: chunk cc+1 in flight
//    while chunk cc is multiplied); the slices split a chunk's channels (slice s takes s, s + 4, ...) and add
//    their sums at the end, in a fixed order, for the Cg outputs: for a 7 x 7 kernel and one channel, 12 shared
//    loads for 28 multiply-adds where grad_input_direct made a global load for each.
//  - weight gradient: x's halo and grad_y's tile, tile after tile of a split; a thread sums one kernel row of
//    one channel for 4 output channels (see grad_weight_tiled's part below).
// Staging, products and stores are functions of their own, so that tests/cuda_host runs them for every thread
// in turn (in float64 there).
#pragma once
#include <cstdint>

#include "cuda/conv2d_problems.cuh"  // Geometry, store_as
#ifdef __CUDACC__
#include "cuda/conv2d_halo.cuh"  // CpAsync4, halo_wait
#endif

namespace pixelops::cuda::conv {

constexpr int kFcThreads = 256, kFcSlices = 4, kFcP = 4, kFcTW = 32, kFcTH = 8, kFcKwPad = 8;
constexpr int kFcPixelThreads = kFcThreads / kFcSlices;  // a slice's threads tile the block's pixels
static_assert(kFcPixelThreads == kFcTH * (kFcTW / kFcP), "a slice's threads cover the tile");
static_assert(kFcThreads / 32 <= kFcTH, "halo rows (at least kFcTH a channel) are copied a warp at a time");
constexpr int kFwMC = 8, kFwMB = kFcSlices * kFwMC;  // forward: output channels a thread, a block
constexpr int kGiKc = 16;                            // grad_input: grad_y channels a chunk
static_assert(kGiKc % kFcSlices == 0, "a chunk's channels split evenly over the slices");

// The CG a kernel instance is compiled for (1, 2 or 4: a Cg of 3 computes a fourth channel of zero weights).
inline int few_channels_cg(int64_t Cg) { return Cg == 1 ? 1 : Cg == 2 ? 2 : 4; }

// What the kernels share: the tiles and the halo's shape.
struct FcShape {
  int cg = 1;       // few_channels_cg(q.Cg)
  int kha = 1;      // kernel rows with an active tap
  int rows = 1;     // halo rows a channel: kFcTH + (kha - 1) * dh
  int cols = 1;     // halo columns a row: kFcTW + KW - 1
  int cs = 1;       // a halo row's length in shared memory: cols rounded up to 1 mod 4
  int64_t tiles_w = 0, tiles_h = 0;  // tiles across and down the computed planes
  int64_t tiles = 0;                 // ... and in all: images x tiles_h x tiles_w

  // x's halo (the forward and weight gradient stage cg channels of it), rounded up to whole 16 bytes so that
  // what follows it is aligned (fc_weights)
  __host__ __device__ int x_halo_floats() const { return (cg * rows * cs + 3) / 4 * 4; }
};

// Whether the kernels take q (stride 1, dilation 1 along rows, a kernel 3, 5 or 7 wide, at most 4 input
// channels a group), and its shape for planes of h x w computed pixels; false where they do not.
inline bool few_channels_shape(FcShape& s, const Geometry& q, int64_t h, int64_t w) {
  if (q.sh != 1 || q.sw != 1 || q.dw != 1 || (q.KW != 3 && q.KW != 5 && q.KW != 7) || q.Cg > 4 || q.Mg < 1 ||
      q.ntaps < 1 || q.H >= (int64_t(1) << 30) || q.W >= (int64_t(1) << 30) || q.G > 65535)
    return false;
  s.cg = few_channels_cg(q.Cg);
  s.kha = (q.ntaps - 1) / q.KW + 1;
  const int64_t rows = kFcTH + int64_t(s.kha - 1) * q.dh;
  if (rows > 64) return false;  // (a tall dilated kernel: a halo mostly of rows the tile does not compute)
  s.rows = int(rows);
  s.cols = kFcTW + q.KW - 1;
  s.cs = s.cols + ((1 - s.cols) % 4 + 4) % 4;
  s.tiles_w = (w + kFcTW - 1) / kFcTW;
  s.tiles_h = (h + kFcTH - 1) / kFcTH;
  s.tiles = q.N * s.tiles_h * s.tiles_w;
  return s.tiles < (int64_t(1) << 31);
}

// Block b's tile: image n, first computed row r0 and column c0.
struct FcTile {
  int64_t n, r0, c0;
};
__host__ __device__ __forceinline__ FcTile fc_tile(const FcShape& s, int64_t b) {
  const int64_t per_image = s.tiles_h * s.tiles_w, n = b / per_image, r = b - n * per_image, th = r / s.tiles_w;
  return {n, th * kFcTH, (r - th * s.tiles_w) * kFcTW};
}

// Thread tid's place: its slice, and the tile row and first column (kFcP * tx) of its pixels.
__host__ __device__ __forceinline__ void fc_place(int tid, int& slice, int& row, int& col0) {
  const int pt = tid % kFcPixelThreads;
  slice = tid / kFcPixelThreads;
  row = pt / (kFcTW / kFcP);
  col0 = kFcP * (pt % (kFcTW / kFcP));
}

// A lane's part in copying halo rows, the same for every row of a block: columns lane and lane + 32 of a row (a
// row is at most 38 long), whether each lies inside the source plane (columns [0, width)), and its offset in a
// source row. The halo's column 0 is source column `first`.
struct FcColumns {
  bool in[2];
  bool second;  // whether the lane has a second column (lane + 32 < cols; every lane has a first: cols > 32)
  int64_t off[2];
};
__host__ __device__ __forceinline__ FcColumns fc_columns(const FcShape& s, int64_t first, int64_t width,
                                                         int64_t stride, int lane) {
  static_assert(kFcTW + 7 - 1 <= 64 && kFcTW + 3 - 1 > 32, "a halo row is one or two columns a lane");
  FcColumns k;
  for (int j = 0; j < 2; ++j) {
    const int64_t c = first + lane + 32 * j;
    k.in[j] = lane + 32 * j < s.cols && c >= 0 && c < width;
    k.off[j] = c * stride;
  }
  k.second = lane + 32 < s.cols;
  return k;
}

// Thread tid's share of copying a halo of `nch` channels into hs ([channel][row][cs]): channel c, row r is source
// plane src + c * cstride, row first_row + r (rstride apart); zero outside [0, height) rows, the columns' bounds
// (cols), or from channel `have` on (past the group's channels). copy4(dst, src, valid) copies one value, or
// writes zero where !valid (src is then an address that is not read: `any`). A warp copies one row at a time,
// its lanes along the row; the warps take rows in turn, stepping through (channel, row) without a division (a
// step of kFcThreads / 32 <= kFcTH <= rows never crosses two channels).
template <class T, class Copy4>
__host__ __device__ __forceinline__ void fc_copy_halo(const FcShape& s, const T* src, int64_t cstride, int64_t rstride,
                                                      int nch, int64_t have, int64_t first_row, int64_t height,
                                                      const FcColumns& cols, const T* any, T* hs, int tid,
                                                      Copy4&& copy4) {
  // (the source and destination rows stepped along, not recomputed: a row's copy is then a few instructions)
  constexpr int kStep = kFcThreads / 32;
  const int lane = tid % 32;
  int r = tid / 32;
  const T* from = src + (first_row + r) * rstride;
  T* dst = hs + r * s.cs + lane;
  for (int c = 0; c < nch;) {
    const bool row_ok = c < have && uint64_t(first_row + r) < uint64_t(height);  // (a row above 0 wraps past it)
    const bool in0 = row_ok && cols.in[0], in1 = row_ok && cols.in[1];
    copy4(dst, in0 ? from + cols.off[0] : any, in0);
    if (cols.second) copy4(dst + 32, in1 ? from + cols.off[1] : any, in1);
    r += kStep;
    from += kStep * rstride;
    dst += kStep * s.cs;
    if (r >= s.rows) {  // on to the next channel's rows
      r -= s.rows;
      ++c;
      from += cstride - s.rows * rstride;
    }
  }
}

// NOUT consecutive weights at p (16-byte aligned where NOUT is a multiple of 4): 16-byte shared loads on the
// device, which the compiler cannot know to be aligned.
template <int NOUT, class T, class A>
__host__ __device__ __forceinline__ void fc_weights(const T* p, A (&wv)[NOUT]) {
#ifdef __CUDA_ARCH__
  if constexpr (NOUT % 4 == 0 && sizeof(T) == 4) {
#pragma unroll
    for (int o = 0; o < NOUT; o += 4) {
      const float4 v = *reinterpret_cast<const float4*>(p + o);
      wv[o] = v.x, wv[o + 1] = v.y, wv[o + 2] = v.z, wv[o + 3] = v.w;
    }
    return;
  }
#endif
#pragma unroll
  for (int o = 0; o < NOUT; ++o) wv[o] = A(p[o]);
}

// One kernel row of one halo channel into NOUT sums a pixel: the kFcP + KW - 1 halo values at h (consecutive),
// the row's weights at wr (tap kw's NOUT at wr + kw * WS); taps [0, nact) of the row (all KW but for the last
// active row of a mask). Pixel i's tap kw reads halo column i + kw in the forward, i + KW - 1 - kw in grad_input
// (kFlip: input column x takes output column x + pw - kw, the halo's column 0 being x's - pw - (KW - 1)).
template <int KW, int NOUT, int WS, bool kFlip, bool kWhole, class T, class A>
__host__ __device__ __forceinline__ void fc_row(const T* h, const T* wr, int nact, A (&acc)[NOUT][kFcP]) {
  A s[kFcP + KW - 1];
#pragma unroll
  for (int i = 0; i < kFcP + KW - 1; ++i) s[i] = A(h[i]);
#pragma unroll
  for (int kw = 0; kw < KW; ++kw) {
    if (!kWhole && kw >= nact) break;
    A wv[NOUT];
    fc_weights<NOUT>(wr + kw * WS, wv);
#pragma unroll
    for (int o = 0; o < NOUT; ++o)
#pragma unroll
      for (int i = 0; i < kFcP; ++i) acc[o][i] += wv[o] * s[i + (kFlip ? KW - 1 - kw : kw)];
  }
}

// ---- forward ------------------------------------------------------------------------------------------------
// A block: a tile of output pixels, kFwMB output channels (blockIdx.z), one group. Shared memory: x's halo
// ([c][row][cs], cg channels), then the weights as [c][kernel row][kFcKwPad][kFwMB] (zero for padding taps,
// missing channels and outputs past Mg).
template <class T>
struct FwTiled {
  Geometry q;  // the convolution; q.xs x's strides, q.ws the weights'; y contiguous
  FcShape s;
  const T* x = nullptr;
  const T* w = nullptr;
  const T* b = nullptr;  // bias (stride q.bs) or null
  T* y = nullptr;
  bool relu = false;
  int mblocks = 0;  // ceil(Mg / kFwMB)

  __host__ __device__ int halo_floats() const { return s.x_halo_floats(); }
  __host__ __device__ int weight_floats() const { return s.cg * s.kha * kFcKwPad * kFwMB; }
  size_t smem_bytes() const { return size_t(halo_floats() + weight_floats()) * sizeof(T); }
};

template <class T>
inline bool forward_tiled_setup(FwTiled<T>& p, const Geometry& q, const T* x, const T* w, const T* b, T* y, bool relu,
                                size_t smem_most) {
  if (!few_channels_shape(p.s, q, q.OH, q.OW) || q.Mg > int64_t(kFwMB) * 65535) return false;
  p.q = q;
  p.x = x;
  p.w = w;
  p.b = b;
  p.y = y;
  p.relu = relu;
  p.mblocks = int((q.Mg + kFwMB - 1) / kFwMB);
  return p.smem_bytes() <= smem_most;
}

// Thread tid's share of staging block (g, t, mb): x's halo (output pixel (oh, ow) of the tile reads x row
// oh - ph + kh*dh, column ow - pw + kw: halo row oh - r0 + kh*dh, column ow - c0 + kw), then the weights.
template <int CG, class T, class Copy4>
__host__ __device__ __forceinline__ void fw_stage(const FwTiled<T>& p, int64_t g, const FcTile& t, int mb, T* smem,
                                                  int tid, Copy4&& copy4) {
  const Geometry& q = p.q;
  const FcColumns cols = fc_columns(p.s, t.c0 - q.pw, q.W, q.xs[3], tid % 32);
  fc_copy_halo(p.s, p.x + t.n * q.xs[0] + g * q.Cg * q.xs[1], q.xs[1], q.xs[2], CG, q.Cg, t.r0 - q.ph, q.H, cols,
               p.x, smem, tid, copy4);
  T* ws = smem + p.halo_floats();
  const int64_t m0 = int64_t(mb) * kFwMB;
  for (int e = tid; e < p.weight_floats(); e += kFcThreads) {
    const int m = e % kFwMB, rest = e / kFwMB, kw = rest % kFcKwPad, rest2 = rest / kFcKwPad, kh = rest2 % p.s.kha,
              c = rest2 / p.s.kha;
    const bool valid = m0 + m < q.Mg && c < q.Cg && kw < q.KW;  // (a mask's taps past ntaps: copied, never read)
    copy4(ws + e, valid ? p.w + (g * q.Mg + m0 + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3] : p.w,
          valid);
  }
}

// Thread tid's products and stores: kFwMC output channels (slice * kFwMC on, in the block's kFwMB) of its
// pixels, bias and ReLU in the store.
template <int KW, int CG, class T>
__host__ __device__ __forceinline__ void fw_compute(const FwTiled<T>& p, int64_t g, const FcTile& t, int mb,
                                                    const T* smem, int tid) {
  using A = T;
  const Geometry& q = p.q;
  int slice, row, col0;
  fc_place(tid, slice, row, col0);
  A acc[kFwMC][kFcP];
#pragma unroll
  for (int o = 0; o < kFwMC; ++o)
#pragma unroll
    for (int i = 0; i < kFcP; ++i) acc[o][i] = A(0);
  const int whole = q.ntaps / KW, last = q.ntaps - whole * KW;  // whole kernel rows; taps of a last, partial one
  const int64_t drow = int64_t(q.dh) * p.s.cs;
  const T* ws = smem + p.halo_floats() + slice * kFwMC;
#pragma unroll
  for (int c = 0; c < CG; ++c) {
    const T* h = smem + (c * p.s.rows + row) * p.s.cs + col0;
    const T* wr = ws + c * p.s.kha * kFcKwPad * kFwMB;
    for (int kh = 0; kh < whole; ++kh, h += drow, wr += kFcKwPad * kFwMB)
      fc_row<KW, kFwMC, kFwMB, false, true>(h, wr, KW, acc);
    if (last) fc_row<KW, kFwMC, kFwMB, false, false>(h, wr, last, acc);
  }
  const int64_t oh = t.r0 + row, plane = q.OH * q.OW;
  if (oh >= q.OH) return;
  const int64_t m0 = int64_t(mb) * kFwMB + slice * kFwMC;
#pragma unroll
  for (int o = 0; o < kFwMC; ++o) {
    const int64_t m = m0 + o;
    if (m >= q.Mg) break;
    const A bias = p.b ? A(to_float(p.b[(g * q.Mg + m) * q.bs])) : A(0);
    T* out = p.y + (t.n * q.M + g * q.Mg + m) * plane + oh * q.OW + t.c0 + col0;
#pragma unroll
    for (int i = 0; i < kFcP; ++i) {
      if (t.c0 + col0 + i >= q.OW) break;
      A v = acc[o][i] + bias;
      if (p.relu && v < A(0)) v = A(0);  // NaN passes, as in torch.relu
      out[i] = store_as<T>(v);
    }
  }
}

// ---- grad_input ---------------------------------------------------------------------------------------------
template <class T>
struct GiTiled {
  Geometry q;  // the convolution; q.gs grad_y's strides, q.ws the weights'; grad_x contiguous
  FcShape s;
  const T* w = nullptr;
  const T* gy = nullptr;
  T* gx = nullptr;
  int nchunks = 0;  // ceil(Mg / kGiKc)

  __host__ __device__ int halo_floats() const { return kGiKc * s.rows * s.cs; }  // (a multiple of 16: fc_weights)
  __host__ __device__ int weight_floats() const { return kGiKc * s.kha * kFcKwPad * s.cg; }
  __host__ __device__ int stage_floats() const { return halo_floats() + weight_floats(); }
  size_t smem_bytes() const { return 2 * size_t(stage_floats()) * sizeof(T); }
};

template <class T>
inline bool grad_input_tiled_setup(GiTiled<T>& p, const Geometry& q, const T* w, const T* gy, T* gx,
                                   size_t smem_most) {
  if (!few_channels_shape(p.s, q, q.H, q.W)) return false;
  p.q = q;
  p.w = w;
  p.gy = gy;
  p.gx = gx;
  p.nchunks = int((q.Mg + kGiKc - 1) / kGiKc);
  return p.smem_bytes() <= smem_most;
}

// Thread tid's share of staging chunk cc (grad_y channels cc * kGiKc + [0, kGiKc) of group g) into stage st:
// grad_y's halo (input pixel (ih, iw) takes output row ih + ph - kh*dh, column iw + pw - kw: halo row
// ih - r0 + (kha-1-kh)*dh, column iw - c0 + KW-1-kw), then the weights as [channel][kernel row][kFcKwPad][CG]
// (zero for padding taps and missing channels). cols: fc_columns of grad_y's rows, the same for every chunk.
template <int CG, class T, class Copy4>
__host__ __device__ __forceinline__ void gi_load_chunk(const GiTiled<T>& p, int64_t g, const FcTile& t,
                                                       const FcColumns& cols, int cc, T* st, int tid, Copy4&& copy4) {
  const Geometry& q = p.q;
  const int64_t m0 = int64_t(cc) * kGiKc;
  fc_copy_halo(p.s, p.gy + t.n * q.gs[0] + (g * q.Mg + m0) * q.gs[1], q.gs[1], q.gs[2], kGiKc, q.Mg - m0,
               t.r0 + q.ph - int64_t(p.s.kha - 1) * q.dh, q.OH, cols, p.gy, st, tid, copy4);
  T* wst = st + p.halo_floats();
  for (int e = tid; e < p.weight_floats(); e += kFcThreads) {
    const int c = e % CG, rest = e / CG, kw = rest % kFcKwPad, rest2 = rest / kFcKwPad, kh = rest2 % p.s.kha,
              ml = rest2 / p.s.kha;
    const int64_t m = m0 + ml;
    const bool valid = m < q.Mg && c < q.Cg && kw < q.KW;  // (a mask's taps past ntaps: copied, never read)
    copy4(wst + e, valid ? p.w + (g * q.Mg + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3] : p.w, valid);
  }
}
template <class T>
__host__ __device__ __forceinline__ FcColumns gi_columns(const GiTiled<T>& p, const FcTile& t, int lane) {
  return fc_columns(p.s, t.c0 + p.q.pw - (p.q.KW - 1), p.q.OW, p.q.gs[3], lane);
}

// Thread tid's products with a staged chunk st (its slice's channels): acc[c][i] for input channel c of the
// group and pixel i of its run.
template <int KW, int CG, class T, class A>
__host__ __device__ __forceinline__ void gi_chunk(const GiTiled<T>& p, const T* st, int tid, A (&acc)[CG][kFcP]) {
  int slice, row, col0;
  fc_place(tid, slice, row, col0);
  const int whole = p.q.ntaps / KW, last = p.q.ntaps - whole * KW;  // whole rows; taps of a last, partial one
  const int64_t drow = int64_t(p.q.dh) * p.s.cs;                    // one kernel row up: dh halo rows down
  const T* wst = st + p.halo_floats();
  for (int ml = slice; ml < kGiKc; ml += kFcSlices) {
    // kernel row kh reads halo row row + (kha - 1 - kh) * dh
    const T* h = st + (ml * p.s.rows + row + int64_t(p.s.kha - 1) * p.q.dh) * p.s.cs + col0;
    const T* wr = wst + ml * p.s.kha * kFcKwPad * CG;
    for (int kh = 0; kh < whole; ++kh, h -= drow, wr += kFcKwPad * CG) fc_row<KW, CG, CG, true, true>(h, wr, KW, acc);
    if (last) fc_row<KW, CG, CG, true, false>(h, wr, last, acc);
  }
}

// The end of a block, in two steps with a barrier between (the stages are free then: red is stage 0): slices
// 1-3 put their sums in red (gi_put), then slice 0 adds them to its own in slice order and stores the pixels
// inside the image (gi_store).
template <int CG, class A>
__host__ __device__ __forceinline__ void gi_put(A* red, int tid, const A (&acc)[CG][kFcP]) {
  int slice, row, col0;
  fc_place(tid, slice, row, col0);
  if (slice == 0) return;
  A* r = red + ((slice - 1) * kFcPixelThreads + tid % kFcPixelThreads) * CG * kFcP;
#pragma unroll
  for (int c = 0; c < CG; ++c)
#pragma unroll
    for (int i = 0; i < kFcP; ++i) r[c * kFcP + i] = acc[c][i];
}
template <int CG, class T, class A>
__host__ __device__ __forceinline__ void gi_store(const GiTiled<T>& p, int64_t g, const FcTile& t, const A* red,
                                                  int tid, A (&acc)[CG][kFcP]) {
  int slice, row, col0;
  fc_place(tid, slice, row, col0);
  const Geometry& q = p.q;
  const int64_t ih = t.r0 + row;
  if (slice != 0 || ih >= q.H) return;
  for (int s = 1; s < kFcSlices; ++s) {
    const A* r = red + ((s - 1) * kFcPixelThreads + tid) * CG * kFcP;
#pragma unroll
    for (int c = 0; c < CG; ++c)
#pragma unroll
      for (int i = 0; i < kFcP; ++i) acc[c][i] += r[c * kFcP + i];
  }
  const int64_t plane = q.H * q.W;
#pragma unroll
  for (int c = 0; c < CG; ++c) {
    if (c >= q.Cg) break;
    T* out = p.gx + (t.n * q.C + g * q.Cg + c) * plane + ih * q.W + t.c0 + col0;
#pragma unroll
    for (int i = 0; i < kFcP; ++i)
      if (t.c0 + col0 + i < q.W) out[i] = store_as<T>(acc[c][i]);
  }
}

// ---- weight gradient ----------------------------------------------------------------------------------------
// gw[m][c][tap] = sum over output pixels of grad_y[m] times x at the tap's offset: a split's blocks (blockIdx.x;
// kGwMB output channels: blockIdx.z; a group: blockIdx.y) take the tiles split, split + splits, ... of output
// pixels. For each, they stage x's halo (as the forward) and grad_y's tile ([m][row][col], kGwS floats a
// channel). Thread (row group, (c, kh), mq) sums, over its tile rows, kernel row kh's KW taps of channel c for
// output channels mq + 8 * [0, 4): per 4 pixels of a row, kFcP + KW - 1 loads of x and 4 16-byte loads of
// grad_y for 16 x KW multiply-adds (a mask's last active row: its active taps alone, on warps of their own:
// gw_thread). The threads of (c, kh) 0 add grad_y itself too: grad_bias. At the end the row groups add their
// sums in order, and the block writes its split's partial sums in weight_from_partials' layout
// ([split][M][Cg * ntaps + bias]), which reduce_grad_weight adds in split order. (grad_weight_direct, which this
// replaces for these layers, takes pcnn_maskA's in 0.038 ms on an H100, 4 TFLOP/s.)
constexpr int kGwMB = 32, kGwMq = 8;        // output channels a block; a thread's 4 are mq + 8 * [0, 4)
constexpr int kGwS = kFcTH * kFcTW + 4;     // a channel's grad_y tile: 260 floats, 4 mod 32 (conflict-free)
static_assert(kGwMq * 4 == kGwMB, "a block's channels are 8 threads' 4");

template <class T>
struct GwTiled {
  Geometry q;  // the convolution; q.xs x's strides, q.gs grad_y's
  FcShape s;
  const T* x = nullptr;
  const T* gy = nullptr;
  T* ws = nullptr;    // partial sums, [split][q.M][ncol()]
  bool bias = false;  // grad_bias's partial sums as the last column
  int mblocks = 0;    // ceil(Mg / kGwMB)
  int splits = 1;
  int nck = 1;        // (channel, kernel row) pairs: cg * kha
  int groups = 8;     // row groups: 8, or fewer where 8 * nck * 8 threads would pass kFcThreads

  __host__ __device__ int halo_floats() const { return s.x_halo_floats(); }
  __host__ __device__ int gy_floats() const { return kGwMB * kGwS; }
  __host__ __device__ int red_floats() const { return kFcThreads * 4 * 8; }  // (KW + 1 <= 8 sums of 4 channels)
  size_t smem_bytes() const {
    return size_t(halo_floats() + gy_floats() > red_floats() ? halo_floats() + gy_floats() : red_floats()) * sizeof(T);
  }
  __host__ __device__ int64_t ncol() const { return q.Cg * q.ntaps + (bias ? 1 : 0); }
};

// Fills p (splits: about `blocks` blocks in all, at most one a tile), or returns false where the kernel does not
// take q.
template <class T>
inline bool grad_weight_tiled_setup(GwTiled<T>& p, const Geometry& q, const T* x, const T* gy, bool bias,
                                    int64_t blocks, size_t smem_most) {
  if (!few_channels_shape(p.s, q, q.OH, q.OW) || q.Mg > int64_t(kGwMB) * 65535) return false;
  p.q = q;
  p.x = x;
  p.gy = gy;
  p.bias = bias;
  p.mblocks = int((q.Mg + kGwMB - 1) / kGwMB);
  p.nck = p.s.cg * p.s.kha;
  p.groups = 8;
  while (p.groups > 1 && kGwMq * p.nck * p.groups > kFcThreads) p.groups /= 2;
  if (kGwMq * p.nck * p.groups > kFcThreads) return false;
  // as few splits as give each its share of the tiles that `blocks` blocks would: the same longest split
  // (pcnn_maskA: 256 tiles, 198 splits wanted, 2 tiles the most), fewer partial sums to write and add (128)
  const int64_t per_split = q.G * p.mblocks, asked = (blocks + per_split - 1) / per_split, want = asked < 1 ? 1 : asked;
  const int64_t most = (p.s.tiles + want - 1) / want;  // tiles a split
  p.splits = int((p.s.tiles + most - 1) / most);
  return p.smem_bytes() <= smem_most;
}

// The thread of row group `group`, (kernel row, channel) pair ck and channel quad mq. The pairs are the slowest
// index, kernel row first (ck = kh * cg + c): a warp's threads share one pair, or (where fewer than 4 row groups
// fit) pairs of one kernel row, so that a mask's last kernel row, whose threads do fewer taps, takes warps of its
// own, and those warps' issue slots go to the others (pcnn_maskA: 2 of 8 warps do 3 taps where the rest do 7).
template <class T>
__host__ __device__ __forceinline__ int gw_thread(const GwTiled<T>& p, int group, int ck, int mq) {
  return mq + kGwMq * (group + p.groups * ck);
}

// Thread tid's role: its row group, channel c, kernel row kh, and channel quad mq; false for an idle thread
// (past the nck pairs).
template <class T>
__host__ __device__ __forceinline__ bool gw_place(const GwTiled<T>& p, int tid, int& group, int& c, int& kh,
                                                  int& mq) {
  mq = tid % kGwMq;
  const int rest = tid / kGwMq, ck = rest / p.groups;
  group = rest - ck * p.groups;
  kh = ck / p.s.cg;
  c = ck - kh * p.s.cg;
  return ck < p.nck;
}

// Thread tid's share of staging tile t of block (g, mb): x's halo ([c][row][cs]), then grad_y's tile
// ([m][row][col], kGwS a channel; zero past the output or the group's channels).
template <int CG, class T, class Copy4>
__host__ __device__ __forceinline__ void gw_stage(const GwTiled<T>& p, int64_t g, const FcTile& t, int mb, T* smem,
                                                  int tid, Copy4&& copy4) {
  const Geometry& q = p.q;
  const FcColumns cols = fc_columns(p.s, t.c0 - q.pw, q.W, q.xs[3], tid % 32);
  fc_copy_halo(p.s, p.x + t.n * q.xs[0] + g * q.Cg * q.xs[1], q.xs[1], q.xs[2], CG, q.Cg, t.r0 - q.ph, q.H, cols,
               p.x, smem, tid, copy4);
  // grad_y: warp w copies tile row w of every channel, a lane a column (pointers stepped a channel at a time)
  static_assert(kFcTW == 32 && kFcThreads / 32 == kFcTH, "a warp a tile row");
  const int lane = tid % 32, r = tid / 32;
  const int64_t m0 = int64_t(mb) * kGwMB;
  const bool at = t.c0 + lane < q.OW && t.r0 + r < q.OH;
  const T* from = p.gy + t.n * q.gs[0] + (g * q.Mg + m0) * q.gs[1] + ((t.r0 + r) * q.gs[2] + (t.c0 + lane) * q.gs[3]);
  T* dst = smem + p.halo_floats() + r * kFcTW + lane;
  for (int m = 0; m < kGwMB; ++m, from += q.gs[1], dst += kGwS) {
    const bool valid = at && m0 + m < q.Mg;
    copy4(dst, valid ? from : p.gy, valid);
  }
}

// gw_tile's sums for kernel row kh's first NACT taps (NACT = KW: the whole row) over the thread's tile rows. The
// count is a template argument so that the taps index registers and nothing tests them.
template <int KW, int NACT, class T, class A>
__host__ __device__ __forceinline__ void gw_rows(const GwTiled<T>& p, const T* smem, int group, int c, int kh, int mq,
                                                 A (&acc)[4][KW], A (&bias)[4]) {
  const T* gys = smem + p.halo_floats();
  for (int r = group; r < kFcTH; r += p.groups) {
    const T* h = smem + (c * p.s.rows + r + int64_t(kh) * p.q.dh) * p.s.cs;
    for (int j0 = 0; j0 < kFcTW; j0 += kFcP) {
      A xv[kFcP + NACT - 1];
#pragma unroll
      for (int i = 0; i < kFcP + NACT - 1; ++i) xv[i] = A(h[j0 + i]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        A gv[kFcP];
        fc_weights<kFcP>(gys + (mq + kGwMq * i) * kGwS + r * kFcTW + j0, gv);
#pragma unroll
        for (int kw = 0; kw < NACT; ++kw)
#pragma unroll
          for (int j = 0; j < kFcP; ++j) acc[i][kw] += gv[j] * xv[j + kw];
        if (c == 0 && kh == 0) bias[i] += (gv[0] + gv[1]) + (gv[2] + gv[3]);
      }
    }
  }
}

// Thread tid's sums over a staged tile: acc[i][kw] for channel mq + 8*i and tap (kh, kw) of channel c; bias[i]
// grad_y's own sum (threads of (c, kh) 0). A PixelCNN mask's last active row (KW / 2 taps for mask A, one more
// for B) sums its active taps alone; a row cut elsewhere sums all KW, the inactive ones never stored.
template <int KW, class T, class A>
__host__ __device__ __forceinline__ void gw_tile(const GwTiled<T>& p, const T* smem, int tid, A (&acc)[4][KW],
                                                 A (&bias)[4]) {
  int group, c, kh, mq;
  if (!gw_place(p, tid, group, c, kh, mq)) return;
  const int nact = p.q.ntaps - kh * KW;
  if (nact == KW / 2) gw_rows<KW, KW / 2>(p, smem, group, c, kh, mq, acc, bias);
  else if (nact == KW / 2 + 1) gw_rows<KW, KW / 2 + 1>(p, smem, group, c, kh, mq, acc, bias);
  else gw_rows<KW, KW>(p, smem, group, c, kh, mq, acc, bias);
}

// The end of a block, in two steps with a barrier between (the stages are free then: red is shared memory's
// start): each row group's sums into red (gw_put), then row group 0 adds them in order and writes the split's
// partial sums of the taps that are active, and grad_bias's (gw_store).
template <int KW, class T, class A>
__host__ __device__ __forceinline__ void gw_put(const GwTiled<T>& p, A* red, int tid, const A (&acc)[4][KW],
                                                const A (&bias)[4]) {
  int group, c, kh, mq;
  if (!gw_place(p, tid, group, c, kh, mq)) return;
  A* r = red + tid * 4 * 8;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int kw = 0; kw < KW; ++kw) r[i * 8 + kw] = acc[i][kw];
    r[i * 8 + 7] = bias[i];
  }
}
template <int KW, class T, class A>
__host__ __device__ __forceinline__ void gw_store(const GwTiled<T>& p, int64_t g, int mb, int split, const A* red,
                                                  int tid) {
  int group, c, kh, mq;
  const Geometry& q = p.q;
  if (!gw_place(p, tid, group, c, kh, mq) || group != 0 || c >= q.Cg) return;
  for (int i = 0; i < 4; ++i) {
    const int64_t m = int64_t(mb) * kGwMB + mq + kGwMq * i;
    if (m >= q.Mg) continue;
    A sum[8];
    for (int k = 0; k < 8; ++k) sum[k] = red[tid * 4 * 8 + i * 8 + k];
    for (int gr = 1; gr < p.groups; ++gr)
      for (int k = 0; k < 8; ++k) sum[k] += red[gw_thread(p, gr, kh * p.s.cg + c, mq) * 4 * 8 + i * 8 + k];
    T* out = p.ws + (int64_t(split) * q.M + g * q.Mg + m) * p.ncol();
    for (int kw = 0; kw < KW && kh * KW + kw < q.ntaps; ++kw) out[c * q.ntaps + kh * KW + kw] = T(sum[kw]);
    if (p.bias && c == 0 && kh == 0) out[q.Cg * q.ntaps] = T(sum[7]);
  }
}

#ifdef __CUDACC__
// Grid: x over tiles (image-major), y over groups, z over blocks of kFwMB output channels. One stage: a block's
// copies are small (pcnn_maskA: 451 floats of x, 1024 of weights), and several blocks share an SM.
template <int KW, int CG>
__global__ void __launch_bounds__(kFcThreads, 4) forward_tiled(const __grid_constant__ FwTiled<float> p) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x, mb = int(blockIdx.z);
  const int64_t g = blockIdx.y;
  const FcTile t = fc_tile(p.s, blockIdx.x);
  fw_stage<CG>(p, g, t, mb, smem, tid, CpAsync4{});
  asm volatile("cp.async.commit_group;" ::: "memory");
  halo_wait(0);
  __syncthreads();
  fw_compute<KW, CG>(p, g, t, mb, smem, tid);
}

// Grid: x over tiles (image-major), y over groups. Two stages: chunk cc+1's copies fly while chunk cc is
// multiplied.
template <int KW, int CG>
__global__ void __launch_bounds__(kFcThreads, 3) grad_input_tiled(const __grid_constant__ GiTiled<float> p) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x;
  const int64_t g = blockIdx.y;
  const FcTile t = fc_tile(p.s, blockIdx.x);
  const int stage = p.stage_floats();
  const FcColumns cols = gi_columns(p, t, tid % 32);
  const CpAsync4 copy4;
  float acc[CG][kFcP];
#pragma unroll
  for (int c = 0; c < CG; ++c)
#pragma unroll
    for (int i = 0; i < kFcP; ++i) acc[c][i] = 0.f;
  gi_load_chunk<CG>(p, g, t, cols, 0, smem, tid, copy4);
  asm volatile("cp.async.commit_group;" ::: "memory");
  for (int cc = 0; cc < p.nchunks; ++cc) {
    if (cc + 1 < p.nchunks) gi_load_chunk<CG>(p, g, t, cols, cc + 1, smem + ((cc + 1) & 1) * stage, tid, copy4);
    asm volatile("cp.async.commit_group;" ::: "memory");  // (empty past the last chunk)
    halo_wait(1);     // chunk cc is in, for this thread's copies
    __syncthreads();  // ... and for every thread's
    gi_chunk<KW, CG>(p, smem + (cc & 1) * stage, tid, acc);
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }
  gi_put<CG>(smem, tid, acc);
  __syncthreads();
  gi_store<CG>(p, g, t, smem, tid, acc);
}

// Grid: x over splits, y over groups, z over blocks of kGwMB output channels. One stage a tile, several blocks
// an SM.
template <int KW, int CG>
__global__ void __launch_bounds__(kFcThreads, 3) grad_weight_tiled(const __grid_constant__ GwTiled<float> p) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x, mb = int(blockIdx.z), split = int(blockIdx.x);
  const int64_t g = blockIdx.y;
  float acc[4][KW], bias[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    bias[i] = 0.f;
#pragma unroll
    for (int kw = 0; kw < KW; ++kw) acc[i][kw] = 0.f;
  }
  for (int64_t tile = split; tile < p.s.tiles; tile += p.splits) {
    gw_stage<CG>(p, g, fc_tile(p.s, tile), mb, smem, tid, CpAsync4{});
    asm volatile("cp.async.commit_group;" ::: "memory");
    halo_wait(0);
    __syncthreads();
    gw_tile<KW>(p, smem, tid, acc, bias);
    __syncthreads();  // every warp is done with the tile before the next one is staged over it
  }
  gw_put<KW>(p, smem, tid, acc, bias);
  __syncthreads();
  gw_store<KW>(p, g, mb, split, smem, tid);
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
