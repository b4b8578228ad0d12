// Direct (not GEMM) conv2d kernels, for shapes where a GEMM tile would be mostly empty: grad_input and the
// forward of layers with few input channels per group. Like the GEMM
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

}  // namespace pixelops::cuda::conv
