// The halo weight gradient (csrc/cuda/conv2d_halo_grad_weight.cuh) run on the host, both products: the same
// setup, tile staging and final reduction as halo_grad_weight_kernel; for GwTf32 each lane's operands read by
// the kernel's own code (gw_tf32_operands: every value must come out a TF32 value), each mma.sync.m16n8k8
// emulated from its documented fragment layout, against a naive sum of the TF32-rounded operands in float64;
// for GwSimt its per-thread product itself (gw_simt_tile) and the butterfly of shuffles, against the naive sum
// of the float32 operands; GwTf32 with the halo rounded once a tile too. With bias, grad_bias's column: each
// block's share of the rows' sums over its split (bias_plan, halo_gw_bias_part), a row's threads added, against
// the plain sum of grad_y.
// Strides, dilation, groups, masks (tap groups), tiles that run across images, ragged rows and channels,
// grad_y rows copied whole or element by element, x as a view.
// Built and run by tests/test_conv2d_cuda_host.py; it needs only a C++17 compiler, no GPU.
//   c++ -std=c++17 -O1 -I tests/cuda_host -I csrc tests/cuda_host/conv2d_halo_grad_weight_emulation.cpp && ./a.out
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cuda/cuda_utils.cuh"  // first: the host stand-in beside this file defines the CUDA keywords
#include "cuda/conv2d_halo_grad_weight.cuh"
#include "conv_case.h"
#include "mma_m16n8k8.h"
#include "halo_tf32_operand.h"

using namespace pixelops::cuda::conv;

static int failures = 0;
static bool verbose = true;  // a line for every run (the fuzz mode prints only its failures)

// A TF32 operand as gw_tf32_operands hands it over: a TF32 value already (rounded there, or by
// gw_round_tile where preround).
static float tf32_value(float v) { return tf32_checked(v, failures); }

// GwSimt's part of a block: warp by warp, lane by lane, as the kernel runs them (acc: [warp][lane]).
static float simt_acc[kHaloThreads / 32][32][kGwSimtRows][kGwMaxNt];

// As halo_grad_weight_kernel, block by block, writing p.ws. The stages start as NaN (but for the halo, which
// the kernel zeroes once) so that a read of anything the staging did not write shows up in the result; the
// reduction buffer is poisoned before the warps write it.
static void emulate(const HaloGradWeight& p) {
  const HaloConv& h = p.h;
  const Geometry& q = h.q;
  const int stage = p.stage_floats();
  std::vector<float> smem(p.smem_bytes() / sizeof(float));
  auto copy16 = [](float* d, const float* s, int n) {
    if ((reinterpret_cast<uintptr_t>(d) & 15) != 0 || (n > 0 && (reinterpret_cast<uintptr_t>(s) & 15) != 0)) {
      std::printf("FAIL: misaligned 16-byte copy\n");
      ++failures;
    }
    for (int i = 0; i < 4; ++i) d[i] = i < n ? s[i] : 0.f;
  };
  auto copy4 = [](float* d, const float* s, bool valid) { *d = valid ? *s : 0.f; };
  for (int64_t split = 0; split < p.splits; ++split)
    for (int mt = 0; mt < h.mtiles; ++mt)
      for (int64_t zc = 0; zc < q.G * h.nchunks * p.tgroups; ++zc) {
        const int tg = int(zc % p.tgroups), cc = int((zc / p.tgroups) % h.nchunks);
        const int g = int(zc / (p.tgroups * h.nchunks));
        const int j0 = tg * p.nt, nt = std::min(p.nt, h.ntaps - j0);
        const int64_t t0 = split * p.tiles_per_split, t1 = std::min(p.tiles, t0 + p.tiles_per_split);
        std::fill(smem.begin(), smem.end(), std::numeric_limits<float>::quiet_NaN());
        for (int st = 0; st < 2; ++st)
          for (int i = 0; i < h.kc * h.CS; ++i) smem[size_t(st) * stage + kGwRows * kGwLd + i] = 0.f;
        static double acc[kHaloThreads][2][kGwMaxNt][4];
        for (auto& t : acc) for (auto& a : t) for (auto& b : a) for (auto& c : b) c = 0;
        for (auto& w : simt_acc) for (auto& l : w) for (auto& r : l) for (auto& v : r) v = 0.f;
        int cur = 0;
        for (int64_t t = t0; t < t1; ++t) {
          float* st = smem.data() + size_t(cur) * stage;
          // what the previous tile in this stage left must not be read: poison all but the halo's columns
          std::fill(st, st + kGwRows * kGwLd, std::numeric_limits<float>::quiet_NaN());
          std::fill(st + kGwRows * kGwLd + h.kc * h.CS, st + stage, std::numeric_limits<float>::quiet_NaN());
          for (int tid = 0; tid < kHaloThreads; ++tid) halo_gw_load_tile(p, g, mt, cc, t, st, tid, copy16, copy4);
          if (p.h.preround)
            for (int tid = 0; tid < kHaloThreads; ++tid) gw_round_tile(p, st, tid);
          {  // both products read channel ch's halo at ch * CS + corner + tap shift: within the channel's CS floats
            const int* cn = reinterpret_cast<const int*>(st + kGwRows * kGwLd + h.kc * h.CS);
            int outside = 0;
            for (int k = 0; k < kGwPix; ++k)
              for (int tt = 0; tt < nt; ++tt) outside += cn[k] < 0 || cn[k] + h.tap_off[j0 + tt] >= h.CS;
            if (outside) {
              std::printf("FAIL: %d reads of a tile outside its channels' halos (CS %d)\n", outside, h.CS);
              ++failures;
            }
          }
          if (p.simt) {
            for (int warp = 0; warp < kHaloThreads / 32; ++warp)
              if (gw_simt_rows(p, mt, warp))
                for (int lane = 0; lane < 32; ++lane) gw_simt_tile(p, st, warp, lane, j0, nt, simt_acc[warp][lane]);
            cur = 1 - cur;
            continue;
          }
          int offb[kGwMaxNt];
          gw_tap_bytes(h, j0, nt, offb);
          for (int warp = 0; warp < kHaloThreads / 32; ++warp) {
            const int wm = warp % 2, wk = warp / 2;
            for (int kb = wk; kb < kGwPix / 8; kb += 4) {
              double A[2][16][8], B[kGwMaxNt][8][8];
              for (int lane = 0; lane < 32; ++lane) {  // each lane's operands, read by the kernel's own code
                const int gq = lane / 4, tig = lane % 4;
                float a[2][4], b[kGwMaxNt][2];
                gw_with_taps(nt, [&](auto known) {  // the variant the kernel picks
                  constexpr int kNt = decltype(known)::value;
                  if (h.preround) gw_tf32_operands<true, kNt>(p, st, wm, lane, kb, nt, offb, a, b);
                  else gw_tf32_operands<false, kNt>(p, st, wm, lane, kb, nt, offb, a, b);
                });
                for (int i = 0; i < 2; ++i) {  // mma.m16n8k8's A registers: (gq, tig), (gq + 8, tig), then k + 4
                  A[i][gq][tig] = tf32_value(a[i][0]);
                  A[i][gq + 8][tig] = tf32_value(a[i][1]);
                  A[i][gq][tig + 4] = tf32_value(a[i][2]);
                  A[i][gq + 8][tig + 4] = tf32_value(a[i][3]);
                }
                for (int tt = 0; tt < nt; ++tt) {  // B registers: (k tig, column gq), (k tig + 4, column gq)
                  B[tt][tig][gq] = tf32_value(b[tt][0]);
                  B[tt][tig + 4][gq] = tf32_value(b[tt][1]);
                }
              }
              for (int lane = 0; lane < 32; ++lane) {
                for (int i = 0; i < 2; ++i)
                  for (int tt = 0; tt < nt; ++tt)
                    for (int r = 0; r < 4; ++r) acc[warp * 32 + lane][i][tt][r] += mma_m16n8k8_d(A[i], B[tt], lane, r);
              }
            }
          }
          cur = 1 - cur;
        }
        const RowSumPlan bias = p.bias_plan(cc, tg);  // grad_bias's share, after the product
        emulate_row_sums(
            bias, kHaloThreads, [&](int tid) { return halo_gw_bias_part(p, bias, split, g, mt, tid); },
            [&](int row, float v) { halo_gw_store_bias(p, split, g, mt, row, v); });
        if (p.simt) {  // the butterfly: lane l adds lane l^8's sum, then lane l^16's (both already updated)
          for (int warp = 0; warp < kHaloThreads / 32; ++warp) {
            if (!gw_simt_rows(p, mt, warp)) continue;
            for (int mask : {8, 16}) {
              float next[32][kGwSimtRows][kGwMaxNt];
              for (int lane = 0; lane < 32; ++lane)
                for (int r = 0; r < kGwSimtRows; ++r)
                  for (int tt = 0; tt < kGwMaxNt; ++tt)
                    next[lane][r][tt] = simt_acc[warp][lane][r][tt] + simt_acc[warp][lane ^ mask][r][tt];
              std::memcpy(simt_acc[warp], next, sizeof(next));
            }
            for (int lane = 0; lane < 32; ++lane) gw_simt_store(p, simt_acc[warp][lane], split, g, mt, cc, j0, nt, warp, lane);
          }
          continue;
        }
        std::fill(smem.begin(), smem.end(), std::numeric_limits<float>::quiet_NaN());
        for (int tid = 0; tid < kHaloThreads; ++tid)
          for (int i = 0; i < 2; ++i)
            for (int tt = 0; tt < kGwMaxNt; ++tt)
              for (int r = 0; r < 4; ++r)
                smem[size_t(halo_gw_red(tid / 32, tid % 32, (i * kGwMaxNt + tt) * 4 + r))] = float(acc[tid][i][tt][r]);
        halo_gw_store(p, smem.data(), split, g, mt, cc, j0, nt, 0, 1);
      }
}

struct Case {
  int64_t N, C, H, W, M;
  int KH, KW, ntaps, sh, sw, ph, pw, dh, dw, G;
  int64_t xstep;      // x's column stride (2: every other column of a wider tensor)
  int64_t splits;     // asked of halo_gw_split
  int64_t gy_pad;     // floats between grad_y planes (1: misaligned planes, so element copies)
};

// An H100's shared memory a block (cudaDevAttrMaxSharedMemoryPerBlockOptin): the budget at one block an SM
// (PIXELOPS_CONV_HALO_GW_ONE_BLOCK), where kGwSmem is two blocks'.
constexpr size_t kOneBlockSmem = 227 * 1024;

// skipped: where given, a layer halo_gw_setup refuses is counted there instead of failing (the fuzz mode).
static void run_case(const Case& c, std::mt19937& rng, bool simt, bool preround = false, bool bias = true,
                     int* skipped = nullptr, size_t budget = kGwSmem) {
  Geometry q = case_geometry(c);
  std::normal_distribution<float> nd;
  const int64_t row = c.W * c.xstep;
  std::vector<float> x(size_t(q.N * q.C * q.H * row));
  for (auto& v : x) v = nd(rng);
  const int64_t xs[4] = {q.C * q.H * row, q.H * row, row, c.xstep};
  const int64_t plane = q.OH * q.OW + c.gy_pad;
  std::vector<float> gy(size_t(q.N * q.M * plane + 4));
  for (auto& v : gy) v = nd(rng);
  const int64_t gs[4] = {q.M * plane, plane, q.OW, 1};
  for (int i = 0; i < 4; ++i) { q.xs[i] = xs[i]; q.gs[i] = gs[i]; }
  set_divisors(q);
  HaloGradWeight p;
  if (!halo_gw_setup(p, q, x.data(), gy.data(), budget, simt)) {
    if (skipped) { ++*skipped; return; }
    std::printf("FAIL: case does not fit the halo path\n");
    ++failures;
    return;
  }
  if (simt && (p.h.CS % 32 != 1 || p.h.vec || p.stage_floats() % 2 != 0)) {
    std::printf("FAIL: GwSimt's halo must be CS = 1 mod 32 (conflict-free loads), copied by element, stages of even size\n");
    ++failures;
  }
  halo_gw_split(p, c.splits);
  p.h.preround = preround;
  p.bias = bias;
  std::vector<float> ws(size_t(p.splits * q.M * p.ncol()), std::numeric_limits<float>::quiet_NaN());
  p.ws = ws.data();
  emulate(p);
  double worst = 0, scale = 0;
  int64_t bad = 0;
  auto check = [&](double got, double ref) {
    const double err = std::fabs(got - ref);
    scale = std::max(scale, std::fabs(ref));
    if (!(err <= 1e-4 * (1 + std::fabs(ref)))) ++bad;
    if (!std::isnan(worst) && !(err <= worst)) worst = err;  // a NaN stays
  };
  for (int64_t m = 0; m < q.M; ++m)
    for (int64_t ch = 0; ch < q.Cg; ++ch)
      for (int t = 0; t < q.ntaps; ++t) {
        const int64_t g = m / q.Mg;
        const int kh = t / q.KW, kw = t % q.KW;
        double ref = 0;
        for (int64_t n = 0; n < q.N; ++n)
          for (int64_t oh = 0; oh < q.OH; ++oh)
            for (int64_t ow = 0; ow < q.OW; ++ow) {
              const int64_t ih = oh * q.sh - q.ph + kh * q.dh, iw = ow * q.sw - q.pw + kw * q.dw;
              if (ih < 0 || ih >= q.H || iw < 0 || iw >= q.W) continue;
              const float a = gy[size_t(n * gs[0] + m * gs[1] + oh * gs[2] + ow)];
              const float b = x[size_t(n * xs[0] + (g * q.Cg + ch) * xs[1] + ih * xs[2] + iw * xs[3])];
              ref += simt ? double(a) * double(b) : double(tf32_round(a)) * double(tf32_round(b));
            }
        // reduce_grad_weight's sum (weight i = (m, ch, t): t is a row-major tap index, as in the weights)
        const double got = reduce_weight_output(q, ws.data(), int(p.splits), bias, (m * q.Cg + ch) * q.KH * q.KW + t);
        check(got, ref);
      }
  for (int64_t m = 0; m < q.M && bias; ++m) {  // grad_bias: the column past the weights' (float32 sums)
    double ref = 0;
    for (int64_t n = 0; n < q.N; ++n)
      for (int64_t oh = 0; oh < q.OH; ++oh)
        for (int64_t ow = 0; ow < q.OW; ++ow) ref += gy[size_t(n * gs[0] + m * gs[1] + oh * gs[2] + ow)];
    check(reduce_weight_output(q, ws.data(), int(p.splits), true, q.M * q.Cg * q.KH * q.KW + m), ref);
  }
  if (verbose || bad)
    std::printf("%s%s%s grad_weight N%lld C%lld %lldx%lld M%lld k%dx%d taps%d s%d,%d p%d,%d d%d,%d G%d: rows%d CS%d %s%s "
                "tgroups%d splits%d of %lld tiles: %s (worst %.3g of %.3g)\n", simt ? "simt" : "tf32",
                preround ? " preround" : "", bias ? " +bias" : "",
                (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.M, c.KH, c.KW, c.ntaps,
                c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.G, p.h.rows, p.h.CS, p.h.vec ? "vec" : "elem",
                p.gy_vec ? "+gy16" : "", p.tgroups, p.splits, (long long)p.tiles, bad ? "FAIL" : "ok", worst, scale);
  if (bad) ++failures;
}

// `prog fuzz <count> <seed>`: count random layers from std::mt19937(seed), each through every product (TF32,
// SIMT, TF32 preround) at a random split count: groups, masks (a PixelCNN prefix for odd kernels) or any tap
// prefix, strides, padding, dilation, x every 1-3 columns, grad_y planes apart. Layers halo_gw_setup refuses
// (too few channels or taps, a halo beyond the budget) are counted, not failed.
static int fuzz(long count, unsigned seed) {
  constexpr int64_t kMaxBlockTiles = 240;  // the emulation's work a run (block x tile, ~1 ms each at -O1)
  std::mt19937 rng(seed);
  Uniform uni{rng};
  int skipped = 0;
  verbose = false;
  Case c{};
  auto run = [&](long) {
    for (;;) {  // until a layer with an output and within the work bound
      c.N = uni(1, 4); c.G = uni(1, 3); c.C = c.G * uni(1, 48); c.M = c.G * uni(1, 80);
      c.H = uni(1, 24); c.W = uni(1, 24); c.KH = uni(1, 5); c.KW = uni(1, 5);
      const int all = c.KH * c.KW, mask_b = (c.KH / 2) * c.KW + c.KW / 2 + 1, pick = uni(0, 2);
      c.ntaps = pick == 0 ? all : pick == 1 && c.KH % 2 && c.KW % 2 ? mask_b - uni(0, 1) : uni(1, all);
      c.sh = uni(1, 3); c.sw = uni(1, 3); c.ph = uni(0, 3); c.pw = uni(0, 3); c.dh = uni(1, 3); c.dw = uni(1, 3);
      c.xstep = uni(1, 3); c.gy_pad = uni(0, 1) ? 0 : uni(1, 4);
      const Geometry q = case_geometry(c);
      if (c.ntaps < 1 || q.OH < 1 || q.OW < 1) continue;
      const int64_t tiles = (q.N * q.OH * q.OW + kGwPix - 1) / kGwPix;
      if (tiles * q.G * ((q.Mg + kGwRows - 1) / kGwRows) * ((q.Cg + 7) / 8) * ((c.ntaps + kGwMaxNt - 1) / kGwMaxNt) >
          kMaxBlockTiles)
        continue;
      c.splits = uni(1, int(tiles) + 2);  // past the tiles too (halo_gw_split clamps)
      break;
    }
    const size_t budget = uni(0, 2) == 0 ? kOneBlockSmem : kGwSmem;  // a third at one block an SM
    for (int v = 0; v < 3; ++v) run_case(c, rng, v == 1, v == 2, uni(0, 1) == 1, &skipped, budget);
  };
  auto report = [&](long i) {
    std::printf("FAIL case %ld: {%lld, %lld, %lld, %lld, %lld, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %lld, %lld, "
                "%lld}\n", i, (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.M, c.KH,
                c.KW, c.ntaps, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.G, (long long)c.xstep, (long long)c.splits,
                (long long)c.gy_pad);
  };
  return fuzz_cases(count, seed, 3, failures, skipped, run, report);
}

int main(int argc, char** argv) {
  long count;
  unsigned seed;
  if (fuzz_args(argc, argv, count, seed)) return fuzz(count, seed);
  std::mt19937 rng(11);
  // N, C, H, W, M, KH, KW, ntaps, sh, sw, ph, pw, dh, dw, G, xstep, splits, gy_pad
  const Case cases[] = {
      {3, 16, 9, 12, 70, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, 1, 3, 0},   // ragged rows (2 m tiles), tiles across images
      {2, 12, 8, 8, 20, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, 1, 2, 0},    // mask B, ragged channel chunk
      {2, 10, 13, 20, 9, 3, 3, 9, 1, 2, 1, 2, 1, 2, 1, 1, 1, 0},   // column stride and dilation, odd planes
      {2, 8, 11, 9, 16, 7, 7, 24, 1, 1, 3, 3, 1, 1, 1, 1, 2, 0},   // mask A 7x7: three tap groups of 8
      {2, 16, 8, 12, 24, 5, 5, 25, 1, 1, 2, 2, 1, 1, 1, 2, 2, 0},  // 25 taps, x every other column
      {2, 36, 6, 8, 8, 1, 2, 2, 1, 1, 0, 0, 1, 1, 2, 1, 1, 0},     // 1x2, groups
      {2, 16, 8, 8, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1},    // grad_y planes misaligned: element copies
      {5, 8, 3, 4, 8, 3, 3, 4, 1, 1, 1, 1, 1, 1, 1, 3, 1, 0},      // tiny images, many a tile, x strided
      {1, 8, 40, 40, 8, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, 1, 5, 0},    // 13 tiles over 5 splits
  };
  for (bool simt : {false, true})
    for (const Case& c : cases) run_case(c, rng, simt);
  for (const Case& c : cases) run_case(c, rng, false, true, false);  // TF32, the halo rounded once a tile; no bias
  // a stride-2 layer of 56-wide images: its two stages need more than two blocks an SM leave (kGwSmem), so it
  // runs only at one block an SM (PIXELOPS_CONV_HALO_GW_ONE_BLOCK), each product
  const Case wide_s2{1, 8, 20, 56, 16, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, 1, 2, 0};
  for (int v = 0; v < 3; ++v) run_case(wide_s2, rng, v == 1, v == 2, true, nullptr, kOneBlockSmem);
  // layers it does not take: one tap; a halo too large for two stages at two blocks an SM (res_s2's, and the
  // layer above), which at one block an SM it takes
  for (const Case& c : {Case{2, 16, 8, 8, 8, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0},
                        Case{32, 64, 56, 56, 128, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0}, wide_s2}) {
    Geometry q = case_geometry(c);
    const int64_t xs[4] = {q.C * q.H * q.W, q.H * q.W, q.W, 1}, gs[4] = {q.M * q.OH * q.OW, q.OH * q.OW, q.OW, 1};
    for (int i = 0; i < 4; ++i) { q.xs[i] = xs[i]; q.gs[i] = gs[i]; }
    set_divisors(q);
    alignas(16) static float dummy[4];
    HaloGradWeight p;
    if (halo_gw_setup(p, q, dummy, dummy, kGwSmem) || halo_gw_setup(p, q, dummy, dummy, kGwSmem, true)) {
      std::printf("FAIL: %dx%d stride %d taken\n", c.KH, c.KW, c.sh);
      ++failures;
    }
    if (c.ntaps > 1) {
      for (bool simt : {false, true}) {
        const bool fits = halo_gw_setup(p, q, dummy, dummy, kOneBlockSmem, simt);
        std::printf("%dx%d stride %d, %lld-wide images, %s: at one block an SM %s (%zu bytes)\n", c.KH, c.KW, c.sh,
                    (long long)c.W, simt ? "GwSimt" : "GwTf32", fits ? "fits" : "no", fits ? p.smem_bytes() : 0);
        if (!fits || p.smem_bytes() <= kGwSmem || p.smem_bytes() > kOneBlockSmem) {
          std::printf("FAIL: one-block budget\n");
          ++failures;
        }
      }
    }
  }
  if (failures) { std::printf("%d failed\n", failures); return 1; }
  std::printf("all passed\n");
  return 0;
}
