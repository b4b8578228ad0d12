// The halo emulations' TF32 operands (conv2d_halo.cuh, conv2d_halo_grad_weight.cuh): the check that a value handed
// to an emulated mma.sync is a TF32 value, and the halo forward's B operand.
#pragma once
#include <cstdio>

#include "cuda/conv2d_halo.cuh"

// A value that must be TF32 already: one that is not counts as a failure (NaN, the emulations' poison, is left to
// show in the result).
inline float tf32_checked(float v, int& failures) {
  using pixelops::cuda::conv::tf32_round;
  if (!(tf32_round(v) == v) && v == v) {
    static int reported = 0;
    if (reported++ < 3) std::printf("FAIL: a TF32 operand that is not a TF32 value (%.9g)\n", v);
    ++failures;
  }
  return v;
}

// The halo forward's B operand, as its TF32 product takes it: rounded as it is read, or, where h.preround, as
// halo_round_stage left it in shared memory (which must then be a TF32 value already).
inline float halo_tf32_operand(const pixelops::cuda::conv::HaloConv& h, float v, int& failures) {
  return h.preround ? tf32_checked(v, failures) : pixelops::cuda::conv::tf32_round(v);
}
