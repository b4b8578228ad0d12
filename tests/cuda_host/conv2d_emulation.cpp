// The conv2d CUDA kernels' index math, run on the host in float64 against naive loops: the GEMM problems'
// loaders and epilogues (forward, grad_input, grad_weight; generic and tap-major K), driven the way
// gemm_kernel drives them (tiles, K steps, slots, SIMT product), the direct kernels (forward, grad_input,
// grad_weight), grad_input by taps
// (conv2d_taps.cuh), the few-channel tiled forward, grad_input and grad_weight
// (conv2d_few_channels.cuh) and FastDiv.
// Built and run by tests/test_conv2d_cuda_host.py; it needs only a C++17 compiler, no GPU.
//   c++ -std=c++17 -O1 -I tests/cuda_host -I csrc tests/cuda_host/conv2d_emulation.cpp && ./a.out
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/cuda_utils.cuh"  // first: the host stand-in beside this file defines the CUDA keywords
#include "cuda/conv2d_direct.cuh"
#include "cuda/conv2d_few_channels.cuh"
#include "cuda/conv2d_mma.cuh"
#include "cuda/conv2d_problems.cuh"
#include "cuda/conv2d_taps.cuh"
#include "conv_case.h"
#include "mma_m16n8k8.h"

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
        if constexpr (P::kRowSums) {  // grad_bias: this column tile's share of the row sums
          if (!p.bias) continue;
          const RowSumPlan r = row_sum_plan(int(bx), int(gx), Tl::BM, kGemmThreads);
          emulate_row_sums(
              r, kGemmThreads,
              [&](int tid) {
                return row_sum_part<double>(r, kbeg, kend, tid, [&](int row, int64_t k) {
                  return m0 + row < p.M ? p.grad_at(g, m0 + row, k) : 0.0;
                });
              },
              [&](int row, double v) {
                if (m0 + row < p.M) p.store_row_sum(g, split, m0 + row, v);
              });
        }
      }
}

struct Case {
  int64_t N, C, H, W, M;
  int KH, KW, ntaps, sh, sw, ph, pw, dh, dw;
  int64_t G;
  bool relu;
  // Fuzz mode's knobs (the fixed cases keep these defaults): no bias; the layouts of x, w, grad_y and y
  // (Layout); grad_weight's GEMM K split in gw_splits; the direct grad_weight's runs of run_chunks chunks and
  // run_extra pixels.
  bool nobias = false;
  int lx = 0, lw = 0, lg = 0, ly = 0, gw_splits = 3, run_chunks = 1, run_extra = 3;
};

// The layouts of a 4-d operand, as the caller's views may come: contiguous, channels-last, a slice of a larger
// tensor (planes and rows padded, starting past its corner), broadcast over images and channels (stride 0, as
// an expanded grad_y). Sets s to the strides of a d-sized view, len to its buffer's size; returns its start.
enum Layout { kContiguous, kChannelsLast, kSlice, kBroadcast };
static int64_t lay_out(int l, const int64_t (&d)[4], int64_t (&s)[4], int64_t& len) {
  int64_t start = 0;
  if (l == kChannelsLast) s[1] = 1, s[3] = d[1], s[2] = d[3] * d[1], s[0] = d[2] * s[2];
  else if (l == kSlice)
    s[3] = 1, s[2] = d[3] + 2, s[1] = (d[2] + 1) * s[2], s[0] = (d[1] + 1) * s[1], start = s[1] + s[2] + 1;
  else if (l == kBroadcast) s[3] = 1, s[2] = d[3], s[1] = s[0] = 0;
  else s[3] = 1, s[2] = d[3], s[1] = d[2] * d[3], s[0] = d[1] * s[1];
  len = l == kBroadcast ? d[2] * d[3] : d[0] * s[0];
  return start;
}

static int failures = 0, checks = 0;
static bool quiet = false;                  // fuzz mode: FAIL lines only
static std::string where;                   // fuzz mode: the tile and the case's number, for FAIL lines
static std::map<std::string, int> refused;  // checks a path's fits-predicate refused, by path
static void refuse(const char* path) { ++refused[path]; }

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
  ++checks;
  if (!ok) ++failures;
  if (ok && quiet) return;
  std::printf("%s %-28s N%lld C%lld %lldx%lld M%lld k%dx%d taps%d s%d,%d p%d,%d d%d,%d g%lld relu%d: max err %.1e\n",
              ok ? "ok  " : "FAIL", what, (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W,
              (long long)c.M, c.KH, c.KW, c.ntaps, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, (long long)c.G, int(c.relu),
              worst / scale);
  if (quiet)  // the whole case, to paste into main's list (or to give `prog case`)
    std::printf("     {%lld, %lld, %lld, %lld, %lld, %d, %d, %d, %d, %d, %d, %d, %d, %d, %lld, %s, %s, %d, %d, %d, %d, "
                "%d, %d, %d},  // %s\n",
                (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.M, c.KH, c.KW, c.ntaps,
                c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, (long long)c.G, c.relu ? "true" : "false",
                c.nobias ? "true" : "false", c.lx, c.lw, c.lg, c.ly, c.gw_splits, c.run_chunks, c.run_extra,
                where.c_str());
}

// Runs run(KW, CG) with the kernel width and CG that the few-channel tiled kernels are compiled for.
template <class Run>
static void few_channels_instance(int KW, int cg, Run&& run) {
  auto by_cg = [&](auto kw) {
    if (cg == 1) run(kw, std::integral_constant<int, 1>{});
    else if (cg == 2) run(kw, std::integral_constant<int, 2>{});
    else run(kw, std::integral_constant<int, 4>{});
  };
  if (KW == 3) by_cg(std::integral_constant<int, 3>{});
  else if (KW == 5) by_cg(std::integral_constant<int, 5>{});
  else by_cg(std::integral_constant<int, 7>{});
}
static void copy4_host(double* d, const double* s, bool valid) { *d = valid ? *s : 0.0; }

// As forward_tiled and grad_input_tiled (conv2d_few_channels.cuh) run, block by block; within a block each
// step between two barriers runs for all threads before the next. Shared memory starts as NaN before each
// copy, so that a read of anything the copies did not write shows in the result.
static void emulate_forward_tiled(const Case& c, const Geometry& q, const double* xp, const double* wp,
                                  const double* bp, const std::vector<double>& ref_y) {
  FwTiled<double> p;
  std::vector<double> got(ref_y.size(), NAN);
  if (!forward_tiled_setup(p, q, xp, wp, bp, got.data(), c.relu, size_t(1) << 30)) {
    refuse("forward (tiled)");
    return;
  }
  std::vector<double> smem(p.smem_bytes() / sizeof(double));
  few_channels_instance(q.KW, p.s.cg, [&](auto kw, auto cg) {
    constexpr int KW = decltype(kw)::value, CG = decltype(cg)::value;
    for (int64_t g = 0; g < q.G; ++g)
      for (int mb = 0; mb < p.mblocks; ++mb)
        for (int64_t b = 0; b < p.s.tiles; ++b) {
          const FcTile t = fc_tile(p.s, b);
          std::fill(smem.begin(), smem.end(), NAN);
          for (int tid = 0; tid < kFcThreads; ++tid) fw_stage<CG>(p, g, t, mb, smem.data(), tid, copy4_host);
          for (int tid = 0; tid < kFcThreads; ++tid) fw_compute<KW, CG>(p, g, t, mb, smem.data(), tid);
        }
  });
  expect_close("forward (tiled)", c, got, ref_y);
}

static void emulate_grad_input_tiled(const Case& c, const Geometry& q, const double* wp, const double* gyp,
                                     const std::vector<double>& ref_gx) {
  GiTiled<double> p;
  std::vector<double> got(ref_gx.size(), NAN);
  if (c.relu || !grad_input_tiled_setup(p, q, wp, gyp, got.data(), size_t(1) << 30)) {
    refuse("grad_input (tiled)");
    return;
  }
  few_channels_instance(q.KW, p.s.cg, [&](auto kw, auto cg) {
    constexpr int KW = decltype(kw)::value, CG = decltype(cg)::value;
    std::vector<double> stage(size_t(p.stage_floats()));
    static double acc[kFcThreads][CG][kFcP];
    for (int64_t g = 0; g < q.G; ++g)
      for (int64_t b = 0; b < p.s.tiles; ++b) {
        const FcTile t = fc_tile(p.s, b);
        for (auto& a : acc) for (auto& row : a) for (double& v : row) v = 0.0;
        for (int cc = 0; cc < p.nchunks; ++cc) {
          std::fill(stage.begin(), stage.end(), NAN);
          for (int tid = 0; tid < kFcThreads; ++tid)
            gi_load_chunk<CG>(p, g, t, gi_columns(p, t, tid % 32), cc, stage.data(), tid, copy4_host);
          for (int tid = 0; tid < kFcThreads; ++tid) gi_chunk<KW, CG>(p, stage.data(), tid, acc[tid]);
        }
        std::fill(stage.begin(), stage.end(), NAN);
        for (int tid = 0; tid < kFcThreads; ++tid) gi_put<CG>(stage.data(), tid, acc[tid]);
        for (int tid = 0; tid < kFcThreads; ++tid) gi_store<CG>(p, g, t, stage.data(), tid, acc[tid]);
      }
  });
  expect_close("grad_input (tiled)", c, got, ref_gx);
}

// grad_weight_tiled (and grad_bias as its last column): every split's blocks, tile by tile, then
// reduce_grad_weight's sums. About c.gw_splits blocks in all (so 1 to 8 splits, tiles shared out unevenly).
static void emulate_grad_weight_tiled(const Case& c, const Geometry& q, const double* xp, const double* gyp,
                                      const std::vector<double>& ref_gw, const std::vector<double>& ref_gb) {
  for (bool bias : {false, true}) {
    GwTiled<double> p;
    if (c.relu || !grad_weight_tiled_setup(p, q, xp, gyp, bias, c.gw_splits, size_t(1) << 30)) {
      refuse("grad_weight (tiled)");
      return;
    }
    std::vector<double> ws(size_t(p.splits * q.M * p.ncol()), NAN), smem(p.smem_bytes() / sizeof(double));
    p.ws = ws.data();
    few_channels_instance(q.KW, p.s.cg, [&](auto kw, auto cg) {
      constexpr int KW = decltype(kw)::value, CG = decltype(cg)::value;
      static double acc[kFcThreads][4][KW], bsum[kFcThreads][4];
      for (int64_t g = 0; g < q.G; ++g)
        for (int mb = 0; mb < p.mblocks; ++mb)
          for (int split = 0; split < p.splits; ++split) {
            for (auto& a : acc) for (auto& row : a) for (double& v : row) v = 0.0;
            for (auto& a : bsum) for (double& v : a) v = 0.0;
            for (int64_t tile = split; tile < p.s.tiles; tile += p.splits) {
              std::fill(smem.begin(), smem.end(), NAN);
              for (int tid = 0; tid < kFcThreads; ++tid)
                gw_stage<CG>(p, g, fc_tile(p.s, tile), mb, smem.data(), tid, copy4_host);
              for (int tid = 0; tid < kFcThreads; ++tid) gw_tile<KW>(p, smem.data(), tid, acc[tid], bsum[tid]);
            }
            std::fill(smem.begin(), smem.end(), NAN);
            for (int tid = 0; tid < kFcThreads; ++tid) gw_put<KW>(p, smem.data(), tid, acc[tid], bsum[tid]);
            for (int tid = 0; tid < kFcThreads; ++tid) gw_store<KW>(p, g, mb, split, smem.data(), tid);
          }
    });
    std::vector<double> got(ref_gw.size());
    for (int64_t i = 0; i < int64_t(got.size()); ++i) got[i] = reduce_weight_output(q, ws.data(), p.splits, bias, i);
    expect_close(bias ? "grad_weight (tiled, with bias)" : "grad_weight (tiled)", c, got, ref_gw);
    if (bias) {
      std::vector<double> gb(q.M);
      for (int64_t m = 0; m < q.M; ++m)
        gb[m] = reduce_weight_output(q, ws.data(), p.splits, true, int64_t(got.size()) + m);  // past grad_weight's
      expect_close("grad_bias (tiled)", c, gb, ref_gb);
    }
  }
}

template <class Tl>
static void run_case(const Case& c, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  Geometry q = case_geometry(c);
  set_divisors(q);
  // x, w, grad_y, y (the ReLU gate) and the bias in the case's layouts (all contiguous in the fixed cases), the
  // rest of their buffers NaN; the outputs contiguous: NCHW y and grad_x, (M, Cg, KH, KW) grad_w
  const int64_t xd[4] = {q.N, q.C, q.H, q.W}, wd[4] = {q.M, q.Cg, q.KH, q.KW}, yd[4] = {q.N, q.M, q.OH, q.OW};
  int64_t xl, wl, gl, yl, ys[4];
  const int64_t xo = lay_out(c.lx, xd, q.xs, xl), wo = lay_out(c.lw, wd, q.ws, wl), go = lay_out(c.lg, yd, q.gs, gl),
                yo = lay_out(c.ly, yd, ys, yl);
  for (int i = 0; i < 4; ++i) q.ys[i] = c.relu ? ys[i] : 0;
  q.bs = c.lw == kSlice ? 2 : 1;
  std::vector<double> x(xl), w(wl), b(q.M * q.bs), y(yl, NAN), gy(gl);
  for (auto* v : {&x, &w, &b, &gy})
    for (auto& e : *v) e = nd(rng);
  auto poison = [](std::vector<double>& v, int64_t start, const int64_t (&d)[4], const int64_t (&s)[4]) {
    std::vector<bool> in(v.size());
    for (int64_t i = 0; i < d[0] * d[1] * d[2] * d[3]; ++i)
      in[start + i / (d[1] * d[2] * d[3]) * s[0] + i / (d[2] * d[3]) % d[1] * s[1] + i / d[3] % d[2] * s[2] +
         i % d[3] * s[3]] = true;
    for (size_t i = 0; i < v.size(); ++i) if (!in[i]) v[i] = NAN;
  };
  poison(x, xo, xd, q.xs);
  poison(w, wo, wd, q.ws);
  poison(gy, go, yd, q.gs);
  for (int64_t m = 0; m < q.M; ++m) for (int i = 1; i < q.bs; ++i) b[m * q.bs + i] = NAN;
  const double *xp = x.data() + xo, *wp = w.data() + wo, *gyp = gy.data() + go, *bp = c.nobias ? nullptr : b.data();
  const double* yp = c.relu ? y.data() + yo : nullptr;
  const int KK = q.KH * q.KW;
  auto X = [&](int64_t n, int64_t ch, int64_t h, int64_t ww) {
    return xp[n * q.xs[0] + ch * q.xs[1] + h * q.xs[2] + ww * q.xs[3]];
  };
  auto Wt = [&](int64_t m, int64_t c2, int t) {
    return wp[m * q.ws[0] + c2 * q.ws[1] + t / q.KW * q.ws[2] + t % q.KW * q.ws[3]];
  };

  // naive forward (with the ReLU the backward's mask comes from)
  std::vector<double> ref_y(q.N * q.M * q.OH * q.OW);
  for (int64_t n = 0; n < q.N; ++n)
    for (int64_t m = 0; m < q.M; ++m)
      for (int64_t oh = 0; oh < q.OH; ++oh)
        for (int64_t ow = 0; ow < q.OW; ++ow) {
          const int64_t g = m / q.Mg;
          double s = bp ? bp[m * q.bs] : 0.0;
          for (int64_t c2 = 0; c2 < q.Cg; ++c2)
            for (int t = 0; t < q.ntaps; ++t) {
              const int64_t ih = oh * q.sh - q.ph + (t / q.KW) * q.dh, iw = ow * q.sw - q.pw + (t % q.KW) * q.dw;
              if (ih >= 0 && ih < q.H && iw >= 0 && iw < q.W) s += Wt(m, c2, t) * X(n, g * q.Cg + c2, ih, iw);
            }
          ref_y[((n * q.M + m) * q.OH + oh) * q.OW + ow] = c.relu && s < 0 ? 0 : s;
        }
  for (int64_t i = 0; i < int64_t(ref_y.size()); ++i)
    y[yo + i / (q.M * q.OH * q.OW) * ys[0] + i / (q.OH * q.OW) % q.M * ys[1] + i / q.OW % q.OH * ys[2] +
      i % q.OW * ys[3]] = ref_y[i];
  // the upstream gradient as the kernels see it: zero where the fused ReLU was off
  auto GY = [&](int64_t n, int64_t m, int64_t oh, int64_t ow) {
    const int64_t i = ((n * q.M + m) * q.OH + oh) * q.OW + ow;
    return c.relu && !(ref_y[i] > 0) ? 0.0 : gyp[n * q.gs[0] + m * q.gs[1] + oh * q.gs[2] + ow * q.gs[3]];
  };
  std::vector<double> ref_gx(q.N * q.C * q.H * q.W, 0.0), ref_gw(q.M * q.Cg * KK, 0.0), ref_gb(q.M, 0.0);
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
              ref_gx[((n * q.C + g * q.Cg + c2) * q.H + ih) * q.W + iw] += d * Wt(m, c2, t);
              ref_gw[(m * q.Cg + c2) * KK + t] += d * X(n, g * q.Cg + c2, ih, iw);
            }
        }

  // WeightTile (64 x 96) is the float32 weight gradient's alone (its slots only stage grad_weight's operands):
  // with it, the grad_weight GEMM's checks alone run.
  constexpr bool kWeightOnly = Tl::BN == 96;
  if constexpr (!kWeightOnly) {
    // forward, both K orders where the tap-major one applies
    for (int tap_major = 0; tap_major < 2; ++tap_major) {
      if (tap_major && q.Cg % kBK) { refuse("forward (tap-major)"); continue; }
      std::vector<double> got(ref_y.size(), NAN);
      auto fill = [&](auto p) {
        p.q = q; p.x = xp; p.w = wp; p.b = bp; p.y = got.data(); p.relu = c.relu;
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
    if (!forward_direct_fits(q)) refuse("forward (direct)");
    else {
      std::vector<double> got(ref_y.size(), NAN), wsh(kDirectWeights);
      std::vector<WindowTap> taps(kDirectK);
      const int threads = 64, blocks = 3, warps = blocks * threads / 32;
      for (int64_t g = 0; g < q.G; ++g) {
        std::fill(wsh.begin(), wsh.end(), NAN);
        std::fill(taps.begin(), taps.end(), WindowTap{1 << 30, 0});
        for (int tid = 0; tid < threads; ++tid)
          forward_direct_stage(q, wp, g, wsh.data(), taps.data(), tid, threads);
        for (int warp = 0; warp < warps; ++warp)
          for (int lane = 0; lane < 32; ++lane)
            forward_direct_pixels(q, xp, bp, got.data(), c.relu, g, wsh.data(), taps.data(), lane, warp, warps);
      }
      expect_close("forward (direct)", c, got, ref_y);
    }
    // forward_tiled (few channels a group, stride 1; its own tile, so once a case)
    if constexpr (std::is_same_v<Tl, NarrowTile>) emulate_forward_tiled(c, q, xp, wp, bp, ref_y);
    // grad_input: GEMM in both K orders, and the direct kernel for few channels per group
    for (int variant = 0; variant < 3; ++variant) {
      if ((variant == 1 && q.Mg % kBK) || (variant == 2 && !grad_input_direct_fits(q))) {
        refuse(variant == 1 ? "grad_input (tap-major)" : "grad_input (direct)");
        continue;
      }
      std::vector<double> got(ref_gx.size(), NAN);
      if (variant == 2) {
        // the weight staging for all threads (into a shared array poisoned first), then runs of kGiPixels pixels
        // warp by warp over a grid smaller than the image: each lane's slice sum, the shuffles' butterfly (every
        // lane adds lane ^ o's sums as they were before that round), slice 0's stores
        std::vector<double> wsh(kDirectWeights);
        const int threads = 64, blocks = 3, warps = blocks * threads / 32;
        const int64_t total = q.N * q.H * q.W;
        auto run = [&](auto cg) {
          constexpr int CG = decltype(cg)::value;
          for (int64_t g = 0; g < q.G; ++g) {
            std::fill(wsh.begin(), wsh.end(), NAN);
            for (int tid = 0; tid < threads; ++tid)
              grad_input_direct_stage<double, double, CG>(q, wp, g, wsh.data(), tid, threads);
            for (int warp = 0; warp < warps; ++warp)
              for (int64_t base = warp * int64_t(kGiPixels); base < total; base += int64_t(warps) * kGiPixels) {
                double sum[32][CG] = {}, was[32][CG];
                for (int lane = 0; lane < 32; ++lane)
                  if (base + lane % kGiPixels < total)
                    grad_input_direct_sum<double, double, CG>(q, yp, gyp, g, wsh.data(), base + lane % kGiPixels,
                                                              lane / kGiPixels, sum[lane]);
                for (int o = kGiPixels; o < 32; o *= 2) {
                  std::copy(&sum[0][0], &sum[0][0] + 32 * CG, &was[0][0]);
                  for (int lane = 0; lane < 32; ++lane)
                    for (int c2 = 0; c2 < CG; ++c2) sum[lane][c2] += was[lane ^ o][c2];
                }
                for (int lane = 0; lane < kGiPixels && base + lane < total; ++lane)
                  grad_input_direct_store<double, double, CG>(q, got.data(), g, base + lane, sum[lane]);
              }
          }
        };
        if (q.Cg == 1) run(std::integral_constant<int, 1>{});
        else if (q.Cg == 2) run(std::integral_constant<int, 2>{});
        else run(std::integral_constant<int, kDirectCg>{});
      } else {
        // one GEMM per stride phase, as conv2d_backward runs them
        auto fill = [&](auto p, const Phase& f) {
          p.q = q; p.f = f; p.w = wp; p.y = yp; p.gy = gyp; p.gx = got.data();
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
    if (c.relu || q.Cg > kDirectCg) refuse("grad_input (taps)");
    else {
      const Geometry zq = taps_geometry(q);
      std::vector<double> packed(zq.M * zq.Cg), z(zq.N * zq.M * zq.OH * zq.OW, NAN), got(ref_gx.size(), NAN);
      for (int64_t i = 0; i < int64_t(packed.size()); ++i) packed[i] = packed_tap_weight(q, wp, i);
      auto fill = [&](auto p) {
        p.q = zq; p.x = gyp; p.w = packed.data(); p.b = nullptr; p.y = z.data(); p.relu = false;
        p.M = zq.Mg; p.N = zq.N * zq.OH * zq.OW; p.K = zq.Cg; p.groups = int(zq.G); p.kchunk = p.K;
        emulate_gemm(p);
      };
      if (zq.Cg % kBK == 0) fill(ForwardGemm<double, Tl, true>{});
      else fill(ForwardGemm<double, Tl, false>{});
      for (int64_t i = 0; i < int64_t(got.size()); ++i) got[i] = gather_taps(q, z.data(), i);
      expect_close("grad_input (taps)", c, got, ref_gx);
    }
    // grad_input_tiled (few channels a group, stride 1, no ReLU gate; its own tile, so once a case)
    if constexpr (std::is_same_v<Tl, NarrowTile>) emulate_grad_input_tiled(c, q, wp, gyp, ref_gx);
  }
  // grad_weight, split over K in three (gw_splits; then reduce_grad_weight's sums: masked taps 0); again with
  // grad_bias as one more column, A's row sums shared out over the column tiles
  for (bool bias : {false, true}) {
    GradWeightGemm<double, Tl> p;
    p.q = q; p.x = xp; p.y = yp; p.gy = gyp; p.bias = bias;
    p.M = q.Mg; p.N = q.Cg * q.ntaps; p.K = q.N * q.OH * q.OW; p.groups = int(q.G);
    const int64_t ksteps = (p.K + kBK - 1) / kBK, chunk = (ksteps + c.gw_splits - 1) / c.gw_splits;
    p.kchunk = chunk * kBK;
    p.splits = int((ksteps + chunk - 1) / chunk);
    std::vector<double> wsp(p.splits * q.M * p.ncol(), NAN), got(ref_gw.size());
    p.ws = wsp.data();
    emulate_gemm(p);
    for (int64_t i = 0; i < int64_t(got.size()); ++i) got[i] = reduce_weight_output(q, wsp.data(), p.splits, bias, i);
    const std::string splits = std::to_string(c.gw_splits) + " splits";
    expect_close(("grad_weight (" + splits + (bias ? ", with the bias column)" : ")")).c_str(), c, got, ref_gw);
    if (bias) {
      std::vector<double> gb(q.M);
      for (int64_t m = 0; m < q.M; ++m)
        gb[m] = reduce_weight_output(q, wsp.data(), p.splits, true, int64_t(got.size()) + m);  // past grad_weight's
      expect_close(("grad_bias (the GEMM's row sums, " + splits + ")").c_str(), c, gb, ref_gb);
    }
  }
  if constexpr (!kWeightOnly) {
    // grad_weight, direct (few channels a group): grad_weight_direct's phases for all threads in turn, block by
    // block over runs of pixels that end mid-chunk (a partial sum each), then reduce_grad_weight's sums;
    // the shared arrays are poisoned before each chunk. Again with grad_bias as the column of ones where K + 1
    // columns fit.
    for (bool ones : {false, true}) {
      if (!grad_weight_direct_fits(q) || (ones && !grad_weight_direct_takes_bias(q))) {
        refuse(ones ? "grad_weight (direct, bias column)" : "grad_weight (direct)");
        continue;
      }
      auto run = [&](auto kmax_tag) {
        constexpr int KMAX = decltype(kmax_tag)::value;
        using S = GwdShape<double, KMAX>;
        const int K = int(q.Cg) * q.ntaps, ncol = K + (ones ? 1 : 0);
        std::vector<WindowTap> taps(KMAX);
        for (int k = 0; k < K; ++k) taps[k] = window_tap(q, k);
        // runs ending mid-chunk unless run_extra is 0 (the kernel's are whole)
        const int64_t P = q.N * q.OH * q.OW, run_len = S::P * c.run_chunks + c.run_extra;
        const int runs = int((P + run_len - 1) / run_len);
        std::vector<double> ws(runs * q.M * int64_t(ncol), NAN), got(ref_gw.size()), gys(S::P * S::LG),
            xs(S::P * S::LX);
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
                  gwd_stage<double, double, KMAX>(q, xp, yp, gyp, m0, taps.data(), px.data(), gys.data(), xs.data(),
                                                  tid, ones);
                for (int tid = 0; tid < kGwdThreads; ++tid)
                  gwd_accumulate<double, KMAX>(gys.data(), xs.data(), tid, acc[tid]);
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
                    else if (ps == 0 && acc[tid][i][j] != 0.0) {
                      std::printf("FAIL: a sum outside the problem\n");
                      ++failures;
                    }
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
    // grad_weight_tiled (few channels a group, stride 1, no ReLU gate; once a case)
    if constexpr (std::is_same_v<Tl, NarrowTile>) emulate_grad_weight_tiled(c, q, xp, gyp, ref_gw, ref_gb);
  }
}

// The GEMM's mma.sync product (Tf32SyncMma) for one K step of a tile: each warp's A and B fragments gathered
// lane by lane where MmaSyncLayout says they sit in the staged tiles, each m16n8k8 emulated from its documented
// layout, and its accumulators placed where c_at says; against the plain product of the tiles. Every output
// of the tile must be written once.
template <class Tl>
static void check_mma_sync_layout(std::mt19937& rng) {
  using L = MmaSyncLayout<Tl>;
  std::normal_distribution<double> nd;
  static double As[kBK][Tl::BM], Bs[kBK][Tl::BN], C[Tl::BM][Tl::BN];
  static int written[Tl::BM][Tl::BN];
  for (auto& r : As) for (auto& v : r) v = nd(rng);
  for (auto& r : Bs) for (auto& v : r) v = nd(rng);
  for (auto& r : C) for (auto& v : r) v = 0;
  for (auto& r : written) for (auto& v : r) v = 0;
  double acc[8][32][2][L::kNJ][4] = {};
  for (int warp = 0; warp < 8; ++warp)
    for (int kk = 0; kk < kBK; kk += 8) {
      double A[2][16][8], B[L::kNJ][8][8];
      for (int lane = 0; lane < 32; ++lane) {  // register r of a lane is element (gq + 8 (r%2), tig + 4 (r/2)) of A
        const int gq = lane / 4, tig = lane % 4;
        for (int i = 0; i < 2; ++i)
          for (int r = 0; r < 4; ++r) {
            int k, row;
            L::a_at(warp, lane, i, kk, r, k, row);
            A[i][gq + 8 * (r % 2)][tig + 4 * (r / 2)] = As[k][row];
          }
        for (int j = 0; j < L::kNJ; ++j)
          for (int r = 0; r < 2; ++r) {
            int k, col;
            L::b_at(warp, lane, j, kk, r, k, col);
            B[j][tig + 4 * r][gq] = Bs[k][col];
          }
      }
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < L::kNJ; ++j)
            for (int r = 0; r < 4; ++r) acc[warp][lane][i][j][r] += mma_m16n8k8_d(A[i], B[j], lane, r);
    }
  for (int warp = 0; warp < 8; ++warp)
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < L::kNJ; ++j)
          for (int r = 0; r < 4; ++r) {
            int row, col;
            L::c_at(warp, lane, i, j, r, row, col);
            C[row][col] = acc[warp][lane][i][j][r];
            ++written[row][col];
          }
  double worst = 0;
  int miswritten = 0;
  for (int m = 0; m < Tl::BM; ++m)
    for (int n = 0; n < Tl::BN; ++n) {
      double ref = 0;
      for (int k = 0; k < kBK; ++k) ref += As[k][m] * Bs[k][n];
      worst = std::max(worst, std::fabs(C[m][n] - ref));
      miswritten += written[m][n] != 1;
    }
  const bool ok = worst < 1e-12 && miswritten == 0;
  std::printf("%s mma.sync layout, %d x %d tile: max err %.1e, %d outputs not written once\n", ok ? "ok  " : "FAIL",
              Tl::BM, Tl::BN, worst, miswritten);
  ++checks;
  if (!ok) ++failures;
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

// Fuzz mode's cases: sizes, options and layouts drawn widely, kept to geometries with an output and to work the
// naive loops and the emulated tiles (which compute whole tiles) do in a few milliseconds.
constexpr int64_t kFuzzWork = 20000000;  // a bound on a case's padded GEMM product
static Case draw_case(std::mt19937& rng) {
  Uniform pick{rng};
  for (;;) {
    Case c{};
    c.N = pick(1, 4); c.G = pick(1, 3);
    // channels a group: few (the direct and taps paths), whole K steps (the tap-major loaders), or any
    const int cw = pick(0, 9), mw = pick(0, 9);
    const int64_t Cg = cw < 4 ? pick(1, 4) : cw < 6 ? 16 * pick(1, 2) : pick(1, 40);
    const int64_t Mg = mw < 3 ? 16 * pick(1, 5) : mw < 5 ? pick(1, 4) : pick(1, 80);
    c.C = Cg * c.G; c.M = Mg * c.G;
    c.H = pick(1, 20); c.W = pick(1, 20); c.KH = pick(1, 5); c.KW = pick(1, 5);
    c.sh = pick(1, 3); c.sw = pick(1, 3); c.ph = pick(0, 3); c.pw = pick(0, 3); c.dh = pick(1, 3); c.dw = pick(1, 3);
    // all taps, PixelCNN's mask B or A (odd kernels; A of a 1x1 kernel is empty: drawn again), or any prefix
    const int kk = c.KH * c.KW, tw = pick(0, 3), odd = c.KH % 2 && c.KW % 2;
    c.ntaps = tw == 0 ? kk : tw == 3 || !odd ? pick(1, kk) : c.KH / 2 * c.KW + c.KW / 2 + (tw == 1);
    c.relu = pick(0, 1); c.nobias = pick(0, 3) == 0;
    if (Cg <= 4 && pick(0, 2) == 0) {  // a third of the few-channel cases in the tiled kernels' reach
      c.sh = c.sw = c.dw = 1; c.KW = 2 * pick(1, 3) + 1; c.relu = false; c.W = pick(1, 75);
      c.ntaps = tw == 0 ? c.KH * c.KW : pick(1, c.KH * c.KW);
    }
    // half the cases contiguous, the others in any layout (broadcast for grad_y alone, as torch expands it)
    if (pick(0, 1)) c.lx = pick(0, 2), c.lw = pick(0, 2), c.lg = pick(0, 3), c.ly = pick(0, 2);
    c.gw_splits = pick(1, 8); c.run_chunks = pick(1, 3); c.run_extra = pick(0, 1) ? 0 : pick(1, 40);
    const Geometry q = case_geometry(c);
    if (c.ntaps < 1 || q.OH < 1 || q.OW < 1) continue;
    const int64_t pixels = std::max(q.N * q.OH * q.OW, q.N * q.H * q.W);
    if (q.G * (Mg + 63) * (Cg * c.ntaps + 63) * (pixels + 127) > kFuzzWork) continue;
    return c;
  }
}

static void run_tiles(const Case& c, std::mt19937& rng) {
  where = "64 x 64 tiles, " + where;
  run_case<NarrowTile>(c, rng);
  where.replace(0, 7, "64 x 128");
  run_case<WideTile>(c, rng);
  where.replace(0, 8, "32 x 128");
  run_case<ShortTile>(c, rng);
  where.replace(0, 8, "64 x 96 ");
  run_case<WeightTile>(c, rng);  // grad_weight's GEMM alone
}

int main(int argc, char** argv) {
  // prog fuzz <count> <seed>: count drawn cases, each through every check with every tile; FAIL lines only.
  long count;
  unsigned seed;
  if (fuzz_args(argc, argv, count, seed)) {
    std::mt19937 rng(seed);
    quiet = true;
    for (long i = 0; i < count; ++i) {
      const Case c = draw_case(rng);
      where = "case " + std::to_string(i) + " of seed " + std::to_string(seed);
      run_tiles(c, rng);
    }
    std::printf("fuzz seed %u: %ld cases, %d checks, %d failed; checks a path refused:", seed, count, checks,
                failures);
    for (const auto& [path, n] : refused) std::printf(" %s %d;", path.c_str(), n);
    std::printf("\n%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
  }
  // prog case <the 24 fields of a Case, as a fuzz FAIL line gives them, braces and commas and all>: that case
  // alone, FAIL lines only
  if (argc == 26 && std::string(argv[1]) == "case") {
    int64_t v[24];
    for (int i = 0; i < 24; ++i) {
      const char* a = argv[i + 2] + (argv[i + 2][0] == '{');
      v[i] = a[0] == 't' ? 1 : std::atoll(a);  // true, false or a number
    }
    const Case c{v[0], v[1], v[2], v[3], v[4], int(v[5]), int(v[6]), int(v[7]), int(v[8]), int(v[9]), int(v[10]),
                 int(v[11]), int(v[12]), int(v[13]), v[14], v[15] != 0, v[16] != 0, int(v[17]), int(v[18]),
                 int(v[19]), int(v[20]), int(v[21]), int(v[22]), int(v[23])};
    std::mt19937 rng(1);
    quiet = true;
    run_tiles(c, rng);
    std::printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
  }
  std::mt19937 rng(1234);
  check_fast_div(rng);
  check_mma_sync_layout<NarrowTile>(rng);
  check_mma_sync_layout<WideTile>(rng);
  check_mma_sync_layout<ShortTile>(rng);
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
      // the tiled kernels: tiles across and down images (edges inside a tile), chunks past the channels, a
      // mask's short last row, dilated rows, each kernel width and CG, uneven padding
      {2, 1, 30, 70, 37, 7, 7, 24, 1, 1, 3, 3, 1, 1, 1, false},   // mask A, 3 tiles a row, 37 channels
      {1, 6, 17, 33, 33, 5, 5, 12, 1, 1, 2, 1, 2, 1, 3, false},   // 2 channels a group, mask A 5x5, dilation 2x1
      {2, 9, 12, 40, 21, 3, 3, 4, 1, 1, 0, 2, 1, 1, 3, false},    // 3 channels a group (CG 4), mask A 3x3
      {1, 4, 9, 5, 16, 3, 7, 21, 1, 1, 1, 3, 3, 1, 1, false},     // 4 channels, a 3x7 kernel, dilation 3 down
      {2, 3, 11, 35, 40, 7, 7, 25, 1, 1, 3, 3, 1, 1, 1, false},   // 3 channels (CG 4), mask B 7x7: 2 row groups
      {1, 2, 9, 34, 8, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false},      // 2 channels, mask B 3x3
  };
  for (const Case& c : cases) {
    std::printf("-- 64 x 64 tiles\n");
    run_case<NarrowTile>(c, rng);
    std::printf("-- 64 x 128 tiles\n");
    run_case<WideTile>(c, rng);
    std::printf("-- 32 x 128 tiles\n");
    run_case<ShortTile>(c, rng);
    std::printf("-- 64 x 96 tiles (grad_weight's GEMM alone)\n");
    run_case<WeightTile>(c, rng);
  }
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
