// The CPU convolutions' inner loops, each compiled per instruction set (target_clones): the register-tile
// microkernel (an MR x NR tile of C accumulated over kc steps of packed A and rows of B,
//   tile[r][j] = sum_k a[k*MR + r] * b[row[k] + j],
// with its epilogue), the tile store of partial tiles, the row copies into padded planes, the im2col gather
// and grad_weight's dot-product tiles. Written with GCC vector types of 64 bytes: one zmm each under AVX-512,
// two ymm under AVX2, so the same source serves every clone.
#include <algorithm>

#include "cpu/conv2d_gemm.h"

namespace pixelops::cpu::conv {
namespace {

typedef float f32x16 __attribute__((vector_size(64), aligned(4)));
typedef double f64x8 __attribute__((vector_size(64), aligned(8)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef double f64x2 __attribute__((vector_size(16)));

// Horizontal sums by halving (3 vector adds, then 2 or 1 scalar): dot_tile_rows ends in DR x DC of them, and
// a lane-by-lane scalar chain there cost as much as the multiply-adds of a ~1000-pixel dot product.
// Clones inline them into their own instruction set.
__attribute__((always_inline)) inline float hsum(f32x16 v) {
  const f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
__attribute__((always_inline)) inline double hsum(f64x8 v) {
  const f64x4 a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  const f64x2 b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
  return b[0] + b[1];
}

// d[0, L) = s[0], s[2], ..., s[2L - 2] (a stride-2 row's even or odd columns), from two vector loads.
__attribute__((always_inline)) inline void copy_even(float* __restrict d, const float* __restrict s) {
  const f32x16 lo = *reinterpret_cast<const f32x16*>(s), hi = *reinterpret_cast<const f32x16*>(s + 16);
  *reinterpret_cast<f32x16*>(d) =
      __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
__attribute__((always_inline)) inline void copy_even(double* __restrict d, const double* __restrict s) {
  const f64x8 lo = *reinterpret_cast<const f64x8*>(s), hi = *reinterpret_cast<const f64x8*>(s + 8);
  *reinterpret_cast<f64x8*>(d) = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
}

// d[j] = s[j * step] for j < n: for stride 1 whole vectors, then one that ends at n (overlapping), for
// stride 2 every other value picked from pairs of vectors (reads end at s[2(n-1)]), value by value
// otherwise and for the tails. The callers are compiled without GCC's loop-idiom pass, which had turned these
// loops into memcpy calls that cost more than the copy for the 10-60 values of an image row.
// (The vector type comes from a trait, not a template argument: GCC drops a typedef's aligned(4) passed as
// one, and the copies then compiled to aligned stores.)
template <class T> struct Vec;
template <> struct Vec<float> { typedef float type __attribute__((vector_size(64), aligned(4))); };
template <> struct Vec<double> { typedef double type __attribute__((vector_size(64), aligned(8))); };
template <class T>
__attribute__((always_inline)) inline void copy_run(T* __restrict d, const T* __restrict s, int64_t n, int64_t step) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = int64_t(sizeof(V) / sizeof(T));
  int64_t j = 0;
  if (step == 1 && n >= L) {
    for (; j + L <= n; j += L) *reinterpret_cast<V*>(d + j) = *reinterpret_cast<const V*>(s + j);
    if (j < n) *reinterpret_cast<V*>(d + n - L) = *reinterpret_cast<const V*>(s + n - L);
    return;
  }
  if (step == 2)
    for (; j + L < n; j += L) copy_even(d + j, s + 2 * j);
  for (; j < n; ++j) d[j] = s[j * step];
}

}  // namespace

// B rows found through a table of offsets: row k of B is the NR values at b + row[k] (any alignment), two
// unaligned vector loads per k. Every B the convolutions use is rows of a larger array (padded image planes,
// rows of an im2col block, grad_y rows), so nothing is packed into panels.
#define PIXELOPS_CONV_MICROKERNEL_ROWS(T, V, LANES)                                                 \
  PIXELOPS_CONV_CLONES void microkernel_rows(int64_t kc, const T* __restrict a, const T* __restrict b, \
                                             const int64_t* __restrict row, T* __restrict out,      \
                                             int64_t ldo, const T* __restrict bias, bool relu,      \
                                             bool accumulate) {                                     \
    constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR;                                               \
    static_assert(NR == 2 * LANES, "two vectors per tile row");                                     \
    V c0[MR], c1[MR];                                                                               \
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) { c0[r] = V{}; c1[r] = V{}; }             \
    for (int64_t k = 0; k < kc; ++k) {                                                              \
      const T* bk = b + row[k];                                                                     \
      const V b0 = *reinterpret_cast<const V*>(bk);                                                 \
      const V b1 = *reinterpret_cast<const V*>(bk + LANES);                                         \
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {                                        \
        const T s = a[k * MR + r];                                                                  \
        c0[r] += s * b0;                                                                            \
        c1[r] += s * b1;                                                                            \
      }                                                                                             \
    }                                                                                               \
    if (accumulate)                                                                                 \
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {                                        \
        c0[r] += *reinterpret_cast<const V*>(out + r * ldo);                                        \
        c1[r] += *reinterpret_cast<const V*>(out + r * ldo + LANES);                                \
      }                                                                                             \
    if (bias)                                                                                       \
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) { c0[r] += bias[r]; c1[r] += bias[r]; } \
    if (relu) {  /* x < 0 ? 0 : x keeps a NaN, as torch.relu does */                               \
      const V zero = V{};                                                                           \
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {                                        \
        c0[r] = c0[r] < zero ? zero : c0[r];                                                        \
        c1[r] = c1[r] < zero ? zero : c1[r];                                                        \
      }                                                                                             \
    }                                                                                               \
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {                                          \
      *reinterpret_cast<V*>(out + r * ldo) = c0[r];                                                 \
      *reinterpret_cast<V*>(out + r * ldo + LANES) = c1[r];                                         \
    }                                                                                               \
  }

PIXELOPS_CONV_MICROKERNEL_ROWS(float, f32x16, 16)
PIXELOPS_CONV_MICROKERNEL_ROWS(double, f64x8, 8)

#define PIXELOPS_CONV_STORE_TILE(T)                                                                      \
  PIXELOPS_CONV_CLONES void store_tile(const T* __restrict tile, int mr, int n, T* __restrict out,       \
                                       int64_t ldo, const T* __restrict bias, bool first, bool relu) {   \
    for (int r = 0; r < mr; ++r) {                                                                       \
      const T* __restrict s = tile + r * Tile<T>::NR;                                                    \
      T* __restrict o = out + r * ldo;                                                                   \
      const T b = bias ? bias[r] : T(0);                                                                 \
      if (first) {                                                                                       \
        for (int j = 0; j < n; ++j) o[j] = s[j] + b;                                                     \
      } else {                                                                                           \
        for (int j = 0; j < n; ++j) o[j] += s[j] + b;                                                    \
      }                                                                                                  \
      if (relu)                                                                                          \
        for (int j = 0; j < n; ++j) o[j] = o[j] < T(0) ? T(0) : o[j];                                    \
    }                                                                                                    \
  }

PIXELOPS_CONV_STORE_TILE(float)
PIXELOPS_CONV_STORE_TILE(double)

// The copies of image rows into padded planes (copy_rows) and into im2col rows (im2col_rows), by copy_run.
#define PIXELOPS_CONV_COPY_ROWS(T, V)                                                                    \
  __attribute__((optimize("no-tree-loop-distribute-patterns")))                                          \
  PIXELOPS_CONV_CLONES void copy_rows(const T* __restrict src, int64_t ld_src, int64_t step, T* __restrict dst, \
                                      int64_t ld_dst, int64_t rows, int64_t n, int64_t lead, int64_t trail) { \
    for (int64_t i = 0; i < rows; ++i) {                                                                 \
      T* __restrict d = dst + i * ld_dst;                                                                \
      for (int64_t j = -lead; j < 0; ++j) d[j] = T(0);                                                   \
      for (int64_t j = n; j < n + trail; ++j) d[j] = T(0);                                               \
      copy_run<T>(d, src + i * ld_src, n, step);                                                      \
    }                                                                                                    \
  }

PIXELOPS_CONV_COPY_ROWS(float, f32x16)
PIXELOPS_CONV_COPY_ROWS(double, f64x8)

// Each k row: zeros, then each run's inside part copied in.
#define PIXELOPS_CONV_IM2COL_ROWS(T, V, LANES)                                                            \
  __attribute__((optimize("no-tree-loop-distribute-patterns")))                                          \
  PIXELOPS_CONV_CLONES void im2col_rows(const ImRow<T>* rows, int64_t nrows, const ImRun* runs, int64_t nruns, \
                                        int64_t IH, int64_t xh, int64_t xw, int64_t sw, int64_t npad,   \
                                        T* __restrict dst, int64_t ld) {                                 \
    for (int64_t k = 0; k < nrows; ++k) {                                                                \
      const ImRow<T>& row = rows[k];                                                                     \
      T* __restrict line = dst + k * ld;                                                                 \
      for (int64_t j = 0; j < npad; j += LANES) *reinterpret_cast<V*>(line + j) = V{};                   \
      for (int64_t u = 0; u < nruns; ++u) {                                                              \
        const ImRun& run = runs[u];                                                                      \
        const int64_t ih = run.ih0 + row.offh;                                                           \
        if (ih < 0 || ih >= IH) continue;                                                                \
        const int64_t l = std::clamp(row.lo, run.a, run.b), n = std::clamp(row.hi, l, run.b) - l;        \
        copy_run<T>(line + run.col + (l - run.a), row.channel + run.image + ih * xh + (l * sw + row.offw) * xw, \
                       n, sw * xw);                                                                      \
      }                                                                                                  \
    }                                                                                                    \
  }

PIXELOPS_CONV_IM2COL_ROWS(float, f32x16, 16)
PIXELOPS_CONV_IM2COL_ROWS(double, f64x8, 8)

}  // namespace pixelops::cpu::conv

namespace pixelops::cpu::conv {

// grad_weight's inner loop: a DR x DC tile of dot products of rows, vectorised along the rows (the pixels),
// row j of B at b + row[j] (any alignment: the stride-1 weight gradient reads padded planes in place at each
// tap's offset; grad_weight_dot passes its im2col rows' starts).
//   out[r][j] = sum_p a[r*lda + p] * b[row[j] + p]      len a multiple of the vector width; rows zero padded
// Both operands keep pixels contiguous (grad_y rows and im2col rows or planes), so neither needs a transposing
// pack.
#define PIXELOPS_CONV_DOT_TILE_ROWS(T, V, LANES)                                                                 \
  PIXELOPS_CONV_CLONES void dot_tile_rows(int64_t len, const T* __restrict a, int64_t lda, const T* __restrict b, \
                                          const int64_t* __restrict row, T* __restrict out) {                    \
    constexpr int DR = DotTile::DR, DC = DotTile::DC;                                                            \
    const T* bj[DC];                                                                                             \
    _Pragma("GCC unroll 6") for (int j = 0; j < DC; ++j) bj[j] = b + row[j];                                     \
    V acc[DR][DC];                                                                                               \
    _Pragma("GCC unroll 4") for (int r = 0; r < DR; ++r)                                                         \
      _Pragma("GCC unroll 6") for (int j = 0; j < DC; ++j) acc[r][j] = V{};                                      \
    for (int64_t p = 0; p < len; p += LANES) {                                                                   \
      V av[DR];                                                                                                  \
      _Pragma("GCC unroll 4") for (int r = 0; r < DR; ++r) av[r] = *reinterpret_cast<const V*>(a + r * lda + p); \
      _Pragma("GCC unroll 6") for (int j = 0; j < DC; ++j) {                                                     \
        const V bv = *reinterpret_cast<const V*>(bj[j] + p);                                                     \
        _Pragma("GCC unroll 4") for (int r = 0; r < DR; ++r) acc[r][j] += av[r] * bv;                            \
      }                                                                                                          \
    }                                                                                                            \
    for (int r = 0; r < DR; ++r)                                                                                 \
      for (int j = 0; j < DC; ++j) out[r * DC + j] = hsum(acc[r][j]);                                            \
  }

PIXELOPS_CONV_DOT_TILE_ROWS(float, f32x16, 16)
PIXELOPS_CONV_DOT_TILE_ROWS(double, f64x8, 8)

// grad_bias's inner loop: the sum of n values in double. A float row goes in blocks of 256 values, summed in
// float across four vectors (16 values a lane, exact to a few units in the last place), then widened once a
// block into the double sums: widening every value cost more instructions than the adds, and a scalar chain
// per lane, as before, ran at 2 values a cycle (grad_bias of mnist's first layer, 16 channels of
// 128 x 28 x 28, took 0.24 ms where torch's sum takes 0.05).
PIXELOPS_CONV_CLONES double row_sum(const float* __restrict r, int64_t n) {
  f64x8 lo{}, hi{};
  auto widen = [&](f32x16 v) {
    lo += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), f64x8);
    hi += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), f64x8);
  };
  int64_t i = 0;
  for (; i + 256 <= n; i += 256) {
    f32x16 acc[4] = {};
    _Pragma("GCC unroll 16") for (int u = 0; u < 16; ++u) acc[u % 4] += *reinterpret_cast<const f32x16*>(r + i + 16 * u);
    widen((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
  f32x16 rest{};  // the whole vectors left, fewer than 16
  for (; i + 16 <= n; i += 16) rest += *reinterpret_cast<const f32x16*>(r + i);
  widen(rest);
  double s = hsum(lo + hi);
  for (; i < n; ++i) s += double(r[i]);
  return s;
}

PIXELOPS_CONV_CLONES double row_sum(const double* __restrict r, int64_t n) {
  f64x8 acc[4] = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _Pragma("GCC unroll 4") for (int u = 0; u < 4; ++u) acc[u] += *reinterpret_cast<const f64x8*>(r + i + 8 * u);
  double s = hsum((acc[0] + acc[1]) + (acc[2] + acc[3]));
  for (; i < n; ++i) s += r[i];
  return s;
}

// The fused ReLU's gate on grad_y: out = y > 0 ? g : 0 (NaN in y gates too, as the CUDA kernels' test does).
#define PIXELOPS_CONV_RELU_GATE(T)                                                                          \
  PIXELOPS_CONV_CLONES void relu_gate(const T* __restrict g, const T* __restrict y, T* __restrict out,     \
                                      int64_t n) {                                                          \
    for (int64_t i = 0; i < n; ++i) out[i] = y[i] > T(0) ? g[i] : T(0);                                     \
  }
PIXELOPS_CONV_RELU_GATE(float)
PIXELOPS_CONV_RELU_GATE(double)

}  // namespace pixelops::cpu::conv
