// Tile shapes, convolution geometry and the plain (SIMT) inner product of the conv2d implicit GEMMs.
// Nothing here needs a CUDA header beyond the __device__ keywords, so the index math can be checked on
// the host against naive loops.
#pragma once
#include <cstdint>

namespace pixelops::cuda::conv {

// A block computes a kBM x kBN tile of C = A * B, walking K in steps of kBK with both operand tiles staged
// in shared memory; each of its 256 threads owns a 4 x 4 register tile (rows ty + 16 i, columns tx + 16 j).
constexpr int kBM = 64, kBN = 64, kBK = 16;
constexpr int kGemmThreads = 256;
// Padded row of a shared tile: fewer bank conflicts on K-fast stores, and still a multiple of 4 floats
// (16 bytes) as wmma loads require.
constexpr int kLds = kBM + 4;

template <class T> struct AccOf { using type = float; };  // float accumulation for float, half, bfloat16
template <> struct AccOf<double> { using type = double; };

// Which element of a kBK x 64 shared tile [k][m or n] a thread loads in its r-th slot (r < 4); a problem
// picks one for A (kFetchA) and one for B (kFetchB).
// MnFast: consecutive threads take consecutive rows/columns (coalesced when M or N is the memory-fast
// axis: pixels of x or grad_y). KFast: consecutive threads take consecutive k (coalesced when K is pixels,
// as in grad_weight), and each thread decodes its pixel once per K step.
enum class Fetch { kMnFast, kKFast };
template <Fetch F> struct Slot;
template <> struct Slot<Fetch::kMnFast> {
  __device__ static int k(int tid, int r) { return tid / 64 + 4 * r; }
  __device__ static int mn(int tid, int) { return tid % 64; }
};
template <> struct Slot<Fetch::kKFast> {
  __device__ static int k(int tid, int) { return tid % 16; }
  __device__ static int mn(int tid, int r) { return tid / 16 + 16 * r; }
};

// Sizes, strides and options of one convolution (element strides of the caller's views).
struct Geometry {
  int64_t N, C, H, W;        // input
  int64_t M, OH, OW;         // output
  int64_t G, Cg, Mg;         // groups, input and output channels per group
  int KH, KW, ntaps;         // kernel; active taps are the row-major prefix [0, ntaps)
  int sh, sw, ph, pw, dh, dw;
  int64_t xs[4], ws[4], ys[4], gs[4];  // strides of x, w, y (relu mask), grad_y
  int64_t bs;                          // bias (or grad_bias) stride
};

// The fp32/fp64 register-tiled product of the staged tiles: As[k][m], Bs[k][n].
template <class A>
struct SimtMma {
  using Stage = A;  // element type of the shared tiles
  static constexpr int kLd = kLds;
  static __device__ __forceinline__ A stage(A v) { return v; }
  A acc[4][4];
  __device__ SimtMma() {
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = A(0);
  }
  __device__ void step(const A (*As)[kLds], const A (*Bs)[kLds], int tid) {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      A a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { a[i] = As[kk][ty + 16 * i]; b[i] = Bs[kk][tx + 16 * i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
  }
  // Hands each owned element (row, column within the tile, value) to f.
  template <class F> __device__ void finish(int tid, F&& f) {
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) f(ty + 16 * i, tx + 16 * j, acc[i][j]);
  }
};

}  // namespace pixelops::cuda::conv
