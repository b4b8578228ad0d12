// The TF32 forward convolution from a shared-memory halo (sm_80+): a block stages, for a chunk of input
// channels, the input rows that its 128 output pixels read (with their zero padding) once, and every tap of
// the kernel reads its operand from that staged halo at a fixed shift. The implicit GEMMs of
// conv2d_problems.cuh instead gather each (channel, tap, pixel) element from global memory on its own: for a
// 3x3 layer that is 9 loads, 9 address computations and 9 shared stores per input element, and measured on an
// H200 it left the tensor cores idle (about 450 instructions a warp per 16 MMAs). Here a K step of one tap is
// a handful of shared loads and 8 mma.sync.m16n8k8 a warp.
//
//   y[img, g*Mg+m, oh, ow] = act(b + sum_{c, j} A[g][m][c][j] * xpad[img, g*Cg+c, oh*sh + kh(j)*dh, ow*sw + kw(j)*dw])
//
// with xpad the zero-padded input. The same kernel runs grad_input of a stride-1 convolution (a convolution of
// grad_y with the flipped, transposed kernel), and, behind a setting, each stride phase of a strided one (the
// pixels of one row and column residue, a stride-1 convolution of grad_y with the taps that reach them, written
// in place: halo_for_grad_input): A, the taps' shifts and where outputs go come from the host (HaloConv), so the
// kernel does not know which it runs.
//
// Block: 256 threads (at most 80 registers each, so that three blocks share an SM), a 64 (rows m) x 128
// (pixels n) tile; warp (wm, wn) = (warp % 2, warp / 2) owns rows 32*wm + [0, 32) and pixels 32*wn + [0, 32) as
// 2 x 4 m16n8 accumulators. Per chunk of KC channels (KC = 8, 16 or 32), one shared stage holds the chunk's
// weights, packed by a small kernel before the launch in the order the warps read them (each lane's A fragment
// is one 16-byte load, already rounded to TF32), and the halo: KC channels x `rows` slots x RL columns. A slot
// is one padded input row; slots follow the flattened (image, padded row) order from the first row the tile
// needs, so a tile that runs from one image into the next still reads each of its rows at
// (slot of its output row + kh*dh) * RL + ow*sw + kw*dw. Rows and columns of the padding are zeroed once and
// never copied. With 2 to 4 stages (as many as the shared-memory budget holds), the next chunks are copied
// (cp.async: 16 bytes at a time where the rows allow it) while one is multiplied.
//
// Measured on an H200 (2026-11-26): the res_3x3 TF32 forward went 0.199 -> 0.10-0.13 ms (52 TFLOP/s), and its
// fwd+bwd kernel time about 0.73 -> 0.55 ms with the halo grad_input; with three blocks an SM (75 KB each) it
// was faster than with two (110 KB, 3 stages) or one (160 KB, 4 stages) on every suite shape it runs.
//
// Flat mode (h.flat, asked for by the caller and kept where the layer is 1x1, stride 1, unpadded): output pixel
// n reads input pixel n, so a tile's operand is just its 128 pixels of each channel, one run (CS = 136 floats a
// channel) with no slots or padding; the slot layout would stage 3-4 whole image rows (224 floats for 56-wide
// images) for those 128, and on an H100 ran res_1x1's TF32 forward at 0.21 ms against the WMMA GEMM's 0.10.
// The same kernels and products run it (the one tap at shift 0, a pixel's "corner" its place in the tile).
//
// Three more layouts, each behind a setting until timed on a GPU (conv2d.cu): a wide tile of 32 rows x 256
// pixels for problems of 32 rows or fewer (halo_tf32_place, halo_simt_place), split slots for column stride 2
// (halo_column: even columns, then odd ones, so that consecutive pixels read consecutive floats), and the TF32
// product's halo rounded once a chunk in shared memory (halo_round_stage) instead of at each read.
//
// Narrow tiles (h.narrow, 64 rows x 96 pixels: halo_steps) for the TF32 product where they take fewer waves of
// blocks than 128-pixel ones (halo_pick_narrow). res_s2's forward is 392 tiles of 128 pixels, and its stride-2
// halo keeps it at two blocks an SM: on an H100's 132 SMs that is 1.48 waves, the last with one block an SM,
// too few warps to keep the tensor cores busy, where 524 tiles of 96 fill two. Measured there (2026-11-27): its
// TF32 forward 0.098 -> 0.078 ms. The float32 product gained nothing so (pcnn_maskB's forward and grad_input,
// the same 1.48 waves: 0.155 -> 0.153 ms; res_s2's forward unchanged): one block of its 32 independent FMAs a
// step keeps an SM's FMA pipes about as busy as two, so it keeps its 128-pixel tiles.
//
// Everything but the kernels is plain C++ over host/device functions, so tests/cuda_host runs the same index
// math (the packing, the slots, the fragments' addresses) against a naive convolution.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/conv2d_mma.cuh"   // tf32_round, mma_tf32
#include "cuda/conv2d_tile.cuh"  // Geometry, FastDiv
#include "cuda/cuda_utils.cuh"

namespace pixelops::cuda::conv {

constexpr int kHaloBM = 64, kHaloBN = 128, kHaloThreads = 256, kHaloMaxTaps = 64, kHaloMaxKc = 32;
constexpr int kHaloFrag = 4 * 32 * 4;       // floats of one k8 slice of a 64-row tile's A: 4 m16 x 32 lanes x 4
constexpr size_t kHaloMaxSmem = 75 * 1024;  // TF32's default budget: three blocks an SM on Hopper (228 KB)
constexpr size_t kHaloMostSmem = 113 * 1024;  // float32's, and where two stages need more: two blocks an SM

// One launch: the convolution as a forward (q: x (N, C, H, W) -> y (N, M, OH, OW), contiguous y), the packed
// weights and the halo's shape.
struct HaloConv {
  Geometry q;
  const float* x = nullptr;
  const float* wp = nullptr;  // packed: [g][m tile][chunk][tap j][k8 slice][m16 fragment][lane][4]
  const float* b = nullptr;   // bias (stride q.bs) or null
  float* y = nullptr;
  bool relu = false;
  bool pairs = false;  // pixels go out two at a time (8-byte stores): even pixels an image, y 8-byte aligned
  bool simt = false;   // float32 FMAs (HaloSimt) instead of TF32 mma.sync (HaloTf32): weights packed for it
  bool flat = false;   // 1x1, stride 1, unpadded: each channel's 128 pixels as one run (see the top of the file)
  bool wide = false;   // the 32-row layout: tiles of 32 rows x 256 pixels (halo_simt_place, halo_tf32_place)
  bool narrow = false; // TF32: tiles of 64 rows x 96 pixels (halo_steps); asked for, or picked by halo_pick_narrow
  int sms = 0;         // the device's SMs where halo_setup may pick narrow tiles (0: it does not)
  size_t sm_smem = 0;  // ... and the shared memory of one SM (bytes)
  bool whole = false;  // the halo spans all of q's kernel rows (grad_input, whose taps are flipped: a mask's
                       // unused rows come first), not just through the last tap's (a masked forward)
  bool preround = false;  // HaloTf32's halo rounded to TF32 once a chunk, in shared memory (halo_round_stage)
  bool split = false;  // column stride 2: a slot's even padded columns, then its odd ones (halo_column)
  int half = 0;        // ... the odd ones' start
  // Where output pixels go: by default y is q's output (N, M, OH, OW), contiguous. A phase of a strided
  // grad_input (halo_for_grad_input) writes its pixel (oh, ow) to row out_r0 + oh*out_sh and column
  // out_c0 + ow*out_sw of planes out_H x out_W (grad_x's).
  bool phased = false;
  int out_r0 = 0, out_c0 = 0, out_sh = 1, out_sw = 1;
  int64_t out_H = 0, out_W = 0;
  int kc = 8, nkk = 1, nchunks = 0, mtiles = 0;
  int stages = 2;                // chunks in shared memory at once (2..4)
  int rows = 0, RL = 0, CS = 0;  // slots, a slot's length and a channel's (floats)
  int lead = 0;                  // where a slot's padded column 0 sits in it
  int Wload = 0;                 // input columns copied a row (those the taps reach)
  bool vec = false;              // rows copied 16 bytes at a time (x rows contiguous and 16-byte aligned)
  int nvec = 0;                  // 16-byte pieces a row, with FastDiv by_nvec
  FastDiv by_nvec;
  int64_t Rfull = 1;             // padded rows one image's output rows read: (OH-1)*sh + span (halo_shape)
  FastDiv by_Rfull;
  int ntaps = 0;
  int tap_off[kHaloMaxTaps] = {};  // tap j's shift in the halo: kh*dh*RL + kw*dw
  int chan_bytes[kHaloMaxKc] = {};  // channel c's shift in a chunk's halo in bytes (halo_channel_bytes)
  // where the packer reads tap j's weight: w + g*wgs + row*wrs + chan*wcs + tap_w[j]
  const float* w = nullptr;
  int64_t wgs = 0, wrs = 0, wcs = 0;
  int64_t tap_w[kHaloMaxTaps] = {};

  __host__ __device__ int64_t pixels() const { return q.N * q.OH * q.OW; }
  // pixels a tile: 128, 256 wide, 96 narrow
  __host__ __device__ int bn() const { return wide ? 2 * kHaloBN : narrow ? kHaloBN * 3 / 4 : kHaloBN; }
  // packed weights of a chunk (ntaps * kc * 64 in either packing)
  __host__ __device__ int chunk_floats() const { return ntaps * nkk * kHaloFrag; }
  __host__ __device__ int stage_floats() const { return chunk_floats() + kc * CS; }
  int64_t packed_floats() const { return q.G * mtiles * int64_t(nchunks) * chunk_floats(); }
  size_t smem_bytes() const { return size_t(stages) * stage_floats() * sizeof(float); }
};

// Channel c's shift in a chunk's halo, in bytes (4 * c * CS), for every c of a chunk. Both products read them
// from the launch's parameters (halo_simt_steps, HaloTf32T::chunk), where they stay in uniform registers: each
// halo load is one shared load at a thread's register plus a uniform one. With c * CS computed in the kernel,
// the compiler stepped each of a thread's pixel addresses by CS from channel to channel, an instruction a load
// (SASS for sm_90, a tap loop: float32, 16-channel chunks, 689 instructions for 512 FFMA, now 629; TF32 with
// its halo rounded, 3.7 to 4.2 instructions a HMMA, now 2.8).
inline void halo_channel_bytes(HaloConv& h) {
  for (int c = 0; c < kHaloMaxKc; ++c) h.chan_bytes[c] = c < h.kc ? 4 * c * h.CS : 0;
}

// The halo's shape for q at kc channels a chunk: slots enough for any B = h.bn() consecutive output pixels (a
// tile: 128, or 256 wide). Moving to the next output row moves the first slot by sh; moving to the next image
// by the span (the rest of the previous image's padded rows: an image's slots are the Rfull padded rows its
// output rows read). Among B consecutive pixels there are at most ceil((B-1) / OW) row changes, of which at
// most ceil((B-1) / (OH*OW)) change the image. With h.vec, a slot starts `lead` floats early and is a multiple
// of 4 long, so that input column 0 of every slot is 16-byte aligned.
inline void halo_shape(HaloConv& h, int kc, int cs_mod = 8) {
  const Geometry& q = h.q;
  h.kc = kc; h.nkk = kc / 8;
  h.nchunks = int((q.Cg + kc - 1) / kc);
  h.mtiles = int((q.Mg + kHaloBM - 1) / kHaloBM);
  if (h.flat) {  // one run of the tile's pixels a channel (the slots' fields unused)
    h.rows = 1; h.RL = h.bn(); h.lead = 0;
    h.CS = h.bn() + ((cs_mod - h.bn() % 32) + 32) % 32;
    h.Wload = h.nvec = 0; h.Rfull = 1;
    halo_channel_bytes(h);
    return;
  }
  // The kernel rows an output row reads: through the last active tap's row. For a PixelCNN mask that leaves out
  // the rows below the centre (3x3 mask B: 2 of 3 rows, so 8 slots where 10 were staged for 28-wide images);
  // flipped (grad_input), those rows come first and the span stays whole (h.whole).
  const int64_t kh_last = h.whole ? q.KH - 1 : std::max(0, h.ntaps - 1) / q.KW;
  const int64_t span = kh_last * q.dh + 1;
  const int64_t row_changes = (h.bn() - 2 + q.OW) / q.OW;
  const int64_t image_changes = std::min<int64_t>(row_changes, (h.bn() - 2 + q.OH * q.OW) / (q.OH * q.OW));
  const int64_t rows = row_changes * q.sh + image_changes * std::max<int64_t>(0, span - q.sh) + span;
  const int64_t reach = int64_t(q.OW - 1) * q.sw + int64_t(q.KW - 1) * q.dw + 1;  // padded columns read
  h.lead = h.vec ? (4 - q.pw % 4) % 4 : 0;
  h.half = h.split ? int((reach + 1) / 2) : 0;
  const int64_t RL = h.split ? 2 * int64_t(h.half) : h.vec ? (h.lead + reach + 3) / 4 * 4 : reach;
  int64_t CS = rows * RL;
  // CS = cs_mod mod 32, so that a B fragment's loads fall in distinct banks: 8 where its 4 k rows are 4
  // channels (the forward), 4 where its 8 columns are 8 channels (grad_weight, conv2d_halo_grad_weight.cuh)
  CS += ((cs_mod - CS % 32) + 32) % 32;
  h.rows = int(std::min<int64_t>(rows, 1 << 20));
  h.RL = int(std::min<int64_t>(RL, 1 << 20));
  h.CS = int(std::min<int64_t>(CS, 1 << 30));
  h.Wload = int(std::max<int64_t>(0, std::min<int64_t>(q.W, reach - q.pw)));
  h.nvec = (h.Wload + 3) / 4;
  h.by_nvec = FastDiv(h.nvec);
  h.Rfull = int64_t(q.OH - 1) * q.sh + span;
  h.by_Rfull = FastDiv(h.Rfull);
  halo_channel_bytes(h);
}

// Whether the halo path can run q (as a forward with ntaps taps): enough channels to fill a k8 slice mostly, a
// tap table that fits, and at least two stages within smem_budget bytes, or else within smem_most (where it is
// larger: fewer blocks share an SM, but the tensor cores still beat the GEMM's); fills h's shape with the chunk
// size it picks (as many channels as keep about 64 (tap, channel) pairs per chunk) and as many stages as fit,
// up to 4. Two taps or more, or flat mode: with one tap in slots, nothing in the halo is reused, and on an H100
// the 1x1 res_1x1 layer ran 2x slower that way than on the WMMA GEMM (forward 0.21 against 0.10 ms).
inline bool halo_fits(HaloConv& h, int ntaps, size_t smem_budget = kHaloMaxSmem, size_t smem_most = 0) {
  const Geometry& q = h.q;
  if (q.Cg < 4 || (ntaps < 2 && !h.flat) || ntaps > kHaloMaxTaps || q.OH < 1 || q.OW < 1 || q.G > 65535) return false;
  if ((q.Mg + kHaloBM - 1) / kHaloBM > 65535 || (h.pixels() + h.bn() - 1) / h.bn() > 0x7fffffff) return false;
  if (q.OW >= (1 << 16) || q.OH >= (1 << 16)) return false;
  h.ntaps = ntaps;
  const int tries = smem_most > smem_budget ? 2 : 1;
  for (int i = 0; i < tries; ++i) {
    const size_t budget = i == 0 ? smem_budget : smem_most;
    int kc = ntaps >= 8 ? 8 : ntaps >= 4 ? 16 : 32;
    while (kc > 8 && kc / 2 >= q.Cg) kc /= 2;  // no chunk wider than the channels
    for (; kc >= 8; kc /= 2) {
      halo_shape(h, kc);
      if (int64_t(h.rows) * h.RL >= (1 << 20)) return false;  // (a halo this large would not fit anyway)
      const size_t stage_bytes = size_t(h.stage_floats()) * sizeof(float);
      h.stages = int(std::min<size_t>(4, budget / stage_bytes));
      if (h.stages >= 2) return true;
    }
  }
  return false;
}

// Narrow tiles (64 x 96) run on the TF32 product that reads a halo rounded once a chunk (the default), not in
// the wide layout: the one compiled with three n8 steps a warp where the others have four (halo_steps).
inline bool halo_narrow_allowed(const HaloConv& h) { return !h.wide && !h.simt && h.preround; }

// Blocks of h's (TF32) launch an SM runs at once: three as the registers allow (80 a thread, the launch
// bounds), or fewer where the SM's shared memory holds fewer (1 KB of it reserved a block).
inline int64_t halo_blocks_per_sm(const HaloConv& h) {
  const int64_t by_smem = int64_t(h.sm_smem / (h.smem_bytes() + 1024));
  return std::max<int64_t>(1, std::min<int64_t>(3, by_smem));
}
// The time h's launch takes, counted in pixels of one block's tile: each wave of blocks over the device's block
// slots takes the time of one tile, whose work is its pixels (the halo's rows each tile adds are left out).
inline int64_t halo_wave_cost(const HaloConv& h) {
  const int64_t tiles = (h.pixels() + h.bn() - 1) / h.bn() * h.mtiles * h.q.G;
  const int64_t slots = halo_blocks_per_sm(h) * std::max(h.sms, 1);
  return (tiles + slots - 1) / slots * h.bn();
}
// Takes narrow tiles for h (fitted with 128-pixel ones) where they cost at least a tenth less (halo_wave_cost):
// a partial last wave of 128-pixel tiles, or fewer tiles than slots. On a tie the wider tile stays (its halo
// rows and weight loads are fewer a pixel).
inline void halo_pick_narrow(HaloConv& h, int ntaps, size_t smem_budget, size_t smem_most) {
  HaloConv n = h;
  n.narrow = true;
  if (halo_fits(n, ntaps, smem_budget, smem_most) && 10 * halo_wave_cost(n) <= 9 * halo_wave_cost(h)) h = n;
}

// Whether the rows of x (strides xs, data at x) can be copied 16 bytes at a time: contiguous, and every row
// start 16-byte aligned.
inline bool halo_rows_vectorizable(const int64_t* xs, const float* x) {
  return xs[3] == 1 && xs[2] % 4 == 0 && xs[1] % 4 == 0 && xs[0] % 4 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0;
}
// Whether t (seen as a forward) can run in flat mode: 1x1, stride 1, unpadded, so output pixel n is input pixel n.
inline bool halo_flat_geometry(const Geometry& t) {
  return t.KH == 1 && t.KW == 1 && t.sh == 1 && t.sw == 1 && t.ph == 0 && t.pw == 0 && t.H == t.OH && t.W == t.OW;
}
// In flat mode, whether runs of 4 pixels can be copied 16 bytes at a time: each channel's plane one contiguous
// run whose length is a multiple of 4 (so no piece straddles two images), every plane 16-byte aligned.
inline bool halo_flat_vectorizable(const Geometry& t, const float* x) {
  return t.xs[3] == 1 && t.xs[2] == t.W && planes_in_16_bytes(t.H * t.W, t.xs, x);
}

// Fills h for t, q's convolution seen as a forward of `in` into `out` (q itself, or a phase of its grad_input),
// with `ntaps` taps: tap(j, kh, kw, th, tw) says that tap j is q's weight tap (kh, kw), at (th, tw) in t's
// kernel (its shift in the halo: th*t.dh rows, tw*t.dw columns). The weight of (row, channel, tap) is at
// w + g*Mg*ws[0] + row*wrs + chan*wcs + kh*ws[2] + kw*ws[3]. `whole`: the halo spans all of t's kernel rows
// (else only through the last tap's row: a masked forward). False where the halo path does not fit.
template <class Tap>
inline bool halo_setup(HaloConv& h, const Geometry& t, const Geometry& q, int ntaps, const float* in, float* out,
                       const float* w, int64_t wrs, int64_t wcs, bool whole, size_t smem_budget, size_t smem_most,
                       Tap&& tap) {
  h.q = t;
  h.whole = whole;
  h.flat = h.flat && halo_flat_geometry(t);
  h.wide = h.wide && t.Mg <= kHaloBM / 2;  // (its tile has 32 rows: more would need tiles of their own)
  h.split = h.split && !h.flat && t.sw == 2;  // (element copies: a 16-byte piece would straddle the halves)
  h.vec = h.flat ? halo_flat_vectorizable(t, in) : !h.split && halo_rows_vectorizable(t.xs, in);
  h.narrow = h.narrow && halo_narrow_allowed(h);
  if (!halo_fits(h, ntaps, smem_budget, smem_most)) return false;
  if (!h.narrow && h.sms > 0 && halo_narrow_allowed(h)) halo_pick_narrow(h, ntaps, smem_budget, smem_most);
  h.x = in; h.y = out;
  h.w = w; h.wgs = q.Mg * q.ws[0]; h.wrs = wrs; h.wcs = wcs;
  for (int j = 0; j < ntaps; ++j) {
    int kh, kw, th, tw;
    tap(j, kh, kw, th, tw);
    // (split: column 2*ow + tw*dw sits at ow + (tw*dw) / 2 in the half of its parity)
    h.tap_off[j] = th * t.dh * h.RL + (h.split ? ((tw * t.dw) & 1) * h.half + ((tw * t.dw) >> 1) : tw * t.dw);
    h.tap_w[j] = kh * q.ws[2] + kw * q.ws[3];
  }
  h.pairs = !h.phased && (t.OH * t.OW) % 2 == 0 && (reinterpret_cast<uintptr_t>(out) & 7) == 0;
  return true;
}

// The launch for q's forward (taps: the row-major prefix [0, q.ntaps)).
inline bool halo_for_forward(const Geometry& q, const float* x, const float* w, const float* b, float* y, bool relu,
                             HaloConv& h, size_t smem_budget = kHaloMaxSmem, size_t smem_most = 0) {
  if (!halo_setup(h, q, q, q.ntaps, x, y, w, q.ws[0], q.ws[1], false, smem_budget, smem_most,
                  [&](int j, int& kh, int& kw, int& th, int& tw) {
                    th = kh = j / q.KW;
                    tw = kw = j % q.KW;
                  }))
    return false;
  h.b = b;
  h.relu = relu;
  return true;
}

// The launch for phase f of q's grad_input (plan_phase; stride 1 has one phase, all of it), no ReLU gate: the
// phase's pixels of grad_x, rows ih = f.h0 + i*sh and columns iw = f.w0 + j*sw, are a stride-1 convolution of
// grad_y with the phase's taps, flipped, and the channel axes swapped. Along rows: tap jh (kh = kh0 + jh*a) reads
// grad_y row i + ((h0 + ph - kh*dh) / sh), an offset that falls by a*dh/sh from one tap to the next, so t's
// kernel has nkh rows at dilation a*dh/sh, the last tap first, and padding minus the smallest offset (which
// must not be above 0); columns likewise. Tap j of the phase is its j-th active one (a row-major prefix, so
// masked taps stay skipped). Flipped, a mask's unused rows (those past its last active tap's) come first: they
// are cut from t's kernel and its top padding where that padding is as large (a PixelCNN mask with "same"
// padding at stride 1: its padding is then 0), so that the halo spans the rows read, as a masked forward's
// does. A strided phase writes its pixels in place in grad_x (h.phased).
inline bool halo_for_grad_input(const Geometry& q, const Phase& f, const float* w, const float* gy, float* gx,
                                HaloConv& h, size_t smem_budget = kHaloMaxSmem, size_t smem_most = 0) {
  if (f.PH == 0 || f.PW == 0 || f.ntaps == 0) return false;
  const int dh = f.a * q.dh / q.sh, dw = f.b * q.dw / q.sw;  // t's dilation (a*dh is a multiple of sh)
  const int64_t top = (f.h0 + q.ph - int64_t(f.kh0 + (f.nkh - 1) * f.a) * q.dh) / q.sh;  // smallest offsets
  const int64_t left = (f.w0 + q.pw - int64_t(f.kw0 + (f.nkw - 1) * f.b) * q.dw) / q.sw;
  if (top > 0 || left > 0) return false;
  const int unused = f.nkh - 1 - (f.ntaps - 1) / f.nkw;  // rows of taps past the last active one
  const int cut = -top >= int64_t(unused) * dh ? unused : 0;
  Geometry t{};
  t.N = q.N; t.C = q.M; t.H = q.OH; t.W = q.OW;
  t.M = q.C; t.OH = f.PH; t.OW = f.PW;
  t.G = q.G; t.Cg = q.Mg; t.Mg = q.Cg;
  t.KH = f.nkh - cut; t.KW = f.nkw; t.ntaps = f.ntaps;
  t.sh = t.sw = 1; t.ph = int(-top) - cut * dh; t.pw = int(-left); t.dh = dh; t.dw = dw;
  for (int i = 0; i < 4; ++i) t.xs[i] = q.gs[i];
  set_divisors(t);
  h.phased = q.sh != 1 || q.sw != 1;
  if (h.phased) {
    h.out_r0 = f.h0; h.out_c0 = f.w0; h.out_sh = q.sh; h.out_sw = q.sw; h.out_H = q.H; h.out_W = q.W;
  }
  return halo_setup(h, t, q, f.ntaps, gy, gx, w, q.ws[1], q.ws[0], true, smem_budget, smem_most,
                    [&](int j, int& kh, int& kw, int& th, int& tw) {
                      const int jh = j / f.nkw, jw = j % f.nkw;
                      kh = f.kh0 + jh * f.a;
                      kw = f.kw0 + jw * f.b;
                      th = t.KH - 1 - jh;
                      tw = t.KW - 1 - jw;
                    });
}

// Packed weight i: lane `lane` of fragment mi of k8 slice kk of tap j of chunk cc of m tile mt of group g,
// register r: row mt*64 + mi*16 + lane/4 + 8*(r%2), channel cc*kc + kk*8 + lane%4 + 4*(r/2) (mma.m16n8k8's A
// layout), zero past the rows or channels.
// For the SIMT kernel (h.simt) instead: [g][m tile][chunk][tap j][channel][row], as float32.
__host__ __device__ __forceinline__ float halo_packed_weight(const HaloConv& h, int64_t i) {
  const int64_t cf = h.chunk_floats(), within = i % cf, blk = i / cf;
  const int cc = int(blk % h.nchunks), mt = int((blk / h.nchunks) % h.mtiles);
  const int64_t g = blk / (int64_t(h.nchunks) * h.mtiles);
  if (h.simt) {
    const int j = int(within / (h.kc * kHaloBM)), c = int(within / kHaloBM % h.kc), r = int(within % kHaloBM);
    const int64_t row = int64_t(mt) * kHaloBM + r, chan = int64_t(cc) * h.kc + c;
    if (row >= h.q.Mg || chan >= h.q.Cg) return 0.f;
    return h.w[g * h.wgs + row * h.wrs + chan * h.wcs + h.tap_w[j]];
  }
  const int r = int(within % 4), lane = int(within / 4 % 32), mi = int(within / 128 % 4);
  const int jk = int(within / kHaloFrag), kk = jk % h.nkk, j = jk / h.nkk;
  const int64_t row = int64_t(mt) * kHaloBM + mi * 16 + lane / 4 + 8 * (r % 2);
  const int64_t chan = int64_t(cc) * h.kc + kk * 8 + lane % 4 + 4 * (r / 2);
  if (row >= h.q.Mg || chan >= h.q.Cg) return 0.f;
  return tf32_round(h.w[g * h.wgs + row * h.wrs + chan * h.wcs + h.tap_w[j]]);
}

// The first slot's flattened padded row for the tile starting at pixel n0 (in flat mode: n0).
__host__ __device__ __forceinline__ int64_t halo_first_row(const HaloConv& h, int64_t n0) {
  if (h.flat) return n0;
  const int64_t opix = h.q.OH * h.q.OW, img = h.q.by_opix(n0), oh = h.q.by_OW(n0 - img * opix);
  return img * h.Rfull + oh * h.q.sh;
}

// Where padded column pc of a slot sits in it: at lead + pc, or, split (column stride 2), the even columns
// first and the odd ones from `half` on. Split, the taps' reads of 8 consecutive output pixels (columns 2*ow +
// kw*dw) are 8 consecutive floats, where unsplit they were every other float: with 4 channels CS = 8 mod 32
// apart, a TF32 B fragment's 32 loads then fall in 32 banks (two to a bank unsplit), and the FMA product's 32
// lanes read 32 consecutive floats.
__host__ __device__ __forceinline__ int halo_column(const HaloConv& h, int pc) {
  return h.split ? (pc & 1) * h.half + (pc >> 1) : h.lead + pc;
}

// Halo offset of output pixel n's window corner (slot * RL + the column of ow * sw); 0 past the last pixel (its
// column of the product is computed from whatever is there and never stored).
__host__ __device__ __forceinline__ int halo_corner(const HaloConv& h, int64_t n, int64_t first_row) {
  if (n >= h.pixels()) return 0;
  if (h.flat) return int(n - first_row);
  const int64_t opix = h.q.OH * h.q.OW, img = h.q.by_opix(n), r = n - img * opix, oh = h.q.by_OW(r);
  return int((img * h.Rfull + oh * h.q.sh - first_row) * h.RL + halo_column(h, int(r - oh * h.q.OW) * h.q.sw));
}

// The input row behind slot s (flattened padded row G = first_row + s), channel c0 of group g: false for a row
// in the padding or past the last image (it stays zero).
__host__ __device__ __forceinline__ bool halo_row_source(const HaloConv& h, int64_t G, int64_t g, int64_t c0,
                                                         const float*& src) {
  const int64_t img = h.by_Rfull(G), ih = G - img * h.Rfull - h.q.ph;
  if (img >= h.q.N || ih < 0 || ih >= h.q.H) return false;
  src = h.x + img * h.q.xs[0] + (g * h.q.Cg + c0) * h.q.xs[1] + ih * h.q.xs[2];
  return true;
}

// Copies the halo of channels [c0, c0 + kc) of group g for the tile whose first slot is flattened padded row
// first_row into hs: copy16(dst, src, n) for 4 floats of which the first n are copied and the rest zeroed
// (16-byte aligned), copy4(dst, src, valid) for one element, zero where !valid. Where nothing is copied, src is
// any readable address. Slots in the padding are skipped (the forward zeroes them once: its slots are the same
// for every chunk), or zeroed where zero_missing (grad_weight moves from tile to tile through one stage).
template <class Copy16, class Copy4>
__host__ __device__ __forceinline__ void halo_load_rows(const HaloConv& h, int g, int64_t c0, int64_t first_row,
                                                        float* hs, int tid, bool zero_missing, Copy16&& copy16,
                                                        Copy4&& copy4) {
  const int warp = tid / 32, lane = tid % 32;
  for (int s = warp; s < h.rows; s += kHaloThreads / 32) {
    const float* src = nullptr;
    const bool there = halo_row_source(h, first_row + s, g, c0, src);
    if (!there && !zero_missing) continue;
    float* dst = hs + s * h.RL + h.lead + h.q.pw;
    if (h.vec) {  // (channel, piece) pairs across the lanes
      for (int e = lane; e < h.kc * h.nvec; e += 32) {
        const int c = h.by_nvec(e), v = e - c * h.nvec;
        const bool valid = there && c0 + c < h.q.Cg;
        copy16(dst + c * h.CS + 4 * v, valid ? src + c * h.q.xs[1] + 4 * v : h.x,
               valid ? (h.Wload - 4 * v < 4 ? h.Wload - 4 * v : 4) : 0);
      }
      continue;
    }
    for (int c = 0; c < h.kc; ++c) {
      const bool valid = there && c0 + c < h.q.Cg;
      const float* sc = valid ? src + c * h.q.xs[1] : h.x;
      float* row = hs + s * h.RL + c * h.CS;
      if (h.split)  // (a loop of its own: the column's parity test kept out of the unsplit copy)
        for (int iw = lane; iw < h.Wload; iw += 32)
          copy4(row + halo_column(h, iw + h.q.pw), valid ? sc + iw * h.q.xs[3] : h.x, valid);
      else
        for (int iw = lane; iw < h.Wload; iw += 32) copy4(dst + c * h.CS + iw, valid ? sc + iw * h.q.xs[3] : h.x, valid);
    }
  }
}

// Flat mode's copy (see halo_load_rows): channel c's pixels first_row + [0, 128) of channels [c0, c0 + kc), one
// run a channel, zero past the last pixel or channel. (A function apart from the slots' copy, so that the
// grad_weight kernel, which never runs flat, does not carry its code.)
template <class Copy16, class Copy4>
__host__ __device__ __forceinline__ void halo_load_flat(const HaloConv& h, int g, int64_t c0, int64_t first_row,
                                                        float* hs, int tid, Copy16&& copy16, Copy4&& copy4) {
  const Geometry& q = h.q;
  const int64_t opix = q.OH * q.OW, npix = h.pixels();
  const int step = h.vec ? 4 : 1, per = h.bn() / step;  // copies a channel
  for (int e = tid; e < h.kc * per; e += kHaloThreads) {
    const int c = e / per, k = (e - c * per) * step;
    const int64_t n = first_row + k;
    const bool valid = n < npix && c0 + c < q.Cg;
    const float* src = h.x;
    if (valid) {
      const int64_t img = q.by_opix(n), p = n - img * opix, oh = q.by_OW(p);
      src = h.x + img * q.xs[0] + (g * q.Cg + c0 + c) * q.xs[1] + oh * q.xs[2] + (p - oh * q.OW) * q.xs[3];
    }
    if (h.vec) copy16(hs + c * h.CS + k, src, valid ? int(npix - n < 4 ? npix - n : 4) : 0);
    else copy4(hs + c * h.CS + k, src, valid);
  }
}

// Copies chunk cc's weights and halo into stage st (floats), with copy16 and copy4 as for halo_load_rows.
template <class Copy16, class Copy4>
__host__ __device__ __forceinline__ void halo_load_chunk(const HaloConv& h, int g, int mt, int cc, int64_t first_row,
                                                         float* st, int tid, Copy16&& copy16, Copy4&& copy4) {
  const int cf = h.chunk_floats();
  const float* wsrc = h.wp + ((int64_t(g) * h.mtiles + mt) * h.nchunks + cc) * cf;
  for (int i = tid * 4; i < cf; i += kHaloThreads * 4) copy16(st + i, wsrc + i, 4);
  if (h.flat) halo_load_flat(h, g, int64_t(cc) * h.kc, first_row, st + cf, tid, copy16, copy4);
  else halo_load_rows(h, g, int64_t(cc) * h.kc, first_row, st + cf, tid, false, copy16, copy4);
}

// Rounds a staged halo (n floats at hs, a multiple of 4, 16-byte aligned) to TF32 in place, thread tid's
// share of it: run once a chunk (a tile, for the weight gradient) between two barriers, after every thread's
// copies have landed, so that the TF32 product reads its B fragments without a cvt each (every value is read by
// every tap and both row halves of the tile). Padding zeros stay zeros.
__host__ __device__ __forceinline__ void halo_round_stage(float* hs, int n, int tid) {
  for (int i = 4 * tid; i < n; i += 4 * kHaloThreads) {
#ifdef __CUDA_ARCH__
    float4 v = *reinterpret_cast<float4*>(hs + i);
    v.x = tf32_round(v.x); v.y = tf32_round(v.y); v.z = tf32_round(v.z); v.w = tf32_round(v.w);
    *reinterpret_cast<float4*>(hs + i) = v;
#else
    for (int k = 0; k < 4; ++k) hs[i + k] = tf32_round(hs[i + k]);
#endif
  }
}

// The epilogue for output (row m of the block's group, pixel n): bias, ReLU (NaN passes), into y at
// halo_pixel_offset(n) + (g*Mg + m) * halo_plane (the pixel's part computed once for all the rows a thread
// holds of it).
__host__ __device__ __forceinline__ int64_t halo_plane(const HaloConv& h) {
  return h.phased ? h.out_H * h.out_W : h.q.OH * h.q.OW;
}
__host__ __device__ __forceinline__ int64_t halo_pixel_offset(const HaloConv& h, int64_t n) {
  const int64_t opix = h.q.OH * h.q.OW, img = h.q.by_opix(n), r = n - img * opix;
  if (!h.phased) return img * h.q.M * opix + r;
  const int64_t oh = h.q.by_OW(r), ow = r - oh * h.q.OW;
  return img * h.q.M * (h.out_H * h.out_W) + (h.out_r0 + oh * h.out_sh) * h.out_W + h.out_c0 + ow * h.out_sw;
}
__host__ __device__ __forceinline__ int64_t halo_out_offset(const HaloConv& h, int g, int64_t m, int64_t n) {
  return halo_pixel_offset(h, n) + (g * h.q.Mg + m) * halo_plane(h);
}
__host__ __device__ __forceinline__ float halo_activate(const HaloConv& h, int g, int64_t m, float v) {
  if (h.b) v += h.b[(g * h.q.Mg + m) * h.q.bs];
  if (h.relu && v < 0.f) v = 0.f;
  return v;
}

// The product of the float32 kernel, on FMAs: thread tid owns rows row0 + [0, 8) and pixels pix0 + 32*i
// (i < 4) of the tile, so a (tap, channel) step is two broadcast 16-byte loads of weights (packed
// [tap][channel][row]), four conflict-free loads of consecutive pixels and 32 FMAs. Warp w takes rows 8*w of a
// 64 x 128 tile; with h.wide (layers of 32 rows or fewer, which would leave half of those warps idle), rows
// 8*(w % 4) and pixels 128*(w / 4) of a 32 x 256 tile.
// Warp w's place in the TF32 product's tile: rows 32*wm + [0, 32), pixels 32*wn + [0, 32); in the wide layout
// (32 rows x 256 pixels, for problems of 32 rows or fewer, which the 64-row tile would leave half idle) every
// warp takes the 32 rows, at pixels 32*w; in a narrow tile, pixels 24*wn + [0, 24).
// halo_steps: a warp's n8 fragments, three in a narrow tile, else four.
__host__ __device__ constexpr int halo_steps(bool narrow) { return narrow ? 3 : 4; }
__host__ __device__ __forceinline__ void halo_tf32_place(bool wide, int warp, int& wm, int& wn) {
  wm = wide ? 0 : warp % 2;
  wn = wide ? warp : warp / 2;
}
__host__ __device__ __forceinline__ void halo_simt_place(bool wide, int tid, int& row0, int& pix0) {
  const int warp = tid / 32, lane = tid % 32;
  row0 = wide ? 8 * (warp % 4) : 8 * warp;
  pix0 = wide ? kHaloBN * (warp / 4) + lane : lane;
}

// Eight consecutive floats, 16-byte aligned (two 16-byte loads on the device).
__host__ __device__ __forceinline__ void halo_load8(const float* p, float (&v)[8]) {
#ifdef __CUDA_ARCH__
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
#else
  for (int k = 0; k < 8; ++k) v[k] = p[k];
#endif
}

// A float32 thread's product of one chunk (HaloSimtT; plain C++, so that the host emulation runs it as the
// kernel does): for each tap j and channel c, its 8 rows' weights (wa: the packed chunk's, at the thread's row0)
// times its 4 pixels' halo values (at corner[i], shifted by the tap's and the channel's offsets), into acc. The
// channels' shifts come from the parameters in bytes (halo_channel_bytes), the taps' once a tap.
template <int KC>
__host__ __device__ __forceinline__ void halo_simt_steps(const HaloConv& h, const float* wa, const float* hs,
                                                         const int (&corner)[4], float (&acc)[8][4]) {
  int cb[KC];
#pragma unroll
  for (int c = 0; c < KC; ++c) cb[c] = h.chan_bytes[c];
  for (int j = 0; j < h.ntaps; ++j) {
    const char* hb[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) hb[i] = reinterpret_cast<const char*>(hs + h.tap_off[j] + corner[i]);
#pragma unroll
    for (int c = 0; c < KC; ++c) {
      float a[8], b[4];
      halo_load8(wa + (j * KC + c) * kHaloBM, a);
#pragma unroll
      for (int i = 0; i < 4; ++i) b[i] = *reinterpret_cast<const float*>(hb[i] + cb[c]);
#pragma unroll
      for (int r = 0; r < 8; ++r)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[r][i] = fmaf(a[r], b[i], acc[r][i]);
    }
  }
}

#ifdef __CUDACC__
__device__ __forceinline__ unsigned smem_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The stagers' copies as cp.async (see halo_load_rows): 16 bytes of which the first 4*n are copied and the rest
// zeroed, and 4 bytes copied or zeroed.
struct CpAsync16 {
  __device__ __forceinline__ void operator()(float* dst, const float* src, int n) const {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_address(dst)), "l"(src), "r"(4 * n)
                 : "memory");
  }
};
struct CpAsync4 {
  __device__ __forceinline__ void operator()(float* dst, const float* src, bool valid) const {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(smem_address(dst)), "l"(src),
                 "r"(valid ? 4 : 0) : "memory");
  }
};

// cp.async.wait_group takes an immediate: at most n copy groups still in flight.
__device__ __forceinline__ void halo_wait(int n) {
  if (n <= 0) asm volatile("cp.async.wait_group 0;" ::: "memory");
  else if (n == 1) asm volatile("cp.async.wait_group 1;" ::: "memory");
  else asm volatile("cp.async.wait_group 2;" ::: "memory");
}

// The product of the TF32 kernel: warp (wm, wn) = (warp % 2, warp / 2), or (0, warp) in the wide layout where
// kWide (halo_tf32_place), owns rows 32*wm + [0, 32) and pixels kWn*wn + [0, kWn) as 2 x kNj m16n8
// accumulators: 4 of 32 pixels, or 3 of 24 in a narrow tile (kNarrow, halo_steps). Its B fragments are rounded
// to TF32 as they are read, or, where kPreround, were rounded in shared memory once a chunk (halo_round_stage,
// h.preround).
template <bool kPreround, bool kWide, bool kNarrow = false>
struct HaloTf32T {
  static constexpr int kMinBlocks = 3;  // three blocks an SM: at most 80 registers
  static constexpr bool kRoundHalo = kPreround;
  static constexpr int kNj = halo_steps(kNarrow), kWn = 8 * kNj;
  float acc[2][kNj][4] = {};
  int corner[kNj];  // this lane's B columns (k row tig): pixels kWn*wn + 8*nj + gq
  __device__ HaloTf32T(const HaloConv& h, int64_t n0, int64_t first_row, int tid) {
    int wm, wn;
    halo_tf32_place(kWide, tid / 32, wm, wn);
    const int lane = tid % 32;
#pragma unroll
    for (int nj = 0; nj < kNj; ++nj)
      corner[nj] = (lane % 4) * h.CS + halo_corner(h, n0 + kWn * wn + 8 * nj + lane / 4, first_row);
  }
  // Adds chunk st's product (packed weights at st, halo at hs).
  template <int KC>
  __device__ __forceinline__ void chunk(const HaloConv& h, const float* st, const float* hs, int tid) {
    constexpr int kNkk = KC / 8;
    int wm, wn;
    halo_tf32_place(kWide, tid / 32, wm, wn);
    const float* wa = st + (2 * wm) * 128 + (tid % 32) * 4;
    // Each B value at the lane's column (hb) plus a uniform shift in bytes, the tap's and the channels'
    // (halo_channel_bytes): one shared load at a register and a uniform register
    const char* hb[kNj];
#pragma unroll
    for (int nj = 0; nj < kNj; ++nj) hb[nj] = reinterpret_cast<const char*>(hs + corner[nj]);
    int qb[2 * kNkk];  // channel quad q's shift: channels 4*q + tig (tig is in corner)
#pragma unroll
    for (int q = 0; q < 2 * kNkk; ++q) qb[q] = h.chan_bytes[4 * q];
    for (int j = 0; j < h.ntaps; ++j) {
      const int tb = 4 * h.tap_off[j];
#pragma unroll
      for (int kk = 0; kk < kNkk; ++kk) {
        uint32_t a[2][4], b[kNj][2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const float4 v = *reinterpret_cast<const float4*>(wa + (j * kNkk + kk) * kHaloFrag + i * 128);
          a[i][0] = __float_as_uint(v.x); a[i][1] = __float_as_uint(v.y);
          a[i][2] = __float_as_uint(v.z); a[i][3] = __float_as_uint(v.w);
        }
        const int s0 = tb + qb[2 * kk], s1 = tb + qb[2 * kk + 1];
#pragma unroll
        for (int nj = 0; nj < kNj; ++nj) {
          const float b0 = *reinterpret_cast<const float*>(hb[nj] + s0);
          const float b1 = *reinterpret_cast<const float*>(hb[nj] + s1);
          b[nj][0] = __float_as_uint(kPreround ? b0 : tf32_round(b0));
          b[nj][1] = __float_as_uint(kPreround ? b1 : tf32_round(b1));
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int nj = 0; nj < kNj; ++nj) mma_tf32(acc[i][nj], a[i], b[nj]);
      }
    }
  }
  // Accumulator r of (i, nj): row 32*wm + 16*i + gq + 8*(r/2), pixel kWn*wn + 8*nj + 2*tig + r%2. Pairs of
  // pixels go out as one 8-byte store where they share an image row run (even pixels an image: n is even).
  __device__ __forceinline__ void store(const HaloConv& h, int g, int mt, int64_t n0, int tid) {
    const int lane = tid % 32, gq = lane / 4, tig = lane % 4;
    int wm, wn;
    halo_tf32_place(kWide, tid / 32, wm, wn);
    const int64_t npix = h.pixels();
#pragma unroll
    for (int nj = 0; nj < kNj; ++nj) {
      const int64_t n = n0 + kWn * wn + 8 * nj + 2 * tig;
      if (n >= npix) continue;
      const bool pair = h.pairs && n + 1 < npix, second = n + 1 < npix;
      const int64_t p0 = halo_pixel_offset(h, n), p1 = pair || !second ? p0 + 1 : halo_pixel_offset(h, n + 1);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int64_t m = int64_t(mt) * kHaloBM + 32 * wm + 16 * i + gq + 8 * hr;
          if (m >= h.q.Mg) continue;
          const float v0 = halo_activate(h, g, m, acc[i][nj][2 * hr]);
          const float v1 = halo_activate(h, g, m, acc[i][nj][2 * hr + 1]);
          float* yr = h.y + (g * h.q.Mg + m) * halo_plane(h);
          if (pair) {
            *reinterpret_cast<float2*>(yr + p0) = make_float2(v0, v1);
          } else {
            yr[p0] = v0;
            if (second) yr[p1] = v1;
          }
        }
    }
  }
};

// The product of the float32 kernel, on FMAs (see halo_simt_place), in the wide layout where kWide (a
// template parameter, so that the 64-row kernel's code stays as it was).
template <bool kWide>
struct HaloSimtT {
  static constexpr int kMinBlocks = 2;  // 80 registers spilled; two blocks an SM give it 128
  static constexpr bool kRoundHalo = false;
  float acc[8][4] = {};
  int corner[4];
  __device__ HaloSimtT(const HaloConv& h, int64_t n0, int64_t first_row, int tid) {
    int row0, pix0;
    halo_simt_place(kWide, tid, row0, pix0);
#pragma unroll
    for (int i = 0; i < 4; ++i) corner[i] = halo_corner(h, n0 + pix0 + 32 * i, first_row);
  }
  template <int KC>
  __device__ __forceinline__ void chunk(const HaloConv& h, const float* st, const float* hs, int tid) {
    int row0, pix0;
    halo_simt_place(kWide, tid, row0, pix0);
    halo_simt_steps<KC>(h, st + row0, hs, corner, acc);
  }
  // Row row0 + r, pixel n0 + pix0 + 32*i: a warp's stores of one row are 32 consecutive pixels.
  __device__ __forceinline__ void store(const HaloConv& h, int g, int mt, int64_t n0, int tid) {
    const int64_t npix = h.pixels();
    int row0, pix0;
    halo_simt_place(kWide, tid, row0, pix0);
    int64_t p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = n0 + pix0 + 32 * i < npix ? halo_pixel_offset(h, n0 + pix0 + 32 * i) : -1;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const int64_t m = int64_t(mt) * kHaloBM + row0 + r;
      if (m >= h.q.Mg) continue;
      float* yr = h.y + (g * h.q.Mg + m) * halo_plane(h);
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (p[i] >= 0) yr[p[i]] = halo_activate(h, g, m, acc[r][i]);
    }
  }
};

using HaloSimt = HaloSimtT<false>;
using HaloSimtWide = HaloSimtT<true>;
using HaloTf32 = HaloTf32T<false, false>;
using HaloTf32Preround = HaloTf32T<true, false>;
using HaloTf32Wide = HaloTf32T<false, true>;
using HaloTf32WidePreround = HaloTf32T<true, true>;
using HaloTf32NarrowPreround = HaloTf32T<true, false, true>;

// The halo convolution, its product by Math (HaloTf32T, HaloSimt or HaloSimtWide), over tiles of h.bn() pixels.
template <int KC, class Math>
__global__ void __launch_bounds__(kHaloThreads, Math::kMinBlocks) halo_conv_kernel(const __grid_constant__ HaloConv h) {
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x;
  const int g = int(blockIdx.z), mt = int(blockIdx.y);
  const int64_t n0 = int64_t(blockIdx.x) * h.bn();
  const int cf = h.chunk_floats(), stage = h.stage_floats(), S = h.stages;
  const int64_t first_row = halo_first_row(h, n0);

  // Zero every stage's halo: rows and columns of the padding are never copied.
  for (int st = 0; st < S; ++st)
    for (int i = tid; i < KC * h.CS; i += kHaloThreads) smem[st * stage + cf + i] = 0.f;
  __syncthreads();

  Math math(h, n0, first_row, tid);
  const CpAsync16 copy16;
  const CpAsync4 copy4;
  // S stages: chunks cc+1 .. cc+S-1 are in flight while chunk cc is multiplied. One copy group per chunk
  // (empty past the last), so "all but the newest S-2 groups" is always "chunk cc is in".
  for (int i = 0; i < S - 1; ++i) {
    if (i < h.nchunks) halo_load_chunk(h, g, mt, i, first_row, smem + i * stage, tid, copy16, copy4);
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
  int cur = 0;  // cc % S
  for (int cc = 0; cc < h.nchunks; ++cc) {
    halo_wait(S - 2);
    if constexpr (Math::kRoundHalo) {  // (kc * CS: a multiple of 8)
      __syncthreads();
      halo_round_stage(smem + cur * stage + cf, KC * h.CS, tid);
    }
    __syncthreads();  // chunk cc visible to all; every warp is done with chunk cc-1, whose stage is refilled now
    const int next = cc + S - 1, into = cur == 0 ? S - 1 : cur - 1;
    if (next < h.nchunks) halo_load_chunk(h, g, mt, next, first_row, smem + into * stage, tid, copy16, copy4);
    asm volatile("cp.async.commit_group;" ::: "memory");
    const float* st = smem + cur * stage;
    math.template chunk<KC>(h, st, st + cf, tid);
    cur = cur + 1 == S ? 0 : cur + 1;
  }
  math.store(h, g, mt, n0, tid);
}

__global__ void halo_pack_kernel(const __grid_constant__ HaloConv h, float* __restrict__ wp, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    wp[i] = halo_packed_weight(h, i);
}
#endif  // __CUDACC__

}  // namespace pixelops::cuda::conv
