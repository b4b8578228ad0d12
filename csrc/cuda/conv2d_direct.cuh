// Direct (not GEMM) conv2d kernels, for shapes where a GEMM tile would be mostly empty: grad_input, the
// forward and grad_weight of layers with few input channels per group. Like the GEMM
// problems, the index math here needs no CUDA header beyond the kernel keywords, so tests/cuda_host runs it
// on the host against naive loops.
#pragma once
#include "cuda/conv2d_problems.cuh"

namespace pixelops::cuda::conv {

// grad_input when a group has at most kDirectCg input channels (an image net's first layer, depthwise convs):
// as a GEMM its M would be Cg, and a 64-row tile would do up to 64 times the work. Here the group's weights
// sit in shared memory as wsh[tap][m][c], and each thread gathers the gradient of one input pixel for every
// channel of its group; neighbouring threads take neighbouring pixels, so the grad_y reads of one (tap,
// output channel) are coalesced and the weight reads are broadcasts. Two phases, as forward_direct below.
constexpr int kDirectCg = 4, kDirectWeights = 4096;

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

template <class T, class A, int CG>
__device__ __forceinline__ void grad_input_direct_pixels(const Geometry& q, const T* y, const T* gy, T* gx,
                                                         int64_t g, const A* wsh, int64_t first, int64_t step) {
  const int64_t pix = q.H * q.W, total = q.N * pix;
  const int Mg = int(q.Mg);
  for (int64_t i = first; i < total; i += step) {
    const int64_t img = q.by_ipix(i), r = i - img * pix, ih = q.by_W(r), iw = r - ih * q.W;
    const T* gy_img = gy + img * q.gs[0] + g * q.Mg * q.gs[1];
    const T* y_img = y ? y + img * q.ys[0] + g * q.Mg * q.ys[1] : nullptr;
    A acc[CG];
#pragma unroll
    for (int c = 0; c < CG; ++c) acc[c] = A(0);
    for (int t = 0, kh = 0, kw = 0; t < q.ntaps; ++t) {
      int64_t oh, ow;
      const bool hit = reached_output(q, ih + q.ph, iw + q.pw, kh, kw, oh, ow);
      if (++kw == q.KW) { kw = 0; ++kh; }
      if (!hit) continue;
      const T* gp = gy_img + oh * q.gs[2] + ow * q.gs[3];
      const T* yp = y_img ? y_img + oh * q.ys[2] + ow * q.ys[3] : nullptr;
      const A* wt = wsh + t * Mg * CG;
#pragma unroll 4
      for (int m = 0; m < Mg; ++m) {
        A v = A(to_float(gp[m * q.gs[1]]));
        if (yp && !(A(to_float(yp[m * q.ys[1]])) > A(0))) v = A(0);  // the fused ReLU was off there
#pragma unroll
        for (int c = 0; c < CG; ++c) acc[c] += v * wt[m * CG + c];
      }
    }
    for (int c = 0; c < CG && c < q.Cg; ++c) gx[(img * q.C + g * q.Cg + c) * pix + r] = store_as<T>(acc[c]);
  }
}

// Grid: x over input pixels (grid-stride), y over groups.
template <class T, int CG>
__global__ void grad_input_direct(Geometry q, const T* __restrict__ w, const T* __restrict__ y,
                                  const T* __restrict__ gy, T* __restrict__ gx) {
  using A = typename AccOf<T>::type;
  __shared__ A wsh[kDirectWeights];
  grad_input_direct_stage<T, A, CG>(q, w, blockIdx.y, wsh, threadIdx.x, blockDim.x);
  __syncthreads();
  grad_input_direct_pixels<T, A, CG>(q, y, gy, gx, blockIdx.y, wsh, blockIdx.x * int64_t(blockDim.x) + threadIdx.x,
                                     int64_t(gridDim.x) * blockDim.x);
}

// Forward when a group's K = Cg * ntaps is small (an image net's first layer: a few input channels): as a GEMM
// its K loop would be one or two mostly empty steps, and the tile's staging would cost more than the
// arithmetic. Here the group's weights sit in shared memory as wsh[k][m] (k = c*ntaps + tap), and each thread
// computes one output pixel for kDirectMB output channels at a time, gathering its K inputs from x (L1 hits
// after the first pass) and reading the weights as broadcasts; neighbouring threads write neighbouring pixels.
// The kernel body is two phases with a barrier between them, so that tests/cuda_host can run each for all
// threads in turn.
constexpr int kDirectK = 64, kDirectMB = 16;

inline bool forward_direct_fits(const Geometry& q) {
  const int64_t K = q.Cg * q.ntaps;
  return K <= kDirectK && K * q.Mg <= kDirectWeights && q.G <= 65535;
}

template <class T, class A>
__device__ __forceinline__ void forward_direct_stage(const Geometry& q, const T* w, int64_t g, A* wsh, int tid,
                                                     int nthreads) {
  const int K = int(q.Cg) * q.ntaps, Mg = int(q.Mg);
  for (int i = tid; i < K * Mg; i += nthreads) {
    const int m = i / K, k = i - m * K, c = k / q.ntaps, t = k - c * q.ntaps, kh = t / q.KW, kw = t - kh * q.KW;
    wsh[k * Mg + m] = A(to_float(w[(g * q.Mg + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3]]));
  }
}

template <class T, class A>
__device__ __forceinline__ void forward_direct_pixels(const Geometry& q, const T* x, const T* b, T* y, bool relu,
                                                      int64_t g, const A* wsh, int64_t first, int64_t step) {
  const int64_t pix = q.OH * q.OW, total = q.N * pix;
  const int Mg = int(q.Mg);
  for (int64_t i = first; i < total; i += step) {
    const int64_t img = q.by_opix(i), r = i - img * pix, oh = q.by_OW(r), ow = r - oh * q.OW;
    const int64_t ih0 = oh * q.sh - q.ph, iw0 = ow * q.sw - q.pw;
    const T* x_img = x + img * q.xs[0] + g * q.Cg * q.xs[1];
    T* y_pix = y + (img * q.M + g * q.Mg) * pix + r;
    for (int m0 = 0; m0 < Mg; m0 += kDirectMB) {
      A acc[kDirectMB];
#pragma unroll
      for (int j = 0; j < kDirectMB; ++j) acc[j] = A(0);
      int k = 0;
      for (int c = 0; c < q.Cg; ++c) {
        const T* x_ch = x_img + c * q.xs[1];
        for (int t = 0, kh = 0, kw = 0; t < q.ntaps; ++t, ++k) {
          const int64_t ih = ih0 + int64_t(kh) * q.dh, iw = iw0 + int64_t(kw) * q.dw;
          if (ih >= 0 && ih < q.H && iw >= 0 && iw < q.W) {
            const A v = A(to_float(x_ch[ih * q.xs[2] + iw * q.xs[3]]));
            const A* wk = wsh + k * Mg + m0;
#pragma unroll
            for (int j = 0; j < kDirectMB; ++j)
              if (m0 + j < Mg) acc[j] += v * wk[j];
          }
          if (++kw == q.KW) { kw = 0; ++kh; }
        }
      }
#pragma unroll
      for (int j = 0; j < kDirectMB; ++j) {
        if (m0 + j >= Mg) break;
        A v = acc[j];
        if (b) v += A(to_float(b[(g * q.Mg + m0 + j) * q.bs]));
        if (relu && v < A(0)) v = A(0);  // NaN passes through, as in torch.relu
        y_pix[(m0 + j) * pix] = store_as<T>(v);
      }
    }
  }
}

// Grid: x over pixels (grid-stride), y over groups.
template <class T>
__global__ void forward_direct(Geometry q, const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ b, T* __restrict__ y, bool relu) {
  using A = typename AccOf<T>::type;
  __shared__ A wsh[kDirectWeights];
  forward_direct_stage(q, w, blockIdx.y, wsh, threadIdx.x, blockDim.x);
  __syncthreads();
  forward_direct_pixels(q, x, b, y, relu, blockIdx.y, wsh, blockIdx.x * int64_t(blockDim.x) + threadIdx.x,
                        int64_t(gridDim.x) * blockDim.x);
}

// grad_weight of a layer whose forward runs direct (K = Cg*ntaps <= kDirectK): as a GEMM, its N = K columns
// would fill a sliver of a 64-column tile (9 of 64 for a 3x3 layer on one channel; measured 0.085 ms for
// MNIST's first layer on an H200, for 25 MB of grad_y). Here each thread keeps the K sums of MT output channels
// over a run of pixels: per pixel it reads the K inputs of the pixel's window and MT values of grad_y, and makes
// MT*K multiply-adds. A block adds its threads' sums and writes one partial per (run, channel, k) in
// GradWeightGemm's workspace layout, so that reduce_grad_weight adds the runs in a fixed order.
// KMAX (16, 32 or 64) bounds K; MT = 64 / KMAX, so that 64 sums fit a thread's registers.
inline int grad_weight_direct_kmax(const Geometry& q) {
  const int64_t K = q.Cg * q.ntaps;
  return K <= 16 ? 16 : K <= 32 ? 32 : 64;
}

// Where tap-column k = c*ntaps + t of a window sits, from the window's corner: its offset in x (32 bits, checked
// on the host: grad_weight_direct_fits) and its row and column shifts (16 bits each). Eight bytes, so that a
// thread reads one a tap and the table need not live in registers.
struct WindowTap {
  int off;
  int shift;  // (kh*dh) << 16 | kw*dw
};
__device__ __forceinline__ WindowTap window_tap(const Geometry& q, int k) {
  const int c = k / q.ntaps, t = k - c * q.ntaps, kh = t / q.KW, kw = t - kh * q.KW;
  return {int(c * q.xs[1] + int64_t(kh) * q.dh * q.xs[2] + int64_t(kw) * q.dw * q.xs[3]), (kh * q.dh) << 16 | kw * q.dw};
}
// One table entry, read from shared memory at every use (an opaque load): left to itself the compiler keeps the
// whole table in registers across the pixel loop, beside the 64 sums, and spills.
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

// Whether q's grad_weight takes the direct kernel: its forward does, and the window offsets and shifts fit.
inline bool grad_weight_direct_fits(const Geometry& q) {
  const int64_t reach = (q.Cg - 1) * q.xs[1] + int64_t(q.KH - 1) * q.dh * q.xs[2] + int64_t(q.KW - 1) * q.dw * q.xs[3];
  return forward_direct_fits(q) && reach < (int64_t(1) << 31) && (q.KH - 1) * q.dh < (1 << 15) &&
         (q.KW - 1) * q.dw < (1 << 16);
}

// Adds pixel i's products to acc[j][k] for output channels m0 + j (j < MT, those below Mg) of group g.
template <class T, class A, int MT, int KMAX>
__device__ __forceinline__ void grad_weight_direct_pixel(const Geometry& q, const T* x, const T* y, const T* gy,
                                                         int64_t g, int64_t m0, const WindowTap* taps, int64_t i,
                                                         A (&acc)[MT][KMAX]) {
  const int64_t pix = q.OH * q.OW, img = q.by_opix(i), r = i - img * pix, oh = q.by_OW(r), ow = r - oh * q.OW;
  const T* gy_img = gy + img * q.gs[0] + g * q.Mg * q.gs[1];
  const T* y_img = y ? y + img * q.ys[0] + g * q.Mg * q.ys[1] : nullptr;
  A v[MT];
#pragma unroll
  for (int j = 0; j < MT; ++j) v[j] = m0 + j < q.Mg ? masked_grad(q, gy_img, y_img, m0 + j, oh, ow) : A(0);
  const int64_t ih0 = oh * q.sh - q.ph, iw0 = ow * q.sw - q.pw;
  const T* corner = x + img * q.xs[0] + g * q.Cg * q.xs[1] + ih0 * q.xs[2] + iw0 * q.xs[3];
  const int K = int(q.Cg) * q.ntaps;
#pragma unroll
  for (int k = 0; k < KMAX; ++k) {
    if (k >= K) break;
    const WindowTap tap = load_tap(taps + k);
    const int64_t ih = ih0 + (tap.shift >> 16), iw = iw0 + (tap.shift & 0xffff);
    const A xv = ih >= 0 && ih < q.H && iw >= 0 && iw < q.W ? A(to_float(corner[tap.off])) : A(0);
#pragma unroll
    for (int j = 0; j < MT; ++j) acc[j][k] += v[j] * xv;
  }
}

#ifdef __CUDACC__
// Grid: x over runs of pixels (run_len each), y over groups of MT output channels, z over groups. 256 threads.
template <class T, int KMAX>
__global__ void __launch_bounds__(256, 2) grad_weight_direct(Geometry q, int64_t run_len, const T* __restrict__ x, const T* __restrict__ y,
                                   const T* __restrict__ gy, typename AccOf<T>::type* __restrict__ ws) {
  using A = typename AccOf<T>::type;
  constexpr int MT = 64 / KMAX, kWarps = 8;
  __shared__ __align__(8) WindowTap taps[KMAX];
  __shared__ A part[kWarps][MT * KMAX];
  const int K = int(q.Cg) * q.ntaps, tid = threadIdx.x;
  for (int k = tid; k < K; k += blockDim.x) taps[k] = window_tap(q, k);
  __syncthreads();
  const int64_t g = blockIdx.z, m0 = int64_t(blockIdx.y) * MT, first = int64_t(blockIdx.x) * run_len;
  const int64_t last = first + run_len < q.N * q.OH * q.OW ? first + run_len : q.N * q.OH * q.OW;
  A acc[MT][KMAX];
#pragma unroll
  for (int j = 0; j < MT; ++j)
#pragma unroll
    for (int k = 0; k < KMAX; ++k) acc[j][k] = A(0);
  for (int64_t i = first + tid; i < last; i += blockDim.x)
    grad_weight_direct_pixel<T, A, MT, KMAX>(q, x, y, gy, g, m0, taps, i, acc);
  // the block's sum: across each warp by shuffles, then across the warps in shared memory
  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int j = 0; j < MT; ++j)
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k >= K) break;
      A s = acc[j][k];
      for (int d = 16; d > 0; d /= 2) s += __shfl_down_sync(0xffffffffu, s, d);
      if (lane == 0) part[warp][j * KMAX + k] = s;
    }
  __syncthreads();
  for (int e = tid; e < MT * K; e += blockDim.x) {
    const int j = e / K, k = e - j * K;
    if (m0 + j >= q.Mg) continue;
    A s = A(0);
    for (int w = 0; w < kWarps; ++w) s += part[w][j * KMAX + k];
    ws[(int64_t(blockIdx.x) * q.M + g * q.Mg + m0 + j) * K + k] = s;
  }
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
