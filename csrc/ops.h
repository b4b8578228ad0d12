// Every kernel entry point that bindings.cpp exposes. Each op has a CPU and (when built with CUDA) a CUDA
// version of one signature; the binding picks one by the device of the first array. The trailing
// `stream` is the caller's cudaStream_t as an integer (ignored on the CPU).
#pragma once
#include <cstdint>

#include "common/array.h"

namespace pixelops {

#define PIXELOPS_DECLARE_OPS                                                                        \
  /* relu.cpp / relu.cu */                                                                          \
  void relu_forward(const Array& x, const Array& y, uintptr_t stream);                              \
  void relu_backward(const Array& y, const Array& grad_y, const Array& grad_x, uintptr_t stream);        \
  /* cross_entropy.cpp / cross_entropy.cu (status: CUDA int64[8] flag, bad index, sums) */       \
  void cross_entropy_forward(const Array& logits, const Array& target, const Array& weight,        \
                             const Array& loss, const Array& grad, const Array& status,            \
                             int64_t ignore_index, int64_t reduction, double label_smoothing,      \
                             uintptr_t stream);                                                    \
  void cross_entropy_backward(const Array& grad, const Array& grad_loss, const Array& grad_in,      \
                              uintptr_t stream);                                                    \
  void cross_entropy_target_backward(const Array& logits, const Array& weight,                      \
                                     const Array& grad_loss, const Array& grad_target,              \
                                     double factor, uintptr_t stream);                              \
  /* conv2d.cpp / conv2d.cu: ntaps = active taps, a row-major prefix of the kernel (all of them, or a     \
     PixelCNN mask); bias, y (relu only) and each gradient may be absent (null data) */                  \
  void conv2d_forward(const Array& x, const Array& w, const Array& bias, const Array& y, int64_t sh,       \
                      int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,          \
                      int64_t ntaps, bool relu, bool allow_tf32, uintptr_t stream);                        \
  void conv2d_backward(const Array& x, const Array& w, const Array& y, const Array& grad_y,                 \
                       const Array& grad_x, const Array& grad_w, const Array& grad_b, int64_t sh,          \
                       int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups,         \
                       int64_t ntaps, bool relu, bool allow_tf32, uintptr_t stream);                \
  /* pixelcnn_sample.cpp / pixelcnn_sample.cu */                                                    \
  void pixelcnn_sample(const Array& params, const Array& config, const Array& observed,             \
                       const Array& observed_mask, const Array& samples, const Array& logits,       \
                       const Array& scratch, double temperature, uint64_t seed, uintptr_t stream);  \
  void pixel_uniforms(const Array& out, uint64_t seed, uintptr_t stream);

namespace cpu {
PIXELOPS_DECLARE_OPS
}
namespace cuda {
PIXELOPS_DECLARE_OPS
// device.cu
int device_count();                 // 0 where no driver or GPU is present
void set_device(int device);        // makes `device` current for this thread
int current_device();
}

}  // namespace pixelops
