// conv2d and masked conv2d on CUDA, forward and backward.
//
//   y[n, g*Mg+m, oh, ow] = act(b[g*Mg+m] + sum_{c < Cg, t < ntaps} w[g*Mg+m, c, t] * x[n, g*Cg+c, oh*sh-ph+kh(t)*dh, ow*sw-pw+kw(t)*dw])
//
// Active taps are a row-major prefix [0, ntaps) of the kernel (all taps, or a PixelCNN mask), so masked taps
// are never visited. Direct kernels, accumulating in float (double for float64): one thread per output
// element (forward), per input element (grad_input), and one block per weight element (grad_weight, a
// reduction over images and pixels).
#include "cuda/cuda_utils.cuh"
#include "ops.h"

namespace pixelops::cuda {
namespace {

constexpr int kThreads = 256;

template <class T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// Stores an accumulator (float, or double for float64) as T.
template <class T> __device__ __forceinline__ T from_float_any(float v) { return from_float<T>(v); }
template <class T> __device__ __forceinline__ T from_float_any(double v) { return T(v); }

struct Conv {
  int64_t N, C, H, W;        // input
  int64_t M, OH, OW;         // output
  int64_t G, Cg, Mg;
  int KH, KW, ntaps;
  int sh, sw, ph, pw, dh, dw;
  int64_t xs[4], ws[4], ys[4], gs[4];  // strides of x, w, y (relu), grad_y
  int64_t bs;                          // bias stride
};

template <class T>
__global__ void forward_direct(Conv q, const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                               bool relu, T* __restrict__ y) {
  using A = typename Acc<T>::type;
  const int64_t total = q.N * q.M * q.OH * q.OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % q.OW, oh = (i / q.OW) % q.OH, m = (i / (q.OW * q.OH)) % q.M, n = i / (q.OW * q.OH * q.M);
    const int64_t g = m / q.Mg;
    A s = b ? A(to_float(b[m * q.bs])) : A(0);
    for (int64_t c = 0; c < q.Cg; ++c) {
      const T* xc = x + n * q.xs[0] + (g * q.Cg + c) * q.xs[1];
      const T* wc = w + m * q.ws[0] + c * q.ws[1];
      for (int t = 0; t < q.ntaps; ++t) {
        const int kh = t / q.KW, kw = t % q.KW;
        const int64_t ih = oh * q.sh - q.ph + kh * q.dh, iw = ow * q.sw - q.pw + kw * q.dw;
        if (ih < 0 || ih >= q.H || iw < 0 || iw >= q.W) continue;
        s += A(to_float(wc[kh * q.ws[2] + kw * q.ws[3]])) * A(to_float(xc[ih * q.xs[2] + iw * q.xs[3]]));
      }
    }
    if (relu && s < A(0)) s = A(0);
    y[i] = from_float_any<T>(s);
  }
}

// grad_y masked by the fused ReLU (y > 0), read through strides.
template <class T>
__device__ __forceinline__ typename Acc<T>::type grad_at(const Conv& q, const T* gy, const T* y, int64_t n, int64_t m,
                                                         int64_t oh, int64_t ow) {
  using A = typename Acc<T>::type;
  if (y && !(A(to_float(y[n * q.ys[0] + m * q.ys[1] + oh * q.ys[2] + ow * q.ys[3]])) > A(0))) return A(0);
  return A(to_float(gy[n * q.gs[0] + m * q.gs[1] + oh * q.gs[2] + ow * q.gs[3]]));
}

template <class T>
__global__ void grad_input_direct(Conv q, const T* __restrict__ w, const T* __restrict__ y, const T* __restrict__ gy,
                                  T* __restrict__ gx) {
  using A = typename Acc<T>::type;
  const int64_t total = q.N * q.C * q.H * q.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % q.W, ih = (i / q.W) % q.H, ci = (i / (q.W * q.H)) % q.C, n = i / (q.W * q.H * q.C);
    const int64_t g = ci / q.Cg, c = ci % q.Cg;
    A s = A(0);
    for (int64_t mm = 0; mm < q.Mg; ++mm) {
      const int64_t m = g * q.Mg + mm;
      for (int t = 0; t < q.ntaps; ++t) {
        const int kh = t / q.KW, kw = t % q.KW;
        const int64_t vh = ih + q.ph - kh * q.dh, vw = iw + q.pw - kw * q.dw;
        if (vh < 0 || vw < 0 || vh % q.sh || vw % q.sw) continue;
        const int64_t oh = vh / q.sh, ow = vw / q.sw;
        if (oh >= q.OH || ow >= q.OW) continue;
        s += A(to_float(w[m * q.ws[0] + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3]])) * grad_at(q, gy, y, n, m, oh, ow);
      }
    }
    gx[i] = from_float_any<T>(s);
  }
}

// One block per (m, c, tap): the sum over images and output pixels, reduced in shared memory.
template <class T>
__global__ void grad_weight_direct(Conv q, const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gy,
                                   T* __restrict__ gw) {
  using A = typename Acc<T>::type;
  __shared__ A part[kThreads];
  const int64_t KK = int64_t(q.KH) * q.KW;
  const int64_t idx = blockIdx.x;  // over M * Cg * KH * KW, contiguous grad_w
  const int64_t t = idx % KK, c = (idx / KK) % q.Cg, m = idx / (KK * q.Cg);
  const int64_t g = m / q.Mg;
  const int kh = int(t / q.KW), kw = int(t % q.KW);
  A s = A(0);
  if (t < q.ntaps) {
    const int64_t per_image = q.OH * q.OW, total = q.N * per_image;
    for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
      const int64_t n = i / per_image, oh = (i % per_image) / q.OW, ow = i % q.OW;
      const int64_t ih = oh * q.sh - q.ph + kh * q.dh, iw = ow * q.sw - q.pw + kw * q.dw;
      if (ih < 0 || ih >= q.H || iw < 0 || iw >= q.W) continue;
      s += A(to_float(x[n * q.xs[0] + (g * q.Cg + c) * q.xs[1] + ih * q.xs[2] + iw * q.xs[3]])) *
           grad_at(q, gy, y, n, m, oh, ow);
    }
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gw[idx] = from_float_any<T>(part[0]);
}

// One block per output channel: the sum of (masked) grad_y over images and pixels.
template <class T>
__global__ void grad_bias_direct(Conv q, const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gb) {
  using A = typename Acc<T>::type;
  __shared__ A part[kThreads];
  const int64_t m = blockIdx.x, per_image = q.OH * q.OW, total = q.N * per_image;
  A s = A(0);
  for (int64_t i = threadIdx.x; i < total; i += blockDim.x)
    s += grad_at(q, gy, y, i / per_image, m, (i % per_image) / q.OW, i % q.OW);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[m * q.bs] = from_float_any<T>(part[0]);
}

Conv conv_of(const Array& x, const Array& w, const Array& out, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
             int64_t dh, int64_t dw, int64_t groups, int64_t ntaps) {
  Conv q{};
  q.N = x.size[0]; q.C = x.size[1]; q.H = x.size[2]; q.W = x.size[3];
  q.M = w.size[0]; q.OH = out.size[2]; q.OW = out.size[3];
  q.G = groups; q.Cg = q.C / groups; q.Mg = q.M / groups;
  q.KH = int(w.size[2]); q.KW = int(w.size[3]); q.ntaps = int(ntaps);
  q.sh = int(sh); q.sw = int(sw); q.ph = int(ph); q.pw = int(pw); q.dh = int(dh); q.dw = int(dw);
  for (int i = 0; i < 4; ++i) { q.xs[i] = x.stride[i]; q.ws[i] = w.stride[i]; }
  return q;
}

unsigned grid_for(int64_t n) { return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

}  // namespace

void conv2d_forward(const Array& x, const Array& w, const Array& bias, const Array& y, int64_t sh, int64_t sw,
                    int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups, int64_t ntaps, bool relu, bool,
                    uintptr_t stream) {
  const int64_t total = y.numel();
  if (total == 0) return;
  expect_contiguous(y, "conv2d: output");
  Conv q = conv_of(x, w, y, sh, sw, ph, pw, dh, dw, groups, ntaps);
  q.bs = bias.data ? bias.stride[0] : 0;
  dispatch_float(x.dtype, "conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward_direct<T><<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        q, x.ptr<T>(), w.ptr<T>(), bias.data ? bias.ptr<T>() : nullptr, relu, y.ptr<T>());
    check_launch("conv2d_forward");
  });
}

void conv2d_backward(const Array& x, const Array& w, const Array& y, const Array& grad_y, const Array& grad_x,
                     const Array& grad_w, const Array& grad_b, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int64_t dh, int64_t dw, int64_t groups, int64_t ntaps, bool relu, bool, uintptr_t stream) {
  Conv q = conv_of(x, w, grad_y, sh, sw, ph, pw, dh, dw, groups, ntaps);
  for (int i = 0; i < 4; ++i) { q.gs[i] = grad_y.stride[i]; q.ys[i] = relu ? y.stride[i] : 0; }
  q.bs = grad_b.data ? grad_b.stride[0] : 0;
  cudaStream_t s = as_stream(stream);
  dispatch_float(x.dtype, "conv2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* yp = relu ? y.ptr<T>() : nullptr;
    if (grad_x.data && grad_x.numel() > 0) {
      expect_contiguous(grad_x, "conv2d_backward: grad_input");
      grad_input_direct<T><<<grid_for(grad_x.numel()), kThreads, 0, s>>>(q, w.ptr<T>(), yp, grad_y.ptr<T>(),
                                                                          grad_x.ptr<T>());
      check_launch("conv2d_backward (input)");
    }
    if (grad_w.data && grad_w.numel() > 0) {
      expect_contiguous(grad_w, "conv2d_backward: grad_weight");
      grad_weight_direct<T><<<unsigned(grad_w.numel()), kThreads, 0, s>>>(q, x.ptr<T>(), yp, grad_y.ptr<T>(),
                                                                           grad_w.ptr<T>());
      check_launch("conv2d_backward (weight)");
    }
    if (grad_b.data && grad_b.numel() > 0) {
      grad_bias_direct<T><<<unsigned(grad_b.numel()), kThreads, 0, s>>>(q, yp, grad_y.ptr<T>(), grad_b.ptr<T>());
      check_launch("conv2d_backward (bias)");
    }
  });
}

}  // namespace pixelops::cuda
