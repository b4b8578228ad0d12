// Direct (not GEMM) conv2d kernels, for shapes where a GEMM tile would be mostly empty: grad_input, the
// forward and grad_weight of layers with few input channels per group. Like the GEMM
// problems, the index math here needs no CUDA header beyond the kernel keywords, so tests/cuda_host runs it
// on the host against naive loops.
#pragma once
#include <type_traits>

#include "cuda/conv2d_problems.cuh"

namespace pixelops::cuda::conv {

// grad_input when a group has at most kDirectCg input channels (an image net's first layer, depthwise convs):
// as a GEMM its M would be Cg, and a 64-row tile would do up to 64 times the work. Here the group's weights
// sit in shared memory as wsh[tap][m][c]. A warp takes kGiPixels consecutive input pixels, and its kGiSlices
// lane groups split the group's output channels between them (slice s takes m = s, s + kGiSlices, ...): for
// each tap that reaches its pixel, a thread reads grad_y of its channels there (the lanes of a slice read
// neighbouring pixels of one plane: at stride 1, one 32-byte sector) and the weights as broadcasts, into two alternating
// sums a channel; two shuffles add the slices' sums, in a fixed order. (One thread a pixel, adding all
// Mg*ntaps products in one chain of dependent multiply-adds, took 0.18 ms for pcnn_maskA's 64 x 24 a pixel on
// an H200: a quarter of the chain's length, two chains, and four times the threads to hide it.)
// Stage, sum and store are functions of their own, so that tests/cuda_host runs them for every thread in turn.
constexpr int kDirectCg = 4, kDirectWeights = 4096;
constexpr int kGiSlices = 4, kGiPixels = 32 / kGiSlices, kGiThreads = 256;

// The CG a grad_input_direct instance is compiled for (1, 2 or kDirectCg), and whether q takes that kernel:
// its weights must fit the shared array.
inline int grad_input_direct_cg(int64_t Cg) { return Cg == 1 ? 1 : Cg == 2 ? 2 : kDirectCg; }
inline bool grad_input_direct_fits(const Geometry& q) {
  return q.Cg <= kDirectCg && q.G <= 65535 && q.ntaps * q.Mg * grad_input_direct_cg(q.Cg) <= kDirectWeights;
}

template <class T, class A, int CG>
__device__ __forceinline__ void grad_input_direct_stage(const Geometry& q, const T* w, int64_t g, A* wsh, int tid,
                                                        int nthreads) {
  const int Mg = int(q.Mg), total = q.ntaps * Mg * CG;
  for (int i = tid; i < total; i += nthreads) {
    const int t = i / (Mg * CG), rem = i - t * (Mg * CG), m = rem / CG, c = rem - m * CG, kh = t / q.KW,
              kw = t - kh * q.KW;
    wsh[i] = c < q.Cg ? A(to_float(w[(g * q.Mg + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3]])) : A(0);
  }
}

// The products of one tap for a slice's `count` channels: grad_y at gp (gated by y at yp where kGated), the
// channels gstep (ystep) apart, their weights at wt, kGiSlices*CG apart; into two alternating sums.
template <bool kGated, class T, class A, int CG>
__device__ __forceinline__ void grad_input_direct_tap(const T* gp, const T* yp, int64_t gstep, int64_t ystep,
                                                      const A* wt, int count, A (&acc)[2][CG]) {
  // grad_y where the fused ReLU was on (its output above 0), else 0
  auto grad = [](const T* g, const T* y) {
    const A v = A(to_float(*g));
    if constexpr (kGated) return A(to_float(*y)) > A(0) ? v : A(0);
    else return v;
  };
  int j = 0;
#pragma unroll 2
  for (; j + 1 < count; j += 2) {
    const A v0 = grad(gp, yp), v1 = grad(gp + gstep, yp + ystep);
#pragma unroll
    for (int c = 0; c < CG; ++c) {
      acc[0][c] += v0 * wt[c];
      acc[1][c] += v1 * wt[kGiSlices * CG + c];
    }
    gp += 2 * gstep;
    yp += 2 * ystep;
    wt += 2 * kGiSlices * CG;
  }
  if (j < count) {
    const A v = grad(gp, yp);
#pragma unroll
    for (int c = 0; c < CG; ++c) acc[0][c] += v * wt[c];
  }
}

// Slice `slice`'s share of input pixel i's gradient (i over the N*H*W pixels of group g), for each channel c.
template <class T, class A, int CG>
__device__ __forceinline__ void grad_input_direct_sum(const Geometry& q, const T* y, const T* gy, int64_t g,
                                                      const A* wsh, int64_t i, int slice, A (&sum)[CG]) {
  const int64_t pix = q.H * q.W, img = q.by_ipix(i), r = i - img * pix, ih = q.by_W(r), iw = r - ih * q.W;
  const int Mg = int(q.Mg), count = (Mg - slice + kGiSlices - 1) / kGiSlices;  // the slice's channels
  const T* gy_img = gy + img * q.gs[0] + (g * q.Mg + slice) * q.gs[1];
  const T* y_img = y ? y + img * q.ys[0] + (g * q.Mg + slice) * q.ys[1] : y;
  const int64_t gstep = kGiSlices * q.gs[1], ystep = kGiSlices * q.ys[1];
  A acc[2][CG];
#pragma unroll
  for (int c = 0; c < CG; ++c) acc[0][c] = acc[1][c] = A(0);
  // the tap loop, compiled apart for a gated and an ungated grad_y (no test of y in the channel loop)
  auto taps = [&](auto gated) {
    constexpr bool kGated = decltype(gated)::value;
    for (int t = 0, kh = 0, kw = 0; t < q.ntaps; ++t) {
      int64_t oh, ow;
      const bool hit = reached_output(q, ih + q.ph, iw + q.pw, kh, kw, oh, ow);
      if (++kw == q.KW) { kw = 0; ++kh; }
      if (!hit) continue;
      const A* wt = wsh + (t * Mg + slice) * CG;
      grad_input_direct_tap<kGated, T, A, CG>(gy_img + oh * q.gs[2] + ow * q.gs[3],
                                              kGated ? y_img + oh * q.ys[2] + ow * q.ys[3] : y_img, gstep, ystep, wt,
                                              count, acc);
    }
  };
  if (y) taps(std::true_type{});
  else taps(std::false_type{});
#pragma unroll
  for (int c = 0; c < CG; ++c) sum[c] = acc[0][c] + acc[1][c];
}

template <class T, class A, int CG>
__device__ __forceinline__ void grad_input_direct_store(const Geometry& q, T* gx, int64_t g, int64_t i,
                                                        const A (&sum)[CG]) {
  const int64_t pix = q.H * q.W, img = q.by_ipix(i), r = i - img * pix;
  for (int c = 0; c < CG && c < q.Cg; ++c) gx[(img * q.C + g * q.Cg + c) * pix + r] = store_as<T>(sum[c]);
}

#ifdef __CUDACC__
// Grid: x over runs of kGiPixels input pixels, a warp each (grid-stride), y over groups. At most 64 registers,
// so that four blocks share an SM (there were 72-80, three): the sums wait on gathered loads, which more warps
// hide. (float64's sums take twice the registers: three blocks, else they spill.)
template <class T, int CG>
__global__ void __launch_bounds__(kGiThreads, sizeof(typename AccOf<T>::type) == 8 ? 3 : 4)
    grad_input_direct(Geometry q, const T* __restrict__ w, const T* __restrict__ y, const T* __restrict__ gy,
                      T* __restrict__ gx) {
  using A = typename AccOf<T>::type;
  __shared__ A wsh[kDirectWeights];
  grad_input_direct_stage<T, A, CG>(q, w, blockIdx.y, wsh, threadIdx.x, blockDim.x);
  __syncthreads();
  const int lane = threadIdx.x % 32, slice = lane / kGiPixels;
  const int64_t total = q.N * q.H * q.W;
  const int64_t step = int64_t(gridDim.x) * (blockDim.x / 32) * kGiPixels;
  // warp-uniform bounds: every lane of the warp takes part in the shuffles
  for (int64_t base = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32 * kGiPixels; base < total; base += step) {
    const int64_t i = base + lane % kGiPixels;
    A sum[CG];
#pragma unroll
    for (int c = 0; c < CG; ++c) sum[c] = A(0);
    if (i < total) grad_input_direct_sum<T, A, CG>(q, y, gy, blockIdx.y, wsh, i, slice, sum);
#pragma unroll
    for (int o = kGiPixels; o < 32; o *= 2)
#pragma unroll
      for (int c = 0; c < CG; ++c) sum[c] += __shfl_xor_sync(0xffffffffu, sum[c], o);
    if (slice == 0 && i < total) grad_input_direct_store<T, A, CG>(q, gx, blockIdx.y, i, sum);
  }
}
#endif

// Where tap-column k = c*ntaps + t of a window sits, from the window's corner: its offset in x (32 bits, checked
// on the host: direct_window_fits) and its row and column shifts (16 bits each). Eight bytes, read from a
// shared table by the direct forward and weight-gradient kernels.
struct WindowTap {
  int off;
  int shift;  // (kh*dh) << 16 | kw*dw
};
__host__ __device__ inline WindowTap window_tap(const Geometry& q, int k) {
  const int c = k / q.ntaps, t = k - c * q.ntaps, kh = t / q.KW, kw = t - kh * q.KW;
  return {int(c * q.xs[1] + int64_t(kh) * q.dh * q.xs[2] + int64_t(kw) * q.dw * q.xs[3]), (kh * q.dh) << 16 | kw * q.dw};
}
// Whether window_tap's offsets and shifts fit their bits, and pixel rows and columns an int.
inline bool direct_window_fits(const Geometry& q) {
  const int64_t reach = (q.Cg - 1) * q.xs[1] + int64_t(q.KH - 1) * q.dh * q.xs[2] + int64_t(q.KW - 1) * q.dw * q.xs[3];
  return reach < (int64_t(1) << 31) && (q.KH - 1) * q.dh < (1 << 15) && (q.KW - 1) * q.dw < (1 << 16) &&
         q.H < (1 << 29) && q.W < (1 << 29);
}
// One table entry, read from shared memory at every use (an opaque load): left to itself the compiler may keep
// the whole table in registers beside the sums, and spill.
__device__ __forceinline__ WindowTap load_tap(const WindowTap* p) {
#ifdef __CUDA_ARCH__
  WindowTap t;
  asm volatile("ld.shared.v2.s32 {%0, %1}, [%2];"
               : "=r"(t.off), "=r"(t.shift)
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))));
  return t;
#else
  return *p;
#endif
}
// Where a window's corner is: ih0 = kNoPixel for a pixel past the problem (every tap then reads as zero: its
// rows stay negative).
constexpr int kNoPixel = -(1 << 30);

// Forward when a group's K = Cg * ntaps is small (an image net's first layer: a few input channels): as a GEMM
// its K loop would be one or two mostly empty steps, and the tile's staging would cost more than the
// arithmetic. Here the group's weights sit in shared memory as wsh[k][m] (k = c*ntaps + tap), each row Mg
// rounded up to whole blocks of kDirectMB channels with zeros, and the taps' offsets in a table (WindowTap). A
// warp takes 32 consecutive output pixels for one block of kDirectMB channels, a pixel a lane: per tap it reads
// the tap's table entry (a broadcast), one input value (L1 hits after the first pass), and the block's
// kDirectMB weights as 16-byte broadcasts, for kDirectMB multiply-adds. Neighbouring lanes write neighbouring
// pixels.
// (The first version tested each channel against Mg, read the weights one at a time and recomputed the tap's
// 64-bit address from its row and column: some 105 instructions a tap for 16 multiply-adds; pcnn_maskA's took
// 0.032 ms on an H100 for 13 MB of output. One thread for all the channels of a pixel: 0.038; loading four taps'
// inputs before their products: 0.041.)
// The kernel body is two phases with a barrier between them, so that tests/cuda_host can run each for all
// threads in turn.
constexpr int kDirectK = 64, kDirectMB = 16;

// A group's staged weight row: Mg rounded up to whole channel blocks.
__host__ __device__ inline int64_t forward_direct_row(const Geometry& q) {
  return (q.Mg + kDirectMB - 1) / kDirectMB * kDirectMB;
}

// Units of work of a group (a warp each): runs of 32 pixels times blocks of kDirectMB channels.
__host__ __device__ inline int64_t forward_direct_units(const Geometry& q) {
  return (q.N * q.OH * q.OW + 31) / 32 * ((q.Mg + kDirectMB - 1) / kDirectMB);
}

inline bool forward_direct_fits(const Geometry& q) {
  const int64_t K = q.Cg * q.ntaps;
  return K <= kDirectK && K * forward_direct_row(q) <= kDirectWeights && q.G <= 65535 && direct_window_fits(q);
}

// Phase 1 (all threads): wsh[k][m] (zeros past Mg) and the tap table.
template <class T, class A>
__device__ __forceinline__ void forward_direct_stage(const Geometry& q, const T* w, int64_t g, A* wsh, WindowTap* taps,
                                                     int tid, int nthreads) {
  const int K = int(q.Cg) * q.ntaps, row = int(forward_direct_row(q));
  for (int i = tid; i < K * row; i += nthreads) {  // k fastest: the weights' own order
    const int m = i / K, k = i - m * K, c = k / q.ntaps, t = k - c * q.ntaps, kh = t / q.KW, kw = t - kh * q.KW;
    wsh[k * row + m] =
        m < q.Mg ? A(to_float(w[(g * q.Mg + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3]])) : A(0);
  }
  for (int k = tid; k < K; k += nthreads) taps[k] = window_tap(q, k);
}

// Phase 2: lane `lane` of warps first, first + step, ... (over the grid) of group g.
template <class T, class A>
__device__ __forceinline__ void forward_direct_pixels(const Geometry& q, const T* x, const T* b, T* y, bool relu,
                                                      int64_t g, const A* wsh, const WindowTap* taps, int lane,
                                                      int64_t first, int64_t step) {
  const int64_t pix = q.OH * q.OW, total = q.N * pix, runs = (total + 31) / 32, units = forward_direct_units(q);
  const int K = int(q.Cg) * q.ntaps, row = int(forward_direct_row(q)), H = int(q.H), W = int(q.W);
  for (int64_t u = first; u < units; u += step) {
    const int64_t mb = u / runs, i = (u - mb * runs) * 32 + lane;  // channel block (slowest), pixel
    const int m0 = int(mb) * kDirectMB;
    int ih0 = kNoPixel, iw0 = 0;
    int64_t xo = 0, yo = 0;
    if (i < total) {
      const int64_t img = q.by_opix(i), r = i - img * pix, oh = q.by_OW(r), ow = r - oh * q.OW;
      ih0 = int(oh * q.sh - q.ph);
      iw0 = int(ow * q.sw - q.pw);
      xo = img * q.xs[0] + g * q.Cg * q.xs[1] + int64_t(ih0) * q.xs[2] + int64_t(iw0) * q.xs[3];
      yo = (img * q.M + g * q.Mg + m0) * pix + r;
    }
    A acc[kDirectMB];
#pragma unroll
    for (int j = 0; j < kDirectMB; ++j) acc[j] = A(0);
#pragma unroll 2
    for (int k = 0; k < K; ++k) {
      const WindowTap tap = load_tap(taps + k);
      const int ih = ih0 + (tap.shift >> 16), iw = iw0 + (tap.shift & 0xffff);
      const A v = unsigned(ih) < unsigned(H) && unsigned(iw) < unsigned(W) ? A(to_float(x[xo + tap.off])) : A(0);
      A wk[kDirectMB];
#pragma unroll
      for (int j = 0; j < kDirectMB; j += 4) load4(wsh + k * row + m0 + j, wk + j);
#pragma unroll
      for (int j = 0; j < kDirectMB; ++j) acc[j] += v * wk[j];
    }
    if (i >= total) continue;
#pragma unroll
    for (int j = 0; j < kDirectMB; ++j) {
      if (m0 + j >= q.Mg) break;
      A v = acc[j];
      if (b) v += A(to_float(b[(g * q.Mg + m0 + j) * q.bs]));
      if (relu && v < A(0)) v = A(0);  // NaN passes through, as in torch.relu
      y[yo + j * pix] = store_as<T>(v);
    }
  }
}

#ifdef __CUDACC__
// Grid: x over warps (grid-stride over units), y over groups.
template <class T>
__global__ void forward_direct(Geometry q, const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ b, T* __restrict__ y, bool relu) {
  using A = typename AccOf<T>::type;
  __shared__ __align__(16) A wsh[kDirectWeights];
  __shared__ __align__(8) WindowTap taps[kDirectK];
  forward_direct_stage(q, w, blockIdx.y, wsh, taps, threadIdx.x, blockDim.x);
  __syncthreads();
  const int64_t thread = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  forward_direct_pixels(q, x, b, y, relu, blockIdx.y, wsh, taps, int(threadIdx.x % 32), thread / 32,
                        int64_t(gridDim.x) * blockDim.x / 32);
}
#endif  // __CUDACC__

// grad_weight of a layer whose forward runs direct (K = Cg*ntaps <= kDirectK): as a GEMM, its N = K columns
// would fill a sliver of a 64-column tile (9 of 64 for a 3x3 layer on one channel). Here a block owns 64
// output channels (rows) by all K columns over a run of pixels, in chunks of GwdShape::P pixels: it stages the
// chunk's grad_y as gys[pixel][row] (gated by the fused ReLU's output) and the pixels' windows as xs[pixel][k],
// then each warp takes every PS-th pixel of the chunk and each lane adds a 4-row by KT-column outer product per
// pixel (one 16-byte load of grad_y, KT/4 of x). The PS warps that share columns add their sums in order
// through shared memory, and the block writes one partial per (run, row, k) in GradWeightGemm's workspace
// layout, so that reduce_grad_weight adds the runs in a fixed order. (The kernel this replaced kept two rows a
// thread and gathered each pixel's window once per pair of rows: pcnn_maskA took 0.084 ms on an H100, 0.038
// here. Layers of 32 channels or fewer compute half a block of zero rows: mnist_c1's went 0.057 -> 0.067.)
// With `ones`, column K is a column of ones (1 at every pixel of the run): its sums are grad_bias, which then
// needs neither a launch nor a pass over grad_y of its own. It is taken where it costs no arithmetic: where
// KMAX stays the same (columns up to KMAX are computed anyway: 10 of 16 for mnist_c1, 25 of 32 for pcnn_maskA).
// KMAX (16, 32 or 64) bounds the columns.
inline int grad_weight_direct_kmax(const Geometry& q, bool ones = false) {
  const int64_t K = q.Cg * q.ntaps + (ones ? 1 : 0);
  return K <= 16 ? 16 : K <= 32 ? 32 : 64;
}
// Whether grad_weight_direct adds grad_bias as its column of ones.
inline bool grad_weight_direct_takes_bias(const Geometry& q) {
  return q.Cg * q.ntaps + 1 <= kDirectK && grad_weight_direct_kmax(q, true) == grad_weight_direct_kmax(q, false);
}
constexpr int kGwdRows = 64, kGwdThreads = 256;
template <class A, int KMAX>
struct GwdShape {
  // columns a lane (lanes: 16 row quads x 2 column halves): 64 sums a thread in float, 32 in double
  static constexpr int KT = KMAX / 2 < 64 / int(sizeof(A)) ? KMAX / 2 : 64 / int(sizeof(A));
  static constexpr int KS = KMAX / 2 / KT;           // warps across the columns (1, 2 or 4)
  static constexpr int PS = 8 / KS;                  // warps across the pixels
  static constexpr int P = 64 * 4 / int(sizeof(A));  // pixels a chunk (the staging fits 48 KB)
  static constexpr int LG = kGwdRows + 4, LX = KMAX + 4;  // padded rows of gys and xs (16-byte multiples)
  static_assert(32 * 4 * KT <= P * LG, "the final reduction reuses gys");
};

// A chunk's pixel: where its grad_y, y and window corner are, and the corner's row and column (ih0 = kNoPixel
// past the run: its grad_y and window read as zero).
struct GwdPixel {
  int64_t gy, y, x;
  int ih0, iw0;
};

// Phase 1 (threads tid < P): pixel p0 + tid of group g, rows from m0.
template <class A, int KMAX>
__device__ __forceinline__ void gwd_pixel(const Geometry& q, int64_t g, int64_t m0, int64_t p0, int64_t last, int tid,
                                          GwdPixel* px) {
  const int64_t i = p0 + tid;
  GwdPixel e{0, 0, 0, kNoPixel, 0};
  if (i < last) {
    const int64_t pix = q.OH * q.OW, img = q.by_opix(i), r = i - img * pix, oh = q.by_OW(r), ow = r - oh * q.OW;
    const int64_t ih0 = oh * q.sh - q.ph, iw0 = ow * q.sw - q.pw;
    e.gy = img * q.gs[0] + (g * q.Mg + m0) * q.gs[1] + oh * q.gs[2] + ow * q.gs[3];
    e.y = img * q.ys[0] + (g * q.Mg + m0) * q.ys[1] + oh * q.ys[2] + ow * q.ys[3];
    e.x = img * q.xs[0] + g * q.Cg * q.xs[1] + ih0 * q.xs[2] + iw0 * q.xs[3];
    e.ih0 = int(ih0);
    e.iw0 = int(iw0);
  }
  px[tid] = e;
}

// Phase 2 (all threads): the chunk's gys[p][row] and xs[p][k], zero outside the rows, K, the run and the image;
// with `ones`, xs[p][K] = 1 for the run's pixels.
// A thread loads its elements kBatch at a time into registers before storing them, so that those loads are in
// flight together (one at a time, the staging waited on each and bound pcnn_maskA's grad_weight; all at once,
// the sums spilled).
template <class T, class A, int KMAX>
__device__ __forceinline__ void gwd_stage(const Geometry& q, const T* x, const T* y, const T* gy, int64_t m0,
                                          const WindowTap* taps, const GwdPixel* px, A* gys, A* xs, int tid,
                                          bool ones = false) {
  using S = GwdShape<A, KMAX>;
  constexpr int kG = S::P * kGwdRows / kGwdThreads, kX = S::P * KMAX / kGwdThreads;  // elements a thread
  constexpr int kBatch = 4, kBatchX = kX < kBatch ? kX : kBatch;
  static_assert(kG % kBatch == 0 && kX % kBatchX == 0, "whole batches");
  const int K = int(q.Cg) * q.ntaps;
#pragma unroll 1
  for (int u0 = 0; u0 < kG; u0 += kBatch) {  // pixels fastest: runs of grad_y's rows
    T g[kBatch], gate[kBatch];
    bool in[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = tid + (u0 + u) * kGwdThreads, row = e / S::P, p = e - row * S::P;
      const GwdPixel& d = px[p];
      in[u] = d.ih0 != kNoPixel && m0 + row < q.Mg;
      g[u] = in[u] ? gy[d.gy + row * q.gs[1]] : T(0);
      gate[u] = in[u] && y ? y[d.y + row * q.ys[1]] : T(1);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = tid + (u0 + u) * kGwdThreads, row = e / S::P, p = e - row * S::P;
      // zero where the fused ReLU was off (its output not above 0)
      gys[p * S::LG + row] = in[u] && A(to_float(gate[u])) > A(0) ? A(to_float(g[u])) : A(0);
    }
  }
#pragma unroll 1
  for (int u0 = 0; u0 < kX; u0 += kBatchX) {
    T v[kBatchX];
    bool in[kBatchX], one[kBatchX];
#pragma unroll
    for (int u = 0; u < kBatchX; ++u) {
      const int e = tid + (u0 + u) * kGwdThreads, k = e / S::P, p = e - k * S::P;
      const GwdPixel& d = px[p];
      in[u] = false;
      one[u] = ones && k == K && d.ih0 != kNoPixel;
      int64_t at = 0;
      if (k < K && d.ih0 != kNoPixel) {
        const WindowTap tap = load_tap(taps + k);
        const int ih = d.ih0 + (tap.shift >> 16), iw = d.iw0 + (tap.shift & 0xffff);
        in[u] = ih >= 0 && ih < q.H && iw >= 0 && iw < q.W;
        at = d.x + tap.off;
      }
      v[u] = in[u] ? x[at] : T(0);
    }
#pragma unroll
    for (int u = 0; u < kBatchX; ++u) {
      const int e = tid + (u0 + u) * kGwdThreads, k = e / S::P, p = e - k * S::P;
      xs[p * S::LX + k] = one[u] ? A(1) : in[u] ? A(to_float(v[u])) : A(0);
    }
  }
}

// Phase 3 (all threads): warp w = (pixel split ps, column split ks) = (w / KS, w % KS) adds pixels ps, ps + PS,
// ... of the chunk; lane (rq, kh) = (lane % 16, lane / 16) owns rows 4*rq + [0, 4) and columns
// ks*KMAX/KS + kh*KT + [0, KT).
template <class A, int KMAX>
__device__ __forceinline__ void gwd_accumulate(const A* gys, const A* xs, int tid,
                                               A (&acc)[4][GwdShape<A, KMAX>::KT]) {
  using S = GwdShape<A, KMAX>;
  const int warp = tid / 32, lane = tid % 32, ps = warp / S::KS, ks = warp % S::KS;
  const int r0 = 4 * (lane % 16), k0 = ks * (KMAX / S::KS) + (lane / 16) * S::KT;
  for (int p = ps; p < S::P; p += S::PS) {
    A a[4], b[S::KT];
    load4(gys + p * S::LG + r0, a);
#pragma unroll
    for (int j = 0; j < S::KT; j += 4) load4(xs + p * S::LX + k0 + j, b + j);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < S::KT; ++j) acc[i][j] += a[i] * b[j];
  }
}

// Whether q's grad_weight takes the direct kernel: its forward does (which includes direct_window_fits).
inline bool grad_weight_direct_fits(const Geometry& q) { return forward_direct_fits(q); }

#ifdef __CUDACC__
// Grid: x over runs of pixels (run_len each, a multiple of P), y over blocks of 64 output channels, z over
// groups. ws: [run][M][K + ones].
template <class T, int KMAX>
__global__ void __launch_bounds__(kGwdThreads, 2) grad_weight_direct(Geometry q, int64_t run_len,
                                                                     const T* __restrict__ x, const T* __restrict__ y,
                                                                     const T* __restrict__ gy,
                                                                     typename AccOf<T>::type* __restrict__ ws,
                                                                     bool ones) {
  using A = typename AccOf<T>::type;
  using S = GwdShape<A, KMAX>;
  __shared__ __align__(16) A gys[S::P * S::LG];
  __shared__ __align__(16) A xs[S::P * S::LX];
  __shared__ __align__(8) WindowTap taps[KMAX];
  __shared__ GwdPixel px[S::P];
  const int K = int(q.Cg) * q.ntaps, tid = threadIdx.x;
  for (int k = tid; k < K; k += kGwdThreads) taps[k] = window_tap(q, k);
  const int64_t g = blockIdx.z, m0 = int64_t(blockIdx.y) * kGwdRows, first = int64_t(blockIdx.x) * run_len;
  const int64_t total = q.N * q.OH * q.OW, last = first + run_len < total ? first + run_len : total;
  A acc[4][S::KT];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < S::KT; ++j) acc[i][j] = A(0);
  for (int64_t p0 = first; p0 < last; p0 += S::P) {
    __syncthreads();  // the previous chunk's products are done (and the tap table is in, the first time)
    if (tid < S::P) gwd_pixel<A, KMAX>(q, g, m0, p0, last, tid, px);
    __syncthreads();
    gwd_stage<T, A, KMAX>(q, x, y, gy, m0, taps, px, gys, xs, tid, ones);
    __syncthreads();
    gwd_accumulate<A, KMAX>(gys, xs, tid, acc);
  }
  // The PS warps of a column split add their sums in order: in round (r, k), warp (ps, ks) = (r, k) leaves its
  // sums in gys (32 lanes x 4*KT), and warp (0, k) adds them.
  const int warp = tid / 32, lane = tid % 32, ps = warp / S::KS, ks = warp % S::KS;
  A* red = gys + lane * 4 * S::KT;
  for (int r = 1; r < S::PS; ++r)
    for (int k = 0; k < S::KS; ++k) {
      __syncthreads();
      if (ps == r && ks == k)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < S::KT; ++j) red[i * S::KT + j] = acc[i][j];
      __syncthreads();
      if (ps == 0 && ks == k)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < S::KT; ++j) acc[i][j] += red[i * S::KT + j];
    }
  if (ps != 0) return;
  const int r0 = 4 * (lane % 16), k0 = ks * (KMAX / S::KS) + (lane / 16) * S::KT, ncol = K + (ones ? 1 : 0);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < S::KT; ++j)
      if (m0 + r0 + i < q.Mg && k0 + j < ncol)
        ws[(int64_t(blockIdx.x) * q.M + g * q.Mg + m0 + r0 + i) * ncol + k0 + j] = acc[i][j];
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
