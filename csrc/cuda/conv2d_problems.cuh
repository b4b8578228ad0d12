// The three convolution GEMMs, as loaders of operand tiles and epilogues for gemm_kernel (conv2d_gemm.cuh).
// Per group g (blockIdx.z):
//   forward      C[m][n] = y[img, g*Mg+m, oh, ow]      M = Mg, N = images*OH*OW, K = Cg*ntaps
//                A[m][k] = w[g*Mg+m, c, tap]          B[k][n] = x[img, g*Cg+c, oh*sh-ph+kh*dh, ow*sw-pw+kw*dw]
//   grad_input   C[c][n] = grad_x[img, g*Cg+c, ih, iw]  M = Cg, N = images*H*W, K = Mg*ntaps
//                A[c][k] = w[g*Mg+m, c, tap]          B[k][n] = grad_y[img, g*Mg+m, (ih+ph-kh*dh)/sh, (iw+pw-kw*dw)/sw]
//                (a gather: zero where the division is not exact or falls outside the output)
//   grad_weight  C[m][n] = grad_w[g*Mg+m, c, tap]       M = Mg, N = Cg*ntaps, K = images*OH*OW (split-K)
//                A[m][k] = grad_y[img, g*Mg+m, oh, ow]  B[k][n] = x[img, g*Cg+c, ...] as in forward
// with k = c*ntaps + tap (forward), m*ntaps + tap (grad_input), and tap -> (kh, kw) = (tap / KW, tap % KW).
// grad_y is masked by the fused ReLU (y > 0) wherever it is read. Every tile edge is bounds-checked: loads
// past M, N or the K range give 0, and the epilogue is only called inside the problem.
#pragma once
#include "cuda/conv2d_tile.cuh"
#include "cuda/cuda_utils.cuh"

namespace pixelops::cuda::conv {

template <class T> __device__ __forceinline__ T store_as(float v) { return from_float<T>(v); }
template <class T> __device__ __forceinline__ T store_as(double v) { return T(v); }

// Where one operand element of a GEMM tile comes from: v, or zero where v is null (outside the image, the
// problem or the K range); for grad_y under a fused ReLU, relu_y is the forward output that gates it (zero
// unless *relu_y > 0). A loader names the sources of its slots and a mover (ToRegisters below; the host
// emulation has its own) moves them.
template <class T>
struct Src {
  const T* v = nullptr;
  const T* relu_y = nullptr;
};
template <class A, class T>
__device__ __forceinline__ A read(const Src<T>& s) {
  if (!s.v || (s.relu_y && !(A(to_float(*s.relu_y)) > A(0)))) return A(0);
  return A(to_float(*s.v));
}
// A mover takes slot r of A or B as a Src (a(r, s), b(r, s)), or, where the loader knows more, as a source that
// is there and ungated (copy_a, copy_b) or as a zero (zero_a, zero_b): tests a loader can make once for all
// its slots stay out of the per-slot work. The register mover puts slot r in ra[r] and rb[r].
template <class A, class T>
struct ToRegisters {
  A* ra;
  A* rb;
  __device__ __forceinline__ void a(int r, const Src<T>& s) { ra[r] = read<A>(s); }
  __device__ __forceinline__ void b(int r, const Src<T>& s) { rb[r] = read<A>(s); }
  __device__ __forceinline__ void copy_a(int r, const T* v) { ra[r] = A(to_float(*v)); }
  __device__ __forceinline__ void copy_b(int r, const T* v) { rb[r] = A(to_float(*v)); }
  __device__ __forceinline__ void zero_a(int r) { ra[r] = A(0); }
  __device__ __forceinline__ void zero_b(int r) { rb[r] = A(0); }
};

// A run of slots: slots [0, count) of operand A (kA) or B from base + r * step, the others zero. Where base
// would be null, count is 0 (base is then never read).
template <bool kA, class SlotT, class Put, class T>
__device__ __forceinline__ void put_run(Put& put, const T* base, int64_t step, int count) {
#pragma unroll
  for (int r = 0; r < SlotT::kSlots; ++r) {
    if constexpr (kA) {
      if (r < count) put.copy_a(r, base + r * step);
      else put.zero_a(r);
    } else {
      if (r < count) put.copy_b(r, base + r * step);
      else put.zero_b(r);
    }
  }
}

// grad_y at (channel offset, oh, ow) of an image, gated by the fused ReLU's output where there is one.
template <class T>
__device__ __forceinline__ Src<T> grad_src(const Geometry& q, const T* gy_img, const T* y_img, int64_t m, int64_t oh,
                                           int64_t ow) {
  return {gy_img + m * q.gs[1] + oh * q.gs[2] + ow * q.gs[3],
          y_img ? y_img + m * q.ys[1] + oh * q.ys[2] + ow * q.ys[3] : nullptr};
}
template <class T>
__device__ __forceinline__ typename AccOf<T>::type masked_grad(const Geometry& q, const T* gy_img, const T* y_img,
                                                               int64_t m, int64_t oh, int64_t ow) {
  return read<typename AccOf<T>::type>(grad_src(q, gy_img, y_img, m, oh, ow));
}

// grad_input's gather: the output pixel (oh, ow) that a tap at offset (kh*dh, kw*dw) reads for the input pixel
// at padded position (vh0, vw0) = (ih + ph, iw + pw); false where the stride leaves none or it falls outside.
__device__ __forceinline__ bool reached_output(const Geometry& q, int64_t vh0, int64_t vw0, int kh, int kw,
                                               int64_t& oh, int64_t& ow) {
  const int64_t vh = vh0 - int64_t(kh) * q.dh, vw = vw0 - int64_t(kw) * q.dw;
  if (vh < 0 || vw < 0) return false;
  oh = q.by_sh(vh);
  ow = q.by_sw(vw);
  return oh * q.sh == vh && ow * q.sw == vw && oh < q.OH && ow < q.OW;
}

// Fields every problem has: the per-group GEMM sizes and how K is split among blockIdx.z.
struct GemmShape {
  int64_t M = 0, N = 0, K = 0;
  int groups = 1, splits = 1;
  int64_t kchunk = 0;  // K range of one split, a multiple of kBK (or all of K when splits == 1)
  // Whether the problem has A's row sums over K added after its product (gemm_kernel; GradWeightGemm's
  // grad_bias): the others compile without them.
  static constexpr bool kRowSums = false;
};

// TapMajor (when Cg % kBK == 0, as in most layers past the first): k = tap*Cg + c instead of c*ntaps + tap,
// so a K step never straddles two taps: the tap, its bounds test and its base address are worked out once per
// step, and each slot adds only a channel stride, instead of three divisions and a bounds test per element.
template <class T, class TileT, bool TapMajor = false>
struct ForwardGemm : GemmShape {
  using Elem = T;
  using Acc = typename AccOf<T>::type;
  using Tl = TileT;
  // Weights K-fast (a weight row is contiguous in (c, tap)), pixels N-fast (contiguous in ow).
  static constexpr Fetch kFetchA = Fetch::kKFast, kFetchB = Fetch::kMnFast;
  using SA = Slot<kFetchA, Tl::BM>;
  using SB = Slot<kFetchB, Tl::BN>;
  Geometry q;
  const T* x;
  const T* w;
  const T* b;  // null: no bias
  T* y;        // contiguous
  bool relu;

  struct Loader {
    const T* w_first = nullptr;  // weight row of A slot 0; slot r's is r * SA::kPerSlot rows on
    int a_rows = 0;              // the first a_rows slots are inside M
    const T* x_img = nullptr;    // x[img, g*Cg] of the thread's column, null past N
    int64_t ih0 = 0, iw0 = 0;    // input corner of output pixel (oh, ow)
    __device__ Loader(const ForwardGemm& p, int g, int64_t m0, int64_t n0, int tid) {
      const Geometry& q = p.q;
      w_first = p.w + (g * q.Mg + m0 + SA::mn(tid, 0)) * q.ws[0];
#pragma unroll
      for (int r = 0; r < SA::kSlots; ++r) a_rows += m0 + SA::mn(tid, r) < p.M;
      const int64_t n = n0 + SB::mn(tid, 0);
      if (n < p.N) {
        const int64_t pix = q.OH * q.OW, img = n / pix, r = n - img * pix, oh = r / q.OW, ow = r - oh * q.OW;
        x_img = p.x + img * q.xs[0] + g * q.Cg * q.xs[1];
        ih0 = oh * q.sh - q.ph;
        iw0 = ow * q.sw - q.pw;
      }
    }
    // Names the sources of this thread's slots of the K step at k0 (put.a(r, src), put.b(r, src)).
    template <class Put>
    __device__ void fetch(const ForwardGemm& p, int64_t k0, int64_t kend, int tid, Put& put) const {
      if constexpr (TapMajor) fetch_tap_major(p, k0, kend, tid, put);
      else fetch_generic(p, k0, kend, tid, put);
    }
    // K = Cg * ntaps is a multiple of kBK here, so every k of a step is inside K: no per-slot K test. Slot r
    // reads the address of slot 0 plus r strides, which keeps the per-slot work to an add and the copy.
    template <class Put>
    __device__ void fetch_tap_major(const ForwardGemm& p, int64_t k0, int64_t, int tid, Put& put) const {
      const Geometry& q = p.q;
      const int kb = int(k0), cg = int(q.Cg), t = q.by_Cg(kb), c0 = kb - t * cg, kh = q.by_KW(t), kw = t - kh * q.KW;
      put_run<true, SA>(put, w_first + (c0 + SA::k(tid, 0)) * q.ws[1] + kh * q.ws[2] + kw * q.ws[3],
                        SA::kPerSlot * q.ws[0], a_rows);
      const int64_t ih = ih0 + int64_t(kh) * q.dh, iw = iw0 + int64_t(kw) * q.dw;
      const bool in = x_img && ih >= 0 && ih < q.H && iw >= 0 && iw < q.W;
      put_run<false, SB>(put, in ? x_img + (c0 + SB::k(tid, 0)) * q.xs[1] + ih * q.xs[2] + iw * q.xs[3] : x_img,
                         SB::kPerSlot * q.xs[1], in ? SB::kSlots : 0);
    }
    template <class Put>
    __device__ void fetch_generic(const ForwardGemm& p, int64_t k0, int64_t kend, int tid, Put& put) const {
      const Geometry& q = p.q;
      // A: one k (channel, tap) for the four rows. K < 2^31 (checked on the host): 32-bit division.
      {
        const int k = int(k0) + SA::k(tid, 0);
        const int c = q.by_ntaps(k), t = k - c * q.ntaps, kh = q.by_KW(t), kw = t - kh * q.KW;
        put_run<true, SA>(put, w_first + c * q.ws[1] + kh * q.ws[2] + kw * q.ws[3], SA::kPerSlot * q.ws[0],
                          k < kend ? a_rows : 0);
      }
#pragma unroll
      for (int r = 0; r < SB::kSlots; ++r) {
        const T* src = nullptr;
        const int k = int(k0) + SB::k(tid, r);
        if (k < kend && x_img) {
          const int c = q.by_ntaps(k), t = k - c * q.ntaps, kh = q.by_KW(t), kw = t - kh * q.KW;
          const int64_t ih = ih0 + int64_t(kh) * q.dh, iw = iw0 + int64_t(kw) * q.dw;
          if (ih >= 0 && ih < q.H && iw >= 0 && iw < q.W) src = x_img + c * q.xs[1] + ih * q.xs[2] + iw * q.xs[3];
        }
        put.b(r, Src<T>{src});
      }
    }
  };

  // Fused epilogue: bias, then ReLU (NaN passes through, as in torch.relu).
  __device__ void store(int g, int, int64_t m, int64_t n, Acc v) const {
    const int64_t mc = g * q.Mg + m, pix = q.OH * q.OW, img = q.by_opix(n);
    if (b) v += Acc(to_float(b[mc * q.bs]));
    if (relu && v < Acc(0)) v = Acc(0);
    y[(img * q.M + mc) * pix + (n - img * pix)] = store_as<T>(v);
  }
};

// TapMajor (when Mg % kBK == 0): k = tap*Mg + m, one tap per K step, as in ForwardGemm.
template <class T, class TileT, bool TapMajor = false>
struct GradInputGemm : GemmShape {
  using Elem = T;
  using Acc = typename AccOf<T>::type;
  using Tl = TileT;
  static constexpr Fetch kFetchA = Fetch::kMnFast, kFetchB = Fetch::kMnFast;
  using SA = Slot<kFetchA, Tl::BM>;
  using SB = Slot<kFetchB, Tl::BN>;
  Geometry q;
  Phase f;      // the input pixels and taps of this GEMM (all of them for stride 1)
  const T* w;
  const T* y;   // null: no ReLU mask
  const T* gy;
  T* gx;        // contiguous

  // The phase's j-th tap.
  __device__ __forceinline__ void tap(int j, int& kh, int& kw) const {
    const int jh = f.by_nkw(j);
    kh = f.kh0 + jh * f.a;
    kw = f.kw0 + (j - jh * f.nkw) * f.b;
  }
  // k = m * (phase taps) + j (the generic K order) as (m, kh, kw).
  __device__ __forceinline__ void decode(int k, int& m, int& kh, int& kw) const {
    m = f.by_ntaps(k);
    tap(k - m * f.ntaps, kh, kw);
  }

  struct Loader {
    const T* w_col = nullptr;   // w[g*Mg, c], null past M (= Cg)
    const T* gy_img = nullptr;  // grad_y[img, g*Mg], null past N
    const T* y_img = nullptr;   // y[img, g*Mg] when masked
    int64_t vh0 = 0, vw0 = 0;   // ih + ph, iw + pw
    __device__ Loader(const GradInputGemm& p, int g, int64_t m0, int64_t n0, int tid) {
      const Geometry& q = p.q;
      const int64_t c = m0 + SA::mn(tid, 0), n = n0 + SB::mn(tid, 0);
      if (c < p.M) w_col = p.w + g * q.Mg * q.ws[0] + c * q.ws[1];
      if (n < p.N) {
        const int64_t pix = p.f.PH * p.f.PW, img = n / pix, r = n - img * pix, i = r / p.f.PW, j = r - i * p.f.PW;
        const int64_t ih = p.f.h0 + i * q.sh, iw = p.f.w0 + j * q.sw;
        gy_img = p.gy + img * q.gs[0] + g * q.Mg * q.gs[1];
        if (p.y) y_img = p.y + img * q.ys[0] + g * q.Mg * q.ys[1];
        vh0 = ih + q.ph;
        vw0 = iw + q.pw;
      }
    }
    template <class Put>
    __device__ void fetch(const GradInputGemm& p, int64_t k0, int64_t kend, int tid, Put& put) const {
      if constexpr (TapMajor) fetch_tap_major(p, k0, kend, tid, put);
      else fetch_generic(p, k0, kend, tid, put);
    }
    // As ForwardGemm's: K = Mg * (phase taps) is a multiple of kBK, and slot r steps from slot 0's address.
    template <class Put>
    __device__ void fetch_tap_major(const GradInputGemm& p, int64_t k0, int64_t, int tid, Put& put) const {
      const Geometry& q = p.q;
      const int kb = int(k0), mg = int(q.Mg), t = q.by_Mg(kb), mb = kb - t * mg;
      int kh, kw;
      p.tap(t, kh, kw);
      put_run<true, SA>(put, w_col ? w_col + (mb + SA::k(tid, 0)) * q.ws[0] + kh * q.ws[2] + kw * q.ws[3] : w_col,
                        SA::kPerSlot * q.ws[0], w_col ? SA::kSlots : 0);
      // the output pixel this tap reads for the thread's input pixel, if any
      int64_t oh = 0, ow = 0;
      if (gy_img && reached_output(q, vh0, vw0, kh, kw, oh, ow)) {
        const Src<T> b0 = grad_src(q, gy_img, y_img, mb + SB::k(tid, 0), oh, ow);
        const int64_t gstep = SB::kPerSlot * q.gs[1], ystep = SB::kPerSlot * q.ys[1];
        if (b0.relu_y) {
#pragma unroll
          for (int r = 0; r < SB::kSlots; ++r) put.b(r, Src<T>{b0.v + r * gstep, b0.relu_y + r * ystep});
        } else {
          put_run<false, SB>(put, b0.v, gstep, SB::kSlots);
        }
      } else {
        put_run<false, SB>(put, gy_img, 0, 0);
      }
    }
    template <class Put>
    __device__ void fetch_generic(const GradInputGemm& p, int64_t k0, int64_t kend, int tid, Put& put) const {
      const Geometry& q = p.q;
      // K < 2^31 (checked on the host): 32-bit divisions
#pragma unroll
      for (int r = 0; r < SA::kSlots; ++r) {
        const T* src = nullptr;
        const int k = int(k0) + SA::k(tid, r);
        if (k < kend && w_col) {
          int m, kh, kw;
          p.decode(k, m, kh, kw);
          src = w_col + m * q.ws[0] + kh * q.ws[2] + kw * q.ws[3];
        }
        put.a(r, Src<T>{src});
      }
#pragma unroll
      for (int r = 0; r < SB::kSlots; ++r) {
        Src<T> src;
        const int k = int(k0) + SB::k(tid, r);
        if (k < kend && gy_img) {
          int m, kh, kw;
          p.decode(k, m, kh, kw);
          int64_t oh, ow;
          if (reached_output(q, vh0, vw0, kh, kw, oh, ow)) src = grad_src(q, gy_img, y_img, m, oh, ow);
        }
        put.b(r, src);
      }
    }
  };

  __device__ void store(int g, int, int64_t c, int64_t n, Acc v) const {
    const int64_t pix = f.PH * f.PW, img = f.by_pix(n), r = n - img * pix;
    // Stride 1: the one phase is the whole image and r its pixel, as before phases existed (with the row
    // division below run regardless, stride-1 grad_input GEMMs measured 7-45% slower on an H200).
    int64_t off = r;
    if (q.sh != 1 || q.sw != 1) {
      const int64_t i = f.by_PW(r), j = r - i * f.PW;
      off = (f.h0 + i * q.sh) * q.W + f.w0 + j * q.sw;
    }
    gx[(img * q.C + g * q.Cg + c) * q.H * q.W + off] = store_as<T>(v);
  }
};

// reduce_grad_weight's block: up to kReduceWarps warps (no more than there are splits), a split of every
// warps-th each.
constexpr int kReduceWarps = 8;
// The reduction's outputs: grad_weight's M*Cg*KH*KW values in its own order (masked taps included), then, where
// the workspace rows hold grad_bias's column (the last of ncol), its M values.
__host__ __device__ inline int64_t weight_outputs(const Geometry& q, bool bias) {
  return q.M * q.Cg * int64_t(q.KH) * q.KW + (bias ? q.M : 0);
}
// The sum of output i's partials from splits first, first + step, ... < splits, added in that order: zero for a
// masked tap. ws: [split][M][ncol], ncol = Cg*ntaps (+ 1 with bias).
template <class A>
__host__ __device__ inline A weight_partials_sum(const Geometry& q, const A* ws, int splits, bool bias, int64_t i,
                                                 int first, int step) {
  const int64_t KK = int64_t(q.KH) * q.KW, gw_total = q.M * q.Cg * KK, ncol = q.Cg * q.ntaps + (bias ? 1 : 0);
  int64_t m, col;
  if (i >= gw_total) {
    m = i - gw_total;
    col = ncol - 1;
  } else {
    m = i / (q.Cg * KK);
    const int64_t rem = i - m * (q.Cg * KK), c = rem / KK, t = rem - c * KK;
    if (t >= q.ntaps) return A(0);
    col = c * q.ntaps + t;
  }
  A s = A(0);
  for (int sp = first; sp < splits; sp += step) s += ws[(sp * q.M + m) * ncol + col];
  return s;
}
// Each split writes its partial sums to ws[split][g*Mg+m][c*ntaps+tap]; reduce_grad_weight adds the splits
// in a fixed order (deterministic) and writes grad_w, zeros on the masked taps. With bias, each workspace row
// has one more column, N: the split's sum of the row's (masked) grad_y, which is grad_bias's partial sum (A's
// row sums over the split's K, which gemm_kernel adds after the product, grad_at a value).
template <class T, class TileT>
struct GradWeightGemm : GemmShape {
  using Elem = T;
  using Acc = typename AccOf<T>::type;
  using Tl = TileT;
  static constexpr Fetch kFetchA = Fetch::kKFast, kFetchB = Fetch::kKFast;
  static constexpr bool kRowSums = true;
  using SA = Slot<kFetchA, Tl::BM>;
  using SB = Slot<kFetchB, Tl::BN>;
  Geometry q;
  const T* x;
  const T* y;  // null: no ReLU mask
  const T* gy;
  Acc* ws;     // splits x M x ncol()
  bool bias = false;  // grad_bias's partial sums as column N (gemm_kernel's row sums)
  __host__ __device__ int64_t ncol() const { return N + (bias ? 1 : 0); }

  struct Loader {
    // A slot r is output channel m_first + r * SA::kPerSlot; the first a_rows slots are inside M.
    int64_t m_first = 0;
    int a_rows = 0;
    // B slot r is column (channel c, tap) = n0 + SB::mn(tid, r), the first b_cols of them inside N: x at
    // xoff[r] = c * xs[1] + kh*dh * xs[2] + kw*dw * xs[3] from the window's corner, kdh/kdw its tap offsets.
    int b_cols = 0;
    int64_t xoff[SB::kSlots];
    // 32 bits: fewer registers. (Recomputing them from n in the border path instead saved the 128-column TF32
    // kernel's 80-byte spill but measured 14% slower on res_3x3 on an H200: the border path runs often.)
    int kdh[SB::kSlots], kdw[SB::kSlots];
    __device__ Loader(const GradWeightGemm& p, int g, int64_t m0, int64_t n0, int tid) {
      const Geometry& q = p.q;
      m_first = g * q.Mg + m0 + SA::mn(tid, 0);
#pragma unroll
      for (int r = 0; r < SA::kSlots; ++r) a_rows += m0 + SA::mn(tid, r) < p.M;
#pragma unroll
      for (int r = 0; r < SB::kSlots; ++r) {
        const int64_t n = n0 + SB::mn(tid, r);
        xoff[r] = 0;
        kdh[r] = kdw[r] = 0;
        if (n < p.N) {
          ++b_cols;
          const int64_t c = n / q.ntaps;
          const int t = int(n - c * q.ntaps), kh = t / q.KW, kw = t - kh * q.KW;
          kdh[r] = kh * q.dh;
          kdw[r] = kw * q.dw;
          xoff[r] = (g * q.Cg + c) * q.xs[1] + kdh[r] * q.xs[2] + kdw[r] * q.xs[3];
        }
      }
    }
    template <class Put>
    __device__ void fetch(const GradWeightGemm& p, int64_t k0, int64_t kend, int tid, Put& put) const {
      const Geometry& q = p.q;
      const int64_t k = k0 + SA::k(tid, 0);  // the same pixel for every slot of A and B
      if (k >= kend) {
        put_run<true, SA>(put, p.gy, 0, 0);
        put_run<false, SB>(put, p.x, 0, 0);
        return;
      }
      const int64_t pix = q.OH * q.OW, img = q.by_opix(k), rem = k - img * pix, oh = q.by_OW(rem),
                    ow = rem - oh * q.OW;
      const T* gy_img = p.gy + img * q.gs[0];
      const T* y_img = p.y ? p.y + img * q.ys[0] : nullptr;
      const int64_t ih0 = oh * q.sh - q.ph, iw0 = ow * q.sw - q.pw;
      {
        const Src<T> a0 = grad_src(q, gy_img, y_img, m_first, oh, ow);
        const int64_t gstep = SA::kPerSlot * q.gs[1], ystep = SA::kPerSlot * q.ys[1];
#pragma unroll
        for (int r = 0; r < SA::kSlots; ++r) {
          if (r >= a_rows) put.zero_a(r);
          else if (a0.relu_y) put.a(r, Src<T>{a0.v + r * gstep, a0.relu_y + r * ystep});
          else put.copy_a(r, a0.v + r * gstep);
        }
      }
      // x from the corner of this pixel's window. Away from the image border the whole window is inside
      // (most pixels of most layers), and no slot needs its own bounds test.
      const T* corner = p.x + img * q.xs[0] + ih0 * q.xs[2] + iw0 * q.xs[3];
      if (ih0 >= 0 && iw0 >= 0 && ih0 + (q.KH - 1) * q.dh < q.H && iw0 + (q.KW - 1) * q.dw < q.W) {
#pragma unroll
        for (int r = 0; r < SB::kSlots; ++r) {
          if (r < b_cols) put.copy_b(r, corner + xoff[r]);
          else put.zero_b(r);
        }
      } else {
#pragma unroll
        for (int r = 0; r < SB::kSlots; ++r) {
          const int64_t ih = ih0 + kdh[r], iw = iw0 + kdw[r];
          if (r < b_cols && ih >= 0 && ih < q.H && iw >= 0 && iw < q.W) put.copy_b(r, corner + xoff[r]);
          else put.zero_b(r);
        }
      }
    }
  };

  __device__ void store(int g, int split, int64_t m, int64_t n, Acc v) const {
    ws[(split * q.M + g * q.Mg + m) * ncol() + n] = v;
  }
  // A at row m of group g and k (a pixel of all images): grad_y, masked by the ReLU gate.
  __device__ Acc grad_at(int g, int64_t m, int64_t k) const {
    const int64_t img = q.by_opix(k), rem = k - img * (q.OH * q.OW), oh = q.by_OW(rem), ow = rem - oh * q.OW;
    return masked_grad(q, gy + img * q.gs[0], y ? y + img * q.ys[0] : nullptr, g * q.Mg + m, oh, ow);
  }
  // Row m's sum of A over the split's K (with bias): grad_bias's partial sum.
  __device__ void store_row_sum(int g, int split, int64_t m, Acc v) const {
    ws[(split * q.M + g * q.Mg + m) * ncol() + N] = v;
  }
};

}  // namespace pixelops::cuda::conv
