// The halo convolution (csrc/cuda/conv2d_halo.cuh) run on the host: the same setup, packing, slot and
// fragment-address math as halo_conv_kernel, with each mma.sync.m16n8k8 emulated from its documented
// fragment layout (HaloTf32), or the float32 FMAs of HaloSimt, against a naive convolution in float64 (of the
// TF32-rounded operands for the TF32 product). Forward and
// grad_input (stride 1), with strides, dilation, groups, masks, tiles that run across images, views; 1x1 layers
// in flat mode; both products in the wide layout and with split columns (column stride 2) too; the TF32
// product with its halo rounded
// once a chunk (halo_round_stage), where every B value it reads must then be a TF32 value.
// Built and run by tests/test_conv2d_cuda_host.py; it needs only a C++17 compiler, no GPU.
//   c++ -std=c++17 -O1 -I tests/cuda_host -I csrc tests/cuda_host/conv2d_halo_emulation.cpp && ./a.out
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_utils.cuh"  // first: the host stand-in beside this file defines the CUDA keywords
#include "cuda/conv2d_halo.cuh"
#include "conv_case.h"
#include "mma_m16n8k8.h"
#include "halo_tf32_operand.h"

using namespace pixelops::cuda::conv;

static int failures = 0;
constexpr size_t kBudget = 227 * 1024;  // the most one block may take: every case fits, in 2 to 4 stages

// The halo value at offset off of a stage's halo hs, as the kernel reads it: a read outside the kc x CS floats
// of the halo (into the next stage, or past the shared memory) fails the case.
static float halo_at(const HaloConv& h, const float* hs, int64_t off) {
  if (off < 0 || off >= int64_t(h.kc) * h.CS) {
    static int reported = 0;
    if (reported++ < 3) std::printf("FAIL: a halo read at %lld, outside [0, %lld)\n", (long long)off, (long long)h.kc * h.CS);
    ++failures;
    return std::numeric_limits<float>::quiet_NaN();
  }
  return hs[off];
}

// Calls body(g, mt, n0, first_row, load) for every block of halo_conv_kernel, with h's weights packed and the
// shared stages as the kernel leaves them before its loop: NaN, so that a read of a slot nobody wrote shows up
// in the result, but for the zeroed halos. load(cc) stages chunk cc for all threads and returns its stage.
template <class Body>
static void for_each_block(HaloConv& h, Body&& body) {
  std::vector<float> wp(size_t(h.packed_floats()));
  for (size_t i = 0; i < wp.size(); ++i) wp[i] = halo_packed_weight(h, int64_t(i));
  h.wp = wp.data();
  const int cf = h.chunk_floats(), stage = h.stage_floats();
  std::vector<float> smem(size_t(h.stages) * stage);
  const int64_t blocks = (h.pixels() + h.bn() - 1) / h.bn();
  auto copy16 = [](float* d, const float* s, int n) {
    if ((reinterpret_cast<uintptr_t>(d) & 15) != 0) { std::printf("FAIL: misaligned 16-byte copy\n"); ++failures; }
    for (int i = 0; i < 4; ++i) d[i] = i < n ? s[i] : 0.f;
  };
  auto copy4 = [](float* d, const float* s, bool valid) { *d = valid ? *s : 0.f; };
  for (int g = 0; g < h.q.G; ++g)
    for (int mt = 0; mt < h.mtiles; ++mt)
      for (int64_t bx = 0; bx < blocks; ++bx) {
        const int64_t n0 = bx * h.bn(), first_row = halo_first_row(h, n0);
        std::fill(smem.begin(), smem.end(), std::numeric_limits<float>::quiet_NaN());
        for (int st = 0; st < h.stages; ++st)
          for (int i = 0; i < h.kc * h.CS; ++i) smem[size_t(st) * stage + cf + i] = 0.f;
        auto load = [&](int cc) {
          float* st = smem.data() + size_t(cc % h.stages) * stage;
          for (int tid = 0; tid < kHaloThreads; ++tid) halo_load_chunk(h, g, mt, cc, first_row, st, tid, copy16, copy4);
          return st;
        };
        body(g, mt, n0, first_row, load);
      }
}

static float tf32_b(const HaloConv& h, float v) { return halo_tf32_operand(h, v, failures); }

// As halo_conv_kernel with HaloTf32 (HaloTf32Preround where h.preround), block by block.
static void emulate(HaloConv h) {
  const int cf = h.chunk_floats();
  const int64_t npix = h.pixels();
  for_each_block(h, [&](int g, int mt, int64_t n0, int64_t first_row, auto&& load) {
        static double acc[kHaloThreads][2][4][4];
        const int nsteps = halo_steps(h.narrow), wpix = 8 * nsteps;  // a warp's n8 fragments and pixels
        for (auto& t : acc) for (auto& a : t) for (auto& b : a) for (auto& c : b) c = 0;
        for (int cc = 0; cc < h.nchunks; ++cc) {
          float* st = load(cc);
          if (h.preround)
            for (int tid = 0; tid < kHaloThreads; ++tid) halo_round_stage(st + cf, h.kc * h.CS, tid);
          const float* hs = st + cf;
          for (int warp = 0; warp < kHaloThreads / 32; ++warp) {
            int wm, wn;
            halo_tf32_place(h.wide, warp, wm, wn);
            for (int j = 0; j < h.ntaps; ++j)
              for (int kk = 0; kk < h.nkk; ++kk) {
                // gather the warp's fragments lane by lane, as the kernel loads them
                double A[2][16][8], B[4][8][8];
                for (int lane = 0; lane < 32; ++lane) {
                  const int gq = lane / 4, tig = lane % 4;
                  const float* wa = st + (2 * wm) * 128 + lane * 4;
                  for (int i = 0; i < 2; ++i)
                    for (int r = 0; r < 4; ++r)
                      A[i][gq + 8 * (r % 2)][tig + 4 * (r / 2)] = wa[(j * h.nkk + kk) * kHaloFrag + i * 128 + r];
                  const int64_t hk = int64_t(kk) * 8 * h.CS + h.tap_off[j];
                  for (int nj = 0; nj < nsteps; ++nj) {
                    const int corner = tig * h.CS + halo_corner(h, n0 + wpix * wn + 8 * nj + gq, first_row);
                    B[nj][tig][gq] = tf32_b(h, halo_at(h, hs, hk + corner));
                    B[nj][tig + 4][gq] = tf32_b(h, halo_at(h, hs, hk + corner + 4 * h.CS));
                  }
                }
                for (int lane = 0; lane < 32; ++lane) {
                  for (int i = 0; i < 2; ++i)
                    for (int nj = 0; nj < nsteps; ++nj)
                      for (int r = 0; r < 4; ++r) acc[warp * 32 + lane][i][nj][r] += mma_m16n8k8_d(A[i], B[nj], lane, r);
                }
              }
          }
        }
        for (int tid = 0; tid < kHaloThreads; ++tid) {
          const int warp = tid / 32, lane = tid % 32, gq = lane / 4, tig = lane % 4;
          int wm, wn;
          halo_tf32_place(h.wide, warp, wm, wn);
          for (int nj = 0; nj < nsteps; ++nj)
            for (int i = 0; i < 2; ++i)
              for (int r = 0; r < 4; ++r) {
                const int64_t n = n0 + wpix * wn + 8 * nj + 2 * tig + r % 2;
                const int64_t m = int64_t(mt) * kHaloBM + 32 * wm + 16 * i + gq + 8 * (r / 2);
                if (n < npix && m < h.q.Mg) h.y[halo_out_offset(h, g, m, n)] = halo_activate(h, g, m, float(acc[tid][i][nj][r]));
              }
        }
  });
}

struct Case {
  int64_t N, C, H, W, M;
  int KH, KW, ntaps, sh, sw, ph, pw, dh, dw, G;
  bool relu, bias, grad_input;
  int xstep;       // x (or grad_y) read from every xstep-th element of a wider buffer: a non-contiguous view
  int rowpad = 0;  // ... and its rows rowpad elements longer than the view's
  bool flat = false;  // flat mode asked for (kept for 1x1 stride-1 unpadded layers only)
  bool wide = false;  // the wide layout (32 rows x 256 pixels)
  bool split = false;  // split columns asked for (kept for column stride 2 only)
  bool narrow = false; // 64 x 96 tiles asked for (kept for the prerounded TF32 product, not wide)
};

static Geometry geometry(const Case& c) {
  Geometry q = case_geometry(c);
  set_divisors(q);
  return q;
}

// As halo_conv_kernel with HaloSimt: thread tid owns rows row0 + [0, 8) and pixels pix0 + 32i
// (halo_simt_place), and adds each chunk with the kernel's own product (halo_simt_steps).
static void emulate_simt(HaloConv h) {
  const int cf = h.chunk_floats();
  const int64_t npix = h.pixels();
  for_each_block(h, [&](int g, int mt, int64_t n0, int64_t first_row, auto&& load) {
        static float acc[kHaloThreads][8][4];
        for (auto& t : acc) for (auto& a : t) for (auto& b : a) b = 0.f;
        for (int cc = 0; cc < h.nchunks; ++cc) {
          const float* st = load(cc);
          for (int tid = 0; tid < kHaloThreads; ++tid) {
            int row0, pix0;
            halo_simt_place(h.wide, tid, row0, pix0);
            const float* wa = st + row0;
            int corner[4];
            for (int i = 0; i < 4; ++i) corner[i] = halo_corner(h, n0 + pix0 + 32 * i, first_row);
            // every halo read in the stage's halo (halo_at fails the case otherwise), then the kernel's own product
            for (int j = 0; j < h.ntaps; ++j)
              for (int c = 0; c < h.kc; ++c)
                for (int i = 0; i < 4; ++i) halo_at(h, st + cf, h.tap_off[j] + int64_t(c) * h.CS + corner[i]);
            switch (h.kc) {
              case 8: halo_simt_steps<8>(h, wa, st + cf, corner, acc[tid]); break;
              case 16: halo_simt_steps<16>(h, wa, st + cf, corner, acc[tid]); break;
              default: halo_simt_steps<32>(h, wa, st + cf, corner, acc[tid]);
            }
          }
        }
        for (int tid = 0; tid < kHaloThreads; ++tid)
          for (int r = 0; r < 8; ++r) {
            int row0, pix0;
            halo_simt_place(h.wide, tid, row0, pix0);
            const int64_t m = int64_t(mt) * kHaloBM + row0 + r;
            for (int i = 0; i < 4; ++i) {
              const int64_t n = n0 + pix0 + 32 * i;
              if (m < h.q.Mg && n < npix) h.y[halo_out_offset(h, g, m, n)] = halo_activate(h, g, m, acc[tid][r][i]);
            }
          }
  });
}

// Fuzz mode (`prog fuzz <count> <seed>`): random cases, shared-memory budgets drawn between the default and the
// most a block may take. A launch the halo refuses is not a failure there: a refused forward skips the case, a
// refused phase of a strided grad_input leaves its pixels to the GEMM (not compared here); both are counted.
static bool fuzzing = false;
static size_t fuzz_budget = kBudget, fuzz_most = kBudget;
static int fuzz_refused = 0;  // launches

static void run_case(const Case& c, bool simt, std::mt19937& rng, bool preround = false) {
  Geometry q = geometry(c);
  std::normal_distribution<float> nd;
  std::vector<float> w(size_t(q.M * q.Cg * c.KH * c.KW)), b(size_t(q.M));
  for (auto& v : w) v = nd(rng);
  for (auto& v : b) v = nd(rng);
  // the operand read through the halo: x (N, C, H, W) forward, grad_y (N, M, OH, OW) for grad_input
  const int64_t in_c = c.grad_input ? q.M : q.C, in_h = c.grad_input ? q.OH : q.H, in_w = c.grad_input ? q.OW : q.W;
  const int64_t out_c = c.grad_input ? q.C : q.M, out_h = c.grad_input ? q.H : q.OH, out_w = c.grad_input ? q.W : q.OW;
  const int64_t row = (in_w + c.rowpad) * c.xstep;
  std::vector<float> in(size_t(q.N * in_c * in_h * row));
  for (auto& v : in) v = nd(rng);
  const int64_t s[4] = {in_c * in_h * row, in_h * row, row, c.xstep};
  std::vector<float> y(size_t(q.N * out_c * out_h * out_w), std::numeric_limits<float>::quiet_NaN());
  // one launch (a phase of a strided grad_input each, as conv2d_backward runs them)
  HaloConv h;  // (the last launch's, for the report)
  std::vector<char> gemm_pixel(size_t(q.H * q.W), 0);  // grad_input pixels of phases left to the GEMM (fuzzing)
  auto launch = [&](const Phase* f) {
    h = HaloConv{};
    h.flat = c.flat;
    h.wide = c.wide;
    h.split = c.split;
    h.narrow = c.narrow;
    h.simt = simt;
    h.preround = preround && !simt;
    const size_t budget = fuzzing ? fuzz_budget : kBudget, most = fuzzing ? fuzz_most : 0;
    const bool fits = f ? halo_for_grad_input(q, *f, w.data(), in.data(), y.data(), h, budget, most)
                        : halo_for_forward(q, in.data(), w.data(), c.bias ? b.data() : nullptr, y.data(), c.relu, h,
                                           budget, most);
    if (!fits && fuzzing) {
      ++fuzz_refused;
      if (f)  // the GEMM's pixels: skipped by the comparison
        for (int64_t i = 0; i < f->PH; ++i)
          for (int64_t j = 0; j < f->PW; ++j) gemm_pixel[size_t((f->h0 + i * q.sh) * q.W + f->w0 + j * q.sw)] = 1;
      return bool(f);  // a refused forward: nothing to compare (false ends the case)
    }
    if (!fits) {
      std::printf("FAIL: case does not fit the halo path\n");
      ++failures;
      return false;
    }
    if (h.flat != (c.flat && h.q.KH == 1 && h.q.KW == 1 && h.q.sh == 1 && h.q.sw == 1 && h.q.ph == 0 &&
                   h.q.pw == 0 && h.q.H == h.q.OH && h.q.W == h.q.OW)) {
      std::printf("FAIL: flat mode %s where it should not be\n", h.flat ? "kept" : "dropped");
      ++failures;
    }
    if (h.split != (c.split && !c.grad_input && c.sw == 2) || (h.split && h.vec)) {
      std::printf("FAIL: split columns %s where they should not be\n", h.split ? "kept" : "dropped");
      ++failures;
    }
    if (h.phased != (f && (c.sh > 1 || c.sw > 1))) {
      std::printf("FAIL: phased output %s where it should not be\n", h.phased ? "on" : "off");
      ++failures;
    }
    for (int k = 0; k < kHaloMaxKc; ++k)  // the channels' shifts both products read (halo_channel_bytes)
      if (h.chan_bytes[k] != (k < h.kc ? 4 * k * h.CS : 0)) {
        std::printf("FAIL: channel %d's shift %d bytes, not %d\n", k, h.chan_bytes[k], 4 * k * h.CS);
        ++failures;
        break;
      }
    if (h.narrow != (c.narrow && !h.wide && !simt && preround)) {  // (wide as halo_setup kept it)
      std::printf("FAIL: narrow tiles %s where they should not be\n", h.narrow ? "kept" : "dropped");
      ++failures;
    }
    if (simt) emulate_simt(h);
    else emulate(h);
    return true;
  };
  if (c.grad_input) {
    for (int i = 0; i < 4; ++i) q.gs[i] = s[i];
    for (int rh = 0; rh < c.sh; ++rh)
      for (int rw = 0; rw < c.sw; ++rw) {
        const Phase f = plan_phase(q, rh, rw);
        if (f.PH == 0 || f.PW == 0) continue;
        if (f.ntaps == 0) {  // no tap reaches these pixels: the GEMM's launch writes their zeros
          for (int64_t n = 0; n < q.N; ++n)
            for (int64_t ch = 0; ch < q.C; ++ch)
              for (int64_t i = 0; i < f.PH; ++i)
                for (int64_t j = 0; j < f.PW; ++j)
                  y[size_t(((n * q.C + ch) * q.H + f.h0 + i * q.sh) * q.W + f.w0 + j * q.sw)] = 0.f;
          continue;
        }
        if (!launch(&f)) return;
      }
  } else {
    for (int i = 0; i < 4; ++i) q.xs[i] = s[i];
    if (!launch(nullptr)) return;
  }
  // the reference in float64, from TF32-rounded operands for the TF32 kernel
  auto round = [&](float v) { return double(simt ? v : tf32_round(v)); };
  auto X = [&](int64_t n, int64_t ch, int64_t i, int64_t j) { return round(in[size_t(n * s[0] + ch * s[1] + i * s[2] + j * s[3])]); };
  auto Wt = [&](int64_t m, int64_t ch, int t) { return round(w[size_t(m * q.ws[0] + ch * q.ws[1] + t)]); };
  double worst = 0, scale = 0;
  int64_t bad = 0;
  for (int64_t n = 0; n < q.N; ++n)
    for (int64_t oc = 0; oc < out_c; ++oc)
      for (int64_t i = 0; i < out_h; ++i)
        for (int64_t j = 0; j < out_w; ++j) {
          double ref = 0, mag = 0;  // mag: the sum of the terms' sizes, which float32 sums' rounding scales with
          auto add = [&](double term) { ref += term; mag += std::fabs(term); };
          if (!c.grad_input) {
            const int64_t g = oc / q.Mg;
            for (int64_t ch = 0; ch < q.Cg; ++ch)
              for (int t = 0; t < q.ntaps; ++t) {
                const int kh = t / q.KW, kw = t % q.KW;
                const int64_t ih = i * q.sh - q.ph + kh * q.dh, iw = j * q.sw - q.pw + kw * q.dw;
                if (ih >= 0 && ih < q.H && iw >= 0 && iw < q.W) add(Wt(oc, ch, t) * X(n, g * q.Cg + ch, ih, iw));
              }
            if (c.bias) add(b[size_t(oc)]);
            if (c.relu && ref < 0) ref = 0;
          } else {  // grad_x[n, oc, i, j] = sum over m, taps reaching it
            const int64_t g = oc / q.Cg, cl = oc - g * q.Cg;
            for (int64_t m = 0; m < q.Mg; ++m)
              for (int t = 0; t < q.ntaps; ++t) {
                const int kh = t / q.KW, kw = t % q.KW;
                const int64_t rh = i + q.ph - kh * q.dh, rw = j + q.pw - kw * q.dw;
                if (rh % q.sh || rw % q.sw) continue;
                const int64_t oh = rh / q.sh, ow = rw / q.sw;
                if (oh >= 0 && oh < q.OH && ow >= 0 && ow < q.OW) add(Wt(g * q.Mg + m, cl, t) * X(n, g * q.Mg + m, oh, ow));
              }
          }
          if (c.grad_input && gemm_pixel[size_t(i * q.W + j)]) continue;
          const double got = y[size_t(((n * out_c + oc) * out_h + i) * out_w + j)];
          const double err = std::fabs(got - ref);
          scale = std::max(scale, std::fabs(ref));
          // float32 sums of a few hundred terms: an error near 1e-7 of mag, 4e-6 at most here; a wrong or missing
          // term is of the order of mag / terms, some 1e-2 of it
          if (!(err <= 4e-6 * (1 + mag))) ++bad;
          if (!std::isnan(worst) && !(err <= worst)) worst = err;  // a NaN stays
        }
  std::printf("%s %s N%lld C%lld %lldx%lld M%lld k%dx%d taps%d s%d,%d p%d,%d d%d,%d G%d kc%d rows%d stages%d%s%s%s%s%s%s: %s (worst %.3g of %.3g)\n",
              simt ? "simt" : "tf32", c.grad_input ? "grad_input" : "forward", (long long)c.N, (long long)c.C, (long long)c.H, (long long)c.W,
              (long long)c.M, c.KH, c.KW, c.ntaps, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.G, h.kc, h.rows, h.stages, h.vec ? " vec" : "", h.flat ? " flat" : "", h.wide ? " wide" : "", h.preround ? " preround" : "", h.split ? " split" : "", h.narrow ? " narrow" : "",
              bad ? "FAIL" : "ok", worst, scale);
  if (bad) ++failures;
}

// A random case for fuzz mode: every option the fixed cases cover, small enough for the float64 reference.
static Case random_case(std::mt19937& rng) {
  Uniform pick{rng};
  for (;;) {
    Case c{};
    c.G = pick(1, 4) == 1 ? 2 : 1;
    const int cg = pick(0, 3) == 0 ? 8 * pick(1, 5) : pick(3, 40), mg = pick(0, 2) == 0 ? pick(1, 32) : pick(1, 80);
    c.C = int64_t(cg) * c.G;
    c.M = int64_t(mg) * c.G;
    c.N = pick(1, 3);
    c.H = pick(1, 16);
    c.W = pick(1, 20);
    c.flat = pick(0, 3) == 0;
    c.KH = c.flat ? 1 : pick(1, 5);
    c.KW = c.flat ? 1 : pick(1, 5);
    c.sh = c.flat ? 1 : pick(1, 3);
    c.sw = c.flat ? 1 : pick(1, 3);
    c.ph = c.flat ? 0 : pick(0, 3);
    c.pw = c.flat ? 0 : pick(0, 3);
    c.dh = c.flat ? 1 : pick(1, 2);
    c.dw = c.flat ? 1 : pick(1, 2);
    const int taps = c.KH * c.KW, mode = pick(0, 3);
    if (mode == 1 && c.KH % 2 && c.KW % 2) c.ntaps = (c.KH / 2) * c.KW + c.KW / 2 + pick(0, 1);  // mask A or B
    else if (mode == 2) c.ntaps = pick(1, taps);
    else c.ntaps = taps;
    c.grad_input = pick(0, 1);
    c.relu = !c.grad_input && pick(0, 1);
    c.bias = !c.grad_input && pick(0, 1);
    c.xstep = pick(0, 3) == 0 ? pick(2, 3) : 1;
    c.rowpad = pick(0, 3) == 0 ? pick(1, 5) : 0;
    c.wide = mg <= 32 && pick(0, 1);
    c.split = pick(0, 2) == 0;
    c.narrow = pick(0, 2) == 0;
    const int64_t oh = (c.H + 2 * c.ph - int64_t(c.KH - 1) * c.dh - 1), ow = (c.W + 2 * c.pw - int64_t(c.KW - 1) * c.dw - 1);
    if (c.ntaps < 1 || oh < 0 || ow < 0) continue;
    if (c.N * c.H * c.W * (c.C + c.M) * c.ntaps > 400000) continue;  // keep the reference quick
    return c;
  }
}

int main(int argc, char** argv) {
  std::mt19937 rng(7);
  long count;
  unsigned seed;
  if (fuzz_args(argc, argv, count, seed)) {
    fuzzing = true;
    rng.seed(seed);
    auto run = [&](long i) {
      const size_t budgets[] = {kHaloMaxSmem, kHaloMostSmem, kBudget};
      fuzz_budget = budgets[(i / 3) % 3];
      fuzz_most = (i / 9) % 2 ? kHaloMostSmem : 0;
      const int variant = int(i % 3);  // TF32, float32 FMAs, TF32 rounded once a chunk
      run_case(random_case(rng), variant == 1, rng, variant == 2);
    };
    // (each case's line says FAIL where it failed)
    return fuzz_cases(count, seed, 1, failures, fuzz_refused, run, [](long) {});
  }
  // N, C, H, W, M, KH, KW, ntaps, sh, sw, ph, pw, dh, dw, G, relu, bias, grad_input, xstep
  const Case cases[] = {
      {2, 16, 9, 11, 70, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, true, true, false, 1},     // ragged M, tiles over images
      {3, 12, 7, 6, 20, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false, true, false, 2},     // mask B, Cg not a multiple of 8
      {2, 10, 13, 20, 9, 3, 3, 9, 2, 2, 1, 2, 2, 1, 1, false, false, false, 1},   // strides, dilation
      {2, 12, 9, 10, 9, 3, 5, 6, 1, 2, 1, 2, 1, 1, 1, true, true, false, 1},     // 3x5 masked, kc 16
      {2, 36, 6, 7, 8, 1, 2, 2, 1, 1, 0, 0, 1, 1, 2, false, true, false, 1},      // 1x2, groups, kc 32
      {1, 8, 3, 3, 8, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1},       // one tile of many images
      {5, 8, 3, 4, 8, 3, 3, 4, 1, 1, 1, 1, 1, 1, 1, true, false, false, 3},       // tiny images, mask A
      {2, 16, 8, 12, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, true, true, false, 1},     // 16-byte row copies
      {2, 16, 7, 20, 24, 3, 3, 9, 1, 1, 2, 3, 1, 1, 1, false, true, false, 1},    // ... padded by 3
      {2, 16, 9, 12, 24, 3, 3, 9, 2, 2, 0, 0, 1, 1, 1, false, true, false, 1},    // ... 11 of 12 columns read
      {2, 16, 9, 10, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1, 2}, // ... rows of a wider tensor
      {2, 16, 5, 9, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1, 3},  // grad_input, the same
      {2, 16, 6, 8, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1},     // grad_input, 16-byte copies
      {2, 16, 9, 11, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1},    // grad_input
      {2, 24, 10, 9, 12, 5, 5, 12, 1, 1, 2, 1, 1, 2, 1, false, false, true, 2},   // masked, dilated, pad < (k-1)d
      {2, 16, 8, 7, 80, 3, 3, 9, 1, 1, 1, 1, 1, 1, 2, false, false, true, 1},     // groups, ragged rows
      {3, 16, 6, 7, 20, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1},     // grad_input, mask B: flipped,
      {2, 16, 7, 8, 16, 5, 5, 12, 1, 1, 2, 2, 1, 1, 1, false, false, true, 1},    // a mask's rows come first
      {2, 16, 6, 7, 20, 3, 3, 5, 1, 1, 2, 1, 1, 1, 1, false, false, true, 1},     // ... but padded below: kept
      {3, 16, 6, 7, 20, 5, 5, 12, 1, 1, 2, 2, 1, 1, 1, false, true, false, 1},    // forward, 5x5 mask A: 3 rows
      // flat mode: 1x1 layers, each channel's pixels one run
      {3, 40, 9, 7, 70, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, true, true, false, 1, 0, true},   // planes of 63: by element
      {2, 150, 8, 9, 20, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, true, false, 1, 0, true}, // 5 chunks through 4 stages
      {2, 16, 6, 10, 24, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, true, false, 1, 0, true},  // 16-byte copies
      {5, 12, 4, 3, 20, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, false, false, 1, 0, true},  // tiles over 11 images
      {2, 24, 6, 9, 16, 1, 1, 1, 1, 1, 0, 0, 1, 1, 2, false, true, false, 2, 0, true},   // groups, a view
      {2, 12, 7, 8, 40, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, false, false, 1, 1, true},  // rows of a wider tensor
      {3, 20, 8, 8, 36, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, false, true, 1, 0, true},   // grad_input
      {2, 20, 9, 7, 36, 1, 1, 1, 1, 1, 0, 0, 1, 1, 2, false, false, true, 1, 0, true},   // grad_input, groups
      {2, 16, 9, 11, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1, 0, true},  // 3x3: not flat
      // the wide layout (32 rows x 256 pixels): 17-32 rows (TF32 takes it for 32 or fewer)
      {3, 24, 9, 11, 32, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, true, true, false, 1, 0, false, true},   // 2 tiles, images
      {2, 16, 13, 20, 20, 3, 3, 9, 2, 1, 1, 1, 1, 2, 1, false, true, false, 2, 0, false, true}, // stride, dilation
      {2, 24, 9, 10, 18, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false, false, false, 1, 0, false, true}, // mask B
      {2, 32, 10, 13, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1, 0, false, true}, // grad_input
      {3, 36, 9, 9, 30, 3, 3, 9, 1, 1, 1, 1, 1, 1, 2, false, false, true, 1, 0, false, true},   // grad_input, groups
      {2, 16, 8, 9, 12, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, true, true, false, 1, 0, false, true},   // 12 rows (TF32)
      // split columns (column stride 2): even columns, then odd ones
      {2, 16, 13, 20, 24, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, true, false, 1, 0, false, false, true},
      {2, 12, 11, 17, 20, 3, 3, 9, 1, 2, 1, 2, 1, 2, 1, true, true, false, 2, 0, false, false, true},  // dilation 2
      {3, 16, 9, 14, 40, 3, 3, 5, 2, 2, 1, 1, 1, 1, 1, false, false, false, 1, 0, false, false, true},  // mask B
      {2, 24, 13, 20, 20, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, true, false, 1, 0, false, true, true},  // wide
      {2, 64, 20, 28, 32, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, true, false, 1, 0, false, false, true},  // res_s2-like
      {2, 16, 9, 13, 24, 5, 5, 25, 2, 2, 2, 2, 1, 1, 1, false, true, false, 1, 1, false, false, true}, // 5x5, rows apart
      {2, 16, 9, 11, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1, 0, false, false, true},  // stride 1: not
      {2, 16, 9, 11, 24, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1, 0, false, false, true},  // grad_input: not
      // strided grad_input: a launch per stride phase, each writing its pixels in place
      {2, 16, 11, 13, 24, 5, 5, 25, 2, 2, 2, 2, 1, 1, 1, false, false, true, 1},     // 5x5: phases of 9, 6, 6, 4 taps
      {2, 20, 12, 11, 36, 4, 4, 16, 2, 2, 1, 1, 1, 1, 1, false, false, true, 2},     // 4x4: 4 taps each, a view
      {3, 16, 9, 10, 24, 3, 3, 9, 2, 1, 1, 1, 1, 1, 2, false, false, true, 1},       // stride 2 x 1, groups
      {2, 24, 14, 14, 16, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, false, true, 1, 0, true},  // 3x3: its 1-tap phase flat
      {2, 16, 13, 12, 20, 3, 3, 9, 2, 2, 2, 2, 2, 2, 1, false, false, true, 1},      // dilation 2: 4 phases of 9, 0...
      {2, 16, 12, 13, 20, 5, 5, 12, 2, 2, 2, 2, 1, 1, 1, false, false, true, 1},     // mask A, 5x5: masked rows cut
      {2, 32, 13, 15, 24, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, false, true, 1, 0, true, true},  // wide, flat phase
      {2, 16, 17, 11, 24, 5, 3, 15, 3, 2, 2, 1, 1, 1, 1, false, false, true, 1, 0, true},  // strides 3 x 2
      // ... and in flat mode (1x1 layers)
      {3, 40, 9, 7, 24, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, true, true, false, 1, 0, true, true},     // by element
      {2, 36, 8, 10, 20, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, true, false, 1, 0, true, true},   // 16-byte copies
      {2, 24, 8, 8, 40, 1, 1, 1, 1, 1, 0, 0, 1, 1, 2, false, false, true, 1, 0, true, true},    // grad_input, groups
  };
  for (const Case& c : cases)
    for (const bool simt : {false, true}) run_case(c, simt, rng);
  // the TF32 product with its halo rounded once a chunk (PIXELOPS_CONV_HALO_PREROUND, the default)
  for (const Case& c : cases) run_case(c, false, rng, true);
  // narrow tiles (64 x 96, PIXELOPS_CONV_HALO_NARROW) asked for: the prerounded TF32 product takes them (the
  // wide cases drop them), the float32 one does not
  for (Case c : cases) {
    c.narrow = true;
    run_case(c, false, rng, true);
    run_case(c, true, rng);
  }
  // where halo_setup picks narrow tiles by itself (an H100: 132 SMs of 228 KB): res_s2's TF32 forward (392 tiles
  // of 128 pixels at two blocks an SM, which its stride-2 halo's larger budget leaves: 1.48 waves), not
  // pcnn_maskB's (392 tiles in 396 slots of three blocks an SM) nor res_3x3's (784 tiles: 1.98 waves); never the
  // float32 product
  {
    struct Pick { const char* name; Case c; bool simt, narrow; };
    const Pick picks[] = {
        {"pcnn_maskB float32", {64, 64, 28, 28, 64, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1}, true, false},
        {"pcnn_maskB TF32 grad_input", {64, 64, 28, 28, 64, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false, false, true, 1}, false, false},
        {"pcnn_maskB TF32", {64, 64, 28, 28, 64, 3, 3, 5, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1}, false, false},
        {"res_s2 TF32", {32, 64, 56, 56, 128, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, true, false, 1}, false, true},
        {"res_s2 float32", {32, 64, 56, 56, 128, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, true, false, 1}, true, false},
        {"a layer of 30 tiles, TF32", {2, 16, 40, 48, 64, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1}, false, true},
        {"res_3x3 float32", {32, 64, 56, 56, 64, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1}, true, false},
        {"res_3x3 TF32", {32, 64, 56, 56, 64, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, true, false, 1}, false, false},
    };
    alignas(16) static float buf[64];
    for (const Pick& p : picks) {
      Geometry q = geometry(p.c);
      q.gs[3] = q.xs[3] = 1; q.gs[2] = q.OW; q.xs[2] = q.W;  // contiguous x and grad_y
      q.xs[1] = q.H * q.W; q.xs[0] = q.C * q.xs[1];
      q.gs[1] = q.OH * q.OW; q.gs[0] = q.M * q.gs[1];
      HaloConv h;
      h.simt = p.simt;
      h.preround = !p.simt;
      h.sms = 132;
      h.sm_smem = 228 * 1024;
      const bool fits = p.c.grad_input ? halo_for_grad_input(q, plan_phase(q, 0, 0), buf, buf, buf, h, kHaloMaxSmem, kHaloMostSmem)
                                       : halo_for_forward(q, buf, buf, nullptr, buf, false, h, kHaloMaxSmem, kHaloMostSmem);
      const bool ok = fits && h.narrow == p.narrow;
      std::printf("%s %s: %s tiles", ok ? "ok  " : "FAIL", p.name, h.narrow ? "narrow" : "128-pixel");
      if (!p.simt) std::printf(" (%lld blocks an SM, cost %lld)", (long long)halo_blocks_per_sm(h), (long long)halo_wave_cost(h));
      std::printf("\n");
      if (!ok) ++failures;
    }
  }
  // a strided grad_input's phase of one tap, not flat: left to the GEMM (3x3 stride 2, padding 1: phase (1, 1))
  {
    const Case c{2, 16, 9, 9, 16, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, false, true, 1};
    Geometry q = geometry(c);
    for (int i = 0; i < 4; ++i) q.gs[i] = i == 3 ? 1 : i == 2 ? q.OW : i == 1 ? q.OH * q.OW : q.M * q.OH * q.OW;
    int taken = 0;
    for (int r = 0; r < 4; ++r) {
      const Phase f = plan_phase(q, r / 2, r % 2);
      HaloConv h;
      std::vector<float> buf(64);
      taken += halo_for_grad_input(q, f, buf.data(), buf.data(), buf.data(), h, kBudget);
    }
    std::printf("%s strided grad_input, 3x3: 3 of 4 phases on the halo (%d)\n", taken == 3 ? "ok  " : "FAIL", taken);
    if (taken != 3) ++failures;
  }
  // layers the halo does not take: 3 channels; one tap
  for (const Case& c : {Case{1, 3, 8, 8, 8, 3, 3, 9, 1, 1, 1, 1, 1, 1, 1, false, false, false, 1},
                        Case{1, 16, 8, 8, 8, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, false, false, 1}}) {
    HaloConv h;
    h.q = geometry(c);
    if (halo_fits(h, c.ntaps, kBudget, kBudget)) {
      std::printf("FAIL: %lld channels x %d taps taken\n", (long long)c.C, c.ntaps);
      ++failures;
    }
  }
  // the budgets: res_s2 (64 channels, 56x56, 3x3, stride 2) needs more than the default 75 KB for two stages,
  // so it fits only where a larger budget is allowed, and then in two stages of one 8-channel chunk
  {
    HaloConv h;
    h.q = geometry(Case{32, 64, 56, 56, 128, 3, 3, 9, 2, 2, 1, 1, 1, 1, 1, false, false, false, 1});
    h.vec = true;
    const bool small = halo_fits(h, 9), large = halo_fits(h, 9, kHaloMaxSmem, kHaloMostSmem);
    std::printf("res_s2: default budget %s, two-block budget %s (kc %d, %d stages, %zu bytes)\n", small ? "fits" : "no",
                large ? "fits" : "no", h.kc, h.stages, h.smem_bytes());
    if (small || !large || h.stages != 2 || h.smem_bytes() > kHaloMostSmem) { std::printf("FAIL: budgets\n"); ++failures; }
  }
  // res_1x1 (256 -> 64 channels, 56x56) in flat mode within the default budget: 32-channel chunks, three stages
  // (three blocks an SM), 16-byte copies
  {
    HaloConv h;
    h.q = geometry(Case{32, 256, 56, 56, 64, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, false, false, false, 1});
    h.flat = true;
    h.vec = true;
    const bool fits = halo_fits(h, 1);
    std::printf("res_1x1 flat: %s (kc %d, %d stages, %zu bytes)\n", fits ? "fits" : "no", h.kc, h.stages, h.smem_bytes());
    if (!fits || h.kc != 32 || h.stages != 3 || h.smem_bytes() > kHaloMaxSmem) { std::printf("FAIL: flat budget\n"); ++failures; }
  }
  if (failures) { std::printf("%d failed\n", failures); return 1; }
  std::printf("all passed\n");
  return 0;
}
