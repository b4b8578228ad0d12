// grad_input of a layer with few input channels a group and many output channels (an image net's first layer,
// PixelCNN's 7x7 mask-A input layer), as a GEMM and a gather instead of grad_input_direct's per-pixel loop:
//
//   z[img, (g*Cg + c)*ntaps + t, oh, ow] = sum_{m < Mg} w[g*Mg+m, c, tap t] * grad_y[img, g*Mg+m, oh, ow]
//   grad_x[img, g*Cg + c, ih, iw]        = sum_{t < ntaps} z[img, (g*Cg + c)*ntaps + t, oh(ih, t), ow(iw, t)]
//
// over the taps t whose output pixel (oh, ow) reaches (ih, iw) (reached_output). The first line is a grouped
// 1x1 convolution of grad_y with the weights packed as ((g, c, t), m): ForwardGemm runs it (tiled, on tensor
// cores under TF32) where grad_input_direct makes Cg*ntaps*Mg dependent multiply-adds a pixel, each with its own
// gathered load (measured 0.18 ms for mask A, 64 x 1 -> 64 channels of 28 x 28, on an H200). The price is z,
// Cg*ntaps floats a pixel of grad_y, so the path is taken only while z stays small (taps_fit).
// Per-element functions, so that tests/cuda_host runs the same index math on the host.
#pragma once
#include "cuda/conv2d_direct.cuh"
#include "cuda/conv2d_problems.cuh"

namespace pixelops::cuda::conv {

constexpr int64_t kTapsMaxZ = int64_t(1) << 26;  // elements of z (256 MB in float32)

// Whether q's grad_input takes this path: few channels a group (as grad_input_direct), enough output channels
// for the GEMM's K to be worth tiling, no ReLU gate on grad_y (the 1x1 GEMM reads grad_y as a plain input), and
// z within kTapsMaxZ.
inline bool taps_fit(const Geometry& q, bool gated) {
  return !gated && q.Cg <= kDirectCg && q.Mg >= 16 && q.G <= 65535 && q.N * q.C * q.ntaps * q.OH * q.OW <= kTapsMaxZ;
}

// The packed weights as a (G*Cg*ntaps, Mg, 1, 1) tensor, element i of it.
template <class T>
__device__ __forceinline__ T packed_tap_weight(const Geometry& q, const T* w, int64_t i) {
  const int64_t m = i % q.Mg, row = i / q.Mg, ch = row / q.ntaps;  // ch = g*Cg + c
  const int t = int(row - ch * q.ntaps), kh = t / q.KW, kw = t - kh * q.KW;
  const int64_t g = ch / q.Cg, c = ch - g * q.Cg;
  return w[(g * q.Mg + m) * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3]];
}

// The 1x1 convolution that makes z: input grad_y (N, M, OH, OW) in G groups of Mg channels, output z
// (N, G*Cg*ntaps, OH, OW), weights packed (contiguous).
inline Geometry taps_geometry(const Geometry& q) {
  Geometry z{};
  z.N = q.N; z.C = q.M; z.H = q.OH; z.W = q.OW;
  z.M = q.C * q.ntaps; z.OH = q.OH; z.OW = q.OW;
  z.G = q.G; z.Cg = q.Mg; z.Mg = q.Cg * q.ntaps;
  z.KH = z.KW = 1; z.ntaps = 1;
  z.sh = z.sw = 1; z.ph = z.pw = 0; z.dh = z.dw = 1;
  for (int i = 0; i < 4; ++i) z.xs[i] = q.gs[i];
  z.ws[0] = q.Mg; z.ws[1] = z.ws[2] = z.ws[3] = 1;
  set_divisors(z);
  return z;
}

// grad_x element i (contiguous NCHW order): the sum of z over the taps that reach it.
template <class T>
__device__ __forceinline__ typename AccOf<T>::type gather_taps(const Geometry& q, const T* z, int64_t i) {
  using A = typename AccOf<T>::type;
  const int64_t ipix = q.H * q.W, opix = q.OH * q.OW;
  const int64_t plane = q.by_ipix(i), r = i - plane * ipix, ih = q.by_W(r), iw = r - ih * q.W;
  const T* zp = z + plane * q.ntaps * opix;  // plane = img*C + ch, and z's channel is ch*ntaps + t
  A s = A(0);
  for (int t = 0, kh = 0, kw = 0; t < q.ntaps; ++t) {
    int64_t oh, ow;
    if (reached_output(q, ih + q.ph, iw + q.pw, kh, kw, oh, ow)) s += A(to_float(zp[t * opix + oh * q.OW + ow]));
    if (++kw == q.KW) { kw = 0; ++kh; }
  }
  return s;
}

template <class T>
__global__ void pack_tap_weights(Geometry q, const T* __restrict__ w, T* __restrict__ wp, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    wp[i] = packed_tap_weight(q, w, i);
}

template <class T>
__global__ void gather_taps_kernel(Geometry q, const T* __restrict__ z, T* __restrict__ gx, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    gx[i] = store_as<T>(gather_taps(q, z, i));
}

}  // namespace pixelops::cuda::conv
