// What the fused PixelCNN samplers (csrc/cpu/pixelcnn_sample.cpp, csrc/cuda/pixelcnn_sample.cu) know of the
// network: sizes from a small int64 `config` array and one float32 `params` array packed by
// python/pixelops/pixelcnn/pack.py, in this order:
//   layer 0        mask-A conv first_kernel^2, 1 -> C:   W[taps_a * 1][C],  b[C]
//   layers 1..L    mask-B conv kernel^2,       C -> C:   W[taps_b * C][C],  b[C]   (ReLU, optional residual)
//   head 1         1x1 conv C -> head_channels:          W[C][Hc],          b[Hc]  (ReLU)
//   head 2         1x1 conv Hc -> levels:                W[Hc][levels],     b[levels]
// Weights are stored input-major (row k = tap * Cin + ci, column = output channel) and hold only the taps the
// mask lets through, in raster order inside the kernel window (see mask_taps): a 3x3 mask-B conv keeps 5 of
// 9 taps, a 7x7 mask-A conv 24 of 49.
#pragma once
#include <cstdint>
#include <cmath>
#include <string>

#include "common/array.h"
#include "common/random.h"

namespace pixelops {

constexpr int kMaxKernel = 15;                                   // checked by the Python layer as well
constexpr int kMaxTaps = (kMaxKernel / 2) * kMaxKernel + kMaxKernel / 2 + 1;
constexpr int kMaxLevels = 256;

// Offsets (dy, dx) of the taps a mask lets through, raster order: every row above the centre, and the
// centre row left of the centre (mask A) or up to and including it (mask B). Returns how many.
PIXELOPS_HD int mask_taps(int kernel, bool include_centre, int* dy, int* dx) {
  const int p = kernel / 2;
  int n = 0;
  for (int y = -p; y <= 0; ++y)
    for (int x = -p; x <= p; ++x)
      if (y < 0 || x < 0 || (x == 0 && include_centre)) { dy[n] = y; dx[n] = x; ++n; }
  return n;
}

struct PixelCNNPlan {
  int channels, layers, first_kernel, kernel, head_channels, levels, residual;
  int taps_a, taps_b;
  int64_t w0, b0, wl, bl, layer_stride, wh1, bh1, wh2, bh2, total;  // offsets into params

  // Cached activations keep only the rows a mask-B layer still reads (rows r - kernel/2 .. r), in a ring:
  // pixel (row, col) of a layer lives in slot (row % ring_rows) * W + col. Scratch: N x (layers+1) x ring x C.
  PIXELOPS_HD int ring_rows() const { return kernel / 2 + 1; }

  // Offsets of layer l's weight and bias (1 <= l <= layers).
  PIXELOPS_HD int64_t weight_of(int l) const { return wl + int64_t(l - 1) * layer_stride; }
  PIXELOPS_HD int64_t bias_of(int l) const { return bl + int64_t(l - 1) * layer_stride; }
};

inline int64_t config_value(const Array& config, int i) {
  return config.dtype == DType::i64 ? config.ptr<int64_t>()[i * config.stride[0]] : 0;
}

// Reads `config` = [channels, layers, first_kernel, kernel, head_channels, levels, residual] (int64, on the
// host) and checks it against `params`. The Python layer checks the same first; these guard the kernel.
inline PixelCNNPlan make_plan(const Array& config, const Array& params) {
  if (config.dtype != DType::i64 || config.ndim != 1 || config.size[0] != 7 || !config.on_cpu())
    throw ValueError("pixelcnn_sample: 'config' must be a host int64 array of 7 values");
  PixelCNNPlan p{};
  p.channels = int(config_value(config, 0));
  p.layers = int(config_value(config, 1));
  p.first_kernel = int(config_value(config, 2));
  p.kernel = int(config_value(config, 3));
  p.head_channels = int(config_value(config, 4));
  p.levels = int(config_value(config, 5));
  p.residual = int(config_value(config, 6));
  auto odd_kernel = [](int k) { return k >= 1 && k <= kMaxKernel && k % 2 == 1; };
  if (p.channels < 1 || p.layers < 0 || p.head_channels < 1 || p.levels < 2 || p.levels > kMaxLevels ||
      !odd_kernel(p.first_kernel) || !odd_kernel(p.kernel))
    throw ValueError("pixelcnn_sample: unsupported network sizes in 'config'");
  int dy[kMaxTaps], dx[kMaxTaps];
  p.taps_a = mask_taps(p.first_kernel, false, dy, dx);
  p.taps_b = mask_taps(p.kernel, true, dy, dx);
  const int64_t C = p.channels, Hc = p.head_channels;
  p.w0 = 0;
  p.b0 = p.w0 + int64_t(p.taps_a) * C;
  p.wl = p.b0 + C;
  p.bl = p.wl + int64_t(p.taps_b) * C * C;
  p.layer_stride = int64_t(p.taps_b) * C * C + C;
  p.wh1 = p.wl + p.layer_stride * p.layers;
  p.bh1 = p.wh1 + C * Hc;
  p.wh2 = p.bh1 + Hc;
  p.bh2 = p.wh2 + Hc * p.levels;
  p.total = p.bh2 + p.levels;
  if (params.dtype != DType::f32 || params.ndim != 1 || !params.contiguous() || params.size[0] != p.total)
    throw ValueError("pixelcnn_sample: 'params' must be a contiguous float32 array of " + std::to_string(p.total) +
                     " values for this network");
  return p;
}

// The inverse-CDF draw of one pixel from softmax(logits / temperature), in float64: the first level k whose
// cumulative weight exceeds u times the total. `cum` is scratch of `levels` doubles. The naive sampler in
// python/pixelops/pixelcnn/sampling.py draws the same way. The total is NaN exactly where softmax is undefined
// (a NaN logit, a +inf one: inf - inf, or all -inf: -inf - -inf); those pixels draw -1 and the host raises.
PIXELOPS_HD int inverse_cdf_draw(const float* logits, int levels, double inv_temperature, float u, double* cum) {
  double m = logits[0];
  for (int k = 1; k < levels; ++k) m = logits[k] > m ? logits[k] : m;
  double run = 0.0;
  for (int k = 0; k < levels; ++k) {
    run += exp((double(logits[k]) - m) * inv_temperature);
    cum[k] = run;
  }
  if (run != run) return -1;  // NaN
  const double target = double(u) * run;
  for (int k = 0; k < levels; ++k)
    if (target < cum[k]) return k;
  return levels - 1;
}

// The sampler's arrays as both samplers need them (host code, before any work): samples (N, H, W) int32;
// optional observed (int32) and observed_mask (uint8) of the same shape; optional teacher-forced logits
// (N, levels, H, W) float32; scratch for the activation rings of every layer.
struct SampleShape {
  int64_t N, H, W;
  bool has_mask, has_logits;
};

inline SampleShape check_sample_arrays(const PixelCNNPlan& p, const Array& observed, const Array& observed_mask,
                                       const Array& samples, const Array& logits, const Array& scratch) {
  expect_dtype(samples, DType::i32, "pixelcnn_sample: samples");
  expect_contiguous(samples, "pixelcnn_sample: samples");
  if (samples.ndim != 3) throw ValueError("pixelcnn_sample: 'samples' must be (N, H, W)");
  const int64_t N = samples.size[0], H = samples.size[1], W = samples.size[2], HW = H * W;
  const bool has_mask = observed_mask.data != nullptr, has_logits = logits.data != nullptr;
  if (has_mask) {
    expect_dtype(observed, DType::i32, "pixelcnn_sample: observed");
    expect_dtype(observed_mask, DType::u8, "pixelcnn_sample: observed_mask");
    expect_contiguous(observed, "pixelcnn_sample: observed");
    expect_contiguous(observed_mask, "pixelcnn_sample: observed_mask");
    if (observed.numel() != N * HW || observed_mask.numel() != N * HW)
      throw ValueError("pixelcnn_sample: 'observed' and 'observed_mask' must be (N, H, W) like 'samples'");
  }
  if (has_logits) {
    expect_dtype(logits, DType::f32, "pixelcnn_sample: logits");
    expect_contiguous(logits, "pixelcnn_sample: logits");
    if (logits.numel() != N * p.levels * HW) throw ValueError("pixelcnn_sample: 'logits' must be (N, levels, H, W)");
  }
  expect_dtype(scratch, DType::f32, "pixelcnn_sample: scratch");
  if (scratch.numel() < N * int64_t(p.layers + 1) * p.ring_rows() * W * p.channels)
    throw ValueError("pixelcnn_sample: 'scratch' is too small");
  return {N, H, W, has_mask, has_logits};
}

}  // namespace pixelops
