// ReLU on CUDA.
//   forward:  y = x < 0 ? 0 : x            backward: gx = y <= 0 ? 0 : gy
// Memory-bound: contiguous, 16-byte-aligned arrays move 16 bytes per load and store, several loads in flight
// per thread before the first use; anything else (views, odd offsets) takes the strided kernel.
#include "cuda/cuda_utils.cuh"
#include "ops.h"

namespace pixelops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // 16-byte vectors per thread: 4 loads in flight cover the memory latency

template <class T> __device__ __forceinline__ T relu(T x) { return to_float(x) < 0.f ? from_float<T>(0.f) : x; }
template <> __device__ __forceinline__ double relu(double x) { return x < 0.0 ? 0.0 : x; }
template <class T> __device__ __forceinline__ T relu_grad(T y, T g) { return to_float(y) <= 0.f ? from_float<T>(0.f) : g; }
template <> __device__ __forceinline__ double relu_grad(double y, double g) { return y <= 0.0 ? 0.0 : g; }

// A 16-byte vector of T.
template <class T> struct alignas(16) Vec { T v[16 / sizeof(T)]; };

template <class T>
__global__ void relu_forward_vec(const Vec<T>* __restrict__ x, Vec<T>* __restrict__ y, int64_t nvec) {
  int64_t base = (int64_t(blockIdx.x) * kThreads * kUnroll) + threadIdx.x;
  Vec<T> r[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    int64_t i = base + int64_t(u) * kThreads;
    if (i < nvec) r[u] = x[i];
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    int64_t i = base + int64_t(u) * kThreads;
    if (i < nvec) {
#pragma unroll
      for (int k = 0; k < int(16 / sizeof(T)); ++k) r[u].v[k] = relu(r[u].v[k]);
      y[i] = r[u];
    }
  }
}

template <class T>
__global__ void relu_backward_vec(const Vec<T>* __restrict__ y, const Vec<T>* __restrict__ g, Vec<T>* __restrict__ gx,
                                  int64_t nvec) {
  int64_t base = (int64_t(blockIdx.x) * kThreads * kUnroll) + threadIdx.x;
  Vec<T> ry[kUnroll], rg[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    int64_t i = base + int64_t(u) * kThreads;
    if (i < nvec) { ry[u] = y[i]; rg[u] = g[i]; }
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    int64_t i = base + int64_t(u) * kThreads;
    if (i < nvec) {
#pragma unroll
      for (int k = 0; k < int(16 / sizeof(T)); ++k) rg[u].v[k] = relu_grad(ry[u].v[k], rg[u].v[k]);
      gx[i] = rg[u];
    }
  }
}

// General path: any strides, plus the tail that does not fill a vector.
template <class T>
__global__ void relu_forward_strided(const T* x, T* y, Shape sx, Shape sy, int64_t begin, int64_t n) {
  for (int64_t i = begin + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[offset_of(sy, i)] = relu(x[offset_of(sx, i)]);
}

template <class T>
__global__ void relu_backward_strided(const T* y, const T* g, T* gx, Shape sy, Shape sg, Shape sgx, int64_t begin,
                                      int64_t n) {
  for (int64_t i = begin + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    gx[offset_of(sgx, i)] = relu_grad(y[offset_of(sy, i)], g[offset_of(sg, i)]);
}

unsigned strided_blocks(int64_t n) { return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

}  // namespace

void relu_forward(const Array& x, const Array& y, uintptr_t stream) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(x.dtype, "relu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t per_vec = 16 / sizeof(T);
    int64_t nvec = 0;
    if (x.contiguous() && y.contiguous() && aligned16(x.data) && aligned16(y.data)) {
      nvec = n / per_vec;
      if (nvec > 0) {
        int64_t blocks = (nvec + kThreads * kUnroll - 1) / (kThreads * kUnroll);
        relu_forward_vec<T><<<unsigned(blocks), kThreads, 0, as_stream(stream)>>>(
            static_cast<const Vec<T>*>(x.data), static_cast<Vec<T>*>(y.data), nvec);
      }
    }
    if (nvec * per_vec < n)
      relu_forward_strided<T><<<strided_blocks(n - nvec * per_vec), kThreads, 0, as_stream(stream)>>>(
          x.ptr<T>(), y.ptr<T>(), shape_of(x), shape_of(y), nvec * per_vec, n);
    check_launch("relu_forward");
  });
}

void relu_backward(const Array& y, const Array& grad_y, const Array& grad_x, uintptr_t stream) {
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_float(y.dtype, "relu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t per_vec = 16 / sizeof(T);
    int64_t nvec = 0;
    if (y.contiguous() && grad_y.contiguous() && grad_x.contiguous() && aligned16(y.data) && aligned16(grad_y.data) &&
        aligned16(grad_x.data)) {
      nvec = n / per_vec;
      if (nvec > 0) {
        int64_t blocks = (nvec + kThreads * kUnroll - 1) / (kThreads * kUnroll);
        relu_backward_vec<T><<<unsigned(blocks), kThreads, 0, as_stream(stream)>>>(
            static_cast<const Vec<T>*>(y.data), static_cast<const Vec<T>*>(grad_y.data),
            static_cast<Vec<T>*>(grad_x.data), nvec);
      }
    }
    if (nvec * per_vec < n)
      relu_backward_strided<T><<<strided_blocks(n - nvec * per_vec), kThreads, 0, as_stream(stream)>>>(
          y.ptr<T>(), grad_y.ptr<T>(), grad_x.ptr<T>(), shape_of(y), shape_of(grad_y), shape_of(grad_x), nvec * per_vec,
          n);
    check_launch("relu_backward");
  });
}

}  // namespace pixelops::cuda
