// Softmax cross-entropy on the CPU, loss and gradient in one sweep over the logits (formulas in
// common/cross_entropy.h).
//
// A row (the C logits of one sample and position) is read from memory once: its max, then its sum of
// exponentials (the exponentials stored into the gradient buffer when a gradient is wanted), then the gradient
// scaled in place. The second and third steps find the row in cache (a row of 32000 floats is 128 KB, well
// inside the L2), so memory sees one read of the logits and one write of the gradient, as with an online
// softmax, without paying the online form's second exponential per element.
//   - rows contiguous over C (the (N, C) case):            vectorised along the row, threads over rows;
//   - positions contiguous (the (N, C, H, W) case):        a tile of up to kLanes positions at a time,
//                                                           vectorised across positions, threads over tiles;
//   - any other strides, and class-probability targets:    the same tile code one position at a time.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "common/cross_entropy.h"
#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/simd.h"
#include "ops.h"

namespace pixelops::cpu {
namespace {

constexpr int64_t kLanes = 64;  // positions per tile: 256 channels x 64 floats = 64 KB, stays in L2

// exp(x) for x <= 0 (all arguments here are x - max), as plain arithmetic the compiler vectorises (libm's
// exp does not vectorise without -ffast-math). Range reduction x = n ln2 + r, |r| <= ln2/2, then a Taylor
// polynomial: degree 7 is within about 1 ulp in float32, degree 13 in float64. Below the smallest normal the
// result is clamped there (about 1e-38 / 1e-308 instead of smaller), which no sum of exponentials notices.
inline float exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (x * 1.44269504088896341f + shift) - shift;
  float r = x - n * 0.693145751953125f - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline double exp_nonpos(double x) {
  x = x < -708.0 ? -708.0 : x;
  const double shift = 6755399441055744.0;  // 1.5 * 2^52
  double n = (x * 1.4426950408889634 + shift) - shift;
  double r = x - n * 0.6931471803691238 - n * 1.9082149292705877e-10;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t bits = (int64_t(n) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// The vectorised loops, one clone per instruction set (simd.h); templates cannot be cloned, hence the macro.
// Row loops walk one contiguous row of C logits; tile loops walk C channels (stride xc) of L contiguous
// positions, with per-position state in the small arrays m, s, k.
#define PIXELOPS_CE_LOOPS(T)                                                                                   \
  PIXELOPS_CPU_CLONES T row_max(const T* __restrict x, int64_t C) {                                         \
    T m = -std::numeric_limits<T>::infinity();                                                               \
    _Pragma("omp simd reduction(max : m)") for (int64_t c = 0; c < C; ++c) m = x[c] > m ? x[c] : m;          \
    return m;                                                                                                 \
  }                                                                                                           \
  PIXELOPS_CPU_CLONES T row_sum_exp(const T* __restrict x, T* __restrict g, int64_t C, T m) {              \
    T s = 0;                                                                                                  \
    if (g) {                                                                                                  \
      _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < C; ++c) {                                 \
        T e = exp_nonpos(x[c] - m);                                                                           \
        g[c] = e;                                                                                             \
        s += e;                                                                                               \
      }                                                                                                       \
    } else {                                                                                                  \
      _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < C; ++c) s += exp_nonpos(x[c] - m);        \
    }                                                                                                         \
    return s;                                                                                                 \
  }                                                                                                           \
  /* sum_c w_c (x_c - m), w absent meaning all ones */                                                       \
  PIXELOPS_CPU_CLONES T row_wsum(const T* __restrict x, const T* __restrict w, int64_t C, T m) {            \
    T s = 0;                                                                                                  \
    if (w) {                                                                                                  \
      _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < C; ++c) s += w[c] * (x[c] - m);           \
    } else {                                                                                                  \
      _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < C; ++c) s += x[c] - m;                    \
    }                                                                                                         \
    return s;                                                                                                 \
  }                                                                                                           \
  /* g = g k - kw w (w absent meaning all ones) */                                                            \
  PIXELOPS_CPU_CLONES void row_finish(T* __restrict g, const T* __restrict w, int64_t C, T k, T kw) {       \
    if (w && kw != 0) {                                                                                       \
      _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) g[c] = g[c] * k - kw * w[c];                       \
    } else {                                                                                                  \
      _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) g[c] = g[c] * k - kw;                              \
    }                                                                                                         \
  }                                                                                                           \
  /* out = g k (zeros kept: scale_keeping_zeros); out may be g itself (the in-place backward): no __restrict */ \
  PIXELOPS_CPU_CLONES void scale_copy(const T* g, T* out, int64_t n, T k) {                                  \
    for (int64_t i = 0; i < n; ++i) out[i] = scale_keeping_zeros(g[i], k);                                   \
  }                                                                                                           \
  PIXELOPS_CPU_CLONES void tile_max(const T* __restrict x, int64_t xc, int64_t C, int64_t L, T* __restrict m) { \
    for (int64_t l = 0; l < L; ++l) m[l] = x[l];                                                              \
    for (int64_t c = 1; c < C; ++c) {                                                                         \
      const T* xr = x + c * xc;                                                                               \
      _Pragma("omp simd") for (int64_t l = 0; l < L; ++l) m[l] = xr[l] > m[l] ? xr[l] : m[l];                \
    }                                                                                                         \
  }                                                                                                           \
  PIXELOPS_CPU_CLONES void tile_sum_exp(const T* __restrict x, int64_t xc, T* __restrict g, int64_t gc,      \
                                        int64_t C, int64_t L, const T* __restrict m, T* __restrict s) {       \
    for (int64_t l = 0; l < L; ++l) s[l] = 0;                                                                 \
    for (int64_t c = 0; c < C; ++c) {                                                                         \
      const T* xr = x + c * xc;                                                                               \
      if (g) {                                                                                                \
        T* gr = g + c * gc;                                                                                   \
        _Pragma("omp simd") for (int64_t l = 0; l < L; ++l) {                                                 \
          T e = exp_nonpos(xr[l] - m[l]);                                                                     \
          gr[l] = e;                                                                                          \
          s[l] += e;                                                                                          \
        }                                                                                                     \
      } else {                                                                                                \
        _Pragma("omp simd") for (int64_t l = 0; l < L; ++l) s[l] += exp_nonpos(xr[l] - m[l]);                \
      }                                                                                                       \
    }                                                                                                         \
  }                                                                                                           \
  PIXELOPS_CPU_CLONES void tile_wsum(const T* __restrict x, int64_t xc, const T* __restrict w, int64_t C,   \
                                     int64_t L, const T* __restrict m, T* __restrict out) {                   \
    for (int64_t l = 0; l < L; ++l) out[l] = 0;                                                               \
    for (int64_t c = 0; c < C; ++c) {                                                                         \
      const T* xr = x + c * xc;                                                                               \
      const T wc = w ? w[c] : T(1);                                                                           \
      _Pragma("omp simd") for (int64_t l = 0; l < L; ++l) out[l] += wc * (xr[l] - m[l]);                     \
    }                                                                                                         \
  }                                                                                                           \
  PIXELOPS_CPU_CLONES void tile_finish(T* __restrict g, int64_t gc, const T* __restrict w, int64_t C,       \
                                       int64_t L, const T* __restrict k, T kw) {                              \
    for (int64_t c = 0; c < C; ++c) {                                                                         \
      T* gr = g + c * gc;                                                                                     \
      const T sub = kw == T(0) ? T(0) : kw * (w ? w[c] : T(1)); /* (an inf weight: no 0 * inf) */         \
      _Pragma("omp simd") for (int64_t l = 0; l < L; ++l) gr[l] = gr[l] * k[l] - sub;                        \
    }                                                                                                         \
  }
PIXELOPS_CE_LOOPS(float)
PIXELOPS_CE_LOOPS(double)

// A fresh gradient buffer is written for the first time here. On Linux with transparent huge pages in
// "madvise" mode, first-touching 4 KB pages costs more than the kernel itself (a 65 MB buffer: 28 ms of
// page faults against 6 ms with 2 MB pages, measured on the dev VM), so large buffers ask for huge pages.
// A hint only: memory already mapped, or a kernel without THP, is unaffected.
void prefer_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes < int64_t(4 * kHuge)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + uintptr_t(bytes)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

template <class I> std::string target_text(I t) { return std::to_string(int64_t(t)); }

// Everything a row needs besides its own data.
template <class T>
struct Shared {
  const CrossEntropyProblem& p;
  const T* x;
  const T* w;      // weight or nullptr
  T* g;            // gradient or nullptr
  double W;        // sum of the weights (C without weights)
  double gscale;   // the reduction's factor on every gradient
  double* rows;    // per-row losses, row r = n * S + s
};

// Label smoothing's share of B, (eps / C) sum_c w_c, or nothing without smoothing: an infinite weight on a
// class no target names (inverse frequencies of an absent class) must not turn every loss into 0 * inf = NaN,
// as it does not in PyTorch.
inline double smoothing_term(double eps, double smoothed) { return eps != 0.0 ? smoothed : 0.0; }

// Class-index targets: rows contiguous over C (xc == 1, gc == 1).
template <class T, class I>
void index_rows(const Shared<T>& sh, const I* tgt, int64_t begin, int64_t end) {
  const CrossEntropyProblem& p = sh.p;
  const int64_t C = p.C;
  const double eps = p.eps, smooth = eps / double(C);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / p.S, s = r - n * p.S;
    const int64_t t = int64_t(tgt[n * p.tn + s * p.ts]);
    T* g = sh.g ? sh.g + n * p.gn + s * p.gs : nullptr;
    if (t == p.ignore_index) {
      sh.rows[r] = 0.0;
      if (g) std::memset(static_cast<void*>(g), 0, sizeof(T) * size_t(C));
      continue;
    }
    const T* x = sh.x + n * p.xn + s * p.xs;
    const T m = row_max(x, C);
    // Everything read from x before row_sum_exp: with inplace_backward g is x, and that pass overwrites it.
    const double wt = sh.w ? double(sh.w[t]) : 1.0;
    const double B = (1.0 - eps) * wt + smoothing_term(eps, smooth * sh.W);
    double ax = (1.0 - eps) * wt * (double(x[t]) - double(m));
    if (eps != 0.0) ax += smooth * double(row_wsum(x, sh.w, C, m));
    const double sum = row_sum_exp(x, g, C, m);
    sh.rows[r] = B * std::log(sum) - ax;
    if (g) {
      row_finish(g, sh.w, C, T(sh.gscale * B / sum), T(sh.gscale * smooth));
      g[t] -= T(sh.gscale * (1.0 - eps) * wt);
    }
  }
}

// Class-index targets: a tile of L positions of sample n from position s0, positions contiguous (xs == 1 and
// gs == 1) when L > 1; any strides when L == 1.
template <class T, class I>
void index_tile(const Shared<T>& sh, const I* tgt, int64_t n, int64_t s0, int64_t L) {
  const CrossEntropyProblem& p = sh.p;
  const int64_t C = p.C;
  const double eps = p.eps, smooth = eps / double(C);
  const T* x = sh.x + n * p.xn + s0 * p.xs;
  T* g = sh.g ? sh.g + n * p.gn + s0 * p.gs : nullptr;
  T m[kLanes], sum[kLanes], k[kLanes], ws[kLanes];
  double ax[kLanes];  // sum_c a_c (x_c - m) per position
  tile_max(x, p.xc, C, L, m);
  // Everything read from x before tile_sum_exp: with inplace_backward g is x, and that pass overwrites it.
  if (eps != 0.0) tile_wsum(x, p.xc, sh.w, C, L, m, ws);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t t = int64_t(tgt[n * p.tn + (s0 + l) * p.ts]);
    if (t == p.ignore_index) continue;
    const double wt = sh.w ? double(sh.w[t]) : 1.0;
    ax[l] = (1.0 - eps) * wt * (double(x[t * p.xc + l * p.xs]) - double(m[l]));
    if (eps != 0.0) ax[l] += smooth * double(ws[l]);
  }
  tile_sum_exp(x, p.xc, g, p.gc, C, L, m, sum);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t t = int64_t(tgt[n * p.tn + (s0 + l) * p.ts]);
    const int64_t r = n * p.S + s0 + l;
    if (t == p.ignore_index) {
      sh.rows[r] = 0.0;
      k[l] = 0;
      continue;
    }
    const double wt = sh.w ? double(sh.w[t]) : 1.0;
    const double B = (1.0 - eps) * wt + smoothing_term(eps, smooth * sh.W);
    sh.rows[r] = B * std::log(double(sum[l])) - ax[l];
    k[l] = T(sh.gscale * B / double(sum[l]));
  }
  if (!g) return;
  tile_finish(g, p.gc, sh.w, C, L, k, T(sh.gscale * smooth));
  for (int64_t l = 0; l < L; ++l) {
    const int64_t t = int64_t(tgt[n * p.tn + (s0 + l) * p.ts]);
    if (t == p.ignore_index) {
      for (int64_t c = 0; c < C; ++c) g[c * p.gc + l * p.gs] = T(0);
      continue;
    }
    const double wt = sh.w ? double(sh.w[t]) : 1.0;
    g[t * p.gc + l * p.gs] -= T(sh.gscale * (1.0 - eps) * wt);
  }
}

// Class-probability targets, one row (any strides): accumulates in double, rows are read twice from cache.
template <class T>
void prob_row(const Shared<T>& sh, const T* q_all, int64_t r) {
  const CrossEntropyProblem& p = sh.p;
  const int64_t C = p.C, n = r / p.S, s = r - n * p.S;
  const double eps = p.eps, smooth = eps / double(C);
  const T* x = sh.x + n * p.xn + s * p.xs;
  const T* q = q_all + n * p.tn + s * p.ts;
  T* g = sh.g ? sh.g + n * p.gn + s * p.gs : nullptr;
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < C; ++c) m = double(x[c * p.xc]) > m ? double(x[c * p.xc]) : m;
  double sum = 0, B = 0, A = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double xm = double(x[c * p.xc]) - m;
    const double e = exp_nonpos(xm);
    const double a = (sh.w ? double(sh.w[c]) : 1.0) * ((1.0 - eps) * double(q[c * p.tc]) + smooth);
    sum += e;
    B += a;
    A += a * xm;
    if (g) g[c * p.gc] = T(e);
  }
  sh.rows[r] = B * std::log(sum) - A;
  if (!g) return;
  const double k = sh.gscale * B / sum;
  for (int64_t c = 0; c < C; ++c) {
    const double a = (sh.w ? double(sh.w[c]) : 1.0) * ((1.0 - eps) * double(q[c * p.tc]) + smooth);
    g[c * p.gc] = T(double(g[c * p.gc]) * k - sh.gscale * a);
  }
}

// Checks every class index before anything is written, and returns the weighted count of the rows kept.
template <class T, class I>
double check_targets(const CrossEntropyProblem& p, const I* tgt, const T* w) {
  double total = 0;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t s = 0; s < p.S; ++s) {
      const I t = tgt[n * p.tn + s * p.ts];
      if (int64_t(t) == p.ignore_index) continue;
      if (int64_t(t) < 0 || int64_t(t) >= p.C)
        throw IndexError("pixelops.cross_entropy: target " + target_text(t) + " is out of bounds: expected " +
                         "class indices in [0, " + std::to_string(p.C) + ") or ignore_index=" +
                         std::to_string(p.ignore_index));
      total += w ? double(w[int64_t(t)]) : 1.0;
    }
  return total;
}

template <class T, class I>
void run_index(const Shared<T>& sh, const I* tgt) {
  const CrossEntropyProblem& p = sh.p;
  const int64_t rows = p.N * p.S;
  if (p.xc == 1 && (!sh.g || p.gc == 1)) {
    parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(p.C, 1)),
                 [&](int64_t b, int64_t e) { index_rows<T, I>(sh, tgt, b, e); });
    return;
  }
  // Tiles of positions; one position per tile unless positions are contiguous in logits and gradient.
  const int64_t L = (p.xs == 1 && (!sh.g || p.gs == 1)) ? kLanes : 1;
  const int64_t tiles_per_n = (p.S + L - 1) / L;
  parallel_for(p.N * tiles_per_n, std::max<int64_t>(1, 16384 / std::max<int64_t>(p.C * L, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i) {
                   const int64_t n = i / tiles_per_n, s0 = (i - n * tiles_per_n) * L;
                   index_tile<T, I>(sh, tgt, n, s0, std::min(L, p.S - s0));
                 }
               });
}

template <class T>
void forward(const CrossEntropyProblem& p, const Array& logits, const Array& target, const Array& weight,
             const Array& loss, const Array& grad) {
  const T* w = weight.data ? weight.ptr<T>() : nullptr;
  if (w && p.wc != 1 && p.C > 1) throw ValueError("cross_entropy: weight must be contiguous");
  double W = double(p.C);
  if (w) {
    W = 0;
    for (int64_t c = 0; c < p.C; ++c) W += double(w[c]);
  }
  const int64_t rows = p.N * p.S;
  double denom = double(rows);  // 'mean' over probability targets
  if (!p.probs) {
    if (target.dtype == DType::i64) denom = check_targets<T>(p, target.ptr<int64_t>(), w);
    else if (target.dtype == DType::u8) denom = check_targets<T>(p, target.ptr<uint8_t>(), w);
    else throw ValueError("cross_entropy: class indices must be int64 or uint8");
  }
  const double gscale = p.reduction == kMean ? 1.0 / denom : 1.0;
  if (p.grad && grad.data != logits.data && grad.contiguous())
    prefer_huge_pages(grad.data, grad.numel() * int64_t(sizeof(T)));
  std::vector<double> row_loss(static_cast<size_t>(rows));
  Shared<T> sh{p, logits.ptr<T>(), w, p.grad ? grad.ptr<T>() : nullptr, W, gscale, row_loss.data()};
  if (p.probs) {
    if (target.dtype != logits.dtype) throw ValueError("cross_entropy: probabilities must have the logits' dtype");
    const T* q = target.ptr<T>();
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(p.C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) prob_row<T>(sh, q, r);
    });
  } else if (target.dtype == DType::i64) {
    run_index<T>(sh, target.ptr<int64_t>());
  } else {
    run_index<T>(sh, target.ptr<uint8_t>());
  }
  T* out = loss.ptr<T>();
  if (p.reduction == kNone) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / p.S, s = r - n * p.S;
      out[n * p.ln + s * p.ls] = T(row_loss[size_t(r)]);
    }
    return;
  }
  double total = 0;
  for (double v : row_loss) total += v;
  // 'mean' over nothing (every row ignored, or no rows) is 0/0 = NaN, as in PyTorch.
  out[0] = T(p.reduction == kMean ? total / denom : total);
}

}  // namespace

void cross_entropy_forward(const Array& logits, const Array& target, const Array& weight, const Array& loss,
                           const Array& grad, const Array& /*status: CUDA only*/, int64_t ignore_index,
                           int64_t reduction, double label_smoothing, uintptr_t) {
  const CrossEntropyProblem p =
      describe_cross_entropy(logits, target, weight, loss, grad, ignore_index, reduction, label_smoothing);
  dispatch_cpu_float(logits.dtype, "cross_entropy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward<T>(p, logits, target, weight, loss, grad);
  });
}

// grad_in = grad * grad_loss (zeros kept: scale_keeping_zeros), the loss's gradient broadcast over the
// classes: grad (N, C, S); grad_loss an (N, S) view (stride 0 for a scalar); grad_in may be grad itself.
void cross_entropy_backward(const Array& grad, const Array& grad_loss, const Array& grad_in, uintptr_t) {
  dispatch_cpu_float(grad.dtype, "cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = grad.size[0], C = grad.size[1], S = grad.size[2];
    if (N * C * S == 0) return;  // nothing to write, and an empty grad_loss may have no data to read
    const T* g = grad.ptr<T>();
    const T* gl = grad_loss.ptr<T>();
    T* out = grad_in.ptr<T>();
    const bool scalar = grad_loss.stride[0] == 0 && grad_loss.stride[1] == 0;
    if (scalar && grad.contiguous() && grad_in.contiguous()) {
      const T k = gl[0];
      parallel_for(N * C * S, 1 << 15, [&](int64_t b, int64_t e) { scale_copy(g + b, out + b, e - b, k); });
      return;
    }
    parallel_for(N * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t n = i / C, c = i - n * C;
        const T* gr = g + n * grad.stride[0] + c * grad.stride[1];
        T* outr = out + n * grad_in.stride[0] + c * grad_in.stride[1];
        const T* glr = gl + n * grad_loss.stride[0];
        for (int64_t s = 0; s < S; ++s)
          outr[s * grad_in.stride[2]] =
              scale_keeping_zeros(gr[s * grad.stride[2]], glr[s * grad_loss.stride[1]]);
      }
    });
  });
}

// The gradient with respect to class-probability targets (PyTorch differentiates through them too):
//   d loss / d q_c = -(1 - eps) w_c log p_c = factor * grad_loss * w_c (x_c - lse),
// with factor = -(1 - eps) times the reduction's 1/(N S) for 'mean'. logits (N, C, S); weight (C) or absent;
// grad_loss (N, S) (stride 0 for a scalar); grad_target (N, C, S). A rarely used path: scalar loops.
void cross_entropy_target_backward(const Array& logits, const Array& weight, const Array& grad_loss,
                                   const Array& grad_target, double factor, uintptr_t) {
  dispatch_cpu_float(logits.dtype, "cross_entropy_target_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t N = logits.size[0], C = logits.size[1], S = logits.size[2];
    const T* X = logits.ptr<T>();
    const T* w = weight.data ? weight.ptr<T>() : nullptr;
    const T* gl = grad_loss.ptr<T>();
    T* out = grad_target.ptr<T>();
    parallel_for(N * S, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t n = r / S, s = r - n * S;
        const T* x = X + n * logits.stride[0] + s * logits.stride[2];
        T* o = out + n * grad_target.stride[0] + s * grad_target.stride[2];
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t c = 0; c < C; ++c) m = std::max(m, double(x[c * logits.stride[1]]));
        double sum = 0;
        for (int64_t c = 0; c < C; ++c) sum += exp_nonpos(double(x[c * logits.stride[1]]) - m);
        const double lse = m + std::log(sum);
        const double k = factor * double(gl[n * grad_loss.stride[0] + s * grad_loss.stride[1]]);
        for (int64_t c = 0; c < C; ++c) {
          const double wc = w ? double(w[c * weight.stride[0]]) : 1.0;
          o[c * grad_target.stride[1]] = T(k * wc * (double(x[c * logits.stride[1]]) - lse));
        }
      }
    });
  });
}

}  // namespace pixelops::cpu
