// What the CPU and CUDA cross-entropy kernels share: the problem as plain sizes and strides.
//
// For one row (sample n, position s) with logits x_c, the loss and its gradient are, with
//   lse = log sum_c exp(x_c),   p_c = exp(x_c - lse),
//   a_c = the row's target weights:  (1-eps) w_t [c == t] + (eps/C) w_c   for a class index t
//                                    w_c ((1-eps) q_c + eps/C)             for class probabilities q
//   B   = sum_c a_c,
//   loss = B lse - sum_c a_c x_c = B log(sum_c exp(x_c - m)) - sum_c a_c (x_c - m)   (m = max_c x_c)
//   d loss / d x_c = B p_c - a_c
// which is PyTorch's F.cross_entropy term by term (its label smoothing and weighted forms included).
// Rows whose target is ignore_index give 0 and a zero gradient. 'mean' divides by sum of w_t over the rows
// not ignored (PyTorch's weighted mean; NaN when every row is ignored), or by N*S for probability targets.
#pragma once
#include <cstdint>

#include "common/array.h"
#include "common/host_device.h"

namespace pixelops {

enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };  // torch's Reduction enum

struct CrossEntropyProblem {
  int64_t N = 0, C = 0, S = 0;       // logits viewed as (N, C, S): S is the product of the spatial sizes
  int64_t xn = 0, xc = 0, xs = 0;    // logits strides
  bool grad = false;                 // write the gradient
  int64_t gn = 0, gc = 0, gs = 0;    // gradient strides (same sizes as the logits)
  bool probs = false;                // class-probability targets (N, C, S) instead of indices (N, S)
  int64_t tn = 0, tc = 0, ts = 0;    // target strides
  bool weighted = false;
  int64_t wc = 0;                    // weight stride
  int64_t ln = 0, ls = 0;            // loss strides for reduction 'none'
  int64_t ignore_index = -100;
  int64_t reduction = kMean;
  double eps = 0.0;                  // label smoothing
};

// Reads the shapes the Python layer sends: logits (N, C, S); target (N, S) integers or (N, C, S) floats;
// weight (C) or absent; loss (N, S) for 'none' or () otherwise; grad (N, C, S) or absent.
inline CrossEntropyProblem describe_cross_entropy(const Array& logits, const Array& target, const Array& weight,
                                                  const Array& loss, const Array& grad, int64_t ignore_index,
                                                  int64_t reduction, double label_smoothing) {
  if (logits.ndim != 3) throw ValueError("cross_entropy: logits must arrive as an (N, C, S) view");
  CrossEntropyProblem p;
  p.N = logits.size[0]; p.C = logits.size[1]; p.S = logits.size[2];
  p.xn = logits.stride[0]; p.xc = logits.stride[1]; p.xs = logits.stride[2];
  p.grad = grad.data != nullptr;
  if (p.grad) {
    if (grad.ndim != 3) throw ValueError("cross_entropy: grad must be an (N, C, S) view");
    p.gn = grad.stride[0]; p.gc = grad.stride[1]; p.gs = grad.stride[2];
  }
  p.probs = target.ndim == 3;
  if (p.probs) {
    p.tn = target.stride[0]; p.tc = target.stride[1]; p.ts = target.stride[2];
  } else {
    if (target.ndim != 2) throw ValueError("cross_entropy: target must be an (N, S) or (N, C, S) view");
    p.tn = target.stride[0]; p.ts = target.stride[1];
  }
  p.weighted = weight.data != nullptr;
  if (p.weighted) p.wc = weight.stride[0];
  p.reduction = reduction;
  if (reduction == kNone) {
    if (loss.ndim != 2) throw ValueError("cross_entropy: loss must be an (N, S) view for reduction 'none'");
    p.ln = loss.stride[0]; p.ls = loss.stride[1];
  }
  p.ignore_index = ignore_index;
  p.eps = label_smoothing;
  return p;
}

// The backward's grad * k (k: the loss's incoming gradient at the row), where an entry that the forward left
// exactly zero stays zero: every entry of an ignored row is one, and PyTorch's backward leaves those rows zero
// whatever arrives (a NaN or inf incoming gradient would otherwise turn them NaN). Elsewhere an entry is zero
// only by underflow or coincidence, or in a row whose target's class weight is zero: there, for a NaN or inf
// incoming gradient only, PyTorch gives NaN and this 0.
template <class A>
PIXELOPS_HD A scale_keeping_zeros(A g, A k) {
  return g == A(0) ? A(0) : g * k;
}

}  // namespace pixelops
