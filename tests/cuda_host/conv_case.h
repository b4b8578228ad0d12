// The host emulations' convolution cases as a Geometry: sizes and options from any case struct with the
// fields N, C, H, W, M, KH, KW, ntaps, sh, sw, ph, pw, dh, dw, G; contiguous (M, Cg, KH, KW) weights, bias
// stride 1. The caller sets the strides of x, grad_y and y it uses, then set_divisors.
#pragma once
#include "cuda/conv2d_tile.cuh"

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
