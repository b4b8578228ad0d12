// Fused PixelCNN sampling on the CPU (network layout: common/pixelcnn_plan.h).
//
// Raster order. A mask-B layer at pixel i reads the layer below only at pixels <= i, and the mask-A layer
// reads the image only at pixels < i, so once pixels 0..i-1 are drawn every layer can be computed at pixel i
// from activations cached at earlier pixels: per pixel, each layer once at one position, then the head,
// softmax(logits / T) and the inverse-CDF draw with the uniform of (seed, image, i). Over the whole
// generation that is one forward pass of arithmetic.
//
// Threads take images; each thread walks its images in groups of kGroup so that every weight row loaded
// from cache feeds kGroup images (a weight-stationary matrix product per layer and pixel), vectorised over
// output channels in blocks of kLanes.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/parallel.h"
#include "common/pixelcnn_plan.h"
#include "common/simd.h"
#include "ops.h"

// Lanes values never cross a call boundary between clones (load_lanes is inlined): the ABI note is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pixelops::cpu {
namespace {

constexpr int kGroup = 8;   // images sharing each weight load
constexpr int kLanes = 16;  // output channels per register block (one AVX-512 vector, two AVX2 ones)

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// A block of kLanes floats as one value (GCC/Clang vector extension): each clone of simd.h maps it onto its
// own registers (one zmm on AVX-512, two ymm on AVX2), and the accumulators below stay in registers.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

inline Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// out[g][co] = bias[co] + sum_k x[g][k] * w[k][co] for g < kGroup; co_pad is a multiple of kLanes.
PIXELOPS_CPU_CLONES void group_matvec(const float* __restrict x, int K, const float* __restrict w, int co_pad,
                                      const float* __restrict bias, float* __restrict out) {
  for (int c0 = 0; c0 < co_pad; c0 += kLanes) {
    Lanes acc[kGroup];
    const Lanes b = load_lanes(bias + c0);
    for (int g = 0; g < kGroup; ++g) acc[g] = b;
    const float* wc = w + c0;
    for (int k = 0; k < K; ++k) {
      const Lanes wr = load_lanes(wc + int64_t(k) * co_pad);
      for (int g = 0; g < kGroup; ++g) acc[g] += x[g * K + k] * wr;
    }
    for (int g = 0; g < kGroup; ++g) std::memcpy(out + g * co_pad + c0, &acc[g], sizeof(Lanes));
  }
}

// One layer's weights with the output channels padded to a multiple of kLanes (zeros), so that the matrix
// product needs no tail loop.
struct PaddedLayer {
  int K = 0, co = 0, co_pad = 0;
  std::vector<float> w, b;
  PaddedLayer(const float* params, int64_t w_off, int64_t b_off, int K_, int co_) : K(K_), co(co_) {
    co_pad = int(round_up(co, kLanes));
    w.assign(size_t(K) * co_pad, 0.f);
    b.assign(size_t(co_pad), 0.f);
    for (int k = 0; k < K; ++k) std::memcpy(&w[size_t(k) * co_pad], params + w_off + int64_t(k) * co, sizeof(float) * co);
    std::memcpy(b.data(), params + b_off, sizeof(float) * co);
  }
};

}  // namespace

void pixel_uniforms(const Array& out, uint64_t seed, uintptr_t) {
  expect_dtype(out, DType::f32, "pixel_uniforms");
  expect_contiguous(out, "pixel_uniforms");
  if (out.ndim != 2) throw ValueError("pixel_uniforms: expected an (images, pixels) array");
  const int64_t n = out.size[0], hw = out.size[1];
  float* u = out.ptr<float>();
  parallel_for(n * hw, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) u[j] = pixel_uniform(seed, j / hw, j % hw);
  });
}

void pixelcnn_sample(const Array& params, const Array& config, const Array& observed, const Array& observed_mask,
                     const Array& samples, const Array& logits, const Array& scratch, double temperature,
                     uint64_t seed, uintptr_t) {
  const PixelCNNPlan p = make_plan(config, params);
  const SampleShape shape = check_sample_arrays(p, observed, observed_mask, samples, logits, scratch);
  const int64_t N = shape.N, H = shape.H, W = shape.W, HW = H * W;
  const bool has_mask = shape.has_mask, has_logits = shape.has_logits;
  const int64_t R = p.ring_rows(), ring = R * W;  // activation rows kept per layer (pixelcnn_plan.h)
  if (N == 0 || HW == 0) return;

  const int C = p.channels, L = p.layers, Hc = p.head_channels, levels = p.levels;
  const float* prm = params.ptr<float>();
  std::vector<PaddedLayer> layer;
  layer.reserve(L + 1);
  layer.emplace_back(prm, p.w0, p.b0, p.taps_a, C);
  for (int l = 1; l <= L; ++l) layer.emplace_back(prm, p.weight_of(l), p.bias_of(l), p.taps_b * C, C);
  const PaddedLayer head1(prm, p.wh1, p.bh1, C, Hc), head2(prm, p.wh2, p.bh2, Hc, levels);
  int dya[kMaxTaps], dxa[kMaxTaps], dyb[kMaxTaps], dxb[kMaxTaps];
  mask_taps(p.first_kernel, false, dya, dxa);
  mask_taps(p.kernel, true, dyb, dxb);

  const int32_t* obs = has_mask ? observed.ptr<int32_t>() : nullptr;
  const uint8_t* obs_mask = has_mask ? observed_mask.ptr<uint8_t>() : nullptr;
  int32_t* out = samples.ptr<int32_t>();
  float* logit_out = has_logits ? logits.ptr<float>() : nullptr;
  const double inv_t = 1.0 / temperature;
  const float level_div = float(levels - 1);
  // Up to kGroup images per group, fewer when that leaves threads idle (8 images on 2 threads: 2 groups of 4;
  // the matrix product still computes kGroup rows, so a short group costs a full one on its own thread).
  const int64_t threads = std::max(1, omp_get_max_threads());
  const int64_t per_group = std::min<int64_t>(kGroup, std::max<int64_t>(1, (N + threads - 1) / threads));
  const int64_t groups = (N + per_group - 1) / per_group;

  parallel_for(groups, 1, [&](int64_t gb, int64_t ge) {
    const int max_k = std::max({p.taps_a, p.taps_b * C, C, Hc});
    const int max_co = std::max({layer[0].co_pad, head1.co_pad, head2.co_pad});
    std::vector<float> x(size_t(kGroup) * max_k), y(size_t(kGroup) * max_co);
    std::vector<float> image(size_t(kGroup) * HW);
    std::vector<double> cum(levels);
    // Cached activations: per image of the group, per layer, a ring of rows of C channels (the caller's scratch).
    float* act_base = scratch.ptr<float>();
    for (int64_t grp = gb; grp < ge; ++grp) {
      const int64_t n0 = grp * per_group;
      const int G = int(std::min<int64_t>(per_group, N - n0));
      std::fill(x.begin(), x.end(), 0.f);  // members past G stay zero
      auto act = [&](int g, int l) { return act_base + ((n0 + g) * int64_t(L + 1) + l) * ring * C; };
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t r = i / W, c = i % W, slot = (r % R) * W + c;
        // Layer 0, mask A over the image drawn so far (one input channel).
        {
          const int K = p.taps_a;
          for (int g = 0; g < G; ++g)
            for (int t = 0; t < K; ++t) {
              const int64_t rr = r + dya[t], cc = c + dxa[t];
              x[size_t(g) * K + t] = (rr >= 0 && cc >= 0 && cc < W) ? image[size_t(g) * HW + rr * W + cc] : 0.f;
            }
          const PaddedLayer& ly = layer[0];
          group_matvec(x.data(), K, ly.w.data(), ly.co_pad, ly.b.data(), y.data());
          for (int g = 0; g < G; ++g) {
            float* a = act(g, 0) + slot * C;
            for (int co = 0; co < C; ++co) a[co] = std::max(y[size_t(g) * ly.co_pad + co], 0.f);
          }
        }
        // Layers 1..L, mask B over the cached activations of the layer below (pixels <= i).
        for (int l = 1; l <= L; ++l) {
          const int K = p.taps_b * C;
          for (int g = 0; g < G; ++g) {
            const float* below = act(g, l - 1);
            float* xg = x.data() + size_t(g) * K;
            for (int t = 0; t < p.taps_b; ++t) {
              const int64_t rr = r + dyb[t], cc = c + dxb[t];
              if (rr >= 0 && cc >= 0 && cc < W)
                std::memcpy(xg + t * C, below + ((rr % R) * W + cc) * C, sizeof(float) * C);
              else
                std::memset(xg + t * C, 0, sizeof(float) * C);
            }
          }
          const PaddedLayer& ly = layer[l];
          group_matvec(x.data(), K, ly.w.data(), ly.co_pad, ly.b.data(), y.data());
          for (int g = 0; g < G; ++g) {
            float* a = act(g, l) + slot * C;
            const float* res = act(g, l - 1) + slot * C;
            for (int co = 0; co < C; ++co) {
              const float v = std::max(y[size_t(g) * ly.co_pad + co], 0.f);
              a[co] = p.residual ? res[co] + v : v;
            }
          }
        }
        // Which members still need a draw here (inpainting copies observed pixels instead).
        bool any_draw = false;
        for (int g = 0; g < G; ++g) any_draw |= !(has_mask && obs_mask[(n0 + g) * HW + i]);
        if (any_draw || has_logits) {
          for (int g = 0; g < G; ++g) std::memcpy(x.data() + size_t(g) * C, act(g, L) + slot * C, sizeof(float) * C);
          group_matvec(x.data(), C, head1.w.data(), head1.co_pad, head1.b.data(), y.data());
          for (int g = 0; g < G; ++g)
            for (int h = 0; h < Hc; ++h) x[size_t(g) * Hc + h] = std::max(y[size_t(g) * head1.co_pad + h], 0.f);
          group_matvec(x.data(), Hc, head2.w.data(), head2.co_pad, head2.b.data(), y.data());
        }
        for (int g = 0; g < G; ++g) {
          const int64_t n = n0 + g;
          const float* lg = y.data() + size_t(g) * head2.co_pad;
          if (has_logits)
            for (int k = 0; k < levels; ++k) logit_out[(n * levels + k) * HW + i] = lg[k];
          int v;
          if (has_mask && obs_mask[n * HW + i])
            v = obs[n * HW + i];
          else
            v = inverse_cdf_draw(lg, levels, inv_t, pixel_uniform(seed, n, i), cum.data());
          out[n * HW + i] = v;
          image[size_t(g) * HW + i] = float(v) / level_div;  // as torch computes k / (levels - 1)
        }
      }
    }
  });
}

}  // namespace pixelops::cpu
