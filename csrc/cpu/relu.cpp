// ReLU on the CPU.
//   forward:  y = x < 0 ? 0 : x            (NaN passes through, as in torch.relu)
//   backward: gx = y <= 0 ? 0 : gy         (torch's threshold_backward on the output)
// Contiguous arrays run a flat loop the compiler vectorises, split across threads; views run the strided loop.
#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/simd.h"
#include "common/strided.h"
#include "ops.h"

namespace pixelops::cpu {
namespace {

// Below this many elements one thread is faster than waking the pool (measured on the 2-core dev machine).
constexpr int64_t kGrain = 1 << 15;

template <class T> inline T relu(T x) { return x < T(0) ? T(0) : x; }
template <class T> inline T relu_grad(T y, T g) { return y <= T(0) ? T(0) : g; }

// The contiguous loops, one vectorised clone per instruction set (simd.h); templates cannot be cloned.
#define PIXELOPS_RELU_LOOPS(T)                                                                            \
  PIXELOPS_CPU_CLONES void relu_loop(const T* __restrict in, T* __restrict out, int64_t n) {            \
    for (int64_t i = 0; i < n; ++i) out[i] = relu(in[i]);                                                \
  }                                                                                                       \
  PIXELOPS_CPU_CLONES void relu_grad_loop(const T* __restrict y, const T* __restrict g, T* __restrict gx, \
                                          int64_t n) {                                                    \
    for (int64_t i = 0; i < n; ++i) gx[i] = relu_grad(y[i], g[i]);                                       \
  }
PIXELOPS_RELU_LOOPS(float)
PIXELOPS_RELU_LOOPS(double)

}  // namespace

void relu_forward(const Array& x, const Array& y, uintptr_t) {
  dispatch_cpu_float(x.dtype, "relu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = x.ptr<T>();
    T* out = y.ptr<T>();
    if (x.contiguous() && y.contiguous()) {
      parallel_for(x.numel(), kGrain, [&](int64_t b, int64_t e) {
        relu_loop(in + b, out + b, e - b);
      });
    } else {
      for_each_element2(x, y, [&](int64_t ox, int64_t oy) { out[oy] = relu(in[ox]); });
    }
  });
}

void relu_backward(const Array& y, const Array& grad_y, const Array& grad_x, uintptr_t) {
  dispatch_cpu_float(y.dtype, "relu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* out = y.ptr<T>();
    const T* gy = grad_y.ptr<T>();
    T* gx = grad_x.ptr<T>();
    if (y.contiguous() && grad_y.contiguous() && grad_x.contiguous()) {
      parallel_for(y.numel(), kGrain, [&](int64_t b, int64_t e) {
        relu_grad_loop(out + b, gy + b, gx + b, e - b);
      });
    } else {
      for_each_element3(y, grad_y, grad_x, [&](int64_t o, int64_t og, int64_t ox) { gx[ox] = relu_grad(out[o], gy[og]); });
    }
  });
}

}  // namespace pixelops::cpu
