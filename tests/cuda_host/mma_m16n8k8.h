// mma.sync.m16n8k8's D fragment, emulated from its documented layout for the host emulations of the TF32
// products (halo forward, halo weight gradient, pointwise weight gradient): register r of lane (gq, tig) =
// (lane / 4, lane % 4) holds row gq + 8 * (r / 2), column 2 * tig + r % 2 of A (16 x 8) times B (8 x 8),
// summed in float64.
#pragma once

inline double mma_m16n8k8_d(const double (&A)[16][8], const double (&B)[8][8], int lane, int r) {
  const int row = lane / 4 + 8 * (r / 2), col = 2 * (lane % 4) + r % 2;
  double s = 0;
  for (int k = 0; k < 8; ++k) s += A[row][k] * B[k][col];
  return s;
}
