// The halo emulations' TF32 B operand, as the TF32 products take it (conv2d_halo.cuh, conv2d_halo_grad_weight.cuh):
// rounded as it is read, or, where h.preround, as halo_round_stage left it in shared memory, which must then be
// a TF32 value already (a value read unrounded counts as a failure; NaN, the emulations' poison, is left to
// show in the result).
#pragma once
#include <cstdio>

#include "cuda/conv2d_halo.cuh"

inline float halo_tf32_operand(const pixelops::cuda::conv::HaloConv& h, float v, int& failures) {
  using pixelops::cuda::conv::tf32_round;
  if (!h.preround) return tf32_round(v);
  if (!(tf32_round(v) == v) && v == v) {
    static int reported = 0;
    if (reported++ < 3) std::printf("FAIL: a halo value read unrounded (%.9g)\n", v);
    ++failures;
  }
  return v;
}
