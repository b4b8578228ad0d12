// The host emulations' convolution cases as a Geometry: sizes and options from any case struct with the
// fields N, C, H, W, M, KH, KW, ntaps, sh, sw, ph, pw, dh, dw, G; contiguous (M, Cg, KH, KW) weights, bias
// stride 1. The caller sets the strides of x, grad_y and y it uses, then set_divisors.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "cuda/conv2d_problems.cuh"
#include "cuda/conv2d_tile.cuh"  // RowSumPlan

template <class Case>
pixelops::cuda::conv::Geometry case_geometry(const Case& c) {
  pixelops::cuda::conv::Geometry q{};
  q.N = c.N; q.C = c.C; q.H = c.H; q.W = c.W; q.M = c.M;
  q.OH = (c.H + 2 * c.ph - int64_t(c.KH - 1) * c.dh - 1) / c.sh + 1;
  q.OW = (c.W + 2 * c.pw - int64_t(c.KW - 1) * c.dw - 1) / c.sw + 1;
  q.G = c.G; q.Cg = c.C / c.G; q.Mg = c.M / c.G;
  q.KH = c.KH; q.KW = c.KW; q.ntaps = c.ntaps;
  q.sh = c.sh; q.sw = c.sw; q.ph = c.ph; q.pw = c.pw; q.dh = c.dh; q.dw = c.dw;
  const int64_t ws[4] = {q.Cg * c.KH * c.KW, int64_t(c.KH) * c.KW, c.KW, 1};
  for (int i = 0; i < 4; ++i) q.ws[i] = ws[i];
  q.bs = 1;
  return q;
}

// Output i of reduce_grad_weight as the kernel adds it: min(splits, kReduceWarps) warps each summing every
// warps-th split (weight_partials_sum), then those sums in warp order.
template <class A>
A reduce_weight_output(const pixelops::cuda::conv::Geometry& q, const A* ws, int splits, bool bias, int64_t i) {
  const int warps = std::min(splits, pixelops::cuda::conv::kReduceWarps);
  A s = A(0);
  for (int w = 0; w < warps; ++w) s += pixelops::cuda::conv::weight_partials_sum(q, ws, splits, bias, i, w, warps);
  return s;
}

// A block's share of grad_bias (conv2d_tile.cuh): each thread's row_sum_part from part(tid), then
// store_row_sums' sum of each row's tpr consecutive threads (lanes of one warp: tpr a power of two up to 32),
// handed to store(row, sum).
template <class Part, class Store>
void emulate_row_sums(const pixelops::cuda::conv::RowSumPlan& r, int threads, Part&& part, Store&& store) {
  if (r.rows == 0) return;
  if (r.tpr < 1 || r.tpr > 32 || (r.tpr & (r.tpr - 1)) || r.rows * r.tpr > threads) {
    std::printf("FAIL: row sums of %d rows, %d threads a row, do not fit a block's warps\n", r.rows, r.tpr);
    std::exit(1);
  }
  for (int first = 0; first < r.rows * r.tpr; first += r.tpr) {
    auto v = part(first);
    for (int lane = 1; lane < r.tpr; ++lane) v += part(first + lane);
    store(r.row0 + first / r.tpr, v);
  }
}

// Every emulation's fuzz mode, `prog fuzz <count> <seed>` (random cases; CI runs a fixed sample): whether argv
// asks for it, and its count and seed.
inline bool fuzz_args(int argc, char** argv, long& count, unsigned& seed) {
  if (argc != 4 || std::string(argv[1]) != "fuzz") return false;
  count = std::atol(argv[2]);
  seed = unsigned(std::strtoul(argv[3], nullptr, 10));
  return true;
}

// Fuzz mode's draws of a case's fields: an int in [lo, hi], from the generator that also makes the case's data.
struct Uniform {
  std::mt19937& rng;
  int operator()(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
};

// Fuzz mode's loop: run(i) draws and runs case i; where `failures` grew meanwhile, report(i) prints the case (as
// a literal for the fixed list). Then a summary; returns the exit code.
template <class Run, class Report>
int fuzz_cases(long count, unsigned seed, int runs_a_case, const int& failures, const int& skipped, Run&& run,
               Report&& report) {
  int bad = 0;
  for (long i = 0; i < count; ++i) {
    const int before = failures;
    run(i);
    if (failures != before) ++bad, report(i);
  }
  std::printf("fuzz seed %u: %ld cases, %ld runs, %d skipped, %d cases failed\n", seed, count, runs_a_case * count,
              skipped, bad);
  return bad ? 1 : 0;
}
