// conv2d and masked conv2d on the CPU, forward and backward, as blocked GEMMs over the active taps.
//
//   y[n, g*Mg+m, oh, ow] = act(b[g*Mg+m] + sum_{c < Cg, t in taps} w[g*Mg+m, c, t] * x[n, g*Cg+c, oh*sh-ph+kh(t)*dh, ow*sw-pw+kw(t)*dw])
//
// Taps are numbered row-major (t = kh*KW + kw); the active ones are always a contiguous range [t0, t1): all of
// them for conv2d, and for a PixelCNN mask a prefix (every row above the centre, then the centre row up to the
// centre, excluded for mask A). So a masked conv is an ordinary conv over fewer taps: masked taps cost nothing.
//
// Forward: C = W (Mg x Cg*taps, packed once) times the image's im2col matrix, gathered block by block straight
// into the rows of the GEMM's B block (no full im2col buffer); tasks are (group, block of image x pixel columns).
// grad_input: the same forward engine run on grad_y with in/out channels swapped, once per stride phase of the
// input (one phase, the kernel flipped, at stride 1; at stride 2 four, each with the taps that reach its rows
// and columns, writing them in place). Few input channels, or a strided layer the direct path cannot take: a
// GEMM W^T . grad_y whose tiles are added straight into grad_input (col2im). Neither spends anything on the
// zeros a strided conv's gradient would be upsampled with. (Each way pays a copy per element of one operand:
// im2col of grad_y, reused Cg times, or the scatter, reused Mg times; mnist_c2's 32->64 grad_input: 14.1 ms
// flipped, 12.1 ms scattered.)
// grad_weight: dot products of grad_y rows with im2col rows along the pixels, summed over images in
// per-thread accumulators; grad_bias from the grad_y rows they copy (in place of a pass over grad_y of its own,
// which in a training step read grad_y from memory again: mnist's first layer's backward, batch 128, 1.05 ->
// 0.68 ms there). Fused ReLU: grad_y is masked by y > 0 once, into a contiguous copy.
// Direct paths (used where they fit, see direct_fits / grad_weight_direct_fits): the forward (so also
// grad_input's phases, which then serve every conv with >= 8 input channels) and grad_weight skip
// im2col: each image is copied once into zero-padded phase planes (PhaseGrid), where every tap is a fixed
// offset, and the GEMM / dot tiles read those planes in place (microkernel_rows, dot_tile_rows).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "common/conv_args.h"
#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/scratch.h"
#include "cpu/conv2d_gemm.h"
#include "ops.h"

namespace pixelops::cpu {
namespace {

using conv::k_block;
using conv::NC;
using conv::round_up;
using conv::Tile;

// One convolution's shape, as the forward engine sees it (grad_input runs the engine on a transformed one).
struct Geometry {
  int64_t N, IH, IW;          // input batch and spatial size
  int64_t G, Cg, Mg;          // groups, input and output channels per group
  int64_t OH, OW;             // output size
  int64_t KH, KW, t0, t1;     // kernel size and active tap range [t0, t1), row-major
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t xn, xc, xh, xw;     // input strides
  int64_t taps() const { return t1 - t0; }
  int64_t K() const { return Cg * taps(); }
  int64_t P() const { return OH * OW; }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// Fills dst with the im2col block of group g: rows k in [k0, k0+kcb) (k = c*taps + (t - t0)) at dst +
// (k - k0)*ld, columns [c0, c0+nb) of the (image, pixel) space (column = n*P + p), zero padded to whole tiles.
// The block's columns go in runs within one output row (ImRun, the same for every k row), each k row names its
// channel and tap (ImRow), and the cloned im2col_rows copies.
template <class T>
void gather_im2col(const Geometry& q, const T* x, int64_t g, int64_t k0, int64_t kcb, int64_t c0, int64_t nb,
                   T* dst, int64_t ld) {
  const int64_t nt = q.taps(), P = q.P();
  std::vector<conv::ImRun> runs;
  for (int64_t jj = 0; jj < nb;) {
    const int64_t col = c0 + jj, n = col / P, p = col % P, oh = p / q.OW, a = p % q.OW;
    const int64_t b = a + std::min(nb - jj, q.OW - a);
    runs.push_back(conv::ImRun{jj, a, b, oh * q.sh, n * q.xn});
    jj += b - a;
  }
  std::vector<conv::ImRow<T>> rows(static_cast<size_t>(kcb));
  for (int64_t k = k0; k < k0 + kcb; ++k) {
    const int64_t c = k / nt, t = q.t0 + k % nt;
    const int64_t offh = (t / q.KW) * q.dh - q.ph, offw = (t % q.KW) * q.dw - q.pw;
    // output columns ow whose input column ow*sw + offw lies inside [0, IW): [lo, hi)
    const int64_t lo = std::max<int64_t>(0, ceil_div(-offw, q.sw));
    const int64_t hi = std::max(lo, std::min<int64_t>(q.OW, ceil_div(q.IW - offw, q.sw)));
    rows[k - k0] = conv::ImRow<T>{x + (g * q.Cg + c) * q.xc, offh, offw, lo, hi};
  }
  conv::im2col_rows(rows.data(), kcb, runs.data(), int64_t(runs.size()), q.IH, q.xh, q.xw, q.sw,
                    round_up(nb, Tile<T>::NR), dst, ld);
}

// The biases of output rows [m0, m0 + mr) (stride apart) where a tile's last k block goes out, else null: what
// store_tile adds.
template <class T>
inline const T* tile_bias(const T* bias, int64_t stride, int64_t m0, int mr, bool last, T* buf) {
  if (!bias || !last) return nullptr;
  for (int r = 0; r < mr; ++r) buf[r] = bias[(m0 + r) * stride];
  return buf;
}

// The padded input of one image as a strided conv sees it: sh*sw phase planes per channel, plane (pr, pc)
// holding the padded rows pr, pr+sh, ... and columns pc, pc+sw, ... Tap (kh, kw) of output (oh, ow) is
// then plane ((kh*dh) % sh, (kw*dw) % sw) at (oh + kh*dh/sh, ow + kw*dw/sw): a stride-1 read on every plane.
// For stride 1 it is the zero-padded image itself. Each input value is copied once.
// Rows are Wq apart, and Wq may be less than the Ew columns a row's reads reach: then the reads past a row's
// end land on the next row's first columns, which are left padding (zeros) too. So the right padding of one
// row and the left padding of the next share columns: a 28-wide image with padding 1 takes rows of 29, not
// 30, and a GEMM over the grid's columns wastes 1/29 of its work on the columns it drops, not 2/30.
struct PhaseGrid {
  int64_t Hq, Ew, Wq, phases;  // plane rows (OH + the kernel's span), columns read per row, row pitch, planes
  explicit PhaseGrid(const Geometry& q)
      : Hq(q.OH + q.dh * (q.KH - 1) / q.sh), Ew(q.OW + q.dw * (q.KW - 1) / q.sw), Wq(q.OW), phases(q.sh * q.sw) {
    // Wq holds a plane row's input values and the output row, and the reads past it fall on zeros of the
    // next row: Ew - Wq <= the left padding of every plane.
    for (int64_t pc = 0; pc < q.sw; ++pc) {
      const auto [lo, hi] = data_columns(q, pc);
      Wq = std::max({Wq, hi, Ew - lo});
    }
  }
  // Rows [lo, hi) of the planes of row phase pr that hold input values (plane row i shows input row
  // i*sh + pr - ph); the others are padding.
  std::pair<int64_t, int64_t> data_rows(const Geometry& q, int64_t pr) const {
    const int64_t lo = std::min(Hq, std::max<int64_t>(0, ceil_div(q.ph - pr, q.sh)));
    return {lo, std::max(lo, std::min<int64_t>(Hq, ceil_div(q.IH + q.ph - pr, q.sh)))};
  }
  // Rows between images laid one below the other (grad_weight_direct): as with columns, the bottom padding
  // of one image and the top padding of the next may share rows, as many as both have, and no more than
  // the kernel spans (so that an image's output rows, OH of the Hq, never reach the next image's).
  int64_t image_rows(const Geometry& q) const {
    int64_t shared = Hq - q.OH;
    for (int64_t pr = 0; pr < q.sh; ++pr) {
      const auto [lo, hi] = data_rows(q, pr);
      shared = std::min({shared, lo, Hq - hi});
    }
    return Hq - shared;
  }
  // Columns [lo, hi) of the planes of column phase pc that hold input values (plane column j shows input
  // column j*sw + pc - pw); the others, up to Ew, are padding.
  std::pair<int64_t, int64_t> data_columns(const Geometry& q, int64_t pc) const {
    const int64_t lo = std::min(Ew, std::max<int64_t>(0, ceil_div(q.pw - pc, q.sw)));
    return {lo, std::max(lo, std::min<int64_t>(Ew, ceil_div(q.IW + q.pw - pc, q.sw)))};
  }
  // One image's planes per thread stay within 64 MiB (a huge image takes the im2col paths, whose buffers
  // are a few blocks).
  template <class T>
  bool fits_memory(const Geometry& q) const {
    return double(q.Cg) * phases * (Hq + 1) * Wq * sizeof(T) <= double(int64_t(64) << 20);
  }
  // where tap t of channel c starts, with planes `stride` values apart
  int64_t offset(const Geometry& q, int64_t c, int64_t t, int64_t stride) const {
    const int64_t a = (t / q.KW) * q.dh, b = (t % q.KW) * q.dw;
    return ((c * q.sh + a % q.sh) * q.sw + b % q.sw) * stride + (a / q.sh) * Wq + b / q.sw;
  }
  // Zeros from value `from` to the end of each of the Cg channels' planes at dst (planes `stride` apart):
  // the room past the grids that reads may reach, which fill does not write.
  template <class T>
  void clear_past(const Geometry& q, T* dst, int64_t stride, int64_t from) const {
    for (int64_t p = 0; p < q.Cg * phases; ++p) std::fill(dst + p * stride + from, dst + (p + 1) * stride, T(0));
  }
  // Copies input channel plane xc into its phase planes at dst (`stride` apart), Hq x Wq values each,
  // padding included (zeros), so that a plane needs no clearing before.
  template <class T>
  void fill(const Geometry& q, const T* xc, T* dst, int64_t stride) const {
    for (int64_t pr = 0; pr < q.sh; ++pr)
      for (int64_t pc = 0; pc < q.sw; ++pc) {
        T* plane = dst + (pr * q.sw + pc) * stride;
        const auto [i_lo, i_hi] = data_rows(q, pr);
        const auto [j_lo, j_hi] = data_columns(q, pc);
        const bool inside = i_lo < i_hi && j_lo < j_hi;
        std::fill(plane, plane + (inside ? i_lo : Hq) * Wq, T(0));
        if (!inside) continue;
        conv::copy_rows(xc + (i_lo * q.sh + pr - q.ph) * q.xh + (j_lo * q.sw + pc - q.pw) * q.xw, q.sh * q.xh,
                        q.sw * q.xw, plane + i_lo * Wq + j_lo, Wq, i_hi - i_lo, j_hi - j_lo, j_lo, Wq - j_hi);
        std::fill(plane + i_hi * Wq, plane + Hq * Wq, T(0));
      }
  }
};

// Convolutions without im2col: each image's group of channels is copied once into zero-padded phase planes
// (PhaseGrid) of width Wq, and the GEMM runs over the columns j = oh*Wq + ow of that grid. There, tap t of
// channel c at column j is the planes' value at offset(c, t) + j: a fixed offset per GEMM row, so B is read
// in place (microkernel_rows) and nothing is gathered; the Wq - OW columns per row that wrap around the edge
// are computed and dropped. Worth it when that waste is small (direct_fits).
// And only for 64 or more GEMM rows (k): a shallower product does few multiply-adds per output value, so the
// dropped columns and the band's extra pass over the output weigh more than the im2col gather they save,
// which is cheap for so few rows (one thread: 1-channel 7x7 mask A, K = 24: 0.28 ms direct, 0.23 with
// im2col; mnist's 1-channel 3x3: 0.31 / 0.24; at the time of the K >= 64 rule, 16 channels, K = 144:
// 1.35 / 1.49 and 8 channels, K = 72: even).
template <class T>
bool direct_fits(const Geometry& q) {
  const PhaseGrid grid(q);
  return q.K() >= 64 && 3 * q.OW >= 2 * grid.Wq && q.OH * grid.Wq >= 2 * Tile<T>::NR && grid.fits_memory<T>(q);
}

// Where output value (image n, channel c, row oh, column ow) of forward_direct goes: y + n*n_ + c*c_ + oh*h_ +
// ow*w_. A contiguous output by default; grad_input's stride phases write every sw-th column of every sh-th
// row of grad_x (grad_input_by_phases).
struct OutLayout {
  int64_t n_, c_, h_, w_;
  static OutLayout contiguous(const Geometry& q) { return {q.G * q.Mg * q.P(), q.P(), q.OW, 1}; }
};

template <class T>
void forward_direct(const Geometry& q, const T* x, const T* w_packed, const T* bias, int64_t bias_stride, bool relu,
                    T* y, const OutLayout& out) {
  constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR;
  // The grid's columns go in bands of BAND: the microkernel writes each full tile, bias and ReLU applied and
  // later k blocks added, into a band buffer (Mg rows of BAND, in L2), and the band's kept columns then go out
  // one grid row at a time for all channels (copy_rows). So the microkernel's epilogue is the only tile store
  // here; splitting each tile at the grid's row ends into store_tile calls, as before, was as fast.
  constexpr int64_t BAND = 16 * NR;
  const int64_t K = q.K(), M = q.G * q.Mg, nt = q.taps();
  const PhaseGrid grid(q);
  const int64_t Wp = grid.Wq, cols = q.OH * Wp, MgP = round_up(q.Mg, MR);
  // a plane, plus room for the last tile's reads past the grid (their columns are dropped)
  const int64_t S = round_up(grid.Hq * Wp + Wp + NR, 16), CS = grid.phases * S;
  const int64_t group_stride = MgP * K;
  std::vector<int64_t> row(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) row[k] = grid.offset(q, k / nt, q.t0 + k % nt, S);
  const int64_t kc = k_block(K);
  const double work = double(q.N) * cols * M * K;
  parallel_for(q.N * q.G, work < 2e5 ? q.N * q.G : 1, [&](int64_t begin, int64_t end) {
    // planes: each image's fill writes its grids whole; the room past them is cleared once
    T* planes = thread_scratch<T>(0, size_t(q.Cg * CS));
    grid.clear_past(q, planes, S, grid.Hq * Wp);
    T* band = thread_scratch<T>(1, size_t(MgP * BAND));  // written by the microkernel before it is read
    std::vector<T> bias_rows(size_t(MgP), T(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / q.G, g = task % q.G;
      for (int64_t c = 0; c < q.Cg; ++c)
        grid.fill(q, x + n * q.xn + (g * q.Cg + c) * q.xc, planes + c * CS, S);
      if (bias)
        for (int64_t m = 0; m < q.Mg; ++m) bias_rows[m] = bias[(g * q.Mg + m) * bias_stride];
      T* yg = y + n * out.n_ + g * q.Mg * out.c_;
      const T* wg = w_packed + g * group_stride;
      for (int64_t b0 = 0; b0 < cols; b0 += BAND) {
        const int64_t bn = std::min(BAND, cols - b0);
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
          const int64_t kcb = std::min(kc, K - k0);
          const bool first = k0 == 0, last = k0 + kcb == K;
          for (int64_t j0 = b0; j0 < b0 + bn; j0 += NR)
            for (int64_t i = 0; i * MR < q.Mg; ++i)
              conv::microkernel_rows(kcb, wg + conv::packed_a_offset<T>(q.Mg, k0, kcb, i), planes + j0,
                                     row.data() + k0, band + i * MR * BAND + (j0 - b0), BAND,
                                     bias && last ? bias_rows.data() + i * MR : nullptr, relu && last, !first);
        }
        // the band's columns by grid row: those before OW are outputs, the wrapped ones are dropped
        for (int64_t j = b0; j < b0 + bn;) {
          const int64_t oh = j / Wp, ow = j % Wp, run = std::min(b0 + bn - j, Wp - ow);
          const int64_t keep = std::min(run, q.OW - ow);
          T* dst = yg + oh * out.h_ + ow * out.w_;
          if (keep > 0 && out.w_ == 1) {
            conv::copy_rows(band + (j - b0), BAND, 1, dst, out.c_, q.Mg, keep);
          } else if (keep > 0) {
            for (int64_t m = 0; m < q.Mg; ++m)
              for (int64_t i = 0; i < keep; ++i) dst[m * out.c_ + i * out.w_] = band[m * BAND + (j - b0) + i];
          }
          j += run;
        }
      }
    }
  });
}

// y (contiguous N x G*Mg x OH x OW) = act(bias + conv(x)), with the weights packed per group by pack_weights.
template <class T>
void forward_engine(const Geometry& q, const T* x, const T* w_packed, const T* bias, int64_t bias_stride, bool relu,
                    T* y) {
  // GEMM columns are (image, pixel) pairs, so small images (a PixelCNN sampler's windows) still fill the tiles
  if (direct_fits<T>(q)) return forward_direct(q, x, w_packed, bias, bias_stride, relu, y, OutLayout::contiguous(q));
  const int64_t P = q.P(), K = q.K(), M = q.G * q.Mg, cols = q.N * P;
  // Blocks of whole NR-wide tiles, at most NC columns each, as many per group as a multiple of the thread
  // count, sizes differing by one tile at most: every thread gets the same number of tiles (fixed NC-wide
  // blocks left one thread 13 of 25 blocks in a 1-channel 7x7 conv, and the other waiting).
  const int64_t tiles = (cols + Tile<T>::NR - 1) / Tile<T>::NR;
  const int64_t threads = std::max<int64_t>(1, omp_get_max_threads());
  const int64_t blocks = std::min(tiles, round_up((tiles + NC / Tile<T>::NR - 1) / (NC / Tile<T>::NR), threads));
  const int64_t tasks = q.G * blocks;
  const int64_t group_stride = round_up(q.Mg, Tile<T>::MR) * K;
  const double work = double(cols) * M * std::max<int64_t>(K, 1);
  parallel_for(tasks, work < 2e5 ? tasks : 1, [&](int64_t begin, int64_t end) {
    // the gather writes every value of a block that the microkernel reads
    T* b_buf = thread_scratch<T>(0, size_t(k_block(std::max<int64_t>(K, 1)) * conv::b_pitch<T>(NC)));
    T target_bias[Tile<T>::MR];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task % blocks, g = task / blocks;
      const int64_t c0 = blk * tiles / blocks * Tile<T>::NR;
      const int64_t nb = std::min(cols, (blk + 1) * tiles / blocks * Tile<T>::NR) - c0;
      const T* bg = bias ? bias + g * q.Mg * bias_stride : nullptr;
      // out(m, col): where output channel g*Mg+m of column col lives
      auto out = [&](int64_t m, int64_t col) { return y + ((col / P) * M + g * q.Mg + m) * P + col % P; };
      if (K == 0) {  // every tap masked (a 1x1 mask-A conv): the output is the bias alone
        for (int64_t m = 0; m < q.Mg; ++m) {
          const T v = bg ? bg[m * bias_stride] : T(0);
          for (int64_t col = c0; col < c0 + nb; ++col) *out(m, col) = relu && v < T(0) ? T(0) : v;
        }
        continue;
      }
      conv::gemm<T>(
          w_packed + g * group_stride, q.Mg, K, c0, nb, b_buf,
          [&](int64_t k0, int64_t kcb, int64_t n0, int64_t nbb, T* dst, int64_t ld) {
            gather_im2col(q, x, g, k0, kcb, n0, nbb, dst, ld);
          },
          [&](int64_t m0, int64_t pc, int mr, int nr, const T* tile, bool first, bool last) {
            T bias_rows[Tile<T>::MR];
            const T* tb = tile_bias(bg, bias_stride, m0, mr, last, bias_rows);
            for (int j = 0; j < nr;) {  // split the tile's columns where an image ends
              const int64_t col = pc + j;
              const int run = int(std::min<int64_t>(nr - j, P - col % P));
              conv::store_tile(tile + j, mr, run, out(m0, col), P, tb, first, last && relu);
              j += run;
            }
          },
          [&](int64_t m0, int64_t pc) {  // a tile within one image goes straight to the output
            conv::TileTarget<T> to;
            if (pc % P + Tile<T>::NR <= P)
              to = {out(m0, pc), P, tile_bias(bg, bias_stride, m0, Tile<T>::MR, true, target_bias), relu};
            return to;
          });
    }
  });
}

// Packs a weight matrix per group for the GEMM: value (g, row, k) = w[row_off[g*rows + row] + k_off[g*K + k]]
// (element offsets into the weight array; the tables carry the channel/tap arithmetic, so the packing loop
// does no division: it runs on every call, and a small conv is dominated by it).
template <class T>
std::vector<T> pack_weights(const T* w, int64_t G, int64_t rows, int64_t K, const std::vector<int64_t>& row_off,
                            const std::vector<int64_t>& k_off) {
  const int64_t group_stride = round_up(rows, Tile<T>::MR) * K;
  std::vector<T> packed(size_t(std::max<int64_t>(G * group_stride, 1)));
  for (int64_t g = 0; g < G; ++g) {
    const int64_t* ro = row_off.data() + g * rows;
    const int64_t* ko = k_off.data() + g * K;
    conv::pack_a(packed.data() + g * group_stride, rows, K, [&](int64_t r, int64_t k) { return w[ro[r] + ko[k]]; });
  }
  return packed;
}

// Weight offsets of (out channel g*Mg+m, in channel c, tap t): wo(g*Mg+m) + wc(c) + wt(t).
struct WeightOffsets {
  std::vector<int64_t> out, in, tap;
  WeightOffsets(const Array& w, int64_t KW) {
    out.resize(size_t(w.size[0]));
    in.resize(size_t(w.size[1]));
    tap.resize(size_t(w.size[2] * w.size[3]));
    for (size_t i = 0; i < out.size(); ++i) out[i] = int64_t(i) * w.stride[0];
    for (size_t i = 0; i < in.size(); ++i) in[i] = int64_t(i) * w.stride[1];
    for (size_t t = 0; t < tap.size(); ++t) tap[t] = (int64_t(t) / KW) * w.stride[2] + (int64_t(t) % KW) * w.stride[3];
  }
};

// grad_input as stride-1 convolutions of grad_y, one per stride phase of the input. Input rows ih = r + sh*i
// (r < sh) receive from the taps kh with r + ph - kh*dh divisible by sh, each from output row oh = i + e(kh),
// e(kh) = (r + ph - kh*dh) / sh: a stride-1 correlation of grad_y with those taps in reverse order (kh steps
// by sh/gcd(sh, dh) and e by dh/gcd(sh, dh), the sub-kernel's dilation). Columns alike. A stride-1 conv has
// one phase, its whole kernel flipped. Each phase is the forward engine's problem with input and output
// channels swapped, and writes its rows and columns of grad_x in place: no work on the zeros a strided conv's
// gradient would be upsampled with, and no scatter (res_s2's grad_input, one thread: 6.4 ms scattered).
struct PhaseAxis {
  int64_t first = 0, step = 1, taps = 0;  // the phase's taps along this axis: first - u*step, u < taps
  int64_t outputs = 0;                    // its rows (columns) of grad_x: r, r + s, ...
  int64_t start = 0, pad = 0, dil = 1;    // the sub-conv reads grad_y from row `start`, padded by pad, dilated
};

PhaseAxis phase_axis(int64_t r, int64_t K, int64_t s, int64_t p, int64_t d, int64_t I, int64_t O) {
  PhaseAxis a;
  if (r >= I) return a;
  a.outputs = (I - r + s - 1) / s;
  a.step = s / std::gcd(s, d);
  a.dil = d / std::gcd(s, d);
  a.first = -1;
  for (int64_t k = K - 1; k >= 0 && a.first < 0; --k)
    if (((r + p - k * d) % s + s) % s == 0) a.first = k;
  if (a.first < 0) return a;  // no tap reaches these rows: their gradient is zero
  const int64_t e_min = (r + p - a.first * d) / s;
  a.start = std::max<int64_t>(0, e_min);
  a.pad = a.start - e_min;
  if (a.start < O) a.taps = a.first / a.step + 1;  // else every read falls past grad_y
  return a;
}

struct GradInputPhase {
  Geometry t;                       // the stride-1 conv: grad_y (from gy_offset) in, these rows/columns out
  PhaseAxis rows, cols;
  int64_t gy_offset, gx_offset;     // first grad_y value read, first grad_x value written (image 0, channel 0)
  int64_t orig_tap(int64_t tt, int64_t KW) const {  // the user's tap of sub-kernel tap tt
    return (rows.first - (tt / t.KW) * rows.step) * KW + (cols.first - (tt % t.KW) * cols.step);
  }
};

// The phases that write anything (a stride larger than the kernel's span leaves rows no tap reaches).
std::vector<GradInputPhase> grad_input_phases(const Geometry& q) {
  std::vector<GradInputPhase> out;
  const int64_t KK = q.KH * q.KW;
  for (int64_t rh = 0; rh < q.sh; ++rh)
    for (int64_t rw = 0; rw < q.sw; ++rw) {
      GradInputPhase f{};
      f.rows = phase_axis(rh, q.KH, q.sh, q.ph, q.dh, q.IH, q.OH);
      f.cols = phase_axis(rw, q.KW, q.sw, q.pw, q.dw, q.IW, q.OW);
      if (f.rows.taps == 0 || f.cols.taps == 0 || f.rows.outputs == 0 || f.cols.outputs == 0) continue;
      Geometry& t = f.t;
      t.N = q.N; t.IH = q.OH - f.rows.start; t.IW = q.OW - f.cols.start;
      t.G = q.G; t.Cg = q.Mg; t.Mg = q.Cg;
      t.OH = f.rows.outputs; t.OW = f.cols.outputs;
      t.KH = f.rows.taps; t.KW = f.cols.taps;
      // a mask's taps [t0, t1), flipped, are [KK - t1, KK - t0) of a stride-1 conv's one phase
      t.t0 = q.sh == 1 && q.sw == 1 ? KK - q.t1 : 0;
      t.t1 = q.sh == 1 && q.sw == 1 ? KK - q.t0 : t.KH * t.KW;
      t.sh = t.sw = 1;
      t.ph = f.rows.pad; t.pw = f.cols.pad; t.dh = f.rows.dil; t.dw = f.cols.dil;
      t.xn = q.G * q.Mg * q.P(); t.xc = q.P(); t.xh = q.OW; t.xw = 1;
      f.gy_offset = f.rows.start * q.OW + f.cols.start;
      f.gx_offset = rh * q.IW + rw;
      out.push_back(f);
    }
  return out;
}

// Whether grad_input goes by phases (else grad_input_scatter below). Their GEMM rows are the input channels,
// so they need at least a register tile's worth (a first layer's 1 input channel would fill 1/8 of each tile:
// the scatter serves it). Stride 1: taken when the forward engine runs it without im2col (direct_fits); then it
// costs about a forward (mnist 16->32, 14x14: 4.5 ms scattered, 2.7 ms flipped); with im2col, only where the
// gathered rows are reused enough (Mg <= Cg). Strided: every phase direct (their outputs are strided), and no
// mask (a mask's taps split unevenly over the phases).
template <class T>
bool by_phases(const Geometry& q, const std::vector<GradInputPhase>& phases) {
  if (q.Cg < Tile<T>::MR || phases.empty()) return false;
  if (q.sh == 1 && q.sw == 1) return direct_fits<T>(phases[0].t) || q.Mg <= q.Cg;
  if (q.t0 != 0 || q.t1 != q.KH * q.KW) return false;
  return std::all_of(phases.begin(), phases.end(), [](const GradInputPhase& f) { return direct_fits<T>(f.t); });
}

template <class T>
void grad_input_by_phases(const Geometry& q, const std::vector<GradInputPhase>& phases, const T* gy, const Array& w,
                          T* gx) {
  const int64_t HW = q.IH * q.IW;
  int64_t covered = 0;
  for (const auto& f : phases) covered += f.rows.outputs * f.cols.outputs;
  if (covered < HW) std::fill(gx, gx + q.N * q.G * q.Cg * HW, T(0));  // rows or columns no tap reaches
  const WeightOffsets wo(w, q.KW);
  for (const auto& f : phases) {
    // rows: input channels ci; depth k = (co, sub-kernel tap): w[g*Mg+co, ci, the user's tap]
    const Geometry& t = f.t;
    const int64_t K = t.K(), nt = t.taps();
    std::vector<int64_t> row_off(size_t(q.G * q.Cg)), k_off(size_t(q.G * K));
    for (int64_t g = 0; g < q.G; ++g) {
      for (int64_t ci = 0; ci < q.Cg; ++ci) row_off[g * q.Cg + ci] = wo.in[ci];
      for (int64_t k = 0; k < K; ++k)
        k_off[g * K + k] = wo.out[g * q.Mg + k / nt] + wo.tap[f.orig_tap(t.t0 + k % nt, q.KW)];
    }
    const auto packed = pack_weights<T>(w.ptr<T>(), q.G, q.Cg, K, row_off, k_off);
    if (q.sh == 1 && q.sw == 1)
      forward_engine<T>(t, gy + f.gy_offset, packed.data(), nullptr, 0, false, gx);
    else
      forward_direct<T>(t, gy + f.gy_offset, packed.data(), nullptr, 0, false, gx + f.gx_offset,
                        OutLayout{q.G * q.Cg * HW, HW, q.sh * q.IW, q.sw});
  }
}

// grad_input as GEMM + scatter (col2im): for each block of pixels, the tile
//   cols[(c, t), p] = sum_m w[g*Mg+m, c, t] * gy[n, g*Mg+m, p]
// is added straight into grad_x at the input pixel that tap t of output pixel p reads. No work is spent on
// the zeros of a strided conv's upsampled gradient, and the GEMM's rows are channels x taps, so a conv with
// few input channels (a first layer) still fills the register tiles. Tasks are (image, group): blocks of
// one image overlap in grad_x.
template <class T>
void grad_input_scatter(const Geometry& q, const T* gy, const Array& w, T* gx) {
  constexpr int NR = Tile<T>::NR;
  const int64_t M = q.G * q.Mg, P = q.P(), nt = q.taps(), rows = q.K(), C = q.G * q.Cg, HW = q.IH * q.IW;
  const T* wp = w.ptr<T>();
  const int64_t group_stride = round_up(rows, Tile<T>::MR) * q.Mg;
  // rows (c, t), depth m: w[g*Mg+m, c, t]
  const WeightOffsets wo(w, q.KW);
  std::vector<int64_t> row_off(size_t(q.G * rows)), k_off(size_t(q.G * q.Mg));
  for (int64_t g = 0; g < q.G; ++g) {
    for (int64_t row = 0; row < rows; ++row) row_off[g * rows + row] = wo.in[row / nt] + wo.tap[q.t0 + row % nt];
    for (int64_t m = 0; m < q.Mg; ++m) k_off[g * q.Mg + m] = wo.out[g * q.Mg + m];
  }
  const std::vector<T> packed = pack_weights<T>(wp, q.G, rows, q.Mg, row_off, k_off);
  std::vector<int64_t> c_of(static_cast<size_t>(rows)), offh(static_cast<size_t>(rows)), offw(static_cast<size_t>(rows));
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = q.t0 + row % nt;
    c_of[row] = row / nt;
    offh[row] = (t / q.KW) * q.dh - q.ph;
    offw[row] = (t % q.KW) * q.dw - q.pw;
  }
  // Output columns ow whose input column ow*sw + offw lies inside [0, IW), per row: [lo, hi)
  std::vector<int64_t> lo(static_cast<size_t>(rows)), hi(static_cast<size_t>(rows));
  for (int64_t row = 0; row < rows; ++row) {
    lo[row] = std::max<int64_t>(0, ceil_div(-offw[row], q.sw));
    hi[row] = std::max(lo[row], std::min<int64_t>(q.OW, ceil_div(q.IW - offw[row], q.sw)));
  }
  parallel_for(q.N * q.G, 1, [&](int64_t begin, int64_t end) {
    T* b_buf = thread_scratch<T>(0, size_t(k_block(std::max<int64_t>(q.Mg, 1)) * conv::b_pitch<T>(NC)));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / q.G, g = task % q.G;
      T* gxg = gx + (n * C + g * q.Cg) * HW;
      std::fill(gxg, gxg + q.Cg * HW, T(0));
      const T* gyg = gy + (n * M + g * q.Mg) * P;
      for (int64_t p0 = 0; p0 < P; p0 += NC) {
        conv::gemm<T>(
            packed.data() + g * group_stride, rows, q.Mg, p0, std::min(NC, P - p0), b_buf,
            [&](int64_t k0, int64_t kcb, int64_t n0, int64_t nb, T* dst, int64_t ld) {  // grad_y rows
              conv::copy_rows(gyg + k0 * P + n0, P, 1, dst, ld, kcb, nb);
              for (int64_t m = 0; m < kcb; ++m) std::fill(dst + m * ld + nb, dst + m * ld + round_up(nb, NR), T(0));
            },
            [&](int64_t r0, int64_t pc, int mr, int nr, const T* tile, bool, bool) {
              // the tile's columns as runs within one output row, then one (strided) add per run and row
              int64_t run_j[NR + 1], run_oh[NR], run_a[NR];
              int runs = 0;
              for (int64_t j = 0; j < nr;) {
                const int64_t p = pc + j, a = p % q.OW, len = std::min<int64_t>(nr - j, q.OW - a);
                run_j[runs] = j;
                run_oh[runs] = p / q.OW;
                run_a[runs++] = a;
                j += len;
              }
              run_j[runs] = nr;
              const int64_t step = q.sw;
              for (int r = 0; r < mr; ++r) {
                const int64_t row = r0 + r;
                T* gxc = gxg + c_of[row] * HW;
                const T* src = tile + r * NR;
                for (int u = 0; u < runs; ++u) {
                  const int64_t ih = run_oh[u] * q.sh + offh[row];
                  if (ih < 0 || ih >= q.IH) continue;
                  const int64_t a = run_a[u], b = a + (run_j[u + 1] - run_j[u]);
                  const int64_t l = std::clamp(lo[row], a, b), h = std::clamp(hi[row], l, b);
                  T* dst = gxc + ih * q.IW + l * step + offw[row];
                  const T* s0 = src + run_j[u] + (l - a);
                  if (step == 1) {
                    for (int64_t i = 0; i < h - l; ++i) dst[i] += s0[i];
                  } else {
                    for (int64_t i = 0; i < h - l; ++i) dst[i * step] += s0[i];
                  }
                }
              }
            },
            [](int64_t, int64_t) { return conv::TileTarget<T>{}; });  // tiles add into grad_x: always stored
      }
    }
  });
}

// One im2col row, contiguous: the values that channel plane xc shows under a tap (offsets offh, offw) at
// output pixels [p0, p0+len). [lo, hi) are the output columns whose input column is inside the image.
template <class T>
void im2col_row(const Geometry& q, const T* xc, int64_t offh, int64_t offw, int64_t lo, int64_t hi, int64_t p0,
                int64_t len, T* out) {
  const int64_t step = q.sw * q.xw;
  int64_t r = 0;
  while (r < len) {
    const int64_t p = p0 + r, oh = p / q.OW, a = p % q.OW;
    const int64_t b = a + std::min(len - r, q.OW - a);
    const int64_t ih = oh * q.sh + offh;
    T* o = out + r - a;  // o[ow] is pixel (oh, ow)
    if (ih < 0 || ih >= q.IH) {
      std::fill(o + a, o + b, T(0));
    } else {
      const int64_t l = std::clamp(lo, a, b), h = std::clamp(hi, l, b);
      const T* xr = xc + ih * q.xh + offw * q.xw;
      std::fill(o + a, o + l, T(0));
      if (step == 1) {
        std::copy(xr + l, xr + h, o + l);
      } else {
        for (int64_t ow = l; ow < h; ++ow) o[ow] = xr[ow * step];
      }
      std::fill(o + h, o + b, T(0));
    }
    r += b - a;
  }
}

// The weight gradients' tasks are (group, range of images), each thread summing its own (GroupSums): how many
// ranges of images to cut, so that with the groups they give every thread work. The groups come first: a
// grouped or depthwise layer, and per-sample weight gradients (under torch.func.vmap, each example is a group
// of one image), would leave all but one thread idle if only the images were split (the weight gradient of 32
// examples of a 32 -> 64 3x3 layer, 28 x 28, as 32 groups over one image, two threads: 13.6 -> 8.2 ms; with
// GroupSums 7.7, with the row-wise scatter into grad_w 6.0 ms; PyTorch's 5.0-6.1).
int64_t weight_image_ranges(const Geometry& q) {
  const int64_t threads = std::max<int64_t>(1, omp_get_max_threads());
  return std::clamp<int64_t>(ceil_div(threads, q.G), 1, std::max<int64_t>(q.N, 1));
}

// A thread's sums over tasks [begin, end) of `ranges` tasks a group, group-major: the rows of the groups those
// tasks touch, and nothing more (per-sample gradients have a group per example, and sums sized for every
// group, zeroed and added up per thread, cost as much as the products of one example), added into total.
// Where grad_bias is wanted (bias_total), also each channel's sum of grad_y, in double, taken from the grad_y
// rows the weight gradient has just copied (so grad_y is read once for both, not again by a pass of its own).
template <class T>
struct GroupSums {
  int64_t g0, rows, Mg;  // first group, Mg*K values a group, channels a group
  std::vector<T> v;
  std::vector<double> bias;  // Mg a group, where bias_total
  GroupSums(const Geometry& q, int64_t begin, int64_t end, int64_t ranges, const double* bias_total)
      : g0(begin / ranges), rows(q.Mg * q.K()), Mg(q.Mg), v(size_t(((end - 1) / ranges - g0 + 1) * rows), T(0)),
        bias(bias_total ? size_t(((end - 1) / ranges - g0 + 1) * q.Mg) : 0, 0.0) {}
  T* of(int64_t g) { return v.data() + (g - g0) * rows; }
  // adds the sum of a copied grad_y row (zeros past its values are harmless) to channel m of group g
  void add_bias(int64_t g, int64_t m, const T* row, int64_t n) {
    if (!bias.empty()) bias[size_t((g - g0) * Mg + m)] += conv::row_sum(row, n);
  }
  void add_to(T* total, double* bias_total) const {
#pragma omp critical(pixelops_conv2d_grad_w)
    {
      for (size_t i = 0; i < v.size(); ++i) total[g0 * rows + int64_t(i)] += v[i];
      for (size_t i = 0; i < bias.size(); ++i) bias_total[g0 * Mg + int64_t(i)] += bias[i];
    }
  }
};

// grad_weight[g] (Mg x Cg*taps) += grad_y[n, g] (Mg x P) . im2col(x[n, g])^T, summed over images. Both
// operands keep the pixels (the reduction) contiguous, so the tiles are dot products along them (dot_tile_rows):
// grad_y rows are copied as they are, im2col rows are built by row copies; nothing is transposed. Blocks of
// PC columns and KB im2col rows keep both operands in L2. Each thread keeps its own sums.
template <class T>
void grad_weight_dot(const Geometry& q, const T* x, const T* gy, T* total, double* bias_total) {
  constexpr int DR = conv::DotTile::DR, DC = conv::DotTile::DC;
  // Long dot products (PC pixels per call: one horizontal sum per tile per chunk); KB im2col rows of PC
  // pixels make a block of about 384 KiB that stays in L2 while the grad_y rows stream past it.
  constexpr int64_t L = conv::kLanes<T>, PC = 4096;
  const int64_t M = q.G * q.Mg, P = q.P(), K = q.K(), nt = q.taps();
  std::vector<int64_t> c_of(static_cast<size_t>(K)), offh(static_cast<size_t>(K)), offw(static_cast<size_t>(K)),
      lo(static_cast<size_t>(K)), hi(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = q.t0 + k % nt;
    c_of[k] = k / nt;
    offh[k] = (t / q.KW) * q.dh - q.ph;
    offw[k] = (t % q.KW) * q.dw - q.pw;
    lo[k] = std::max<int64_t>(0, ceil_div(-offw[k], q.sw));
    hi[k] = std::max(lo[k], std::min<int64_t>(q.OW, ceil_div(q.IW - offw[k], q.sw)));
  }
  // The reduction runs over (image, pixel) pairs: a task's images are laid end to end, so small images
  // still give long dot products. Tasks are (group, range of images): weight_image_ranges.
  const int64_t LD = round_up(std::min(PC, q.N * P), L), MgP = round_up(q.Mg, DR);
  const int64_t KB = std::clamp<int64_t>((int64_t(384) << 10) / (LD * int64_t(sizeof(T))) / DC * DC, DC, 8 * DC);
  const int64_t ranges = weight_image_ranges(q);
  parallel_for(q.G * ranges, 1, [&](int64_t task_begin, int64_t task_end) {
    GroupSums<T> acc(q, task_begin, task_end, ranges, bias_total);
    std::vector<T> a_buf(size_t(MgP * LD), T(0)), b_buf(size_t(KB * LD), T(0));
    std::vector<int64_t> b_rows(static_cast<size_t>(KB));  // where the im2col rows start in b_buf
    for (int64_t j = 0; j < KB; ++j) b_rows[size_t(j)] = j * LD;
    alignas(64) T out[DR * DC];
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t g = task / ranges, r = task % ranges;
      const int64_t col_end = (r + 1) * q.N / ranges * P;
      T* accg = acc.of(g);
      for (int64_t c0 = r * q.N / ranges * P; c0 < col_end; c0 += PC) {
        const int64_t len = std::min(PC, col_end - c0), lenp = round_up(len, L);
        // calls f(n, p0, count, offset in the chunk) for each image's part of columns [c0, c0+len)
        auto by_image = [&](auto&& f) {
          for (int64_t col = c0; col < c0 + len;) {
            const int64_t n = col / P, p0 = col % P, count = std::min(P - p0, c0 + len - col);
            f(n, p0, count, col - c0);
            col += count;
          }
        };
        for (int64_t m = 0; m < q.Mg; ++m) {
          T* row = a_buf.data() + m * LD;
          by_image([&](int64_t n, int64_t p0, int64_t count, int64_t at) {
            const T* src = gy + (n * M + g * q.Mg + m) * P + p0;
            std::copy(src, src + count, row + at);
          });
          std::fill(row + len, row + lenp, T(0));
          acc.add_bias(g, m, row, len);
        }
        for (int64_t j0 = 0; j0 < K; j0 += KB) {
          const int64_t kb = std::min(KB, K - j0), kbp = round_up(kb, DC);
          for (int64_t jj = 0; jj < kbp; ++jj) {
            T* row = b_buf.data() + jj * LD;
            const int64_t k = j0 + jj;
            if (jj < kb) {
              by_image([&](int64_t n, int64_t p0, int64_t count, int64_t at) {
                const T* xc = x + n * q.xn + (g * q.Cg + c_of[k]) * q.xc;
                im2col_row(q, xc, offh[k], offw[k], lo[k], hi[k], p0, count, row + at);
              });
              std::fill(row + len, row + lenp, T(0));
            } else {
              std::fill(row, row + lenp, T(0));
            }
          }
          for (int64_t m0 = 0; m0 < q.Mg; m0 += DR)
            for (int64_t jj = 0; jj < kb; jj += DC) {
              conv::dot_tile_rows(lenp, a_buf.data() + m0 * LD, LD, b_buf.data(), b_rows.data() + jj, out);
              const int rows = int(std::min<int64_t>(DR, q.Mg - m0)), cols = int(std::min<int64_t>(DC, kb - jj));
              for (int r = 0; r < rows; ++r)
                for (int j = 0; j < cols; ++j) accg[(m0 + r) * K + j0 + jj + j] += out[r * DC + j];
            }
        }
      }
    }
    acc.add_to(total, bias_total);
  });
}

// grad_weight without im2col, as forward_direct does it: a thread's images go into zero-padded phase planes
// (PhaseGrid, Hq x Wq each) laid one below the other per plane, sharing padding rows (image_rows), and grad_y
// into rows on the same grid (zeros at the columns and rows past the output). Then tap t of channel c is the
// planes at a fixed offset, so each grad_w entry is one long dot product (dot_tile_rows) along the grid, over
// several images at once, with nothing gathered. The grid's extra columns/rows cost image_rows*Wq/(OH*OW)
// more multiply-adds (14x14, pad 1: 15*15/196 = 1.15x), against a 9x im2col copy per input value.
// (A NaN or inf input value that the conv never reads can still reach grad_w here, times a zero.)
template <class T>
bool grad_weight_direct_fits(const Geometry& q) {
  const PhaseGrid grid(q);
  return q.K() > 0 && 2 * grid.image_rows(q) * grid.Wq <= 3 * q.P() && grid.fits_memory<T>(q);
}

template <class T>
void grad_weight_direct(const Geometry& q, const T* x, const T* gy, T* total, double* bias_total) {
  constexpr int DR = conv::DotTile::DR, DC = conv::DotTile::DC;
  constexpr int64_t L = conv::kLanes<T>;
  const int64_t M = q.G * q.Mg, P = q.P(), K = q.K(), nt = q.taps();
  const PhaseGrid grid(q);
  // images one below the other, IP apart (image_rows: they share padding rows), each HWp values of grid
  const int64_t Wp = grid.Wq, HWp = grid.Hq * Wp, IP = grid.image_rows(q) * Wp;
  // Images per chunk: planes and grad_y rows of one chunk together about 4 MiB, at least one image. Longer
  // dot products beat L2 residency here: each dot_tile_rows call ends in 24 horizontal sums (32x28x28 -> 64,
  // batch 32, one thread: 12.6 ms at 512 KiB chunks, 10.8 at 1 MiB, 10.4 at 2 MiB; on two threads 5.5 at
  // 2 MiB, 4.9 at 4 MiB; 64x56x56 -> 128, stride 2, batch 4, two threads: 3.7 / 3.5, where 2 MiB held only one
  // image a chunk).
  const int64_t per_image = (q.Cg * grid.phases + q.Mg) * IP * int64_t(sizeof(T));
  // Tasks are (group, chunk of images) (weight_image_ranges). The chunks: a multiple of the ranges the threads
  // need beside the groups, of equal size (128 images in chunks of at most 42 on 2 threads: 4 chunks of 32,
  // not 42+42 against 42+2).
  const int64_t most = std::clamp<int64_t>((int64_t(4) << 20) / std::max<int64_t>(per_image, 1), 1, q.N);
  const int64_t chunk = ceil_div(q.N, round_up(ceil_div(q.N, most), weight_image_ranges(q)));
  const int64_t LD = round_up((chunk - 1) * IP + HWp, L);
  // a plane, plus room for the reads of the largest tap offset past the last grid (times zeros)
  const int64_t S = round_up(LD + HWp + L, L), CS = grid.phases * S;
  const int64_t MgP = round_up(q.Mg, DR), KP = round_up(K, DC);
  std::vector<int64_t> row(static_cast<size_t>(KP), 0);  // padded past K with offset 0: results dropped
  for (int64_t k = 0; k < K; ++k) row[k] = grid.offset(q, k / nt, q.t0 + k % nt, S);
  const int64_t chunks = (q.N + chunk - 1) / chunk;
  parallel_for(q.G * chunks, 1, [&](int64_t task_begin, int64_t task_end) {
    GroupSums<T> acc(q, task_begin, task_end, chunks, bias_total);
    // Everything read below is written first. planes: fill writes each image's grids whole (neighbours
    // overlap on shared padding rows, zeros in both), and the rest of each plane, past the chunk's last grid,
    // is cleared where it may hold an earlier chunk's images. grad_y rows: each image's IP values whole, zeros
    // past the last image; rows past Mg (a partial DR tile) are read, but their results are dropped.
    T* planes = thread_scratch<T>(0, size_t(q.Cg * CS));
    T* rows = thread_scratch<T>(1, size_t(MgP * LD));
    int64_t clear_from = -1;  // where the planes are known zero to their end
    int64_t rows_past = -1;   // the image count whose rows' tails are zero
    alignas(64) T out[DR * DC];
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t g = task / chunks, ch = task % chunks;
      const int64_t n0 = ch * chunk, nimg = std::min(chunk, q.N - n0);
      const int64_t grid_end = (nimg - 1) * IP + HWp, len = round_up(grid_end, L);
      if (grid_end != clear_from) {
        grid.clear_past(q, planes, S, grid_end);
        clear_from = grid_end;
      }
      if (nimg != rows_past) {  // the rows past the chunk's images (each task writes its images' part)
        for (int64_t m = 0; m < q.Mg; ++m) std::fill(rows + m * LD + nimg * IP, rows + m * LD + len, T(0));
        rows_past = nimg;
      }
      for (int64_t i = 0; i < nimg; ++i)
        for (int64_t c = 0; c < q.Cg; ++c)
          grid.fill(q, x + (n0 + i) * q.xn + (g * q.Cg + c) * q.xc, planes + c * CS + i * IP, S);
      // a channel's row for all the chunk's images, then its sum while it is in cache (one row_sum a channel:
      // one a copied image row cost about as much as a pass over grad_y of its own)
      for (int64_t m = 0; m < q.Mg; ++m) {
        for (int64_t i = 0; i < nimg; ++i) {
          T* o = rows + m * LD + i * IP;
          conv::copy_rows(gy + ((n0 + i) * M + g * q.Mg + m) * P, q.OW, 1, o, Wp, q.OH, q.OW, 0, Wp - q.OW);
          std::fill(o + q.OH * Wp, o + IP, T(0));
        }
        acc.add_bias(g, m, rows + m * LD, nimg * IP);
      }
      T* accg = acc.of(g);
      for (int64_t m0 = 0; m0 < q.Mg; m0 += DR)
        for (int64_t k0 = 0; k0 < K; k0 += DC) {
          conv::dot_tile_rows(len, rows + m0 * LD, LD, planes, row.data() + k0, out);
          const int nr = int(std::min<int64_t>(DR, q.Mg - m0)), nc = int(std::min<int64_t>(DC, K - k0));
          for (int r = 0; r < nr; ++r)
            for (int j = 0; j < nc; ++j) accg[(m0 + r) * K + k0 + j] += out[r * DC + j];
        }
    }
    acc.add_to(total, bias_total);
  });
}

// The user's convolution, from the arrays and arguments of the entry points.
Geometry geometry_of(const Array& x, const Array& w, const Array& y, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int64_t dh, int64_t dw, int64_t groups, int64_t ntaps) {
  check_conv_groups(x, w, groups);
  Geometry q{};
  q.N = x.size[0];
  q.IH = x.size[2];
  q.IW = x.size[3];
  q.G = groups;
  q.Cg = x.size[1] / groups;
  q.Mg = w.size[0] / groups;
  q.OH = y.size[2];
  q.OW = y.size[3];
  q.KH = w.size[2];
  q.KW = w.size[3];
  q.t0 = 0;
  q.t1 = ntaps;
  q.sh = sh; q.sw = sw; q.ph = ph; q.pw = pw; q.dh = dh; q.dw = dw;
  q.xn = x.stride[0]; q.xc = x.stride[1]; q.xh = x.stride[2]; q.xw = x.stride[3];
  return q;
}

void check_taps(const Array& w, int64_t ntaps, const char* what) {
  if (ntaps < 0 || ntaps > w.size[2] * w.size[3])
    throw ValueError(std::string(what) + ": tap count out of range for the kernel size");
}

}  // namespace

void conv2d_forward(const Array& x, const Array& w, const Array& bias, const Array& y, int64_t sh, int64_t sw,
                    int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups, int64_t ntaps, bool relu, bool,
                    uintptr_t) {
  check_taps(w, ntaps, "conv2d");
  expect_contiguous(y, "conv2d: output");
  if (y.numel() == 0) return;
  dispatch_cpu_float(x.dtype, "conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Geometry q = geometry_of(x, w, y, sh, sw, ph, pw, dh, dw, groups, ntaps);
    const int64_t nt = q.taps(), K = q.K();
    const WeightOffsets wo(w, q.KW);
    std::vector<int64_t> row_off(size_t(q.G * q.Mg)), k_off(size_t(q.G * K));
    for (int64_t g = 0; g < q.G; ++g) {
      for (int64_t m = 0; m < q.Mg; ++m) row_off[g * q.Mg + m] = wo.out[g * q.Mg + m];
      for (int64_t k = 0; k < K; ++k) k_off[g * K + k] = wo.in[k / nt] + wo.tap[q.t0 + k % nt];
    }
    const auto packed = pack_weights<T>(w.ptr<T>(), q.G, q.Mg, K, row_off, k_off);
    forward_engine<T>(q, x.ptr<T>(), packed.data(), bias.data ? bias.ptr<T>() : nullptr,
                      bias.data ? bias.stride[0] : 0, relu, y.ptr<T>());
  });
}

void conv2d_backward(const Array& x, const Array& w, const Array& y, const Array& grad_y, const Array& grad_x,
                     const Array& grad_w, const Array& grad_b, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int64_t dh, int64_t dw, int64_t groups, int64_t ntaps, bool relu, bool, uintptr_t) {
  check_taps(w, ntaps, "conv2d_backward");
  dispatch_cpu_float(x.dtype, "conv2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Geometry q = geometry_of(x, w, grad_y, sh, sw, ph, pw, dh, dw, groups, ntaps);
    const int64_t M = q.G * q.Mg, P = q.P(), nt = q.taps(), KK = q.KH * q.KW;

    // grad_y, masked by the fused ReLU, as a contiguous N x M x P array (used as is when already so), in
    // this thread's scratch slot 2 (the kernels below take 0 and 1 on every thread, this one included).
    T* gy_copy = nullptr;
    const T* gy = grad_y.ptr<T>();
    if (relu || !grad_y.contiguous()) {
      gy_copy = thread_scratch<T>(2, size_t(q.N * M * P));
      const T* yp = relu ? y.ptr<T>() : nullptr;
      const T* g = grad_y.ptr<T>();
      // whether each (image, channel) plane of grad_y (and y) is one contiguous run of P values
      auto flat = [&](const Array& a) { return a.stride[3] == 1 && a.stride[2] == q.OW; };
      const bool rows_flat = flat(grad_y) && (!relu || flat(y));
      parallel_for(q.N * M, std::max<int64_t>(1, 32768 / std::max<int64_t>(P, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const int64_t n = r / M, m = r % M;
          const T* gr = g + n * grad_y.stride[0] + m * grad_y.stride[1];
          const T* yr = yp ? yp + n * y.stride[0] + m * y.stride[1] : nullptr;
          T* out = gy_copy + r * P;
          if (rows_flat) {  // the common case, vectorised: a strided loop ran at a value every few cycles
            if (yr) conv::relu_gate(gr, yr, out, P);
            else std::copy(gr, gr + P, out);
            continue;
          }
          for (int64_t oh = 0; oh < q.OH; ++oh)
            for (int64_t ow = 0; ow < q.OW; ++ow) {
              T v = gr[oh * grad_y.stride[2] + ow * grad_y.stride[3]];
              if (yr && !(yr[oh * y.stride[2] + ow * y.stride[3]] > T(0))) v = T(0);
              out[oh * q.OW + ow] = v;
            }
        }
      });
      gy = gy_copy;
    }

    // grad_bias: in double (row_sum), from the grad_y rows the weight gradient copies where it runs (GroupSums),
    // else by a pass of its own, a channel a task (channels split over the threads wherever they hold enough
    // values: a first layer has 16 channels of a few hundred thousand each).
    const int64_t K = q.K();
    const bool want_weight = grad_w.data && grad_w.numel() > 0;
    const bool bias_with_weight = grad_b.data && want_weight && K > 0 && P > 0 && q.N > 0;
    std::vector<double> bias_total(size_t(bias_with_weight ? M : 0), 0.0);
    T* gb = grad_b.data ? grad_b.ptr<T>() : nullptr;
    if (gb && !bias_with_weight) {
      parallel_for(M, std::max<int64_t>(1, 32768 / std::max<int64_t>(q.N * P, 1)), [&](int64_t b, int64_t e) {
        for (int64_t m = b; m < e; ++m) {
          double s = 0;
          for (int64_t n = 0; n < q.N; ++n) s += conv::row_sum(gy + (n * M + m) * P, P);
          gb[m * grad_b.stride[0]] = T(s);
        }
      });
    }

    if (grad_x.data && grad_x.numel() > 0) {
      const std::vector<GradInputPhase> phases = grad_input_phases(q);
      if (by_phases<T>(q, phases))
        grad_input_by_phases<T>(q, phases, gy, w, grad_x.ptr<T>());
      else
        grad_input_scatter<T>(q, gy, w, grad_x.ptr<T>());
    }

    if (want_weight) {
      // grad_w[g] (Mg x Cg*taps) = sum over images of grad_y[n, g] (Mg x P) times im2col(x[n, g])^T (P x Cg*taps).
      std::vector<T> total(size_t(M * std::max<int64_t>(K, 1)), T(0));
      if (K > 0 && P > 0 && q.N > 0) {
        double* bt = bias_with_weight ? bias_total.data() : nullptr;
        if (grad_weight_direct_fits<T>(q))
          grad_weight_direct<T>(q, x.ptr<T>(), gy, total.data(), bt);
        else
          grad_weight_dot<T>(q, x.ptr<T>(), gy, total.data(), bt);
      }
      if (bias_with_weight)
        for (int64_t m = 0; m < M; ++m) gb[m * grad_b.stride[0]] = T(bias_total[size_t(m)]);
      // Scatter into grad_w's (M, Cg, KH, KW) layout; masked taps get exact zeros. (Row by row, without a
      // division per value: per-sample gradients make grad_w as large as B layers', 590K values for 32
      // examples of a 32 -> 64 3x3 layer, where the per-value index arithmetic took 1 ms.)
      T* gw = grad_w.ptr<T>();
      parallel_for(M, std::max<int64_t>(1, 65536 / std::max<int64_t>(q.Cg * KK, 1)), [&](int64_t b, int64_t e) {
        for (int64_t m = b; m < e; ++m)
          for (int64_t c = 0; c < q.Cg; ++c) {
            const T* src = total.data() + m * K + c * nt;  // active tap t at src[t - t0]
            T* dst = gw + m * grad_w.stride[0] + c * grad_w.stride[1];
            for (int64_t kh = 0, t = 0; kh < q.KH; ++kh)
              for (int64_t kw = 0; kw < q.KW; ++kw, ++t)
                dst[kh * grad_w.stride[2] + kw * grad_w.stride[3]] = t >= q.t0 && t < q.t1 ? src[t - q.t0] : T(0);
          }
      });
    }
  });
}

}  // namespace pixelops::cpu
