// The pointwise weight gradient (csrc/cuda/conv2d_pointwise_grad_weight.cuh) run on the host, both products:
// the same setup, splits, step staging and stores as pointwise_grad_weight_kernel; for PwTf32 the fragment
// addresses, each mma.sync.m16n8k8 emulated from its documented fragment layout, against a naive sum of the
// TF32-rounded operands in float64; for PwSimt its per-thread product itself, against the naive sum of the
// float32 operands; with bias, grad_bias's column (each column tile's share of the rows' sums over its split,
// pointwise_gw_bias_part, a row's threads added) against the plain sum of grad_y. Ragged rows, channels and pixel steps, steps
// across images, groups, planes with room between them, many splits; and the layers it must leave to the other
// kernels.
// Built and run by tests/test_conv2d_cuda_host.py; it needs only a C++17 compiler, no GPU.
//   c++ -std=c++17 -O1 -I tests/cuda_host -I csrc tests/cuda_host/conv2d_pointwise_grad_weight_emulation.cpp && ./a.out
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "cuda/cuda_utils.cuh"  // first: the host stand-in beside this file defines the CUDA keywords
#include "cuda/conv2d_pointwise_grad_weight.cuh"
#include "conv_case.h"
#include "mma_m16n8k8.h"

using namespace pixelops::cuda::conv;

static int failures = 0;
static bool verbose = true;  // a line for every run (the fuzz mode prints only its failures)

// Whether the 4 floats at s lie within one plane of the data at base (strides st: images, channels), one of
// `channels` channels of an image of q.
static bool inside(const float* s, const float* base, const int64_t* st, int64_t channels, const Geometry& q) {
  if (s < base) return false;
  const int64_t off = s - base, img = off / st[0], ch = off % st[0] / st[1], px = off % st[0] % st[1];
  return img < q.N && ch < channels && px + 4 <= q.OH * q.OW;
}

// As pointwise_grad_weight_kernel, block by block, writing p.ws. Each step's stage starts as NaN, so that a read
// of anything the staging did not write shows up in the result.
static void emulate(const PointwiseGw& p, bool simt) {
  const Geometry& q = p.q;
  std::vector<float> st(size_t(PointwiseGw::stage_floats()));
  auto copy16 = [&](float* d, const float* s, int n) {
    if ((reinterpret_cast<uintptr_t>(d) & 15) != 0 || (n > 0 && (reinterpret_cast<uintptr_t>(s) & 15) != 0)) {
      std::printf("FAIL: misaligned 16-byte copy\n");
      ++failures;
    }
    if (d < st.data() || d + 4 > st.data() + st.size()) {
      std::printf("FAIL: a copy outside the stage\n");
      ++failures;
      return;
    }
    if (n > 0 && !inside(s, p.gy, q.gs, q.M, q) && !inside(s, p.x, q.xs, q.C, q)) {
      std::printf("FAIL: a copy from outside the operands' planes\n");
      ++failures;
      return;
    }
    for (int i = 0; i < 4; ++i) d[i] = i < n ? s[i] : 0.f;
  };
  static double acc[256][2][4][4];
  static float simt_acc[256][4][8];
  for (int64_t split = 0; split < p.splits; ++split)
    for (int g = 0; g < q.G; ++g)
      for (int mt = 0; mt < p.mtiles; ++mt)
        for (int nt = 0; nt < p.ntiles; ++nt) {
          const int64_t kbeg = split * p.k_per_split, kend = std::min(p.K, kbeg + p.k_per_split);
          if (kbeg >= kend) {
            std::printf("FAIL: split %lld is empty\n", (long long)split);
            ++failures;
          }
          for (auto& t : acc) for (auto& a : t) for (auto& b : a) for (auto& c : b) c = 0;
          for (auto& t : simt_acc) for (auto& a : t) for (auto& b : a) b = 0.f;
          for (int64_t k0 = kbeg; k0 < kend; k0 += kPwBK) {
            std::fill(st.begin(), st.end(), std::numeric_limits<float>::quiet_NaN());
            for (int tid = 0; tid < 256; ++tid) pointwise_gw_load(p, g, mt, nt, k0, kend, st.data(), tid, copy16);
            if (simt) {
              for (int tid = 0; tid < 256; ++tid) pointwise_gw_simt_step(st.data(), tid, simt_acc[tid]);
              continue;
            }
            for (int warp = 0; warp < 8; ++warp) {
              const int wm = warp % 2, wn = warp / 2;
              for (int kk = 0; kk < kPwBK / 8; ++kk) {
                double A[2][16][8], B[4][8][8];  // the warp's fragments, gathered lane by lane
                for (int lane = 0; lane < 32; ++lane) {
                  const int gq = lane / 4, tig = lane % 4;
                  for (int i = 0; i < 2; ++i)
                    for (int r = 0; r < 4; ++r)
                      A[i][gq + 8 * (r % 2)][tig + 4 * (r / 2)] = tf32_round(st[size_t(pointwise_gw_a(wm, i, lane, kk, r))]);
                  for (int j = 0; j < 4; ++j)
                    for (int r = 0; r < 2; ++r) B[j][tig + 4 * r][gq] = tf32_round(st[size_t(pointwise_gw_b(wn, j, lane, kk, r))]);
                }
                for (int lane = 0; lane < 32; ++lane) {
                  for (int i = 0; i < 2; ++i)
                    for (int j = 0; j < 4; ++j)
                      for (int r = 0; r < 4; ++r) acc[warp * 32 + lane][i][j][r] += mma_m16n8k8_d(A[i], B[j], lane, r);
                }
              }
            }
          }
          const RowSumPlan bias = p.bias_plan(nt);  // grad_bias's share, after the product
          emulate_row_sums(
              bias, 256, [&](int tid) { return pointwise_gw_bias_part(p, bias, split, g, mt, tid); },
              [&](int row, float v) { pointwise_gw_store_bias(p, split, g, mt, row, v); });
          if (simt) {
            for (int tid = 0; tid < 256; ++tid) pointwise_gw_simt_store(p, simt_acc[tid], split, g, mt, nt, tid);
            continue;
          }
          for (int tid = 0; tid < 256; ++tid) {
            float out[2][4][4];
            for (int i = 0; i < 2; ++i)
              for (int j = 0; j < 4; ++j)
                for (int r = 0; r < 4; ++r) out[i][j][r] = float(acc[tid][i][j][r]);
            pointwise_gw_store(p, out, split, g, mt, nt, tid / 32, tid % 32);
          }
        }
}

struct Case {
  int64_t N, C, H, W, M;
  int G;
  int64_t x_pad, gy_pad;  // floats between planes (multiples of 4: room between them, still 16-byte pieces)
  int64_t want;           // splits asked of pointwise_gw_split
  int KH = 1, KW = 1, ntaps = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
};

// q with x and grad_y planes x_pad and gy_pad floats apart beyond their length.
static Geometry strided(const Case& c) {
  Geometry q = case_geometry(c);
  const int64_t xplane = q.H * q.W + c.x_pad, gplane = q.OH * q.OW + c.gy_pad;
  const int64_t xs[4] = {q.C * xplane, xplane, q.W, 1}, gs[4] = {q.M * gplane, gplane, q.OW, 1};
  for (int i = 0; i < 4; ++i) { q.xs[i] = xs[i]; q.gs[i] = gs[i]; }
  set_divisors(q);
  return q;
}

// skipped: where given, a layer pointwise_gw_setup refuses is counted there instead of failing (the fuzz mode).
static void run_case(const Case& c, std::mt19937& rng, bool simt, bool bias = true, int* skipped = nullptr) {
  const Geometry q = strided(c);
  std::normal_distribution<float> nd;
  // 16-byte aligned buffers (as torch's allocations are)
  std::vector<float> xbuf(size_t(q.N * q.xs[0] + 4)), gbuf(size_t(q.N * q.gs[0] + 4));
  for (auto& v : xbuf) v = nd(rng);
  for (auto& v : gbuf) v = nd(rng);
  auto aligned = [](std::vector<float>& b) {
    float* p = b.data();
    while (reinterpret_cast<uintptr_t>(p) & 15) ++p;
    return p;
  };
  const float* x = aligned(xbuf);
  const float* gy = aligned(gbuf);
  PointwiseGw p;
  if (!pointwise_gw_setup(p, q, x, gy)) {
    if (skipped) { ++*skipped; return; }
    std::printf("FAIL: case not taken\n");
    ++failures;
    return;
  }
  pointwise_gw_split(p, c.want);
  p.bias = bias;
  std::vector<float> ws(size_t(p.splits * q.M * p.ncol()), std::numeric_limits<float>::quiet_NaN());
  p.ws = ws.data();
  emulate(p, simt);
  const int64_t opix = q.OH * q.OW;
  double worst = 0, scale = 0;
  int64_t bad = 0;
  // float32 sums (PwSimt's of up to a split's pixels one after another); a wrong or missing term is ~mag/terms
  auto check = [&](double got, double ref, double mag, double tol) {
    const double err = std::fabs(got - ref);
    scale = std::max(scale, std::fabs(ref));
    if (!(err <= tol * (1 + mag))) ++bad;
    if (!std::isnan(worst) && !(err <= worst)) worst = err;  // a NaN stays
  };
  for (int64_t m = 0; m < q.M; ++m)
    for (int64_t ch = 0; ch < q.Cg; ++ch) {
      const int64_t g = m / q.Mg;
      double ref = 0, mag = 0;
      for (int64_t n = 0; n < q.N; ++n)
        for (int64_t px = 0; px < opix; ++px) {
          const float a = gy[n * q.gs[0] + m * q.gs[1] + px], b = x[n * q.xs[0] + (g * q.Cg + ch) * q.xs[1] + px];
          const double term = simt ? double(a) * double(b) : double(tf32_round(a)) * double(tf32_round(b));
          ref += term;
          mag += std::fabs(term);
        }
      // reduce_grad_weight's sum
      check(reduce_weight_output(q, ws.data(), int(p.splits), bias, m * q.Cg + ch), ref, mag, simt ? 2e-5 : 1e-6);
    }
  for (int64_t m = 0; m < q.M && bias; ++m) {  // grad_bias: the column past the weights'
    double ref = 0, mag = 0;
    for (int64_t n = 0; n < q.N; ++n)
      for (int64_t px = 0; px < opix; ++px) {
        ref += gy[n * q.gs[0] + m * q.gs[1] + px];
        mag += std::fabs(gy[n * q.gs[0] + m * q.gs[1] + px]);
      }
    check(reduce_weight_output(q, ws.data(), int(p.splits), true, q.M * q.Cg + m), ref, mag, 2e-5);
  }
  if (verbose || bad)
    std::printf("%s%s pointwise grad_weight N%lld C%lld %lldx%lld M%lld G%d pads %lld,%lld: %d x %d tiles, %d splits of "
                "%lld pixels (K %lld): %s (worst %.3g of %.3g)\n", simt ? "simt" : "tf32", bias ? " +bias" : "", (long long)c.N, (long long)c.C,
                (long long)c.H, (long long)c.W, (long long)c.M, c.G, (long long)c.x_pad, (long long)c.gy_pad, p.mtiles,
                p.ntiles, p.splits, (long long)p.k_per_split, (long long)p.K, bad ? "FAIL" : "ok", worst, scale);
  if (bad) ++failures;
}

// `prog fuzz <count> <seed>`: count random pointwise layers from std::mt19937(seed), each through both products
// at a random split count: groups, ragged rows, channels and steps, planes whose size is a multiple of 4 or not,
// planes apart by a multiple of 4 floats or not. Layers pointwise_gw_setup refuses (planes not whole 16-byte
// pieces) are counted, not failed.
static int fuzz(long count, unsigned seed) {
  constexpr int64_t kMaxBlockSteps = 300;  // the emulation's work a run (block x step, ~0.5 ms each at -O1)
  std::mt19937 rng(seed);
  Uniform uni{rng};
  int skipped = 0;
  verbose = false;
  Case c{};
  auto run = [&](long) {
    for (;;) {  // until a layer within the work bound
      c.N = uni(1, 4); c.G = uni(1, 3); c.C = c.G * uni(1, 300); c.M = c.G * uni(1, 300);
      const bool whole = uni(0, 1);  // half with planes of whole 16-byte pieces (the rest mostly refused)
      do { c.H = uni(1, 40); c.W = uni(1, 40); } while (whole && c.H * c.W % 4 != 0);
      c.x_pad = uni(0, 3) ? 4 * uni(0, 2) : uni(1, 3);
      c.gy_pad = uni(0, 3) ? 4 * uni(0, 2) : uni(1, 3);
      const int64_t steps = (c.N * c.H * c.W + kPwBK - 1) / kPwBK;
      if (steps * c.G * ((c.M / c.G + kPwBM - 1) / kPwBM) * ((c.C / c.G + kPwBN - 1) / kPwBN) > kMaxBlockSteps)
        continue;
      c.want = uni(0, 1) ? uni(1, 4) : uni(1, int(steps) + 1);
      break;
    }
    for (const bool simt : {false, true}) run_case(c, rng, simt, uni(0, 1) == 1, &skipped);
  };
  auto report = [&](long i) {
    std::printf("FAIL case %ld: {%lld, %lld, %lld, %lld, %lld, %d, %lld, %lld, %lld}\n", i, (long long)c.N,
                (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.M, c.G, (long long)c.x_pad,
                (long long)c.gy_pad, (long long)c.want);
  };
  return fuzz_cases(count, seed, 2, failures, skipped, run, report);
}

int main(int argc, char** argv) {
  long count;
  unsigned seed;
  if (fuzz_args(argc, argv, count, seed)) return fuzz(count, seed);
  std::mt19937 rng(5);
  // N, C, H, W, M, G, x_pad, gy_pad, want
  const Case cases[] = {
      {3, 37, 4, 5, 70, 1, 0, 0, 3},     // ragged rows (2 row tiles) and channels; 60 pixels: a short last step
      {2, 260, 8, 8, 24, 1, 4, 0, 2},    // 3 channel tiles, x planes 4 floats apart
      {4, 24, 6, 6, 16, 2, 0, 8, 5},     // groups; 36-pixel images: steps across images; grad_y planes apart
      {1, 8, 40, 40, 8, 1, 0, 0, 7},     // 50 steps over 7 splits (8 a split at the least)
      {5, 132, 2, 2, 130, 2, 4, 4, 100}, // tiny images, many a step; more splits asked than steps allow
      {6, 20, 6, 10, 40, 1, 0, 4, 4},    // 12 steps in 2 splits: the second starts inside an image
  };
  for (const bool simt : {false, true})
    for (const Case& c : cases) run_case(c, rng, simt, !simt || c.G == 1);  // (without bias: PwSimt, groups)
  // layers it leaves to the other kernels: 3x3; stride 2; planes not whole 16-byte pieces; x misaligned
  alignas(16) static float dummy[64];
  Case c3 = {2, 8, 6, 6, 8, 1, 0, 0, 1};
  c3.KH = c3.KW = 3; c3.ntaps = 9; c3.ph = c3.pw = 1;
  Case s2 = {2, 8, 6, 6, 8, 1, 0, 0, 1};
  s2.sh = s2.sw = 2;
  const Case odd = {2, 8, 5, 5, 8, 1, 0, 0, 1};
  PointwiseGw p;
  for (const Case& c : {c3, s2, odd})
    if (pointwise_gw_setup(p, strided(c), dummy, dummy)) {
      std::printf("FAIL: k%dx%d stride %d, %lldx%lld images taken\n", c.KH, c.KW, c.sh, (long long)c.H, (long long)c.W);
      ++failures;
    }
  if (pointwise_gw_setup(p, strided(cases[0]), dummy + 1, dummy)) {
    std::printf("FAIL: misaligned x taken\n");
    ++failures;
  }
  if (failures) { std::printf("%d failed\n", failures); return 1; }
  std::printf("all passed\n");
  return 0;
}
