// Softmax cross-entropy on CUDA: loss and gradient in one sweep over the logits (formulas in
// common/cross_entropy.h), float32 arithmetic for float32/float16/bfloat16 logits (float64 for float64).
//
// Each row keeps a running max and a running sum of exponentials (online softmax) while it reads its logits
// once; when a gradient is wanted the row is read a second time (from L2: a row is at most a few hundred KB and
// is read back right away) to write B p_c - a_c, scaled for the reduction. Kernels:
//   ce_rows       rows contiguous over the classes ((N, C) logits): a warp per row up to 2048 classes, a
//                 block per row above;
//   ce_positions  anything else, above all (N, C, H, W): 8 threads per position splitting its channels,
//                 neighbouring threads on neighbouring positions, so every load of a channel is coalesced;
//   ce_prepare    class-index 'mean': the sum of the kept rows' weights (the mean's denominator), read from
//                 device memory by the main kernel, so no host sync; also the sum of the weights (smoothing);
//   ce_finish     the reduced loss: sum / denominator, in the logits' dtype.
// A class index out of range sets a flag in device memory (status[0], the index in status[1]) and its row is
// skipped; Python reads the flag after the launch and raises (no device-side assert).
#include <cfloat>
#include <type_traits>

#include "common/cross_entropy.h"
#include "cuda/cuda_utils.cuh"
#include "ops.h"

namespace pixelops::cuda {
namespace {

// status layout (int64[8], zeroed by the caller): [0] bad-index flag, [1] the bad index, [2] denominator
// (double), [3] loss sum (double), [4] sum of weights (double).
constexpr int kDenom = 2, kLossSum = 3, kWeightSum = 4;

template <class T> using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Stores an accumulator value in the storage type (cuda_utils' from_float covers the float-accumulated types).
template <class T, class A>
__device__ __forceinline__ T to_storage(A v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return from_float<T>(float(v));
}

__device__ __forceinline__ float fast_exp(float x) { return __expf(x); }
__device__ __forceinline__ double fast_exp(double x) { return exp(x); }
__device__ __forceinline__ float fast_log(float x) { return __logf(x); }
__device__ __forceinline__ double fast_log(double x) { return log(x); }

// The running max starts at the lowest finite value, not -inf: then -inf logits (masked classes) add
// exp(-inf) = 0 instead of exp(-inf - -inf) = NaN, and merging with a pair that saw nothing needs no test.
template <class A> __device__ __forceinline__ A neg_inf() { return std::is_same_v<A, double> ? -DBL_MAX : -FLT_MAX; }

template <class A> __device__ __forceinline__ A finite_or_zero(A v) { return isfinite(v) ? v : A(0); }

// Adds v to the running (max m, sum s of exp(x - m)).
template <class A>
__device__ __forceinline__ void online_add(A& m, A& s, A v) {
  if (v > m) {
    s = s * fast_exp(m - v) + A(1);
    m = v;
  } else {
    s += fast_exp(v - m);
  }
}

// Merges two running (max, sum) pairs; a pair that saw nothing is (lowest, 0).
template <class A>
__device__ __forceinline__ void online_merge(A& m, A& s, A m2, A s2) {
  if (m2 > m) {
    s = s2 + s * fast_exp(m - m2);
    m = m2;
  } else {
    s += s2 * fast_exp(m2 - m);
  }
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class A>
__device__ __forceinline__ void warp_online(A& m, A& s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    A m2 = __shfl_xor_sync(0xffffffffu, m, o);
    A s2 = __shfl_xor_sync(0xffffffffu, s, o);
    online_merge(m, s, m2, s2);
  }
}

// Reductions over a group of G threads that share a row: one warp (G == 32) or the whole block (G ==
// blockDim.x, a multiple of 32). Every thread of the group gets the result.
template <int G, class A>
struct GroupReduce {
  __device__ static void run(A& m, A& s, A& a, A& b) {
    warp_online(m, s);
    a = warp_sum(a);
    b = warp_sum(b);
    if constexpr (G > 32) {
      __shared__ A sh[4][G / 32];
      const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
      __syncthreads();  // the previous row's readers are done with sh
      if (lane == 0) { sh[0][warp] = m; sh[1][warp] = s; sh[2][warp] = a; sh[3][warp] = b; }
      __syncthreads();
      m = neg_inf<A>(); s = 0; a = 0; b = 0;
      for (int w = 0; w < G / 32; ++w) {
        online_merge(m, s, sh[0][w], sh[1][w]);
        a += sh[2][w];
        b += sh[3][w];
      }
    }
  }
};

struct Params {
  CrossEntropyProblem p;
  const void* x;
  void* g;
  const void* target;
  const void* w;
  void* loss;
  int64_t* status;
  double gscale_host;  // the reduction's factor when known on the host (not a class-index 'mean')
  bool denom_on_device;
};

__device__ __forceinline__ double* status_f64(int64_t* status, int i) { return reinterpret_cast<double*>(status + i); }

// Everything about a row that does not depend on the loop over its classes.
template <class T, class I, bool Probs>
struct RowSetup {
  int64_t t;       // class index (index targets)
  bool skip;       // ignored, or a bad index
};

template <class T, class I, bool Probs>
__device__ __forceinline__ RowSetup<T, I, Probs> row_setup(const Params& P, int64_t n, int64_t s) {
  RowSetup<T, I, Probs> r{0, false};
  if constexpr (!Probs) {
    const CrossEntropyProblem& p = P.p;
    r.t = int64_t(static_cast<const I*>(P.target)[n * p.tn + s * p.ts]);
    if (r.t == p.ignore_index) {
      r.skip = true;
    } else if (r.t < 0 || r.t >= p.C) {
      if (atomicCAS(reinterpret_cast<unsigned long long*>(P.status), 0ull, 1ull) == 0ull)
        P.status[1] = r.t;
      r.skip = true;
    }
  }
  return r;
}

template <class A>
__device__ __forceinline__ A read_gscale(const Params& P) {
  if (P.denom_on_device) return A(1.0 / *status_f64(P.status, kDenom));
  return A(P.gscale_host);
}

template <class A>
__device__ __forceinline__ A read_wsum(const Params& P) {
  return (P.w && P.p.eps != 0.0) ? A(*status_f64(P.status, kWeightSum)) : A(P.p.C);
}

// Sum of one value per thread of a block into status[i] (one atomic per block).
// Every thread of the block must call it (blocks of 1, 2 or 3 dimensions, a multiple of 32 threads).
template <class A>
__device__ void block_add_to(int64_t* status, int i, A v) {
  __shared__ double partial[32];
  double d = double(v);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int warps = int(blockDim.x * blockDim.y * blockDim.z) / 32;
  if (tid % 32 == 0) partial[tid / 32] = d;
  __syncthreads();
  if (tid == 0) {
    double total = 0;
    for (int w = 0; w < warps; ++w) total += partial[w];
    if (total != 0.0) atomicAdd(status_f64(status, i), total);
  }
}

// ---- rows contiguous over the classes: G threads per row ------------------------------------------------
// Launched with 256 threads (G == 32) or G threads (one row per block); the bound caps registers to fit.
template <class T, class I, bool Probs, int G>
__global__ void __launch_bounds__(G > 32 ? G : 256) ce_rows(Params P) {
  using A = Acc<T>;
  const CrossEntropyProblem& p = P.p;
  const T* X = static_cast<const T*>(P.x);
  const T* W = static_cast<const T*>(P.w);
  T* Gr = static_cast<T*>(P.g);
  const int lane = threadIdx.x % G;
  const int64_t groups_per_block = blockDim.x / G;
  const int64_t rows = p.N * p.S;
  const A eps = A(p.eps), smooth = A(p.eps / double(p.C));
  const A gscale = read_gscale<A>(P);
  const A wsum = read_wsum<A>(P);
  A loss_acc = 0;
  for (int64_t r = int64_t(blockIdx.x) * groups_per_block + threadIdx.x / G; r < rows;
       r += int64_t(gridDim.x) * groups_per_block) {
    const int64_t n = r / p.S, s = r - n * p.S;
    const auto st = row_setup<T, I, Probs>(P, n, s);
    T* g = Gr ? Gr + n * p.gn + s * p.gs : nullptr;
    if (st.skip) {  // the whole group takes this branch together
      if (g)
        for (int64_t c = lane; c < p.C; c += G) g[c * p.gc] = to_storage<T>(0.f);
      if (p.reduction == kNone && lane == 0) static_cast<T*>(P.loss)[n * p.ln + s * p.ls] = to_storage<T>(0.f);
      continue;
    }
    const T* x = X + n * p.xn + s * p.xs;
    const T* q = Probs ? static_cast<const T*>(P.target) + n * p.tn + s * p.ts : nullptr;
    // a fixed reference: sums of a_c (x_c - x0) do not grow with |x| (0 when class 0 is masked with -inf)
    const A x0 = finite_or_zero(A(to_float(x[0])));
    // the target's logit is read before the group's barrier: with inplace_backward another thread of the group
    // may overwrite it (g is x) right after
    const A xt = Probs ? A(0) : A(to_float(x[st.t * p.xc]));
    A m = neg_inf<A>(), sum = 0, a_acc = 0, b_acc = 0;
#pragma unroll 4
    for (int64_t c = lane; c < p.C; c += G) {
      const A v = A(to_float(x[c * p.xc]));
      online_add(m, sum, v);
      if constexpr (Probs) {
        const A a = (W ? A(to_float(W[c * p.wc])) : A(1)) * ((A(1) - eps) * A(to_float(q[c * p.tc])) + smooth);
        a_acc += a * (v - x0);
        b_acc += a;
      } else if (p.eps != 0.0) {
        a_acc += (W ? A(to_float(W[c * p.wc])) : A(1)) * (v - x0);
      }
    }
    GroupReduce<G, A>::run(m, sum, a_acc, b_acc);
    A B, Ax, wt = 0;
    if constexpr (Probs) {
      B = b_acc;
      Ax = a_acc;
    } else {
      wt = W ? A(to_float(W[st.t * p.wc])) : A(1);
      B = (A(1) - eps) * wt + smooth * wsum;
      Ax = (A(1) - eps) * wt * (xt - x0) + smooth * a_acc;
    }
    const A loss = B * (m - x0 + fast_log(sum)) - Ax;
    if (g) {
      const A k = gscale * B / sum;
      // with inplace_backward g is x: each element is read before it is written, by the same thread
#pragma unroll 4
      for (int64_t c = lane; c < p.C; c += G) {
        const A v = A(to_float(x[c * p.xc]));
        A a;
        if constexpr (Probs) {
          a = (W ? A(to_float(W[c * p.wc])) : A(1)) * ((A(1) - eps) * A(to_float(q[c * p.tc])) + smooth);
        } else {
          // (without smoothing no other class's weight enters: an inf one must not give 0 * inf = NaN)
          a = (p.eps != 0.0 ? smooth * (W ? A(to_float(W[c * p.wc])) : A(1)) : A(0)) +
              (c == st.t ? (A(1) - eps) * wt : A(0));
        }
        g[c * p.gc] = to_storage<T>(k * fast_exp(v - m) - gscale * a);
      }
    }
    if (lane == 0) {
      if (p.reduction == kNone) static_cast<T*>(P.loss)[n * p.ln + s * p.ls] = to_storage<T>(loss);
      else loss_acc += loss;
    }
  }
  if (p.reduction != kNone) block_add_to(P.status, kLossSum, loss_acc);
}

// ---- any layout, above all (N, C, H, W): 32 positions per block along x, K threads per position along y ---------
// Neighbouring threads of a warp read neighbouring positions of one channel (coalesced when positions are
// contiguous); the K threads of a position split its channels and merge their partial sums in shared memory.
template <class T, class I, bool Probs, int K>
__global__ void __launch_bounds__(32 * K) ce_positions(Params P) {
  using A = Acc<T>;
  const CrossEntropyProblem& p = P.p;
  const T* X = static_cast<const T*>(P.x);
  const T* W = static_cast<const T*>(P.w);
  T* Gr = static_cast<T*>(P.g);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t rows = p.N * p.S;
  const A eps = A(p.eps), smooth = A(p.eps / double(p.C));
  const A gscale = read_gscale<A>(P);
  const A wsum = read_wsum<A>(P);
  __shared__ A sh[4][K][32];
  A loss_acc = 0;
  // the loop bounds are the same for the whole block: every thread reaches every __syncthreads
  for (int64_t base = int64_t(blockIdx.x) * 32; base < rows; base += int64_t(gridDim.x) * 32) {
    const int64_t r = base + tx;
    const bool in_range = r < rows;
    const int64_t n = in_range ? r / p.S : 0, s = in_range ? r - n * p.S : 0;
    RowSetup<T, I, Probs> st{0, true};
    if (in_range) st = row_setup<T, I, Probs>(P, n, s);
    const bool active = in_range && !st.skip;
    T* g = Gr ? Gr + n * p.gn + s * p.gs : nullptr;
    const T* x = X + n * p.xn + s * p.xs;
    const T* q = Probs ? static_cast<const T*>(P.target) + n * p.tn + s * p.ts : nullptr;
    const A x0 = active ? finite_or_zero(A(to_float(x[0]))) : A(0);
    const A xt = (!Probs && active) ? A(to_float(x[st.t * p.xc])) : A(0);  // before the barrier (inplace_backward)
    A m = neg_inf<A>(), sum = 0, a_acc = 0, b_acc = 0;
    if (active) {
#pragma unroll 4
      for (int64_t c = ty; c < p.C; c += K) {
        const A v = A(to_float(x[c * p.xc]));
        online_add(m, sum, v);
        if constexpr (Probs) {
          const A a = (W ? A(to_float(W[c * p.wc])) : A(1)) * ((A(1) - eps) * A(to_float(q[c * p.tc])) + smooth);
          a_acc += a * (v - x0);
          b_acc += a;
        } else if (p.eps != 0.0) {
          a_acc += (W ? A(to_float(W[c * p.wc])) : A(1)) * (v - x0);
        }
      }
    }
    if constexpr (K > 1) {
      __syncthreads();  // the previous round's readers are done with sh
      sh[0][ty][tx] = m; sh[1][ty][tx] = sum; sh[2][ty][tx] = a_acc; sh[3][ty][tx] = b_acc;
      __syncthreads();
      m = neg_inf<A>(); sum = 0; a_acc = 0; b_acc = 0;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        online_merge(m, sum, sh[0][k][tx], sh[1][k][tx]);
        a_acc += sh[2][k][tx];
        b_acc += sh[3][k][tx];
      }
    }
    if (in_range && st.skip) {
      if (g)
        for (int64_t c = ty; c < p.C; c += K) g[c * p.gc] = to_storage<T>(0.f);
      if (p.reduction == kNone && ty == 0) static_cast<T*>(P.loss)[n * p.ln + s * p.ls] = to_storage<T>(0.f);
    }
    if (!active) continue;
    A B, Ax, wt = 0;
    if constexpr (Probs) {
      B = b_acc;
      Ax = a_acc;
    } else {
      wt = W ? A(to_float(W[st.t * p.wc])) : A(1);
      B = (A(1) - eps) * wt + smooth * wsum;
      Ax = (A(1) - eps) * wt * (xt - x0) + smooth * a_acc;
    }
    const A loss = B * (m - x0 + fast_log(sum)) - Ax;
    if (g) {
      // all reads of x for this position happened before the __syncthreads above, so with inplace_backward
      // (g is x) the K threads cannot overwrite a logit another one still has to read
      const A k = gscale * B / sum;
#pragma unroll 4
      for (int64_t c = ty; c < p.C; c += K) {
        const A v = A(to_float(x[c * p.xc]));
        A a;
        if constexpr (Probs) {
          a = (W ? A(to_float(W[c * p.wc])) : A(1)) * ((A(1) - eps) * A(to_float(q[c * p.tc])) + smooth);
        } else {
          // (without smoothing no other class's weight enters: an inf one must not give 0 * inf = NaN)
          a = (p.eps != 0.0 ? smooth * (W ? A(to_float(W[c * p.wc])) : A(1)) : A(0)) +
              (c == st.t ? (A(1) - eps) * wt : A(0));
        }
        g[c * p.gc] = to_storage<T>(k * fast_exp(v - m) - gscale * a);
      }
    }
    if (ty == 0) {
      if (p.reduction == kNone) static_cast<T*>(P.loss)[n * p.ln + s * p.ls] = to_storage<T>(loss);
      else loss_acc += loss;
    }
  }
  if (p.reduction != kNone) block_add_to(P.status, kLossSum, loss_acc);
}

// ---- class-index 'mean': the denominator (and, for smoothing, the weights' sum) before the main pass ------------
template <class T, class I>
__global__ void ce_prepare(Params P) {
  const CrossEntropyProblem& p = P.p;
  const T* W = static_cast<const T*>(P.w);
  const I* tgt = static_cast<const I*>(P.target);
  double kept = 0;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < p.N * p.S; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = r / p.S, s = r - n * p.S;
    const int64_t t = int64_t(tgt[n * p.tn + s * p.ts]);
    if (t != p.ignore_index && t >= 0 && t < p.C) kept += W ? double(to_float(W[t * p.wc])) : 1.0;
  }
  block_add_to(P.status, kDenom, kept);
  if (W && blockIdx.x == 0) {
    __syncthreads();
    double wsum = 0;
    for (int64_t c = threadIdx.x; c < p.C; c += blockDim.x) wsum += double(to_float(W[c * p.wc]));
    block_add_to(P.status, kWeightSum, wsum);
  }
}

template <class T>
__global__ void ce_finish(Params P, double denom_host) {
  const double total = *status_f64(P.status, kLossSum);
  const double denom = P.denom_on_device ? *status_f64(P.status, kDenom) : denom_host;
  // 'mean' over nothing (every row ignored, or no rows) is 0/0 = NaN, as in PyTorch
  static_cast<T*>(P.loss)[0] = to_storage<T>(Acc<T>(P.p.reduction == kMean ? total / denom : total));
}

unsigned blocks_for(int64_t work, int threads) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 65535)));
}

template <class T, class I, bool Probs>
void launch(const Params& P, cudaStream_t st) {
  const CrossEntropyProblem& p = P.p;
  const int64_t rows = p.N * p.S;
  if (!Probs && (P.denom_on_device || (P.w && p.eps != 0.0)))
    ce_prepare<T, I><<<blocks_for(rows, 256), 256, 0, st>>>(P);
  if (rows > 0) {
    if (p.xc == 1 && p.C <= 2048) {
      constexpr int kThreads = 256;  // 8 rows per block, a warp each
      ce_rows<T, I, Probs, 32><<<blocks_for(rows, kThreads / 32), kThreads, 0, st>>>(P);
    } else if (p.xc == 1) {
      // one row per block; 1024 threads keep fewer rows in flight, so each row's second read finds it in L2
      constexpr int kThreads = 1024;
      ce_rows<T, I, Probs, kThreads><<<unsigned(std::min<int64_t>(rows, 65535)), kThreads, 0, st>>>(P);
    } else {
      constexpr int kSplit = 8;  // threads per position: 256 channels -> 32 each
      ce_positions<T, I, Probs, kSplit><<<blocks_for(rows, 32), dim3(32, kSplit), 0, st>>>(P);
    }
  }
  if (p.reduction != kNone) {
    double denom_host = double(rows);
    ce_finish<T><<<1, 1, 0, st>>>(P, denom_host);
  }
}

// grad_in[n, c, s] = grad[n, c, s] * grad_loss[n, s], zeros kept (scale_keeping_zeros: ignored rows stay zero)
// loss.backward() of a mean or sum sends 1: in place there is nothing to do, and the kernel, not the host (no
// sync), finds that out, so forward + backward moves the floor's bytes (one read of the logits, one write).
template <class T>
__global__ void ce_scale_flat(const T* g, const T* gl, T* out, int64_t n) {
  const Acc<T> k = Acc<T>(to_float(gl[0]));
  if (g == out && k == Acc<T>(1)) return;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = to_storage<T>(scale_keeping_zeros(Acc<T>(to_float(g[i])), k));
}

template <class T>
__global__ void ce_scale_strided(const T* g, const T* gl, T* out, Shape sg, Shape sgl, Shape so) {
  const int64_t N = sg.size[0], C = sg.size[1], S = sg.size[2], total = N * C * S;
  const bool scalar = sgl.stride[0] == 0 && sgl.stride[1] == 0;
  if (scalar && g == out && Acc<T>(to_float(gl[0])) == Acc<T>(1)) return;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i % S, nc = i / S, c = nc % C, n = nc / C;
    const Acc<T> k = Acc<T>(to_float(gl[n * sgl.stride[0] + s * sgl.stride[1]]));
    const Acc<T> v = Acc<T>(to_float(g[n * sg.stride[0] + c * sg.stride[1] + s * sg.stride[2]]));
    out[n * so.stride[0] + c * so.stride[1] + s * so.stride[2]] = to_storage<T>(scale_keeping_zeros(v, k));
  }
}

// d loss / d q_c = factor * grad_loss * w_c (x_c - lse) for class-probability targets: a thread per row, a
// rarely used path kept simple.
template <class T>
__global__ void ce_target_grad(const T* X, const T* w, const T* gl, T* out, Shape sx, int64_t wc, Shape sgl,
                               Shape so, double factor) {
  using A = Acc<T>;
  const int64_t N = sx.size[0], C = sx.size[1], S = sx.size[2];
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < N * S; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = r / S, s = r - n * S;
    const T* x = X + n * sx.stride[0] + s * sx.stride[2];
    T* o = out + n * so.stride[0] + s * so.stride[2];
    A m = neg_inf<A>(), sum = 0;
    for (int64_t c = 0; c < C; ++c) online_add(m, sum, A(to_float(x[c * sx.stride[1]])));
    const A lse = m + fast_log(sum);
    const A k = A(factor) * A(to_float(gl[n * sgl.stride[0] + s * sgl.stride[1]]));
    for (int64_t c = 0; c < C; ++c) {
      const A wv = w ? A(to_float(w[c * wc])) : A(1);
      o[c * so.stride[1]] = to_storage<T>(k * wv * (A(to_float(x[c * sx.stride[1]])) - lse));
    }
  }
}

}  // namespace

void cross_entropy_target_backward(const Array& logits, const Array& weight, const Array& grad_loss,
                                   const Array& grad_target, double factor, uintptr_t stream) {
  const int64_t rows = logits.size[0] * logits.size[2];
  if (rows == 0 || logits.size[1] == 0) return;
  dispatch_float(logits.dtype, "cross_entropy_target_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kThreads = 128;
    ce_target_grad<T><<<blocks_for(rows, kThreads), kThreads, 0, as_stream(stream)>>>(
        logits.ptr<T>(), weight.data ? weight.ptr<T>() : nullptr, grad_loss.ptr<T>(), grad_target.ptr<T>(),
        shape_of(logits), weight.data ? weight.stride[0] : 0, shape_of(grad_loss), shape_of(grad_target), factor);
    check_launch("cross_entropy_target_backward");
  });
}

void cross_entropy_forward(const Array& logits, const Array& target, const Array& weight, const Array& loss,
                           const Array& grad, const Array& status, int64_t ignore_index, int64_t reduction,
                           double label_smoothing, uintptr_t stream) {
  const CrossEntropyProblem p =
      describe_cross_entropy(logits, target, weight, loss, grad, ignore_index, reduction, label_smoothing);
  if (status.data == nullptr || status.numel() < 8 || status.dtype != DType::i64)
    throw ValueError("cross_entropy: the CUDA kernels need a zeroed int64[8] status buffer");
  Params P{p, logits.data, grad.data, target.data, weight.data, loss.data, status.ptr<int64_t>(), 1.0, false};
  const int64_t rows = p.N * p.S;
  if (reduction == kMean) {
    if (p.probs) P.gscale_host = 1.0 / double(rows);
    else P.denom_on_device = true;
  }
  cudaStream_t st = as_stream(stream);
  dispatch_float(logits.dtype, "cross_entropy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (p.probs) {
      if (target.dtype != logits.dtype) throw ValueError("cross_entropy: probabilities must have the logits' dtype");
      launch<T, T, true>(P, st);
    } else if (target.dtype == DType::i64) {
      launch<T, int64_t, false>(P, st);
    } else if (target.dtype == DType::u8) {
      launch<T, uint8_t, false>(P, st);
    } else {
      throw ValueError("cross_entropy: class indices must be int64 or uint8");
    }
    check_launch("cross_entropy_forward");
  });
}

void cross_entropy_backward(const Array& grad, const Array& grad_loss, const Array& grad_in, uintptr_t stream) {
  const int64_t n = grad.numel();
  if (n == 0) return;
  cudaStream_t st = as_stream(stream);
  dispatch_float(grad.dtype, "cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kThreads = 256;
    const unsigned blocks = unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 4));
    const bool scalar = grad_loss.stride[0] == 0 && grad_loss.stride[1] == 0;
    if (scalar && grad.contiguous() && grad_in.contiguous()) {
      ce_scale_flat<T><<<blocks, kThreads, 0, st>>>(grad.ptr<T>(), grad_loss.ptr<T>(), grad_in.ptr<T>(), n);
    } else {
      ce_scale_strided<T><<<blocks, kThreads, 0, st>>>(grad.ptr<T>(), grad_loss.ptr<T>(), grad_in.ptr<T>(),
                                                       shape_of(grad), shape_of(grad_loss), shape_of(grad_in));
    }
    check_launch("cross_entropy_backward");
  });
}

}  // namespace pixelops::cuda
