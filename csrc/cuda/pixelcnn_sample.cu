// Fused PixelCNN sampling on CUDA (network layout: common/pixelcnn_plan.h; the order of work is explained in
// csrc/cpu/pixelcnn_sample.cpp). The whole H x W generation is ONE kernel launch: one thread block per image
// walks the pixels in raster order; at each pixel it computes every layer at that one position from the
// cached activations of the layer below (a ring of rows: in shared memory where it fits, else in global
// scratch), then the head, the softmax and the inverse-CDF draw, with __syncthreads between dependent steps.
// Never a launch per pixel.
//
// Each dense step out[co] = b[co] + sum_k x[k] w[k][co] splits K over the threads that C_out leaves free
// (256 threads, 64 channels: 4 slices of K), then sums the slices in shared memory.
#include <algorithm>

#include "common/pixelcnn_plan.h"
#include "cuda/cuda_utils.cuh"
#include "ops.h"

namespace pixelops::cuda {
namespace {

constexpr int kThreads = 256;

struct Taps {
  int n_a, n_b;
  int dya[kMaxTaps], dxa[kMaxTaps], dyb[kMaxTaps], dxb[kMaxTaps];
};

struct SampleArgs {
  const float* params;
  PixelCNNPlan plan;
  const int32_t* observed;       // null when nothing is observed
  const uint8_t* observed_mask;  // null when nothing is observed
  int32_t* samples;
  float* logits;                 // null unless teacher-forced logits are asked for
  float* act;                    // (N, layers + 1, ring, C) scratch, used when the ring is too big for smem
  bool act_in_smem;              // the activation ring lives in shared memory after the buffers below
  int H, W;
  double inv_temperature;
  uint64_t seed;
};

// Partial sums of out[co] over one slice of K per thread, then the slices summed by the threads co < Cout,
// which call done(co, value) with the bias added. Starts and ends with the block in step.
template <class Done>
__device__ __forceinline__ void dense(const float* x, int K, const float* __restrict__ w, const float* __restrict__ b,
                                      int Cout, float* red, Done done) {
  const int slices = max(1, min(kThreads / max(Cout, 1), 32));
  const int per = (K + slices - 1) / slices;
  for (int t = threadIdx.x; t < Cout * slices; t += kThreads) {
    const int co = t % Cout, s = t / Cout;
    const int k0 = s * per, k1 = min(K, k0 + per);
    float acc = 0.f;
    for (int k = k0; k < k1; ++k) acc = fmaf(x[k], __ldg(w + int64_t(k) * Cout + co), acc);
    red[s * Cout + co] = acc;
  }
  __syncthreads();
  for (int co = threadIdx.x; co < Cout; co += kThreads) {
    float v = __ldg(b + co);
    for (int s = 0; s < slices; ++s) v += red[s * Cout + co];
    done(co, v);
  }
  __syncthreads();
}

// Warp 0: the inverse-CDF draw of common/pixelcnn_plan.h, spread over the lanes (each takes a run of
// consecutive levels; an inclusive scan over lanes gives each run's starting sum). Same result as the
// host's sequential loop except where rounding puts the target exactly on a boundary.
__device__ int warp_draw(const float* lg, int levels, double inv_t, float u) {
  const int lane = threadIdx.x & 31;
  const int per = (levels + 31) / 32;
  const int k0 = min(levels, lane * per), k1 = min(levels, k0 + per);
  float m = -INFINITY;
  for (int k = k0; k < k1; ++k) m = fmaxf(m, lg[k]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  double local = 0.0;
  for (int k = k0; k < k1; ++k) local += exp((double(lg[k]) - double(m)) * inv_t);
  double incl = local;
  for (int o = 1; o < 32; o <<= 1) {
    const double v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  const double total = __shfl_sync(0xffffffffu, incl, 31);
  // NaN, the same for every lane: no distribution (inverse_cdf_draw). Tested on the bits, which no fast-math
  // assumption about NaN can fold away (this file builds with --use_fast_math).
  if ((__double_as_longlong(total) & 0x7fffffffffffffffLL) > 0x7ff0000000000000LL) return -1;
  const double target = double(u) * total;
  const unsigned hit = __ballot_sync(0xffffffffu, k1 > k0 && target < incl);
  if (hit == 0) return levels - 1;
  const int owner = __ffs(hit) - 1;
  int result = levels - 1;
  if (lane == owner) {
    double run = incl - local;
    result = k1 - 1;
    for (int k = k0; k < k1; ++k) {
      run += exp((double(lg[k]) - double(m)) * inv_t);
      if (target < run) { result = k; break; }
    }
  }
  return __shfl_sync(0xffffffffu, result, owner);
}

__global__ void __launch_bounds__(kThreads) pixelcnn_sample_kernel(SampleArgs a, Taps taps) {
  extern __shared__ float smem[];
  const PixelCNNPlan& p = a.plan;
  const int C = p.channels, L = p.layers, Hc = p.head_channels, levels = p.levels;
  const int W = a.W, HW = a.H * a.W;
  const int max_k = max(max(taps.n_a, taps.n_b * C), max(C, Hc));
  const int max_red = kThreads * 2 + max(max(C, Hc), levels);
  float* x = smem;                     // max_k: gathered inputs of the current step
  float* red = x + max_k;              // partial sums
  float* hidden = red + max_red;       // Hc
  float* lg = hidden + Hc;             // levels

  const int64_t n = blockIdx.x;
  const int R = p.ring_rows();
  const int64_t ring = int64_t(R) * W;  // activation rows kept per layer (pixelcnn_plan.h)
  // Generic pointers: the same loads and stores serve a ring in shared memory or in global scratch.
  float* act = a.act_in_smem ? lg + levels : a.act + n * int64_t(L + 1) * ring * C;
  const int32_t* drawn = a.samples + n * HW;  // the image so far (written by thread 0 of this block)
  const float* prm = a.params;
  const float level_div = float(levels - 1);

  for (int i = 0; i < HW; ++i) {
    const int r = i / W, c = i % W, slot = (r % R) * W + c;
    // Layer 0: mask A over the image.
    for (int t = threadIdx.x; t < taps.n_a; t += kThreads) {
      const int rr = r + taps.dya[t], cc = c + taps.dxa[t];
      // k / (levels - 1) with IEEE division, as torch computes the model's input
      x[t] = (rr >= 0 && cc >= 0 && cc < W) ? __fdiv_rn(float(drawn[rr * W + cc]), level_div) : 0.f;
    }
    __syncthreads();
    float* a0 = act + int64_t(slot) * C;
    dense(x, taps.n_a, prm + p.w0, prm + p.b0, C, red, [&](int co, float v) { a0[co] = fmaxf(v, 0.f); });
    // Layers 1..L: mask B over the layer below at pixels <= i (written by this block, so plain loads).
    for (int l = 1; l <= L; ++l) {
      const float* below = act + int64_t(l - 1) * ring * C;
      const int K = taps.n_b * C;
      for (int e = threadIdx.x; e < K; e += kThreads) {
        const int t = e / C, ci = e - t * C;
        const int rr = r + taps.dyb[t], cc = c + taps.dxb[t];
        x[e] = (rr >= 0 && cc >= 0 && cc < W) ? below[int64_t((rr % R) * W + cc) * C + ci] : 0.f;
      }
      __syncthreads();
      float* out = act + (int64_t(l) * ring + slot) * C;
      const float* res = below + int64_t(slot) * C;
      const bool residual = p.residual != 0;
      dense(x, K, prm + p.weight_of(l), prm + p.bias_of(l), C, red, [&](int co, float v) {
        v = fmaxf(v, 0.f);
        out[co] = residual ? res[co] + v : v;
      });
    }
    const bool observed = a.observed_mask != nullptr && a.observed_mask[n * HW + i];
    if (!observed || a.logits != nullptr) {
      const float* top = act + (int64_t(L) * ring + slot) * C;
      for (int e = threadIdx.x; e < C; e += kThreads) x[e] = top[e];
      __syncthreads();
      dense(x, C, prm + p.wh1, prm + p.bh1, Hc, red, [&](int h, float v) { hidden[h] = fmaxf(v, 0.f); });
      dense(hidden, Hc, prm + p.wh2, prm + p.bh2, levels, red, [&](int k, float v) {
        lg[k] = v;
        if (a.logits != nullptr) a.logits[(n * levels + k) * HW + i] = v;
      });
    }
    if (threadIdx.x < 32) {
      int v;
      if (observed)
        v = a.observed[n * HW + i];
      else
        v = warp_draw(lg, levels, a.inv_temperature, pixel_uniform(a.seed, n, i));
      if (threadIdx.x == 0) a.samples[n * HW + i] = v;
    }
    __syncthreads();
  }
}

__global__ void pixel_uniforms_kernel(float* out, int64_t n, int64_t hw, uint64_t seed) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n * hw; j += int64_t(gridDim.x) * blockDim.x)
    out[j] = pixel_uniform(seed, j / hw, j % hw);
}

}  // namespace

void pixel_uniforms(const Array& out, uint64_t seed, uintptr_t stream) {
  expect_dtype(out, DType::f32, "pixel_uniforms");
  expect_contiguous(out, "pixel_uniforms");
  if (out.ndim != 2) throw ValueError("pixel_uniforms: expected an (images, pixels) array");
  const int64_t total = out.numel();
  if (total == 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 4096));
  pixel_uniforms_kernel<<<blocks, 256, 0, as_stream(stream)>>>(out.ptr<float>(), out.size[0], out.size[1], seed);
  check_launch("pixel_uniforms");
}

void pixelcnn_sample(const Array& params, const Array& config, const Array& observed, const Array& observed_mask,
                     const Array& samples, const Array& logits, const Array& scratch, double temperature,
                     uint64_t seed, uintptr_t stream) {
  const PixelCNNPlan p = make_plan(config, params);
  const SampleShape shape = check_sample_arrays(p, observed, observed_mask, samples, logits, scratch);
  const int64_t N = shape.N, H = shape.H, W = shape.W, HW = H * W;
  const bool has_mask = shape.has_mask, has_logits = shape.has_logits;
  if (N == 0 || HW == 0) return;
  if (N > 2147483647) throw ValueError("pixelcnn_sample: too many images for one launch");

  Taps taps{};
  taps.n_a = mask_taps(p.first_kernel, false, taps.dya, taps.dxa);
  taps.n_b = mask_taps(p.kernel, true, taps.dyb, taps.dxb);
  const int C = p.channels, Hc = p.head_channels;
  const int64_t max_k = std::max<int64_t>({taps.n_a, int64_t(taps.n_b) * C, C, Hc});
  const int64_t max_red = kThreads * 2 + std::max({C, Hc, p.levels});
  const int64_t buffers = sizeof(float) * (max_k + max_red + Hc + p.levels);
  const int64_t ring_bytes = sizeof(float) * int64_t(p.layers + 1) * p.ring_rows() * W * C;
  int device = 0, limit = 0;
  check(cudaGetDevice(&device), "pixelcnn_sample");
  check(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "pixelcnn_sample");
  // The activation ring in shared memory where it fits (the anchors' model at 28 wide: 115 KB), else global.
  const bool act_in_smem = buffers + ring_bytes <= limit;
  const int64_t smem = act_in_smem ? buffers + ring_bytes : buffers;
  if (smem > limit)
    throw ValueError("pixelcnn_sample: this image size and network need " + std::to_string(smem) +
                     " bytes of shared memory per block, the GPU has " + std::to_string(limit));
  check(cudaFuncSetAttribute(pixelcnn_sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
        "pixelcnn_sample");
  SampleArgs a{};
  a.params = params.ptr<float>();
  a.plan = p;
  a.observed = has_mask ? observed.ptr<int32_t>() : nullptr;
  a.observed_mask = has_mask ? observed_mask.ptr<uint8_t>() : nullptr;
  a.samples = samples.ptr<int32_t>();
  a.logits = has_logits ? logits.ptr<float>() : nullptr;
  a.act = scratch.ptr<float>();
  a.H = int(H);
  a.W = int(W);
  a.inv_temperature = 1.0 / temperature;
  a.seed = seed;
  a.act_in_smem = act_in_smem;
  pixelcnn_sample_kernel<<<unsigned(N), kThreads, size_t(smem), as_stream(stream)>>>(a, taps);
  check_launch("pixelcnn_sample");
}

}  // namespace pixelops::cuda
