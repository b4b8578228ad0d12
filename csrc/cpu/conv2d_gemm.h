// The register-tiled microkernel and the blocked GEMM driver behind every CPU convolution pass.
//
//   C[MR x NR tile] = sum_k A[k][0..MR) * B[row[k] .. row[k]+NR)     (A packed in MR-wide panels, k-major;
//                                                                      B rows anywhere, through a table)
//
// The packers and gatherers (the weights, an im2col block, a gradient) are the callers' templates; only the
// microkernel and a few copies are compiled per instruction set (target_clones cannot clone templates), so
// they take plain pointers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pixelops::cpu::conv {

// Clones for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and the baseline; the loader picks one per CPU.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PIXELOPS_NO_CLONES)
#define PIXELOPS_CONV_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PIXELOPS_CONV_CLONES
#endif

// Tile shape per type: MR rows (output channels) by NR columns (pixels, two 64-byte vectors).
template <class T> struct Tile;
template <> struct Tile<float> { static constexpr int MR = 8, NR = 32; };
template <> struct Tile<double> { static constexpr int MR = 8, NR = 16; };

// C tile = A panel (kc x MR) times B rows (row k: the NR values at b + row[k], any alignment), written to out
// (rows ldo apart, any alignment): out = (accumulate ? out : 0) + tile + bias[r] on row r where bias is not
// null, then ReLU where relu. The epilogue rides on the tile while it is in registers, so full tiles go
// straight to their destination; the GEMM driver sends partial ones through a buffer and store_tile.
void microkernel_rows(int64_t kc, const float* a, const float* b, const int64_t* row, float* out, int64_t ldo,
                      const float* bias, bool relu, bool accumulate = false);
void microkernel_rows(int64_t kc, const double* a, const double* b, const int64_t* row, double* out, int64_t ldo,
                      const double* bias, bool relu, bool accumulate = false);

// Columns [0, n) of a tile's first mr rows (tile: rows NR apart) into out + r*ldo: out = (first ? 0 : out) +
// tile + bias[r] (no bias where bias is null), then ReLU where relu (a NaN stays NaN, as in torch). Out of line
// and cloned like the microkernels, so that it runs in the CPU's widest vectors: written inline in the conv
// loops it compiled to SSE and took as long as the multiply-adds of a small-K layer (mnist's first: 25% of the
// forward's samples against the microkernel's 28%).
void store_tile(const float* tile, int mr, int n, float* out, int64_t ldo, const float* bias, bool first, bool relu);
void store_tile(const double* tile, int mr, int n, double* out, int64_t ldo, const double* bias, bool first,
                bool relu);

// rows x n values from src (rows ld_src apart, values step apart) into dst (rows ld_dst apart), each row
// with lead zeros before it (at dst[-lead, 0)) and trail zeros after it: the copies of images into padded
// planes, cloned like the kernels so that they move whole vectors (compiled for the baseline, they moved 16
// bytes at a time and took 4% of a 64-channel forward).
void copy_rows(const float* src, int64_t ld_src, int64_t step, float* dst, int64_t ld_dst, int64_t rows, int64_t n,
               int64_t lead = 0, int64_t trail = 0);
void copy_rows(const double* src, int64_t ld_src, int64_t step, double* dst, int64_t ld_dst, int64_t rows,
               int64_t n, int64_t lead = 0, int64_t trail = 0);

// One k row of an im2col block: the values one input channel shows under one tap at a block's columns.
// A block's columns split into runs, each a stretch of one output row of one image (the same runs serve
// every k row); a row's tap decides which input row each run reads and which of its columns fall inside the
// image ([lo, hi) of the output columns), the rest being zero padding.
struct ImRun { int64_t col, a, b, ih0, image; };  // columns [col, col + b-a): output columns a..b of the output
                                                    // row whose first tap row is input row ih0, image at +image
template <class T> struct ImRow { const T* channel; int64_t offh, offw, lo, hi; };
// Writes rows[i] at dst + i*ld, npad values each (zeros where no input value falls). IH: input rows; xh, xw:
// input strides of a row and a column; sw: column stride of the conv.
void im2col_rows(const ImRow<float>* rows, int64_t nrows, const ImRun* runs, int64_t nruns, int64_t IH, int64_t xh,
                 int64_t xw, int64_t sw, int64_t npad, float* dst, int64_t ld);
void im2col_rows(const ImRow<double>* rows, int64_t nrows, const ImRun* runs, int64_t nruns, int64_t IH, int64_t xh,
                 int64_t xw, int64_t sw, int64_t npad, double* dst, int64_t ld);

// Dot-product tile for grad_weight (conv2d_microkernel.cpp): DR rows of A against DC rows of B.
struct DotTile { static constexpr int DR = 4, DC = 6; };
template <class T> constexpr int64_t kLanes = 64 / sizeof(T);  // vector width of dot_tile_rows' rows
// Row j of B at b + row[j] (any alignment).
void dot_tile_rows(int64_t len, const float* a, int64_t lda, const float* b, const int64_t* row, float* out);
void dot_tile_rows(int64_t len, const double* a, int64_t lda, const double* b, const int64_t* row, double* out);
// out[i] = y[i] > 0 ? g[i] : 0 for i < n (the fused ReLU's gate on grad_y).
void relu_gate(const float* g, const float* y, float* out, int64_t n);
void relu_gate(const double* g, const double* y, double* out, int64_t n);
// The sum of r[0, n), accumulated in double (grad_bias).
double row_sum(const float* r, int64_t n);
double row_sum(const double* r, int64_t n);

// Most depth of one k block: deep enough that a conv with 64 input channels and a 3x3 kernel (K = 576) is
// one block. Every extra block is another pass of tile stores that read back and add what the last one
// wrote, and that costs more than keeping the B rows of a tile in L1 saves (2-core EPYC, one thread, forward:
// 64->64 3x3 56x56 9.70 ms at 160, 9.06 at 640; a 3x3 mask-B 64->64 2.85 / 2.76; 1x1 256->64 6.41 / 5.31).
// Pixels per column block: a B block (KC x NC) stays in L2.
constexpr int64_t KC = 640;
constexpr int64_t NC = 256;

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The depth of the k blocks of a K-deep product: K split evenly into as few blocks as KC allows (the last
// block may be shorter). Even blocks, because a short remainder block (K = 144 = 128 + 16 for a 16-channel
// 3x3 conv) costs a whole extra pass of tile stores and B packing for a few k steps.
inline int64_t k_block(int64_t K) {
  const int64_t blocks = std::max<int64_t>(1, (K + KC - 1) / KC);
  return std::max<int64_t>(1, (K + blocks - 1) / blocks);
}

// Packed A: for each k block [k0, k0+kcb): for each MR-row panel: kcb rows of MR values (zero padded).
// Offset of (k block starting at k0 of depth kcb, panel i) in a packing of M rows.
template <class T>
inline int64_t packed_a_offset(int64_t M, int64_t k0, int64_t kcb, int64_t panel) {
  return round_up(M, Tile<T>::MR) * k0 + panel * Tile<T>::MR * kcb;
}

// Packs A(m, k) for m < M, k < K from an accessor into the layout above.
template <class T, class Get>
void pack_a(T* dst, int64_t M, int64_t K, Get&& get) {
  constexpr int MR = Tile<T>::MR;
  const int64_t kc = k_block(K);
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t kcb = std::min(kc, K - k0);
    for (int64_t i = 0; i * MR < M; ++i) {
      T* p = dst + packed_a_offset<T>(M, k0, kcb, i);
      for (int64_t k = 0; k < kcb; ++k)
        for (int r = 0; r < MR; ++r) {
          int64_t m = i * MR + r;
          p[k * MR + r] = m < M ? get(m, k0 + k) : T(0);
        }
    }
  }
}

// Where a full tile may be written straight by the microkernel (see microkernel_rows): out null means nowhere.
template <class T> struct TileTarget {
  T* out = nullptr;
  int64_t ldo = 0;
  const T* bias = nullptr;
  bool relu = false;
};

// Row pitch of a B block of nb columns: whole tiles, plus one vector so that the rows of a block of 256
// columns (1 KiB of floats) do not all fall in the same L1 sets.
template <class T>
inline int64_t b_pitch(int64_t nb) { return round_up(nb, Tile<T>::NR) + 64 / int64_t(sizeof(T)); }

// C (M x N) = A (packed, M x K) * B, k in blocks of k_block(K), where fill_b(k0, kcb, n0, nb, dst, ld) writes
// the B block [k0, k0+kcb) x [n0, n0+nb) as kcb rows ld apart (zero padded to whole tiles; dst holds
// k_block(K) * b_pitch(NC) values), and store(m0, n0, mr, nr, tile, first, last) consumes an MR x NR tile
// (first/last: first/last k block), unless target(m0, n0) names where a full tile of a one-block product goes
// (saving the trip through the buffer). Row panels outside, column tiles inside: the output is written 8 rows
// at a time along their length. Column tiles outside wrote all M rows a step at a time, 64 streams of stores
// for a 64-channel layer, and then a 1-channel 7x7 forward took 0.13 or 0.20 ms by where malloc had put its
// output (0.20 whenever that memory was not in cache); now 0.13 either way.
template <class T, class FillB, class Store, class Target>
void gemm(const T* a_packed, int64_t M, int64_t K, int64_t n0, int64_t nb, T* b_buf, FillB&& fill_b, Store&& store,
          Target&& target) {
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR;
  alignas(64) T tile[MR * NR];
  const int64_t kc = k_block(K), ld = b_pitch<T>(nb);
  std::vector<int64_t> row(static_cast<size_t>(kc));
  for (int64_t k = 0; k < kc; ++k) row[k] = k * ld;
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t kcb = std::min(kc, K - k0);
    const bool one_block = kcb == K;
    fill_b(k0, kcb, n0, nb, b_buf, ld);
    for (int64_t i = 0; i * MR < M; ++i) {
      const T* ap = a_packed + packed_a_offset<T>(M, k0, kcb, i);
      const int mr = int(std::min<int64_t>(MR, M - i * MR));
      for (int64_t j = 0; j * NR < nb; ++j) {
        const T* bj = b_buf + j * NR;
        const int nr = int(std::min<int64_t>(NR, nb - j * NR));
        if (one_block && mr == MR && nr == NR) {
          const TileTarget<T> to = target(i * MR, n0 + j * NR);
          if (to.out) {
            microkernel_rows(kcb, ap, bj, row.data(), to.out, to.ldo, to.bias, to.relu);
            continue;
          }
        }
        microkernel_rows(kcb, ap, bj, row.data(), tile, NR, static_cast<const T*>(nullptr), false);
        store(i * MR, n0 + j * NR, mr, nr, tile, k0 == 0, k0 + kcb == K);
      }
    }
  }
}

}  // namespace pixelops::cpu::conv
