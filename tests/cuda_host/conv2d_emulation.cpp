// The conv2d CUDA kernels' index math, run on the host in float64 against naive loops: the GEMM problems'
// loaders and epilogues (forward, grad_input, grad_weight; generic and tap-major K), driven the way
// gemm_kernel drives them (tiles, K steps, slots, SIMT product), the direct kernels (forward, grad_input,
// grad_weight), grad_input by taps
// (conv2d_taps.cuh) and FastDiv.
// Built and run by tests/test_conv2d_cuda_host.py; it needs only a C++17 compiler, no GPU.
//   c++ -std=c++17 -O1 -I tests/cuda_host -I csrc tests/cuda_host/conv2d_emulation.cpp && ./a.out
#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>
#include <vector>

#include "cuda/cuda_utils.cuh"  // first: the host stand-in beside this file defines the CUDA keywords
#include "cuda/conv2d_direct.cuh"
#include "cuda/conv2d_problems.cuh"
#include "cuda/conv2d_taps.cuh"
#include "conv_case.h"

using namespace pixelops::cuda;
using namespace pixelops::cuda::conv;

// As gemm_kernel (conv2d_gemm.cuh) with SimtMma<double>: block by block; within a block, each phase between
// two barriers runs for all 256 threads before the next.
template <class P>
void emulate_gemm(const P& p) {
  using Tl = typename P::Tl;
  using SA = Slot<P::kFetchA, Tl::BM>;
  using SB = Slot<P::kFetchB, Tl::BN>;
  using Mma = SimtMma<double, Tl>;
  const int64_t gx = (p.N + Tl::BN - 1) / Tl::BN, gy = (p.M + Tl::BM - 1) / Tl::BM;
  const int64_t gz = int64_t(p.groups) * p.splits;
  static double As[kBK][Mma::kLdA], Bs[kBK][Mma::kLdB];
  for (int64_t bz = 0; bz < gz; ++bz)
    for (int64_t by = 0; by < gy; ++by)
      for (int64_t bx = 0; bx < gx; ++bx) {
        const int g = int(bz) / p.splits, split = int(bz) % p.splits;
        const int64_t m0 = by * Tl::BM, n0 = bx * Tl::BN, kbeg = int64_t(split) * p.kchunk;
        const int64_t kend = p.splits == 1 ? p.K : std::min(kbeg + p.kchunk, p.K);
        std::vector<typename P::Loader> loaders;
        std::vector<Mma> mma(kGemmThreads);
        for (int tid = 0; tid < kGemmThreads; ++tid) loaders.emplace_back(p, g, m0, n0, tid);
        for (int64_t k0 = kbeg; k0 < kend; k0 += kBK) {
          for (int tid = 0; tid < kGemmThreads; ++tid) {
            double ra[SA::kSlots], rb[SB::kSlots];
            ToRegisters<double, double> put{ra, rb};
            loaders[tid].fetch(p, k0, kend, tid, put);
            for (int r = 0; r < SA::kSlots; ++r) As[SA::k(tid, r)][SA::mn(tid, r)] = ra[r];
            for (int r = 0; r < SB::kSlots; ++r) Bs[SB::k(tid, r)][SB::mn(tid, r)] = rb[r];
          }
          for (int tid = 0; tid < kGemmThreads; ++tid) mma[tid].step(As, Bs, tid);
        }
        for (int tid = 0; tid < kGemmThreads; ++tid)
          mma[tid].finish(tid, nullptr, [&](int i, int j, double v) {
            if (m0 + i < p.M && n0 + j < p.N) p.store(g, split, m0 + i, n0 + j, v);
          });
      }
}

struct Case {
  int64_t N, C, H, W, M;
  int KH, KW, ntaps, sh, sw, ph, pw, dh, dw;
  int64_t G;
  bool relu;
};

static int failures = 0;

static void expect_close(const char* what, const Case& c, const std::vector<double>& got,
                         const std::vector<double>& ref) {
  double worst = 0, scale = 1e-30;
  bool unwritten = false;  // outputs start as NaN: one left so was never written
  for (size_t i = 0; i < ref.size(); ++i) {
    unwritten |= std::isnan(got[i]);
    worst = std::max(worst, std::fabs(got[i] - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  const bool ok = !unwritten && worst <= 1e-12 * scale * 64;
  std::printf("%s %-28s N%lld C%lld %lldx%lld M%lld k%dx%d taps%d s%d,%d p%d,%d d%d,%d g%lld relu%d: max err %.1e\n",
              ok ? "ok  " : "FAIL", what, (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W,
              (long long)c.M, c.KH, c.KW, c.ntaps, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, (long long)c.G, int(c.relu),
              worst / scale);
  if (!ok) ++failures;
}

template <class Tl>
static void run_case(const Case& c, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  Geometry q = case_geometry(c);
  set_divisors(q);
  // contiguous NCHW x, y, grad_y and (M, Cg, KH, KW) weights
  const int64_t xs[4] = {q.C * q.H * q.W, q.H * q.W, q.W, 1}, ys[4] = {q.M * q.OH * q.OW, q.OH * q.OW, q.OW, 1};
  const int64_t* ws = q.ws;
  for (int i = 0; i < 4; ++i) { q.xs[i] = xs[i]; q.gs[i] = ys[i]; q.ys[i] = c.relu ? ys[i] : 0; }
  std::vector<double> x(q.N * xs[0]), w(q.M * ws[0]), b(q.M), y(q.N * ys[0]), gy(q.N * ys[0]);
  for (auto* v : {&x, &w, &b, &gy})
    for (auto& e : *v) e = nd(rng);
  auto X = [&](int64_t n, int64_t ch, int64_t h, int64_t ww) { return x[n * xs[0] + ch * xs[1] + h * xs[2] + ww]; };
  auto Wt = [&](int64_t m, int64_t c2, int t) { return w[m * ws[0] + c2 * ws[1] + t]; };

  // naive forward (with the ReLU the backward's mask comes from)
  std::vector<double> ref_y(y.size());
  for (int64_t n = 0; n < q.N; ++n)
    for (int64_t m = 0; m < q.M; ++m)
      for (int64_t oh = 0; oh < q.OH; ++oh)
        for (int64_t ow = 0; ow < q.OW; ++ow) {
          const int64_t g = m / q.Mg;
          double s = b[m];
          for (int64_t c2 = 0; c2 < q.Cg; ++c2)
            for (int t = 0; t < q.ntaps; ++t) {
              const int64_t ih = oh * q.sh - q.ph + (t / q.KW) * q.dh, iw = ow * q.sw - q.pw + (t % q.KW) * q.dw;
              if (ih >= 0 && ih < q.H && iw >= 0 && iw < q.W) s += Wt(m, c2, t) * X(n, g * q.Cg + c2, ih, iw);
            }
          ref_y[((n * q.M + m) * q.OH + oh) * q.OW + ow] = c.relu && s < 0 ? 0 : s;
        }
  y = ref_y;
  // the upstream gradient as the kernels see it: zero where the fused ReLU was off
  auto GY = [&](int64_t n, int64_t m, int64_t oh, int64_t ow) {
    const int64_t i = ((n * q.M + m) * q.OH + oh) * q.OW + ow;
    return c.relu && !(y[i] > 0) ? 0.0 : gy[i];
  };
  std::vector<double> ref_gx(x.size(), 0.0), ref_gw(w.size(), 0.0), ref_gb(q.M, 0.0);
  for (int64_t n = 0; n < q.N; ++n)
    for (int64_t m = 0; m < q.M; ++m)
      for (int64_t oh = 0; oh < q.OH; ++oh)
        for (int64_t ow = 0; ow < q.OW; ++ow) {
          const int64_t g = m / q.Mg;
          const double d = GY(n, m, oh, ow);
          ref_gb[m] += d;
          for (int64_t c2 = 0; c2 < q.Cg; ++c2)
            for (int t = 0; t < q.ntaps; ++t) {
              const int64_t ih = oh * q.sh - q.ph + (t / q.KW) * q.dh, iw = ow * q.sw - q.pw + (t % q.KW) * q.dw;
              if (ih < 0 || ih >= q.H || iw < 0 || iw >= q.W) continue;
              const int64_t xi = n * xs[0] + (g * q.Cg + c2) * xs[1] + ih * xs[2] + iw;
              ref_gx[xi] += d * Wt(m, c2, t);
              ref_gw[m * ws[0] + c2 * ws[1] + t] += d * x[xi];
            }
        }

  // forward, both K orders where the tap-major one applies
  for (int tap_major = 0; tap_major < 2; ++tap_major) {
    if (tap_major && q.Cg % kBK) continue;
    std::vector<double> got(y.size(), NAN);
    auto fill = [&](auto p) {
      p.q = q; p.x = x.data(); p.w = w.data(); p.b = b.data(); p.y = got.data(); p.relu = c.relu;
      p.M = q.Mg; p.N = q.N * q.OH * q.OW; p.K = q.Cg * q.ntaps; p.groups = int(q.G); p.kchunk = p.K;
      emulate_gemm(p);
    };
    if (tap_major) fill(ForwardGemm<double, Tl, true>{});
    else fill(ForwardGemm<double, Tl, false>{});
    expect_close(tap_major ? "forward (tap-major)" : "forward", c, got, ref_y);
  }
  // forward, direct kernel (few input channels a group): the weight staging for all threads (into shared arrays
  // poisoned first: a weight the staging misses reads as NaN), then the pixels lane by lane, warp by warp, over
  // a grid smaller than the image so the grid-stride loop turns too
  if (forward_direct_fits(q)) {
    std::vector<double> got(y.size(), NAN), wsh(kDirectWeights);
    std::vector<WindowTap> taps(kDirectK);
    const int threads = 64, blocks = 3, warps = blocks * threads / 32;
    for (int64_t g = 0; g < q.G; ++g) {
      std::fill(wsh.begin(), wsh.end(), NAN);
      std::fill(taps.begin(), taps.end(), WindowTap{1 << 30, 0});
      for (int tid = 0; tid < threads; ++tid)
        forward_direct_stage(q, w.data(), g, wsh.data(), taps.data(), tid, threads);
      for (int warp = 0; warp < warps; ++warp)
        for (int lane = 0; lane < 32; ++lane)
          forward_direct_pixels(q, x.data(), b.data(), got.data(), c.relu, g, wsh.data(), taps.data(), lane, warp,
                                warps);
    }
    expect_close("forward (direct)", c, got, ref_y);
  }
  // grad_input: GEMM in both K orders, and the direct kernel for few channels per group
  for (int variant = 0; variant < 3; ++variant) {
    if ((variant == 1 && q.Mg % kBK) || (variant == 2 && !grad_input_direct_fits(q))) continue;
    std::vector<double> got(x.size(), NAN);
    const double* yp = c.relu ? y.data() : nullptr;
    if (variant == 2) {
      // the weight staging for all threads, then the pixels over a grid smaller than the image
      std::vector<double> wsh(kDirectWeights);
      const int threads = 64, blocks = 3;
      auto run = [&](auto cg) {
        constexpr int CG = decltype(cg)::value;
        for (int64_t g = 0; g < q.G; ++g) {
          for (int tid = 0; tid < threads; ++tid)
            grad_input_direct_stage<double, double, CG>(q, w.data(), g, wsh.data(), tid, threads);
          for (int64_t t = 0; t < blocks * threads; ++t)
            grad_input_direct_pixels<double, double, CG>(q, yp, gy.data(), got.data(), g, wsh.data(), t,
                                                         int64_t(blocks) * threads);
        }
      };
      if (q.Cg == 1) run(std::integral_constant<int, 1>{});
      else if (q.Cg == 2) run(std::integral_constant<int, 2>{});
      else run(std::integral_constant<int, kDirectCg>{});
    } else {
      // one GEMM per stride phase, as conv2d_backward runs them
      auto fill = [&](auto p, const Phase& f) {
        p.q = q; p.f = f; p.w = w.data(); p.y = yp; p.gy = gy.data(); p.gx = got.data();
        p.M = q.Cg; p.N = q.N * f.PH * f.PW; p.K = q.Mg * f.ntaps; p.groups = int(q.G); p.kchunk = p.K;
        emulate_gemm(p);
      };
      for (int rh = 0; rh < q.sh; ++rh)
        for (int rw = 0; rw < q.sw; ++rw) {
          const Phase f = plan_phase(q, rh, rw);
          if (f.PH == 0 || f.PW == 0) continue;
          if (variant == 1) fill(GradInputGemm<double, Tl, true>{}, f);
          else fill(GradInputGemm<double, Tl, false>{}, f);
        }
    }
    expect_close(variant == 0 ? "grad_input" : variant == 1 ? "grad_input (tap-major)" : "grad_input (direct)", c,
                 got, ref_gx);
  }
  // grad_input by taps (few channels a group, no ReLU gate): packed weights, the 1x1 GEMM into z, the gather.
  // Checked for any Mg here, though conv2d_backward takes it from Mg = 16 on.
  if (!c.relu && q.Cg <= kDirectCg) {
    const Geometry zq = taps_geometry(q);
    std::vector<double> wp(zq.M * zq.Cg), z(zq.N * zq.M * zq.OH * zq.OW, NAN), got(x.size(), NAN);
    for (int64_t i = 0; i < int64_t(wp.size()); ++i) wp[i] = packed_tap_weight(q, w.data(), i);
    auto fill = [&](auto p) {
      p.q = zq; p.x = gy.data(); p.w = wp.data(); p.b = nullptr; p.y = z.data(); p.relu = false;
      p.M = zq.Mg; p.N = zq.N * zq.OH * zq.OW; p.K = zq.Cg; p.groups = int(zq.G); p.kchunk = p.K;
      emulate_gemm(p);
    };
    if (zq.Cg % kBK == 0) fill(ForwardGemm<double, Tl, true>{});
    else fill(ForwardGemm<double, Tl, false>{});
    for (int64_t i = 0; i < int64_t(got.size()); ++i) got[i] = gather_taps(q, z.data(), i);
    expect_close("grad_input (taps)", c, got, ref_gx);
  }
  // grad_weight, split over K in three (then reduce_grad_weight's sums: masked taps 0)
  {
    GradWeightGemm<double, Tl> p;
    p.q = q; p.x = x.data(); p.y = c.relu ? y.data() : nullptr; p.gy = gy.data();
    p.M = q.Mg; p.N = q.Cg * q.ntaps; p.K = q.N * q.OH * q.OW; p.groups = int(q.G);
    const int64_t ksteps = (p.K + kBK - 1) / kBK, chunk = (ksteps + 2) / 3;
    p.kchunk = chunk * kBK;
    p.splits = int((ksteps + chunk - 1) / chunk);
    std::vector<double> wsp(p.splits * q.M * p.N, NAN), got(w.size());
    p.ws = wsp.data();
    emulate_gemm(p);
    for (int64_t i = 0; i < int64_t(got.size()); ++i) got[i] = reduce_weight_output(q, wsp.data(), p.splits, false, i);
    expect_close("grad_weight (3 splits)", c, got, ref_gw);
  }
  // grad_weight, direct (few channels a group): grad_weight_direct's phases for all threads in turn, block by
  // block over runs of pixels that end mid-chunk (a partial sum each), then reduce_grad_weight's sums;
  // the shared arrays are poisoned before each chunk. Again with grad_bias as the column of ones where K + 1
  // columns fit.
  for (bool ones : {false, true}) {
    if (!grad_weight_direct_fits(q) || (ones && !grad_weight_direct_takes_bias(q))) continue;
    auto run = [&](auto kmax_tag) {
      constexpr int KMAX = decltype(kmax_tag)::value;
      using S = GwdShape<double, KMAX>;
      const int K = int(q.Cg) * q.ntaps, ncol = K + (ones ? 1 : 0);
      std::vector<WindowTap> taps(KMAX);
      for (int k = 0; k < K; ++k) taps[k] = window_tap(q, k);
      const int64_t P = q.N * q.OH * q.OW, run_len = S::P + 3;  // runs ending mid-chunk (the kernel's are whole)
      const int runs = int((P + run_len - 1) / run_len);
      std::vector<double> ws(runs * q.M * int64_t(ncol), NAN), got(w.size()), gys(S::P * S::LG), xs(S::P * S::LX);
      std::vector<GwdPixel> px(S::P);
      static double acc[kGwdThreads][4][S::KT];
      for (int64_t g = 0; g < q.G; ++g)
        for (int64_t m0 = 0; m0 < q.Mg; m0 += kGwdRows)
          for (int64_t first = 0; first < P; first += run_len) {
            for (auto& t : acc) for (auto& a : t) for (auto& b : a) b = 0;
            const int64_t last = std::min(P, first + run_len);
            for (int64_t p0 = first; p0 < last; p0 += S::P) {
              std::fill(gys.begin(), gys.end(), NAN);
              std::fill(xs.begin(), xs.end(), NAN);
              for (int tid = 0; tid < S::P; ++tid) gwd_pixel<double, KMAX>(q, g, m0, p0, last, tid, px.data());
              for (int tid = 0; tid < kGwdThreads; ++tid)
                gwd_stage<double, double, KMAX>(q, x.data(), c.relu ? y.data() : nullptr, gy.data(), m0, taps.data(),
                                                px.data(), gys.data(), xs.data(), tid, ones);
              for (int tid = 0; tid < kGwdThreads; ++tid) gwd_accumulate<double, KMAX>(gys.data(), xs.data(), tid, acc[tid]);
            }
            // the kernel's reduction: warps of one column split, pixel split 0 first, then 1, ...
            for (int tid = 0; tid < kGwdThreads; ++tid) {
              const int warp = tid / 32, lane = tid % 32, ps = warp / S::KS, ks = warp % S::KS;
              const int r0 = 4 * (lane % 16), k0 = ks * (KMAX / S::KS) + (lane / 16) * S::KT;
              for (int i = 0; i < 4; ++i)
                for (int j = 0; j < S::KT; ++j)
                  if (m0 + r0 + i < q.Mg && k0 + j < ncol) {
                    double& part = ws[((first / run_len) * q.M + g * q.Mg + m0 + r0 + i) * ncol + k0 + j];
                    part = (ps == 0 ? 0.0 : part) + acc[tid][i][j];
                  }
                  else if (ps == 0 && acc[tid][i][j] != 0.0) { std::printf("FAIL: a sum outside the problem\n"); ++failures; }
            }
          }
      for (int64_t i = 0; i < int64_t(got.size()); ++i) got[i] = reduce_weight_output(q, ws.data(), runs, ones, i);
      expect_close(ones ? "grad_weight (direct, with the bias column)" : "grad_weight (direct)", c, got, ref_gw);
      if (ones) {
        std::vector<double> gb(q.M);
        for (int64_t m = 0; m < q.M; ++m)
          gb[m] = reduce_weight_output(q, ws.data(), runs, true, int64_t(got.size()) + m);  // past grad_weight's
        expect_close("grad_bias (direct's column of ones)", c, gb, ref_gb);
      }
    };
    switch (grad_weight_direct_kmax(q, ones)) {
      case 16: run(std::integral_constant<int, 16>{}); break;
      case 32: run(std::integral_constant<int, 32>{}); break;
      default: run(std::integral_constant<int, 64>{});
    }
  }
}

// FastDiv against plain division: every divisor up to 4096 on small and edge numerators, then random pairs
// up to 2^31, and the 64-bit fallback.
static void check_fast_div(std::mt19937& rng) {
  int bad = 0;
  auto check = [&](int64_t n, int64_t d) {
    const FastDiv f(d);
    if (f(n) != n / d || (n < (int64_t(1) << 31) && f(int(n)) != n / d)) {
      if (++bad <= 5) std::printf("FAIL FastDiv %lld / %lld\n", (long long)n, (long long)d);
    }
  };
  const int64_t top = (int64_t(1) << 31) - 1;
  for (int64_t d = 1; d <= 4096; ++d) {
    for (int64_t n = 0; n < 3 * d + 70; ++n) check(n, d);
    for (int64_t n : {top, top - 1, top - d, top / d * d, top / d * d - 1}) check(n, d);
  }
  std::uniform_int_distribution<int64_t> num(0, top), den(1, top);
  for (int i = 0; i < 2000000; ++i) check(num(rng), i % 2 ? den(rng) : den(rng) % 100000 + 1);
  for (int64_t n : {int64_t(1) << 31, (int64_t(1) << 40) + 12345}) check(n, 7), check(n, 1 << 20);
  std::printf("%s FastDiv\n", bad ? "FAIL" : "ok  ");
  failures += bad;
}

int main() {
  std::mt19937 rng(1234);
  check_fast_div(rng);
  const Case cases[] = {
      // N  C   H   W   M  KH KW taps sh sw ph pw dh dw G relu
      {2, 3, 9, 11, 5, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false},     // odd sizes, generic K
      {2, 16, 7, 9, 16, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, true},     // tap-major forward and grad_input, ReLU
      {1, 32, 10, 10, 70, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false},  // mask B (5 taps), M past one tile
      {3, 1, 12, 13, 16, 7, 7, 24, 1, 1, 3, 3, 1, 1, 1, true},   // mask A 7x7, one input channel (direct)
      {2, 32, 11, 9, 48, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false},   // stride 2
      {1, 16, 13, 12, 16, 3, 2, 6, 2, 1, 2, 0, 2, 3, 1, true},   // uneven stride, padding, dilation
      {2, 64, 6, 7, 32, 3, 3, 9, 1, 1, 1, 1, 1, 1, 2, true},     // groups of 32 channels (tap-major)
      {2, 8, 9, 8, 16, 3, 3, 9, 2, 2, 1, 1, 1, 1, 8, false},     // depthwise-like: 1 channel a group, 2 outputs
      {1, 12, 8, 8, 6, 3, 3, 9, 1, 1, 1, 1, 1, 1, 3, false},     // 4 channels a group (direct), 2 outputs
      {1, 48, 5, 6, 20, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false},    // 1x1, tap-major forward, generic grad_input
      {2, 2, 70, 3, 3, 5, 1, 5, 3, 1, 2, 0, 1, 1, 1, false},     // tall thin image, 2 channels (direct)
      {2, 16, 9, 10, 16, 3, 3, 5, 2, 2, 1, 1, 1, 1, 1, true},    // strided mask B: phases with masked taps
      {1, 8, 11, 12, 32, 5, 4, 20, 3, 2, 2, 1, 2, 1, 1, false},  // stride 3x2, dilation 2x1: uneven phases
      {1, 16, 7, 7, 16, 1, 1, 1, 2, 2, 0, 0, 1, 1, 1, false},    // 1x1 stride 2: phases without any tap
      {2, 32, 6, 5, 20, 3, 3, 9, 4, 3, 1, 2, 2, 2, 2, true},     // stride above the kernel, groups
      {2, 1, 10, 11, 32, 7, 7, 24, 1, 1, 3, 3, 1, 1, 1, false},  // mask A without ReLU: grad_input by taps
      {1, 4, 9, 9, 32, 3, 3, 5, 1, 1, 2, 2, 2, 2, 2, false},     // taps: mask B, dilation 2, 2 groups of 16
      {2, 2, 9, 13, 140, 3, 3, 9, 1, 1, 1, 1, 1, 1, 2, true},   // direct grad_weight over 2 blocks of 64 rows
  };
  for (const Case& c : cases) {
    std::printf("-- 64 x 64 tiles\n");
    run_case<NarrowTile>(c, rng);
    std::printf("-- 64 x 128 tiles\n");
    run_case<WideTile>(c, rng);
    std::printf("-- 32 x 128 tiles\n");
    run_case<ShortTile>(c, rng);
  }
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
