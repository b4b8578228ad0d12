// conv2d and masked conv2d on CUDA, forward and backward, as implicit GEMMs (conv2d_gemm.cuh, with the
// three problems in conv2d_problems.cuh):
//
//   y[n, g*Mg+m, oh, ow] = act(b[g*Mg+m] + sum_{c < Cg, t < ntaps} w[g*Mg+m, c, t] * x[n, g*Cg+c, oh*sh-ph+kh(t)*dh, ow*sw-pw+kw(t)*dw])
//
// Active taps are a row-major prefix [0, ntaps) of the kernel (all taps, or a PixelCNN mask), so masked taps
// are never visited. In the GEMMs float32 runs on TF32 tensor cores exactly when allow_tf32 is set, otherwise
// in fp32 SIMT; float16 and bfloat16 run on tensor cores with float accumulation; float64 runs in SIMT double.
// Layers with few input channels a group skip the GEMM (conv2d_direct.cuh): the forward and grad_weight when
// Cg * ntaps <= 64, in full precision. Their grad_input (Cg <= 4) is a 1x1 GEMM into per-tap planes and a gather
// (conv2d_taps.cuh) where grad_y needs no ReLU gate and there are at least 16 output channels, else a direct
// kernel. A strided grad_input runs one GEMM per stride phase, the phases in one launch.
// The float32 forward, and the grad_input of a stride-1 convolution without a ReLU gate, run from a
// shared-memory halo instead (conv2d_halo.cuh), on mma.sync under TF32 and on FMAs otherwise (there for more
// than 32 rows), and so does grad_weight without a ReLU gate (conv2d_halo_grad_weight.cuh); wherever two stages
// fit in shared memory and there are two taps or more. A fused ReLU's gate is applied to a contiguous grad_y
// first, in a pass of its own, so that it does not keep the backward off those kernels. A 1x1 layer's float32 weight gradient runs on a GEMM of its own
// (conv2d_pointwise_grad_weight.cuh; PIXELOPS_CONV_PW_GW=0 turns it off).
// grad_weight splits its long K (all pixels of all images) over blocks and adds the partial sums in a
// second, deterministic pass. grad_bias rides along as one more column of those partial sums (grad_y's row
// sums, or the few-channel kernel's column of ones); only without a weight gradient, or where the few-channel
// kernel has no room for the column, does it run on its own kernels, summing runs of images per channel, then
// the runs in order.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "common/conv_args.h"
#include "cuda/conv2d_direct.cuh"
#include "cuda/conv2d_gemm.cuh"
#include "cuda/conv2d_few_channels.cuh"
#include "cuda/conv2d_halo.cuh"
#include "cuda/conv2d_halo_grad_weight.cuh"
#include "cuda/conv2d_pointwise_grad_weight.cuh"
#include "cuda/conv2d_problems.cuh"
#include "cuda/conv2d_taps.cuh"
#include "cuda/cuda_utils.cuh"
#include "cuda/workspace.cuh"
#include "ops.h"

namespace pixelops::cuda {
namespace {

using conv::Geometry;
using conv::kBK;
constexpr int kThreads = 256;

// Adds the split-K partial sums of grad_weight in a fixed order; masked taps (t >= ntaps) get zero. With gb,
// each row of ws has one more column, the sums of grad_bias (a column of ones in the few-channel kernel, grad_y's
// row sums in the others).
// A block takes 32 outputs, a lane each: warp w of W adds splits w, w + W, ..., and warp 0 adds the W sums in
// order, so the result does not depend on scheduling. (One thread an output, adding every split in turn, left
// the few thousand outputs of a small layer each waiting on one load after another: pcnn_maskA's 264 splits
// took 0.010 ms on an H100.)
template <class T, class A>
__global__ void reduce_grad_weight(Geometry q, int splits, const A* __restrict__ ws, T* __restrict__ gw,
                                   T* __restrict__ gb) {
  __shared__ A part[conv::kReduceWarps][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int64_t gw_total = conv::weight_outputs(q, false), outputs = conv::weight_outputs(q, gb != nullptr);
  for (int64_t i0 = blockIdx.x * int64_t(32); i0 < outputs; i0 += int64_t(gridDim.x) * 32) {
    const int64_t i = i0 + lane;
    A s = i < outputs ? conv::weight_partials_sum(q, ws, splits, gb != nullptr, i, warp, warps) : A(0);
    part[warp][lane] = s;
    __syncthreads();
    if (warp == 0 && i < outputs) {
      for (int v = 1; v < warps; ++v) s += part[v][lane];
      if (i < gw_total) gw[i] = conv::store_as<T>(s);
      else gb[(i - gw_total) * q.bs] = conv::store_as<T>(s);
    }
    __syncthreads();
  }
}

int sm_count();
bool gemm_mma_sync();  // PIXELOPS_CONV_GEMM_MMA (new_paths below)
bool gw_tile96();      // PIXELOPS_CONV_GW_TILE96

// grad_bias on its own (where no weight gradient is asked for, or the few-channel kernel has no room for its
// column): the sum of (masked) grad_y over images and pixels, per output channel. Block (m, s) sums channel m
// over the s-th run of images (enough runs to fill the GPU: one block per channel would leave most of it idle
// and wait on one load after another) and writes partial[s][m]; grad_bias_finish adds the runs in order, so
// the result does not depend on scheduling. With one run, the block writes grad_bias itself.
// The sum is bound by how many bytes are in flight: each thread keeps kUnroll independent sums (one load each
// per round), and reads a channel's plane as it lies (BiasRead).
enum class BiasRead {
  kStrided,  // any strides: a pixel's row and column decoded
  kFlat,     // grad_y (and y if any) with unit pixel strides: a pixel's address is its index into the plane
  kVector,   // kFlat, 16 bytes a load: planes' lengths, image and channel strides and the pointers multiples
             // of 16 bytes (so a load never straddles two images); four times the bytes in flight of kFlat's
             // 4-byte loads for float32 (an H100 summed res_3x3's 26 MB grad_y at 1.35 TB/s with those)
};

// 16 bytes of T (one vector load on the device).
template <class T>
struct alignas(16) Bytes16 {
  static constexpr int kCount = int(16 / sizeof(T));
  T v[kCount];
};

template <class T, BiasRead kRead>
__global__ void grad_bias_kernel(Geometry q, int64_t images_per_run, const T* __restrict__ y,
                                 const T* __restrict__ gy, typename conv::AccOf<T>::type* __restrict__ partial,
                                 T* __restrict__ gb) {
  using A = typename conv::AccOf<T>::type;
  constexpr int kUnroll = 4, V = kRead == BiasRead::kVector ? Bytes16<T>::kCount : 1;
  __shared__ A part[kThreads];
  const int64_t m = blockIdx.x, run = blockIdx.y, per_image = q.OH * q.OW;
  const int64_t img0 = run * images_per_run;
  const int64_t count = std::min<int64_t>(images_per_run, q.N - img0) * per_image;  // a multiple of V
  // the (masked) grad_y of the V pixels from index i of the run, summed
  auto value = [&](int64_t i) -> A {
    const int64_t n = img0 + q.by_opix(i), p = i - (n - img0) * per_image;
    if constexpr (kRead == BiasRead::kVector) {
      const Bytes16<T> g = *reinterpret_cast<const Bytes16<T>*>(gy + n * q.gs[0] + m * q.gs[1] + p);
      Bytes16<T> gate;
      if (y) gate = *reinterpret_cast<const Bytes16<T>*>(y + n * q.ys[0] + m * q.ys[1] + p);
      A s = A(0);
#pragma unroll
      for (int k = 0; k < V; ++k) s += conv::read<A>(conv::Src<T>{&g.v[k], y ? &gate.v[k] : nullptr});
      return s;
    } else if constexpr (kRead == BiasRead::kFlat) {
      const T* g = gy + n * q.gs[0] + m * q.gs[1] + p;
      return conv::read<A>(conv::Src<T>{g, y ? y + n * q.ys[0] + m * q.ys[1] + p : nullptr});
    } else {
      const int64_t oh = q.by_OW(p), ow = p - oh * q.OW;
      return conv::masked_grad(q, gy + n * q.gs[0], y ? y + n * q.ys[0] : nullptr, m, oh, ow);
    }
  };
  A s[kUnroll] = {};
  const int64_t step = int64_t(blockDim.x) * V;
  int64_t i = int64_t(threadIdx.x) * V;
  for (; i + (kUnroll - 1) * step < count; i += kUnroll * step)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) s[u] += value(i + u * step);
  for (; i < count; i += step) s[0] += value(i);
  part[threadIdx.x] = (s[0] + s[1]) + (s[2] + s[3]);
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (partial) partial[run * q.M + m] = part[0];
    else gb[m * q.bs] = conv::store_as<T>(part[0]);
  }
}

template <class T, class A>
__global__ void grad_bias_finish(Geometry q, int runs, const A* __restrict__ partial, T* __restrict__ gb) {
  for (int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; m < q.M; m += int64_t(gridDim.x) * blockDim.x) {
    A s = A(0);
    for (int r = 0; r < runs; ++r) s += partial[r * q.M + m];
    gb[m * q.bs] = conv::store_as<T>(s);
  }
}

// How grad_bias_kernel can read grad_y (strides gs, data at gy) and y (ys, at y; null without a ReLU gate).
template <class T>
BiasRead bias_read(const Geometry& q, const T* gy, const T* y) {
  const int64_t opix = q.OH * q.OW;
  auto flat = [&](const int64_t* s) { return s[3] == 1 && s[2] == q.OW; };
  if (!flat(q.gs) || (y && !flat(q.ys))) return BiasRead::kStrided;
  if (conv::planes_in_16_bytes(opix, q.gs, gy) && (!y || conv::planes_in_16_bytes(opix, q.ys, y)))
    return BiasRead::kVector;
  return BiasRead::kFlat;
}

template <class T>
void grad_bias(const Geometry& q, const T* y, const T* gy, T* gb, cudaStream_t s) {
  using A = typename conv::AccOf<T>::type;
  // about eight blocks an SM in all (a grid's y is at most 65535); runs of equal length, none empty
  const int64_t want = std::clamp<int64_t>((8 * int64_t(sm_count()) + q.M - 1) / q.M, 1, 65535);
  const int64_t per_run = std::max<int64_t>(1, (q.N + want - 1) / want);
  const int64_t runs = std::max<int64_t>(1, (q.N + per_run - 1) / per_run);
  Scratch<A> partial(runs > 1 ? runs * q.M : 0, s, "conv2d_backward (bias)");
  const dim3 grid{unsigned(q.M), unsigned(runs)};
  switch (bias_read(q, gy, y)) {
    case BiasRead::kVector:
      grad_bias_kernel<T, BiasRead::kVector><<<grid, kThreads, 0, s>>>(q, per_run, y, gy, partial.get(), gb);
      break;
    case BiasRead::kFlat:
      grad_bias_kernel<T, BiasRead::kFlat><<<grid, kThreads, 0, s>>>(q, per_run, y, gy, partial.get(), gb);
      break;
    default:
      grad_bias_kernel<T, BiasRead::kStrided><<<grid, kThreads, 0, s>>>(q, per_run, y, gy, partial.get(), gb);
  }
  check_launch("conv2d_backward (bias)");
  if (partial.get()) {
    grad_bias_finish<T, A><<<unsigned(std::min<int64_t>((q.M + kThreads - 1) / kThreads, 1024)), kThreads, 0, s>>>(
        q, int(runs), partial.get(), gb);
    check_launch("conv2d_backward (bias)");
  }
}

// The fused ReLU's gate on a contiguous grad_y (PIXELOPS_CONV_GATE_FIRST): out = y > 0 ? g : 0, a NaN in y
// gating as the loaders' test does.
template <class T>
__global__ void relu_gate_kernel(int64_t n, const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = to_float(y[i]) > 0 ? g[i] : T{};
}

// The direct kernels' grid: x over `threads` threads of work (grid-stride beyond 2^16 blocks), y over groups.
dim3 direct_grid(int64_t threads, int64_t groups) {
  return dim3{unsigned(std::min<int64_t>((threads + kThreads - 1) / kThreads, 1 << 16)), unsigned(groups)};
}

template <class T>
void launch_grad_input_direct(const Geometry& q, const T* w, const T* y, const T* gy, T* gx, cudaStream_t s) {
  static_assert(conv::kGiThreads == kThreads, "direct_grid's block");
  const dim3 grid = direct_grid(q.N * q.H * q.W * conv::kGiSlices, q.G);  // kGiSlices threads a pixel
  switch (conv::grad_input_direct_cg(q.Cg)) {
    case 1: conv::grad_input_direct<T, 1><<<grid, kThreads, 0, s>>>(q, w, y, gy, gx); break;
    case 2: conv::grad_input_direct<T, 2><<<grid, kThreads, 0, s>>>(q, w, y, gy, gx); break;
    default: conv::grad_input_direct<T, conv::kDirectCg><<<grid, kThreads, 0, s>>>(q, w, y, gy, gx);
  }
  check_launch("conv2d_backward (input, direct)");
}

Geometry geometry_of(const Array& x, const Array& w, const Array& out, int64_t sh, int64_t sw, int64_t ph,
                     int64_t pw, int64_t dh, int64_t dw, int64_t groups, int64_t ntaps) {
  check_conv_groups(x, w, groups);
  if (ntaps < 0 || ntaps > w.size[2] * w.size[3])
    throw ValueError("conv2d: ntaps must be in [0, kernel_height * kernel_width], got " + std::to_string(ntaps));
  Geometry q{};
  q.N = x.size[0]; q.C = x.size[1]; q.H = x.size[2]; q.W = x.size[3];
  q.M = w.size[0]; q.OH = out.size[2]; q.OW = out.size[3];
  q.G = groups; q.Cg = q.C / groups; q.Mg = q.M / groups;
  q.KH = int(w.size[2]); q.KW = int(w.size[3]); q.ntaps = int(ntaps);
  q.sh = int(sh); q.sw = int(sw); q.ph = int(ph); q.pw = int(pw); q.dh = int(dh); q.dw = int(dw);
  for (int i = 0; i < 4; ++i) { q.xs[i] = x.stride[i]; q.ws[i] = w.stride[i]; }
  conv::set_divisors(q);
  return q;
}

// An attribute of the current device, asked of the driver once per device (they never change; a call of a
// conv asks for the SM count and the shared-memory limit several times).
template <cudaDeviceAttr kAttr>
int device_attribute() {
  static std::atomic<int> known[64] = {};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < 64 && known[dev].load() > 0) return known[dev].load();
  int v = 0;
  check(cudaDeviceGetAttribute(&v, kAttr, dev), "cudaDeviceGetAttribute");
  if (dev < 64) known[dev].store(v);
  return v;
}

int sm_count() { return std::max(device_attribute<cudaDevAttrMultiProcessorCount>(), 1); }
// The shared memory of one SM (228 KB on Hopper), which the blocks resident on it share.
int smem_per_sm() { return device_attribute<cudaDevAttrMaxSharedMemoryPerMultiprocessor>(); }

// Calls f(kernel) with the GEMM kernel that runs problem p: float16 and bfloat16 on tensor cores, float32 on
// TF32 tensor cores when asked, else SIMT. One choice, shared by the launch and by the occupancy query behind
// split-K.
template <class T, class P, class F>
void with_gemm_kernel(bool tf32, F&& f) {
  using Tl = typename P::Tl;
  if constexpr (Tl::BN == 96) {  // WeightTile: the float32 SIMT weight gradient's alone (with_weight_tile)
    static_assert(std::is_same_v<T, float>, "WeightTile is float32's");
    if (tf32) throw ValueError("conv2d: the 96-column tile has no TF32 product");
    f(conv::gemm_kernel<P, conv::SimtMma<float, Tl>>);
  } else if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    f(conv::gemm_kernel<P, conv::HalfMma<T, Tl>>);
  } else if constexpr (std::is_same_v<T, float>) {
    if (tf32 && gemm_mma_sync()) f(conv::gemm_kernel<P, conv::Tf32SyncMma<Tl>>);
    else if (tf32) f(conv::gemm_kernel<P, conv::Tf32Mma<Tl>>);
    else f(conv::gemm_kernel<P, conv::SimtMma<float, Tl>>);
  } else {
    f(conv::gemm_kernel<P, conv::SimtMma<typename P::Acc, Tl>>);
  }
}

// How many blocks of p's kernel an SM holds at once (registers and shared memory allowing); asked once per
// kernel (the first device's answer; mixing GPU generations in one process would only change split sizes).
// The kernels with_gemm_kernel picks among for one P differ by their product only (SIMT, WMMA, mma.sync) and
// share a function type, so the answers are kept by product. (A static inside the lambda was one for all of
// them: the first product asked answered for the others.)
template <class T, class P>
int resident_blocks(bool tf32) {
  static std::atomic<int> known[3] = {};
  const int product = !tf32 ? 0 : gemm_mma_sync() ? 2 : 1;
  int blocks = known[product].load();
  if (blocks > 0) return blocks;
  with_gemm_kernel<T, P>(tf32, [&](auto kernel) {
    int n = 0;
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, conv::kGemmThreads, 0),
          "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    blocks = std::max(n, 1);
  });
  known[product].store(blocks);
  return blocks;
}

// A GEMM launch's grid of gx x gy x gz tiles, refused where it passes CUDA's limits.
dim3 gemm_grid(int64_t gx, int64_t gy, int64_t gz, const char* what) {
  if (gx > 0x7fffffff || gy > 65535 || gz > 65535)
    throw ValueError(std::string(what) + ": the problem is too large for one launch (" + std::to_string(gx) + " x " +
                     std::to_string(gy) + " x " + std::to_string(gz) + " tiles)");
  return dim3{unsigned(gx), unsigned(gy), unsigned(gz)};
}

template <class T, class P>
void launch_gemm(const P& p, bool tf32, cudaStream_t s, const char* what) {
  using Tl = typename P::Tl;
  if (p.M == 0 || p.N == 0) return;
  const dim3 grid = gemm_grid((p.N + Tl::BN - 1) / Tl::BN, (p.M + Tl::BM - 1) / Tl::BM,
                              int64_t(p.groups) * p.splits, what);
  with_gemm_kernel<T, P>(tf32, [&](auto kernel) { kernel<<<grid, conv::kGemmThreads, 0, s>>>(p); });
  check_launch(what);
}

// Several float32 problems of one type in one launch (gemm_set_kernel), on mma.sync under TF32 (the default
// TF32 product; a set is not made for WMMA's) or SIMT: grid x over the widest member's column tiles.
template <class P>
void launch_gemm_set(const conv::GemmSet<P>& set, bool tf32, cudaStream_t s, const char* what) {
  using Tl = typename P::Tl;
  static_assert(sizeof(conv::GemmSet<P>) <= 4000, "a launch's parameters stay within 4 KB");
  int64_t gx = 0, gy = 0;
  for (int i = 0; i < set.count; ++i) {
    gx = std::max(gx, (set.p[i].N + Tl::BN - 1) / Tl::BN);
    gy = std::max(gy, (set.p[i].M + Tl::BM - 1) / Tl::BM);
  }
  if (gx == 0 || gy == 0) return;
  const dim3 grid = gemm_grid(gx, gy, int64_t(set.count) * set.per, what);
  if (tf32) conv::gemm_set_kernel<P, conv::Tf32SyncMma<Tl>><<<grid, conv::kGemmThreads, 0, s>>>(set);
  else conv::gemm_set_kernel<P, conv::SimtMma<float, Tl>><<<grid, conv::kGemmThreads, 0, s>>>(set);
  check_launch(what);
}

// Forward and grad_input decode their k (channel, tap) in 32 bits, with room for a tile past the end.
void check_k32(int64_t K, const char* what) {
  if (K > 0x7fffff00)
    throw ValueError(std::string(what) + ": channels per group times kernel taps must stay below 2^31");
}

// Tile shape for an M x N problem of T: 128 columns where it has enough of them (N >= 256), else 64; with 128
// columns, 32 rows where M <= 32, else 64. float64 never takes the 64 x 128 tile: its 32 double sums a thread
// spill (ptxas: 84-372 bytes for each of its four GEMMs). PIXELOPS_CONV_TILE_N=64 or 128 forces one width
// everywhere, with 64 rows (a testing knob: the CUDA tests run under both and under the default choice, so
// every shape runs).
int forced_tile_n() {
  static const int v = [] {
    const char* e = std::getenv("PIXELOPS_CONV_TILE_N");
    return e ? std::atoi(e) : 0;
  }();
  return v;
}
template <class T, class F>
void with_tile(int64_t m, int64_t n, F&& f) {
  const int forced = forced_tile_n();
  constexpr bool kDouble = std::is_same_v<T, double>;
  if (forced == 64 || (forced != 128 && n < 256)) f(conv::NarrowTile{});
  else if (forced != 128 && m <= 32) f(conv::ShortTile{});
  else if (kDouble && forced != 128) f(conv::NarrowTile{});
  else f(conv::WideTile{});
}

// The weight gradient's tile: with_tile's, except that the float32 SIMT product of a problem that with_tile
// gives 128 columns takes WeightTile's 96 where that pads its columns enough less, when new_paths().gw_tile96
// and no tile width is forced. Enough: its K step is 897 SASS instructions for 96 columns against 1079 for 128
// (sm_90), about 1/8 more a column, so 32 x 9 = 288 columns take it (3 x 96 against 3 x 128 padded) and
// 64 x 9 = 576 do not (6 x 96 against 5 x 128).
template <class T, class F>
void with_weight_tile(int64_t m, int64_t n, bool tf32, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    const int64_t padded96 = (n + 95) / 96 * 96, padded128 = (n + 127) / 128 * 128;
    if (!tf32 && gw_tile96() && forced_tile_n() == 0 && m > 32 && n >= 256 && padded96 * 9 < padded128 * 8) {
      f(conv::WeightTile{});
      return;
    }
  }
  with_tile<T>(m, n, f);
}

unsigned grid_for(int64_t n) { return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

// A weight gradient from `splits` partial sums ([split][M][Cg * ntaps], one more column, grad_bias's, where gb):
// a workspace for them, launch(ws) writing them, then reduce_grad_weight adding them in order (so the result
// does not depend on scheduling). Every weight-gradient path ends so: the GEMM, few-channel, halo and pointwise.
template <class T, class A, class Launch>
void weight_from_partials(const Geometry& q, int64_t splits, T* gw, T* gb, cudaStream_t s, const char* what,
                          Launch&& launch) {
  Scratch<A> ws(splits * q.M * (q.Cg * q.ntaps + (gb ? 1 : 0)), s, what);
  launch(ws.get());
  check_launch(what);
  const int64_t blocks = std::min<int64_t>((conv::weight_outputs(q, gb != nullptr) + 31) / 32, 1 << 20);
  const int warps = int(std::min<int64_t>(splits, conv::kReduceWarps));
  reduce_grad_weight<T, A><<<unsigned(blocks), 32 * warps, 0, s>>>(q, int(splits), ws.get(), gw, gb);
  check_launch("conv2d_backward (weight reduction)");
}

// grad_weight on the implicit GEMM (and grad_bias where gb: its blocks sum shares of grad_y's rows after their
// product, gemm_kernel's row sums).
template <class T, class Tl>
void grad_weight(const Geometry& q, const T* x, const T* y, const T* gy, T* gw, T* gb, bool tf32, cudaStream_t s) {
  using A = typename conv::AccOf<T>::type;
  conv::GradWeightGemm<T, Tl> p;
  p.q = q; p.x = x; p.y = y; p.gy = gy; p.bias = gb != nullptr;
  p.M = q.Mg; p.N = q.Cg * q.ntaps; p.K = q.N * q.OH * q.OW; p.groups = int(q.G);
  // Split K so that the grid fills the GPU's resident blocks once, rounding down: one block past a full wave
  // would run alone and double the time. At least 8 K steps per split.
  const int64_t tiles = ((p.M + Tl::BM - 1) / Tl::BM) * ((p.N + Tl::BN - 1) / Tl::BN) * q.G;
  const int64_t ksteps = (p.K + kBK - 1) / kBK;
  int64_t splits = 1;
  if (tiles > 0 && ksteps > 0) {
    const int64_t want = int64_t(resident_blocks<T, decltype(p)>(tf32)) * sm_count() / tiles;
    splits = std::max<int64_t>(1, std::min({want, (ksteps + 7) / 8, int64_t(65535) / q.G, int64_t(256)}));
  }
  const int64_t chunk_steps = ksteps > 0 ? (ksteps + splits - 1) / splits : 1;
  p.kchunk = chunk_steps * kBK;
  splits = ksteps > 0 ? (ksteps + chunk_steps - 1) / chunk_steps : 1;  // no empty split
  p.splits = int(splits);

  weight_from_partials<T, A>(q, splits, gw, gb, s, "conv2d_backward (weight)", [&](A* ws) {
    p.ws = ws;
    launch_gemm<T>(p, tf32, s, "conv2d_backward (weight)");
  });
}

// grad_weight of a few-channel layer (conv2d_direct.cuh): runs of pixels (whole chunks), enough for about two
// blocks an SM, each summed by one block into the workspace, then added in order; grad_bias too where gb
// (conv::grad_weight_direct_takes_bias).
template <class T>
void grad_weight_direct(const Geometry& q, const T* x, const T* y, const T* gy, T* gw, T* gb, cudaStream_t s) {
  using A = typename conv::AccOf<T>::type;
  const bool ones = gb != nullptr;
  const int kmax = conv::grad_weight_direct_kmax(q, ones);
  const int64_t chunk = conv::GwdShape<A, 16>::P;  // pixels a chunk: the same for every KMAX
  const int64_t mblocks = (q.Mg + conv::kGwdRows - 1) / conv::kGwdRows, P = q.N * q.OH * q.OW;
  const int64_t want = std::max<int64_t>(1, 2 * int64_t(sm_count()) / (mblocks * q.G));
  const int64_t run_len = std::max<int64_t>(1, (P + want * chunk - 1) / (want * chunk)) * chunk;
  const int64_t runs = std::max<int64_t>(1, (P + run_len - 1) / run_len);
  if (runs > 0x7fffffff || mblocks > 65535) throw ValueError("conv2d_backward (weight): the problem is too large");
  const dim3 grid{unsigned(runs), unsigned(mblocks), unsigned(q.G)};
  weight_from_partials<T, A>(q, runs, gw, gb, s, "conv2d_backward (weight, direct)", [&](A* ws) {
    auto launch = [&](auto kernel) { kernel<<<grid, conv::kGwdThreads, 0, s>>>(q, run_len, x, y, gy, ws, ones); };
    switch (kmax) {
      case 16: launch(conv::grad_weight_direct<T, 16>); break;
      case 32: launch(conv::grad_weight_direct<T, 32>); break;
      default: launch(conv::grad_weight_direct<T, 64>);
    }
  });
}

// The forward GEMM of q (y contiguous): tap-major K where a group's channels fill whole K steps.
template <class T>
void forward_gemm(const Geometry& q, const T* x, const T* w, const T* b, T* y, bool relu, bool tf32, cudaStream_t s) {
  auto run = [&](auto p) {
    p.q = q; p.x = x; p.w = w; p.b = b; p.y = y; p.relu = relu;
    p.M = q.Mg; p.N = q.N * q.OH * q.OW; p.K = q.Cg * q.ntaps; p.groups = int(q.G); p.kchunk = p.K;
    check_k32(p.K, "conv2d_forward");
    launch_gemm<T>(p, tf32, s, "conv2d_forward");
  };
  with_tile<T>(q.Mg, q.N * q.OH * q.OW, [&](auto tile) {
    using Tl = decltype(tile);
    if (q.Cg % kBK == 0) run(conv::ForwardGemm<T, Tl, true>{});
    else run(conv::ForwardGemm<T, Tl, false>{});
  });
}

// The halo kernels (TF32 and float32) are on unless PIXELOPS_CONV_HALO=0 (or, for float32's alone,
// PIXELOPS_CONV_HALO_SIMT=0: tuning knobs, to time the GEMMs they replace), or a GEMM tile width is forced: the
// CUDA tests' runs under PIXELOPS_CONV_TILE_N are there to exercise the GEMMs they would otherwise take over.
bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::string(e) == value;
}
bool env_off(const char* name) { return env_is(name, "0"); }
bool halo_enabled(bool tf32) {
  static const bool on = !env_off("PIXELOPS_CONV_HALO"), simt = !env_off("PIXELOPS_CONV_HALO_SIMT");
  return on && (tf32 || simt) && forced_tile_n() == 0;
}
// Whether a problem of `rows` output rows (channels a group) goes to the halo kernel: float32's computes all 64
// rows of its tile on FMAs, so it leaves problems of 32 rows or fewer to the GEMMs' 32-row tile (on an H100 the
// halo took mnist_c2's fp32 grad_input, 32 rows, from 0.39 to about 0.46 ms).
bool halo_takes(int64_t rows, bool tf32) { return halo_enabled(tf32) && (tf32 || rows > 32); }

// Paths written without a GPU at hand, each timed on an H100 against the kernels it replaces (2026-11-26 and
// 2026-11-27; benchmarks/gpu_check.sh runs the CUDA tests and the kernel times both ways; README: the table of
// them), each variable read once. Those that were faster are on unless their variable is 0: FLAT, WIDE,
// PREROUND, PW_GW, GEMM_MMA, GW_SIMT, GW_TILE96, GATE_FIRST, GI_ONE_LAUNCH, NARROW. Those that were slower are
// off unless it is 1: SPLIT (res_s2's forward 0.14 -> 0.18 ms), PHASES (res_s2's grad_input no faster than the
// mma.sync GEMM), DIRECT_GI (0.06 ms against the taps' 0.04-0.05) and GW_ONE_BLOCK (res_s2's weight gradient
// 0.156 against the GEMM's 0.154 ms under TF32, 0.264 against 0.205 in float32). Why each was written:
// PIXELOPS_CONV_HALO_GW_SIMT, float32's weight gradient on the halo (GwSimt) instead of the float32 GEMM
// (first slower on the 64-channel layers; after its taps' loads were restructured, 2026-11-27: mnist_c2 0.410
// against the GEMM's 0.547 ms, res_3x3 0.335 against 0.390, pcnn_maskB 0.120 against 0.139);
// PIXELOPS_CONV_HALO_FLAT, the forward and grad_input of 1x1 stride-1 layers in flat mode (conv2d_halo.cuh),
// TF32 and float32, instead of the GEMMs (res_1x1's float32 grad_input: 0.238 ms there, 14 TFLOP/s);
// PIXELOPS_CONV_HALO_WIDE, the forward and stride-1 grad_input of 32 rows or fewer in the halo's wide layout
// (32 rows x 256 pixels a tile): float32's of 17 to 32 rows on the FMA product instead of the GEMMs' 32-row
// tile (mnist_c2's grad_input: 0.39 ms there, its largest kernel beside the weight gradient), TF32's instead of
// the 64-row tile, half of whose rows (and mma.sync) it leaves idle (mnist_c2's grad_input again);
// PIXELOPS_CONV_HALO_SPLIT, a column-stride-2 forward's halo slots split into their even and odd columns
// (halo_column), so that the taps' reads of consecutive pixels are consecutive floats (two to a bank otherwise:
// res_s2's forward, 0.58x cuDNN's under TF32 and 0.83x in float32 on an H100, the worst forward rows);
// PIXELOPS_CONV_HALO_PREROUND, TF32's halo rounded once a chunk (a tile, for the weight gradient) in shared
// memory (HaloTf32Preround, GwTf32Preround) instead of at each B fragment read (Nsight had the TF32 forward at
// 63% of the SMs' issue slots, paced by the instructions around the MMAs: for a 3x3 layer a cvt for each of 8 B
// values of every k8 step; 18 in the weight gradient's);
// PIXELOPS_CONV_PW_GW, the float32 weight gradient (TF32 or not) of pointwise (1x1, stride 1, unpadded) layers
// on a GEMM of their own (conv2d_pointwise_grad_weight.cuh) instead of the implicit GEMM's (res_1x1: 0.127 ms
// TF32, 0.125 float32 there);
// PIXELOPS_CONV_HALO_PHASES, a strided layer's grad_input on the halo kernel, a launch per stride phase (those
// of one tap left to the GEMM, unless in flat mode) instead of the GEMMs' (res_s2's: 0.238 ms in float32, 0.175
// in TF32 on an H100 there, 15 and 21 TFLOP/s, where the halo does 30 and 73 at stride 1).
// PIXELOPS_CONV_DIRECT_GI, the grad_input of few-channel layers (Cg <= 4: mnist_c1, pcnn_maskA) on the direct
// kernel (grad_input_direct, its output channels now split over four threads a pixel) instead of by taps (a
// GEMM into per-tap planes and a gather, conv2d_taps.cuh: three launches and a workspace; on an H100 mnist_c1's
// took 0.056 ms, 0.048 under TF32, and pcnn_maskA's 0.037 and 0.030, for 26 and 13 MB of grad_y).
// PIXELOPS_CONV_GEMM_MMA, the TF32 GEMMs' product on mma.sync.m16n8k8 (Tf32SyncMma) instead of WMMA, whose
// m16n16k8 TF32 fragments compiled to generic loads and to HMMA.1684, twice the MMA instructions of HMMA.1688
// for the same work (SASS, sm_90; res_1x1's TF32 forward, grad_input and weight gradient on those GEMMs: 0.103,
// 0.181 and 0.127 ms on an H100, 18-32 TFLOP/s against the halo's 73).
// PIXELOPS_CONV_GW_TILE96: the float32 weight gradient's GEMM on WeightTile (64 x 96) where it pads the
// columns less than the 128-wide tile (with_weight_tile): mnist_c2's 288 columns ran at 14 TFLOP/s on the
// 128-wide tile, against res_3x3's 19, with a quarter of each tile's multiply-adds on padding (0.472 against
// 0.547 ms on 96-wide tiles; GW_SIMT now takes that layer, the GEMM keeps strided and gated ones).
// PIXELOPS_CONV_GATE_FIRST: a fused ReLU's gate on grad_y as one elementwise pass into a workspace before the backward's kernels, instead of in their loaders: the halo
// and pointwise kernels take no gate, so a layer with activation="relu" (pixelops.swap(fuse_relu=True)) had its
// grad_input and weight gradient on the GEMMs, against the halo's 30 TFLOP/s (float32, res_3x3) for an
// unfused one; the pass costs about what the unfused ReLU's backward did (a read of y and grad_y, a write).
// On the H100 a fused layer's forward + backward kernels went from 1.58 to 1.16 ms (mnist_c2, float32), 1.21
// to 0.53 (TF32), 1.18 to 0.93 (res_3x3).
// PIXELOPS_CONV_GI_ONE_LAUNCH: a strided layer's grad_input GEMMs, one per stride phase, in one launch
// (gemm_set_kernel) instead of a launch each: res_s2's four ran 196 blocks each on the H100's 264 block slots,
// one partial wave after another (its grad_input: 0.239 -> 0.187 ms in float32, 0.140 -> 0.127 under TF32).
// PIXELOPS_CONV_HALO_GW_ONE_BLOCK: the halo weight gradient
// also for layers whose two stages need more shared memory than two blocks an SM leave (kGwSmem), at one block
// an SM, instead of the GEMM: res_s2's stride-2 halo is 13 slots of 60 floats a channel, a stage 59 KB. Timed
// so on an H100 before GwTf32's restructuring it was slower (0.18 ms against the GEMM's 0.15), and the
// restructuring took res_3x3's from 0.239 to 0.172 ms.
// PIXELOPS_CONV_HALO_NARROW: the TF32 halo forward and grad_input on 64 x 96 tiles where those take fewer waves
// of blocks (conv2d_halo.cuh, halo_pick_narrow): res_s2's forward, 392 tiles of 128 pixels at two blocks an SM,
// was 1.48 waves of the H100's 264 slots, and 0.75x cuDNN's GPU time (0.098 -> 0.078 ms with it).
// PIXELOPS_CONV_FEW_TILED: the float32 forward, grad_input and weight gradient of few-channel layers (Cg <= 4,
// stride 1) on forward_tiled, grad_input_tiled and grad_weight_tiled (conv2d_few_channels.cuh: a tile and its
// halo staged in shared memory), instead of forward_direct (about 7 instructions a multiply-add: mnist_c1's
// forward 18 us on an H100, 6 TFLOP/s), grad_input by taps (three launches and a workspace: pcnn_maskA's 0.037
// ms, 4 TFLOP/s) or grad_input_direct, and grad_weight_direct (pcnn_maskA's 0.038 ms). Not yet timed.
struct NewPaths {
  bool gw_simt, flat, wide, split, preround, pw_gw, phases, direct_gi, gemm_mma, gw_tile96, gate_first,
      gi_one_launch, gw_one_block, narrow, few_tiled;
};
const NewPaths& new_paths() {
  auto asked = [](const char* name) { return env_is(name, "1"); };  // off unless asked for
  auto kept = [](const char* name) { return !env_off(name); };      // on unless turned off
  static const NewPaths p{kept("PIXELOPS_CONV_HALO_GW_SIMT"),  kept("PIXELOPS_CONV_HALO_FLAT"),
                          kept("PIXELOPS_CONV_HALO_WIDE"),      asked("PIXELOPS_CONV_HALO_SPLIT"),
                          kept("PIXELOPS_CONV_HALO_PREROUND"),  kept("PIXELOPS_CONV_PW_GW"),
                          asked("PIXELOPS_CONV_HALO_PHASES"),   asked("PIXELOPS_CONV_DIRECT_GI"),
                          kept("PIXELOPS_CONV_GEMM_MMA"),       kept("PIXELOPS_CONV_GW_TILE96"),
                          kept("PIXELOPS_CONV_GATE_FIRST"),     kept("PIXELOPS_CONV_GI_ONE_LAUNCH"),
                          asked("PIXELOPS_CONV_HALO_GW_ONE_BLOCK"), kept("PIXELOPS_CONV_HALO_NARROW"),
                          asked("PIXELOPS_CONV_FEW_TILED")};
  return p;
}
bool gemm_mma_sync() { return new_paths().gemm_mma; }
bool gw_tile96() { return new_paths().gw_tile96; }
// Whether a problem of `rows` rows takes the wide layout: TF32's product for any of 32 rows or fewer; float32's
// leaves 16 or fewer to the GEMMs, as it does with the 64-row tile.
bool halo_wide_takes(int64_t rows, bool tf32) {
  return new_paths().wide && halo_enabled(tf32) && (tf32 || rows > 16) && rows <= 32;
}

// The product and layout of a halo launch (forward or grad_input) for a problem of `rows` output rows: TF32's
// mma.sync or float32's FMAs, the wide layout, the halo rounded once a chunk, flat mode and split columns asked
// for (halo_setup keeps them where the layer allows), and the device's size where narrow tiles may be picked.
// False where the halo kernels leave the problem to the GEMMs.
bool halo_plan(conv::HaloConv& h, int64_t rows, bool tf32) {
  h.simt = !tf32;
  h.flat = new_paths().flat;
  h.preround = tf32 && new_paths().preround;
  h.split = new_paths().split;
  h.wide = halo_wide_takes(rows, tf32);
  if (new_paths().narrow) {
    h.sms = sm_count();
    h.sm_smem = size_t(smem_per_sm());
  }
  return halo_takes(rows, tf32) || h.wide;
}

// The most shared memory a block may opt in to on the current device (227 KB on Hopper, 163 KB on the A100,
// 99 KB on other Ampere parts).
int smem_optin() { return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(); }

// Shared memory a halo block of the forward or grad_input may take, within what the device allows: it sets how
// many chunks are in flight, and with them how many blocks share an SM. By default what leaves as many blocks
// an SM as the product's registers do: three of the TF32 one (kHaloMaxSmem), two of the float32 one
// (kHaloMostSmem: 80 registers would spill it), whose third stage that buys took pcnn_maskB's forward and
// grad_input from 0.155 to 0.146 ms on an H100 (2026-11-27; the other float32 layers the same). The tuning knob
// PIXELOPS_HALO_SMEM_KB sets it for both.
size_t halo_smem_budget(bool simt) {
  static const size_t asked = [] {
    const char* e = std::getenv("PIXELOPS_HALO_SMEM_KB");
    const long kb = e ? std::atol(e) : 0;
    return kb > 0 ? size_t(kb) * 1024 : 0;
  }();
  const size_t budget = asked ? asked : simt ? conv::kHaloMostSmem : conv::kHaloMaxSmem;
  return std::min(budget, size_t(smem_optin()));
}
// Where two stages do not fit that budget (large strided halos), a block may take up to half an SM's worth.
size_t halo_smem_most(bool simt) {
  return std::max(halo_smem_budget(simt), std::min(conv::kHaloMostSmem, size_t(smem_optin())));
}

// Launches Kernel(p) with `smem` bytes of dynamic shared memory. More than 48 KB needs the kernel's opt-in (to
// all the device allows), once per kernel and device: `opted` is the kernel's record of the devices done.
template <auto Kernel, class P>
void launch_with_smem(dim3 grid, int threads, size_t smem, cudaStream_t s, const P& p) {
  static std::atomic<uint64_t> opted{0};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const uint64_t bit = dev < 64 ? uint64_t(1) << dev : 0;
  if (!bit || !(opted.load() & bit)) {
    check(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin()),
          "cudaFuncSetAttribute");
    opted.fetch_or(bit);
  }
  Kernel<<<grid, threads, smem, s>>>(p);
}

template <int KC, class Math>
void launch_halo_kernel(const conv::HaloConv& h, cudaStream_t s) {
  const dim3 grid{unsigned((h.pixels() + h.bn() - 1) / h.bn()), unsigned(h.mtiles), unsigned(h.q.G)};
  launch_with_smem<conv::halo_conv_kernel<KC, Math>>(grid, conv::kHaloThreads, h.smem_bytes(), s, h);
}
template <class Math>
void launch_halo_kernel(const conv::HaloConv& h, cudaStream_t s) {
  switch (h.kc) {
    case 8: launch_halo_kernel<8, Math>(h, s); break;
    case 16: launch_halo_kernel<16, Math>(h, s); break;
    default: launch_halo_kernel<32, Math>(h, s);
  }
}

// Packs h's weights into a workspace and runs the halo kernel.
void run_halo(conv::HaloConv& h, cudaStream_t s, const char* what) {
  const int64_t packed = h.packed_floats();
  Scratch<float> wp(packed, s, what);
  h.wp = wp.get();
  conv::halo_pack_kernel<<<grid_for(packed), kThreads, 0, s>>>(h, wp.get(), packed);
  check_launch(what);
  if (h.simt && h.wide) launch_halo_kernel<conv::HaloSimtWide>(h, s);
  else if (h.simt) launch_halo_kernel<conv::HaloSimt>(h, s);
  else if (h.narrow) launch_halo_kernel<conv::HaloTf32NarrowPreround>(h, s);  // (narrow: preround, halo_narrow_allowed)
  else if (h.wide && h.preround) launch_halo_kernel<conv::HaloTf32WidePreround>(h, s);
  else if (h.wide) launch_halo_kernel<conv::HaloTf32Wide>(h, s);
  else if (h.preround) launch_halo_kernel<conv::HaloTf32Preround>(h, s);
  else launch_halo_kernel<conv::HaloTf32>(h, s);
  check_launch(what);
}

// grad_input by taps (conv2d_taps.cuh): pack the weights, z = the 1x1 GEMM of grad_y, then gather z per pixel.
template <class T>
void grad_input_by_taps(const Geometry& q, const T* w, const T* gy, T* gx, bool tf32, cudaStream_t s) {
  const Geometry zq = conv::taps_geometry(q);
  const int64_t packed = zq.M * zq.Cg, zsize = zq.N * zq.M * zq.OH * zq.OW, gsize = q.N * q.C * q.H * q.W;
  Scratch<T> buf(packed + zsize, s, "conv2d_backward (input)");
  T* wp = buf.get();
  T* z = wp + packed;
  conv::pack_tap_weights<T><<<grid_for(packed), kThreads, 0, s>>>(q, w, wp, packed);
  check_launch("conv2d_backward (input, packing)");
  forward_gemm<T>(zq, gy, wp, nullptr, z, false, tf32, s);
  conv::gather_taps_kernel<T><<<grid_for(gsize), kThreads, 0, s>>>(q, z, gx, gsize);
  check_launch("conv2d_backward (input, gather)");
}

// Few-channel layers on the tiled kernels (conv2d_few_channels.cuh: Cg <= 4, stride 1, float32) where
// new_paths().few_tiled: one launch each, no workspace. Launches Pick<KW, CG>::kernel, the kernel compiled for
// q's kernel width and p.s.cg.
template <template <int, int> class Pick, class P>
void few_channels_launch(const P& p, int KW, dim3 grid, cudaStream_t s) {
  auto by_cg = [&](auto kw) {
    constexpr int K = decltype(kw)::value;
    const size_t smem = p.smem_bytes();
    if (p.s.cg == 1) launch_with_smem<Pick<K, 1>::kernel>(grid, conv::kFcThreads, smem, s, p);
    else if (p.s.cg == 2) launch_with_smem<Pick<K, 2>::kernel>(grid, conv::kFcThreads, smem, s, p);
    else launch_with_smem<Pick<K, 4>::kernel>(grid, conv::kFcThreads, smem, s, p);
  };
  if (KW == 3) by_cg(std::integral_constant<int, 3>{});
  else if (KW == 5) by_cg(std::integral_constant<int, 5>{});
  else by_cg(std::integral_constant<int, 7>{});
}
template <int KW, int CG> struct PickForwardTiled { static constexpr auto kernel = conv::forward_tiled<KW, CG>; };
template <int KW, int CG> struct PickGradInputTiled { static constexpr auto kernel = conv::grad_input_tiled<KW, CG>; };
template <int KW, int CG> struct PickGradWeightTiled { static constexpr auto kernel = conv::grad_weight_tiled<KW, CG>; };
// (shared memory within 100 KB: two blocks an SM at the least)
size_t few_channels_smem() { return std::min(size_t(100) << 10, size_t(smem_optin())); }

template <class T>
bool tiled_forward(const Geometry& q, const T* x, const T* w, const T* b, T* y, bool relu, cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    conv::FwTiled<float> p;
    if (!new_paths().few_tiled || !conv::forward_tiled_setup(p, q, x, w, b, y, relu, few_channels_smem())) return false;
    const dim3 grid{unsigned(p.s.tiles), unsigned(q.G), unsigned(p.mblocks)};
    few_channels_launch<PickForwardTiled>(p, q.KW, grid, s);
    check_launch("conv2d_forward (tiled)");
    return true;
  } else {
    return false;
  }
}

template <class T>
bool tiled_grad_input(const Geometry& q, const T* w, const T* y, const T* gy, T* gx, cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    conv::GiTiled<float> p;
    if (y || !new_paths().few_tiled || !conv::grad_input_tiled_setup(p, q, w, gy, gx, few_channels_smem()))
      return false;
    const dim3 grid{unsigned(p.s.tiles), unsigned(q.G)};
    few_channels_launch<PickGradInputTiled>(p, q.KW, grid, s);
    check_launch("conv2d_backward (input, tiled)");
    return true;
  } else {
    return false;
  }
}

// (grad_bias too where gb: its partial sums as one more column)
template <class T>
bool tiled_grad_weight(const Geometry& q, const T* x, const T* y, const T* gy, T* gw, T* gb, cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    conv::GwTiled<float> p;
    // (splits: one wave of three blocks an SM, what the launch bounds allow)
    if (y || !new_paths().few_tiled ||
        !conv::grad_weight_tiled_setup(p, q, x, gy, gb != nullptr, 3 * int64_t(sm_count()), few_channels_smem()))
      return false;
    const dim3 grid{unsigned(p.splits), unsigned(q.G), unsigned(p.mblocks)};
    weight_from_partials<float, float>(q, p.splits, gw, gb, s, "conv2d_backward (weight, tiled)", [&](float* ws) {
      p.ws = ws;
      few_channels_launch<PickGradWeightTiled>(p, q.KW, grid, s);
    });
    return true;
  } else {
    return false;
  }
}

// Phase f of grad_input (all of it at stride 1) on the halo kernel where it applies (float32, TF32 or SIMT, no
// ReLU gate; a strided layer's phases where new_paths().phases); false otherwise.
template <class T>
bool halo_grad_input(const Geometry& q, const conv::Phase& f, const T* w, const T* y, const T* gy, T* gx, bool tf32,
                     cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    conv::HaloConv h;
    if (y || ((q.sh != 1 || q.sw != 1) && !new_paths().phases) || !halo_plan(h, q.Cg, tf32) ||
        !conv::halo_for_grad_input(q, f, w, gy, gx, h, halo_smem_budget(h.simt), halo_smem_most(h.simt)))
      return false;
    run_halo(h, s, "conv2d_backward (input, halo)");
    return true;
  } else {
    return false;
  }
}

// grad_weight on the halo kernel (conv2d_halo_grad_weight.cuh) where it applies: float32 with TF32 (GwTf32), or
// without it where halo_takes its rows and new_paths().gw_simt (GwSimt); no ReLU gate, grad_y planes
// contiguous, two stages in shared memory. grad_bias too where gb. False otherwise.
template <class T>
bool halo_grad_weight(const Geometry& q, const T* x, const T* y, const T* gy, T* gw, T* gb, bool tf32,
                      cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    conv::HaloGradWeight p;
    const size_t two_blocks = std::min(conv::kGwSmem, size_t(smem_optin()));
    const size_t budget = new_paths().gw_one_block ? size_t(smem_optin()) : two_blocks;
    if (y || !halo_takes(q.Mg, tf32) || (!tf32 && !new_paths().gw_simt) ||
        !conv::halo_gw_setup(p, q, x, gy, budget, !tf32))
      return false;
    p.bias = gb != nullptr;
    // one wave of two blocks an SM (what the registers and shared memory allow; one where the stages need
    // more), rounding down
    const int64_t per_split = int64_t(p.h.mtiles) * q.G * p.h.nchunks * p.tgroups;
    const int64_t per_sm = p.smem_bytes() > two_blocks ? 1 : 2;
    conv::halo_gw_split(p, per_sm * int64_t(sm_count()) / per_split);
    p.h.preround = !p.simt && new_paths().preround;
    const dim3 grid{unsigned(p.splits), unsigned(p.h.mtiles), unsigned(q.G * p.h.nchunks * p.tgroups)};
    const size_t smem = p.smem_bytes();
    weight_from_partials<float, float>(q, p.splits, gw, gb, s, "conv2d_backward (weight, halo)", [&](float* ws) {
      p.ws = ws;
      constexpr int kT = conv::kHaloThreads;
      if (p.simt) launch_with_smem<conv::halo_grad_weight_kernel<conv::GwSimt>>(grid, kT, smem, s, p);
      else if (p.h.preround) launch_with_smem<conv::halo_grad_weight_kernel<conv::GwTf32Preround>>(grid, kT, smem, s, p);
      else launch_with_smem<conv::halo_grad_weight_kernel<conv::GwTf32>>(grid, kT, smem, s, p);
    });
    return true;
  } else {
    return false;
  }
}

// grad_weight of a float32 pointwise layer on its own GEMM (conv2d_pointwise_grad_weight.cuh: PwTf32 under
// TF32, else PwSimt), where new_paths().pw_gw, without a ReLU gate, every plane read 16 bytes at a time;
// grad_bias too where gb. False otherwise.
template <class T>
bool pointwise_grad_weight(const Geometry& q, const T* x, const T* y, const T* gy, T* gw, T* gb, bool tf32,
                           cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    conv::PointwiseGw p;
    if (y || !new_paths().pw_gw || !conv::pointwise_gw_setup(p, q, x, gy)) return false;
    p.bias = gb != nullptr;
    // one wave of two blocks an SM (what the shared memory allows)
    conv::pointwise_gw_split(p, 2 * int64_t(sm_count()) / (int64_t(p.mtiles) * p.ntiles * q.G));
    const dim3 grid{unsigned(p.ntiles), unsigned(p.mtiles), unsigned(q.G * p.splits)};
    const size_t smem = conv::PointwiseGw::smem_bytes();
    weight_from_partials<float, float>(q, p.splits, gw, gb, s, "conv2d_backward (weight, pointwise)",
                                       [&](float* ws) {
      p.ws = ws;
      if (tf32) launch_with_smem<conv::pointwise_grad_weight_kernel<conv::PwTf32>>(grid, 256, smem, s, p);
      else launch_with_smem<conv::pointwise_grad_weight_kernel<conv::PwSimt>>(grid, 256, smem, s, p);
    });
    return true;
  } else {
    return false;
  }
}

}  // namespace

void conv2d_forward(const Array& x, const Array& w, const Array& bias, const Array& y, int64_t sh, int64_t sw,
                    int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups, int64_t ntaps, bool relu,
                    bool allow_tf32, uintptr_t stream) {
  if (y.numel() == 0) return;
  expect_contiguous(y, "conv2d: output");
  Geometry q = geometry_of(x, w, y, sh, sw, ph, pw, dh, dw, groups, ntaps);
  q.bs = bias.data ? bias.stride[0] : 0;
  dispatch_float(x.dtype, "conv2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (tiled_forward<T>(q, x.ptr<T>(), w.ptr<T>(), bias.data ? bias.ptr<T>() : nullptr, y.ptr<T>(), relu,
                         as_stream(stream)))
      return;
    if (conv::forward_direct_fits(q)) {
      const dim3 grid = direct_grid(conv::forward_direct_units(q) * 32, q.G);  // a warp a unit
      conv::forward_direct<T><<<grid, kThreads, 0, as_stream(stream)>>>(
          q, x.ptr<T>(), w.ptr<T>(), bias.data ? bias.ptr<T>() : nullptr, y.ptr<T>(), relu);
      check_launch("conv2d_forward (direct)");
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      conv::HaloConv h;
      if (halo_plan(h, q.Mg, allow_tf32) &&
          conv::halo_for_forward(q, x.ptr<T>(), w.ptr<T>(), bias.data ? bias.ptr<T>() : nullptr, y.ptr<T>(), relu, h,
                                 halo_smem_budget(h.simt), halo_smem_most(h.simt))) {
        run_halo(h, as_stream(stream), "conv2d_forward (halo)");
        return;
      }
    }
    forward_gemm<T>(q, x.ptr<T>(), w.ptr<T>(), bias.data ? bias.ptr<T>() : nullptr, y.ptr<T>(), relu, allow_tf32,
                    as_stream(stream));
  });
}

void conv2d_backward(const Array& x, const Array& w, const Array& y, const Array& grad_y, const Array& grad_x,
                     const Array& grad_w, const Array& grad_b, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                     int64_t dh, int64_t dw, int64_t groups, int64_t ntaps, bool relu, bool allow_tf32,
                     uintptr_t stream) {
  Geometry q = geometry_of(x, w, grad_y, sh, sw, ph, pw, dh, dw, groups, ntaps);
  for (int i = 0; i < 4; ++i) { q.gs[i] = grad_y.stride[i]; q.ys[i] = relu ? y.stride[i] : 0; }
  q.bs = grad_b.data ? grad_b.stride[0] : 0;
  cudaStream_t s = as_stream(stream);
  dispatch_float(x.dtype, "conv2d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* yp = relu ? y.ptr<T>() : nullptr;
    const T* gyp = grad_y.ptr<T>();
    // PIXELOPS_CONV_GATE_FIRST: the fused ReLU's gate applied to grad_y once, into a contiguous workspace, so
    // that every kernel below reads an ungated grad_y (the halo and pointwise kernels take no gate: with one,
    // grad_input and the weight gradient fall back to the GEMMs).
    const int64_t gated_size = q.N * q.M * q.OH * q.OW;
    const bool gate_first = yp && new_paths().gate_first && gated_size > 0 && grad_y.contiguous() && y.contiguous();
    Scratch<T> gated(gate_first ? gated_size : 0, s, "conv2d_backward (ReLU gate)");
    if (gate_first) {
      relu_gate_kernel<T><<<grid_for(gated_size), kThreads, 0, s>>>(gated_size, yp, gyp, gated.get());
      check_launch("conv2d_backward (ReLU gate)");
      gyp = gated.get();
      yp = nullptr;
      for (int i = 0; i < 4; ++i) q.ys[i] = 0;
    }
    if (grad_x.data && grad_x.numel() > 0) {
      expect_contiguous(grad_x, "conv2d_backward: grad_input");
      // phase f's grad_input GEMM, as a problem of p's type
      auto gi_problem = [&](auto p, const conv::Phase& f) {
        p.q = q; p.f = f; p.w = w.ptr<T>(); p.y = yp; p.gy = gyp; p.gx = grad_x.ptr<T>();
        p.M = q.Cg; p.N = q.N * f.PH * f.PW; p.K = q.Mg * f.ntaps; p.groups = int(q.G); p.kchunk = p.K;
        check_k32(p.K, "conv2d_backward (input)");
        return p;
      };
      auto run = [&](auto p, const conv::Phase& f) {
        launch_gemm<T>(gi_problem(p, f), allow_tf32, s, "conv2d_backward (input)");
      };
      // by taps in float32/float64 (float16/bfloat16 would round z before the taps are added)
      constexpr bool kTapsType = std::is_same_v<T, float> || std::is_same_v<T, double>;
      const bool direct = conv::grad_input_direct_fits(q);
      if (tiled_grad_input<T>(q, w.ptr<T>(), yp, gyp, grad_x.ptr<T>(), s))
        ;  // ran on the tiled kernel (PIXELOPS_CONV_FEW_TILED)
      else if (kTapsType && conv::taps_fit(q, yp != nullptr) && !(direct && new_paths().direct_gi))
        grad_input_by_taps<T>(q, w.ptr<T>(), gyp, grad_x.ptr<T>(), allow_tf32, s);
      else if (direct)
        launch_grad_input_direct<T>(q, w.ptr<T>(), yp, gyp, grad_x.ptr<T>(), s);
      else {
        // a launch per stride phase (one in all for stride 1): halo or GEMM; the GEMMs of a strided layer's
        // phases in one launch where new_paths().gi_one_launch
        std::vector<conv::Phase> gemm_phases;
        for (int rh = 0; rh < q.sh; ++rh)
          for (int rw = 0; rw < q.sw; ++rw) {
            const conv::Phase f = conv::plan_phase(q, rh, rw);
            if (f.PH == 0 || f.PW == 0) continue;
            if (halo_grad_input(q, f, w.ptr<T>(), yp, gyp, grad_x.ptr<T>(), allow_tf32, s)) continue;
            gemm_phases.push_back(f);
          }
        auto launch_each = [&] {
          for (const auto& f : gemm_phases)
            with_tile<T>(q.Cg, q.N * f.PH * f.PW, [&](auto tile) {
              using Tl = decltype(tile);
              if (q.Mg % kBK == 0) run(conv::GradInputGemm<T, Tl, true>{}, f);
              else run(conv::GradInputGemm<T, Tl, false>{}, f);
            });
        };
        if constexpr (std::is_same_v<T, float>) {  // (the set kernels are float32's alone)
          if (!new_paths().gi_one_launch || !gemm_mma_sync() || gemm_phases.size() < 2 ||
              gemm_phases.size() > size_t(conv::kGemmSetMost)) {
            launch_each();
          } else {
            // the phase with the most taps first: its blocks, the longest, start first
            std::stable_sort(gemm_phases.begin(), gemm_phases.end(),
                             [](const conv::Phase& a, const conv::Phase& b) { return a.ntaps > b.ntaps; });
            int64_t widest = 0;
            for (const auto& f : gemm_phases) widest = std::max(widest, q.N * f.PH * f.PW);
            with_tile<T>(q.Cg, widest, [&](auto tile) {
              using Tl = decltype(tile);
              auto launch_set = [&](auto proto) {
                conv::GemmSet<decltype(proto)> set;
                set.count = int(gemm_phases.size());
                set.per = int(q.G);
                for (int i = 0; i < set.count; ++i) set.p[i] = gi_problem(proto, gemm_phases[size_t(i)]);
                launch_gemm_set(set, allow_tf32, s, "conv2d_backward (input, phases in one launch)");
              };
              if (q.Mg % kBK == 0) launch_set(conv::GradInputGemm<T, Tl, true>{});
              else launch_set(conv::GradInputGemm<T, Tl, false>{});
            });
          }
        } else {
          launch_each();
        }
      }
    }
    // grad_bias rides along with the weight gradient where there is one: one more column of its partial sums
    // (the few-channel kernel's column of ones, where it fits; the others' blocks sum shares of grad_y's rows
    // after their product),
    // added by the same reduction. On its own kernels otherwise.
    const bool want_bias = grad_b.data && grad_b.numel() > 0;
    bool bias_done = false;
    if (grad_w.data && grad_w.numel() > 0) {
      expect_contiguous(grad_w, "conv2d_backward: grad_weight");
      const bool direct = conv::grad_weight_direct_fits(q);
      if (tiled_grad_weight<T>(q, x.ptr<T>(), yp, gyp, grad_w.ptr<T>(), want_bias ? grad_b.ptr<T>() : nullptr, s)) {
        bias_done = want_bias;  // (few channels, with grad_bias: PIXELOPS_CONV_FEW_TILED)
      } else {
        bias_done = want_bias && (!direct || conv::grad_weight_direct_takes_bias(q));
        T* gb = bias_done ? grad_b.ptr<T>() : nullptr;
        if (direct)
          grad_weight_direct<T>(q, x.ptr<T>(), yp, gyp, grad_w.ptr<T>(), gb, s);
        else if (pointwise_grad_weight(q, x.ptr<T>(), yp, gyp, grad_w.ptr<T>(), gb, allow_tf32, s) ||
                 halo_grad_weight(q, x.ptr<T>(), yp, gyp, grad_w.ptr<T>(), gb, allow_tf32, s))
          ;  // ran on the pointwise GEMM or the halo kernel
        else
          with_weight_tile<T>(q.Mg, q.Cg * q.ntaps, allow_tf32, [&](auto tile) {
            grad_weight<T, decltype(tile)>(q, x.ptr<T>(), yp, gyp, grad_w.ptr<T>(), gb, allow_tf32, s);
          });
      }
    }
    if (want_bias && !bias_done) grad_bias<T>(q, yp, gyp, grad_b.ptr<T>(), s);
  });
}

}  // namespace pixelops::cuda
