// Tile shapes, convolution geometry and the plain (SIMT) inner product of the conv2d implicit GEMMs.
// Nothing here needs a CUDA header beyond the __device__ keywords, so the index math can be checked on
// the host against naive loops (tests/cuda_host).
#pragma once
#include <cstdint>

namespace pixelops::cuda::conv {

// A block of 256 threads computes a BM x BN tile of C = A * B, walking K in steps of kBK with both operand
// tiles staged in shared memory. BN is 64 (narrow problems: few pixels, or grad_weight's Cg*taps) or 128 (the
// common case: twice the work per staged A element, and 4 x 8 outputs per thread, enough multiply-adds per
// shared-memory load to keep the FMA pipes busy in SIMT). BM is 64, or 32 with BN = 128 for problems of at
// most 32 rows (grad_input of a layer with 32 input channels, the taps GEMM of conv2d_taps.cuh), which would
// leave half of a 64-row tile or more empty. WeightTile (64 x 96) is for the float32 SIMT weight gradient
// alone, whose columns are channels x taps: a 3x3 layer's 32 x 9 = 288 fill three 96-wide tiles exactly, where
// three 128-wide ones leave a quarter of their columns idle (and 64 x 9 = 576 fill six, against four and a
// half). Each thread reads its six columns as a run of four and a run of two; only loaders whose slots keep
// one row or column a thread (Fetch::kKFast, grad_weight's) can stage it (Slot).
constexpr int kBK = 16;
constexpr int kGemmThreads = 256;

template <int BN_, int BM_ = 64>
struct Tile {
  static_assert((BM_ == 64 && (BN_ == 64 || BN_ == 96 || BN_ == 128)) || (BM_ == 32 && BN_ == 128), "tile shape");
  static constexpr int BM = BM_, BN = BN_;
  static constexpr int TM = BM / 16, TN = BN / 16;  // outputs per thread: 16 x 16 threads
  // Thread (tx, ty) = (tid % 16, tid / 16) owns rows ty*TM + i and columns (j / 4)*64 + tx*4 + j % 4: runs of
  // four columns (and of TM rows), so the SIMT product reads its operands from shared memory as vectors. With
  // 96 columns, its last two are 64 + tx*2 + (j - 4): a run of two in the tile's last 32.
  __device__ static int row(int tid, int i) { return (tid / 16) * TM + i; }
  __device__ static int col(int tid, int j) {
    if (BN == 96 && j >= 4) return 64 + (tid % 16) * 2 + (j - 4);
    return (j / 4) * 64 + (tid % 16) * 4 + (j % 4);
  }
};
using NarrowTile = Tile<64>;
using WideTile = Tile<128>;
using ShortTile = Tile<128, 32>;
using WeightTile = Tile<96>;

template <class T> struct AccOf { using type = float; };  // float accumulation for float, half, bfloat16
template <> struct AccOf<double> { using type = double; };

// Which element of a kBK x E shared tile [k][m or n] a thread loads in its r-th slot (E = BM for A, BN for
// B; E * kBK / 256 slots); a problem picks one way for A (kFetchA) and one for B (kFetchB).
// MnFast: consecutive threads take consecutive rows/columns (coalesced when M or N is the memory-fast
// axis: pixels of x or grad_y), and a thread keeps one row/column for all its slots. KFast: consecutive
// threads take consecutive k (coalesced when K is pixels, as in grad_weight), and a thread keeps one k.
enum class Fetch { kMnFast, kKFast };
template <Fetch F, int E> struct Slot;
// kPerSlot: how far the varying index (k for MnFast, the row/column for KFast) moves from one slot to the next.
template <int E> struct Slot<Fetch::kMnFast, E> {
  static_assert(kGemmThreads % E == 0, "a tile width that divides the threads (not WeightTile's 96)");
  static constexpr int kSlots = E * kBK / kGemmThreads, kPerSlot = kGemmThreads / E;
  __device__ static int k(int tid, int r) { return tid / E + (kGemmThreads / E) * r; }
  __device__ static int mn(int tid, int) { return tid % E; }
};
template <int E> struct Slot<Fetch::kKFast, E> {
  static constexpr int kSlots = E * kBK / kGemmThreads, kPerSlot = kGemmThreads / kBK;
  __device__ static int k(int tid, int) { return tid % kBK; }
  __device__ static int mn(int tid, int r) { return tid / kBK + (kGemmThreads / kBK) * r; }
};

// Division by a number fixed at launch, as a multiply-high, an add and a shift instead of the ~20 instructions
// of an integer division (Granlund and Montgomery, "Division by invariant integers using multiplication",
// 1994): for 0 <= n < 2^31 and 1 <= d < 2^31, n / d == (mulhi(n, mul) + n) >> shift, where
// shift = ceil(log2 d) and mul = floor(2^32 (2^shift - d) / d) + 1. Larger 64-bit n fall back to a division.
// The loaders decode channels, taps and pixels from k and n at every K step; this keeps that cheap.
struct FastDiv {
  uint32_t d = 1, mul = 1, shift = 0;
  FastDiv() = default;
  // A divisor below 1 (an empty size, never divided by) is taken as 1.
  explicit FastDiv(int64_t divisor) : d(divisor < 1 ? 1u : uint32_t(divisor)) {
    while ((uint64_t(1) << shift) < d) ++shift;
    mul = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __device__ __host__ __forceinline__ uint32_t div32(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t hi = __umulhi(n, mul);
#else
    const uint32_t hi = uint32_t((uint64_t(n) * mul) >> 32);
#endif
    return (hi + n) >> shift;
  }
  // n / d for 0 <= n (64-bit n in the fast form while it fits in 31 bits)
  __device__ __host__ __forceinline__ int64_t operator()(int64_t n) const {
    return (n >> 31) == 0 ? int64_t(div32(uint32_t(n))) : n / int64_t(d);
  }
  __device__ __host__ __forceinline__ int operator()(int n) const { return int(div32(uint32_t(n))); }
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
  // Divisors of the index math (set_divisors): k and n decode into channel, tap and pixel with these.
  FastDiv by_Cg, by_Mg, by_KW, by_ntaps, by_sh, by_sw, by_OW, by_opix, by_W, by_ipix;  // opix = OH*OW, ipix = H*W
};

// Fills q's divisors from its sizes (after they are all set).
inline void set_divisors(Geometry& q) {
  q.by_Cg = FastDiv(q.Cg); q.by_Mg = FastDiv(q.Mg); q.by_KW = FastDiv(q.KW); q.by_ntaps = FastDiv(q.ntaps);
  q.by_sh = FastDiv(q.sh); q.by_sw = FastDiv(q.sw); q.by_OW = FastDiv(q.OW); q.by_opix = FastDiv(q.OH * q.OW);
  q.by_W = FastDiv(q.W); q.by_ipix = FastDiv(q.H * q.W);
}

// grad_input of a strided convolution, split by phase: the input pixels whose (ih + ph) % sh == rh and
// (iw + pw) % sw == rw are reached only by the taps with kh*dh % sh == rh and kw*dw % sw == rw. One GEMM per
// phase visits just those (pixel, tap) pairs, where a single GEMM over all pixels and taps would find
// (sh*sw - 1) of every sh*sw pairs empty. Stride 1 is the one phase of all pixels and all taps.
// The phase's pixels: rows ih = h0 + i*sh (i < PH), columns iw = w0 + j*sw (j < PW). Its taps, in row-major
// order: kh = kh0 + a*jh (jh < nkh), kw = kw0 + b*jw (jw < nkw); the first ntaps of them are active (the
// conv's active taps are a row-major prefix, and so are the phase's).
struct Phase {
  int h0 = 0, w0 = 0;
  int64_t PH = 0, PW = 0;
  int kh0 = 0, kw0 = 0, a = 1, b = 1, nkh = 0, nkw = 0, ntaps = 0;
  FastDiv by_nkw, by_ntaps, by_PW, by_pix;  // pix = PH*PW
};

inline int gcd_int(int x, int y) { return y == 0 ? x : gcd_int(y, x % y); }

// The phase (rh, rw) of q's grad_input (0 <= rh < sh, 0 <= rw < sw).
inline Phase plan_phase(const Geometry& q, int rh, int rw) {
  Phase f;
  auto axis = [](int r, int stride, int pad, int64_t size, int dil, int k, int& first, int64_t& count, int& k0,
                 int& step, int& nk) {
    first = ((r - pad) % stride + stride) % stride;
    count = first < size ? (size - first + stride - 1) / stride : 0;
    step = stride / gcd_int(stride, dil);
    k0 = -1;
    for (int kk = 0; kk < step && kk < k; ++kk)
      if ((int64_t(kk) * dil) % stride == r) { k0 = kk; break; }
    nk = k0 < 0 ? 0 : (k - 1 - k0) / step + 1;
    if (k0 < 0) k0 = 0;
  };
  axis(rh, q.sh, q.ph, q.H, q.dh, q.KH, f.h0, f.PH, f.kh0, f.a, f.nkh);
  axis(rw, q.sw, q.pw, q.W, q.dw, q.KW, f.w0, f.PW, f.kw0, f.b, f.nkw);
  // active taps of the phase: a prefix of its row-major order
  for (int jh = 0; jh < f.nkh; ++jh) {
    const int kh = f.kh0 + jh * f.a, left = q.ntaps - kh * q.KW;  // active taps from row kh on
    if (left <= 0) break;
    for (int jw = 0; jw < f.nkw && f.kw0 + jw * f.b < left; ++jw) ++f.ntaps;
  }
  f.by_nkw = FastDiv(f.nkw); f.by_ntaps = FastDiv(f.ntaps); f.by_PW = FastDiv(f.PW); f.by_pix = FastDiv(f.PH * f.PW);
  return f;
}

// Whether planes of `len` values of T, each one contiguous run (image and channel strides s[0], s[1]; data at
// p), split into whole 16-byte pieces from 16-byte-aligned starts: then they can be read 16 bytes at a time,
// and no piece straddles two planes.
template <class T>
inline bool planes_in_16_bytes(int64_t len, const int64_t* s, const T* p) {
  constexpr int64_t V = 16 / int64_t(sizeof(T));
  return len % V == 0 && s[0] % V == 0 && s[1] % V == 0 && (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// grad_bias beside the weight gradients that stage grad_y by cp.async (the halo's and the pointwise GEMM's;
// grad_y planes contiguous): each block, once its product is done (its registers free again: the TF32 halo
// kernel sits at its 128-register bound, and sums kept beside its accumulators spilled), adds up a share of
// grad_y's rows over its split's pixels, read again from global memory (mostly from L2: the block has just
// streamed them). The `blocks` blocks of one row tile and split (channel chunks, tap groups or column tiles)
// share the tile's kRows rows out so that none does much more than the others (their grids run in one wave,
// where the slowest block sets the time): a power-of-two number of them, `sharers`, take kRows / sharers rows
// each, their threads `tpr` to a row (at most a warp: a row's threads are lanes of one warp, which add their
// sums by shuffles). Block j takes rows [row0, row0 + rows); none where rows is 0.
struct RowSumPlan {
  int row0 = 0, rows = 0, tpr = 1;
};
__host__ __device__ inline RowSumPlan row_sum_plan(int j, int blocks, int krows, int threads) {
  int sharers = 1;
  while (2 * sharers <= blocks && 2 * sharers <= krows) sharers *= 2;
  RowSumPlan r;
  if (j >= sharers) return r;
  r.rows = krows / sharers;
  r.row0 = j * r.rows;
  r.tpr = threads / r.rows < 32 ? threads / r.rows : 32;
  return r;
}
// Thread tid's part of its block's share: row row0 + tid / tpr (of the tile) over the pixels n = n0 + tid % tpr
// + tpr * i < n1 (all images', flattened), value(row, n) each, in four alternating sums; 0 past rows x tpr.
template <class A, class Value>
__host__ __device__ __forceinline__ A row_sum_part(const RowSumPlan& r, int64_t n0, int64_t n1, int tid, Value&& value) {
  if (tid >= r.rows * r.tpr) return A(0);
  const int row = r.row0 + tid / r.tpr;
  A s[4] = {A(0), A(0), A(0), A(0)};
  int64_t n = n0 + tid % r.tpr;
  for (; n + 3 * r.tpr < n1; n += 4 * r.tpr)
#pragma unroll
    for (int u = 0; u < 4; ++u) s[u] += value(row, n + u * r.tpr);
  for (; n < n1; n += r.tpr) s[0] += value(row, n);
  return (s[0] + s[1]) + (s[2] + s[3]);
}
#ifdef __CUDACC__
// Adds the tpr lanes' parts of each row (the same tree on every run) and hands (row of the tile, sum) to store,
// from the row's first lane. Every lane of the warp takes part.
template <class A, class Store>
__device__ __forceinline__ void store_row_sums(const RowSumPlan& r, A v, int tid, Store&& store) {
  for (int lanes = r.tpr / 2; lanes > 0; lanes /= 2) v += __shfl_xor_sync(0xffffffffu, v, lanes);
  if (tid < r.rows * r.tpr && tid % r.tpr == 0) store(r.row0 + tid / r.tpr, v);
}
#endif
// row_sum_part of float32 grad_y with contiguous planes (gs[2] = OW, gs[3] = 1): the tile's rows are group g's
// rows m0 + row (zero from Mg on), over the pixels [n0, n1) of all images.
__host__ __device__ __forceinline__ float grad_y_row_part(const Geometry& q, const float* gy, const RowSumPlan& r,
                                                          int g, int64_t m0, int64_t n0, int64_t n1, int tid) {
  const int64_t opix = q.OH * q.OW;
  return row_sum_part<float>(r, n0, n1, tid, [&](int row, int64_t n) {
    if (m0 + row >= q.Mg) return 0.f;
    const int64_t img = q.by_opix(n);
    return gy[img * q.gs[0] + (g * q.Mg + m0 + row) * q.gs[1] + (n - img * opix)];
  });
}

// Four consecutive values of a shared row (16-byte aligned: rows are padded to a multiple of 4 elements).
template <class A>
__device__ __forceinline__ void load4(const A* p, A* out) {
  for (int i = 0; i < 4; ++i) out[i] = p[i];
}
// Two consecutive values of a shared row (8-byte aligned: WeightTile's run of two).
template <class A>
__device__ __forceinline__ void load2(const A* p, A* out) {
  out[0] = p[0]; out[1] = p[1];
}
#ifdef __CUDACC__
template <>
__device__ __forceinline__ void load2<float>(const float* p, float* out) {
  const float2 v = *reinterpret_cast<const float2*>(p);
  out[0] = v.x; out[1] = v.y;
}
template <>
__device__ __forceinline__ void load4<float>(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}
template <>
__device__ __forceinline__ void load4<double>(const double* p, double* out) {
  const double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
  out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
}
#endif

// The fp32/fp64 register-tiled product of the staged tiles: As[k][m], Bs[k][n].
template <class A, class TileT>
struct SimtMma {
  using Stage = A;  // element type of the shared tiles
  using Tl = TileT;
  static constexpr int kLdA = Tl::BM + 4, kLdB = Tl::BN + 4;  // padded rows, still 16-byte multiples
  static __device__ __forceinline__ A stage(A v) { return v; }
  A acc[Tl::TM][Tl::TN];
  __device__ SimtMma() {
    for (int i = 0; i < Tl::TM; ++i)
      for (int j = 0; j < Tl::TN; ++j) acc[i][j] = A(0);
  }
  __device__ void step(const A (*As)[kLdA], const A (*Bs)[kLdB], int tid) {
    const int r0 = Tl::row(tid, 0), c0 = Tl::col(tid, 0);
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      A a[Tl::TM], b[Tl::TN];
      if constexpr (Tl::TM == 4) load4(&As[kk][r0], a);
      else
#pragma unroll
        for (int i = 0; i < Tl::TM; ++i) a[i] = As[kk][r0 + i];
#pragma unroll
      for (int j = 0; j + 4 <= Tl::TN; j += 4) load4(&Bs[kk][c0 + (j / 4) * 64], b + j);
      if constexpr (Tl::TN % 4 == 2) load2(&Bs[kk][Tl::col(tid, Tl::TN - 2)], b + Tl::TN - 2);  // WeightTile
#pragma unroll
      for (int i = 0; i < Tl::TM; ++i)
#pragma unroll
        for (int j = 0; j < Tl::TN; ++j) acc[i][j] += a[i] * b[j];
    }
  }
  // Hands each owned element (row, column within the tile, value) to f; no shared memory needed.
  static constexpr size_t kScratch = 0;
  template <class F> __device__ void finish(int tid, unsigned char*, F&& f) {
#pragma unroll
    for (int i = 0; i < Tl::TM; ++i)
#pragma unroll
      for (int j = 0; j < Tl::TN; ++j) f(Tl::row(tid, i), Tl::col(tid, j), acc[i][j]);
  }
};

}  // namespace pixelops::cuda::conv
