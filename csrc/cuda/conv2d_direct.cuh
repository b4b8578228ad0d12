// Direct (not GEMM) conv2d kernels, for shapes where a 64 x 64 GEMM tile would be mostly empty. Like the GEMM
// problems, the index math here needs no CUDA header beyond the kernel keywords, so tests/cuda_host runs it
// on the host against naive loops.
#pragma once
#include "cuda/conv2d_problems.cuh"

namespace pixelops::cuda::conv {

// grad_input when a group has at most kDirectCg input channels (an image net's first layer, depthwise convs):
// as a GEMM its M would be Cg, and a 64-row tile would do up to 64 times the work. Here each thread gathers
// the gradient of one input pixel for every channel of its group; neighbouring threads take neighbouring
// pixels, so the grad_y reads of one (tap, output channel) are coalesced and the weight reads are broadcasts.
constexpr int kDirectCg = 4;
template <class T, int CG>
__global__ void grad_input_direct(Geometry q, const T* __restrict__ w, const T* __restrict__ y,
                                  const T* __restrict__ gy, T* __restrict__ gx) {
  using A = typename AccOf<T>::type;
  const int64_t g = blockIdx.y, pix = q.H * q.W, total = q.N * pix;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t img = fast_div(i, pix), r = i - img * pix, ih = fast_div(r, q.W), iw = r - ih * q.W;
    const T* gy_img = gy + img * q.gs[0] + g * q.Mg * q.gs[1];
    const T* y_img = y ? y + img * q.ys[0] + g * q.Mg * q.ys[1] : nullptr;
    const T* w_grp = w + g * q.Mg * q.ws[0];
    A acc[CG];
#pragma unroll
    for (int c = 0; c < CG; ++c) acc[c] = A(0);
    for (int t = 0; t < q.ntaps; ++t) {
      const int kh = t / q.KW, kw = t - kh * q.KW;
      const int64_t vh = ih + q.ph - int64_t(kh) * q.dh, vw = iw + q.pw - int64_t(kw) * q.dw;
      if (vh < 0 || vw < 0) continue;
      const int64_t oh = fast_div(vh, q.sh), ow = fast_div(vw, q.sw);
      if (oh * q.sh != vh || ow * q.sw != vw || oh >= q.OH || ow >= q.OW) continue;
      const T* w_tap = w_grp + kh * q.ws[2] + kw * q.ws[3];
      for (int64_t m = 0; m < q.Mg; ++m) {
        const A v = masked_grad(q, gy_img, y_img, m, oh, ow);
#pragma unroll
        for (int c = 0; c < CG; ++c)
          if (c < q.Cg) acc[c] += v * A(to_float(w_tap[m * q.ws[0] + c * q.ws[1]]));
      }
    }
    for (int c = 0; c < CG && c < q.Cg; ++c) gx[(img * q.C + g * q.Cg + c) * pix + r] = store_as<T>(acc[c]);
  }
}

}  // namespace pixelops::cuda::conv
