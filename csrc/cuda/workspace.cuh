// Scratch buffers that live between two launches of one call (split-K partial sums, packed weights, per-tap
// planes), stream-ordered, from a memory pool of pixelops' own per device.
//
// Why a pool of our own: the device's default pool (plain cudaMallocAsync) keeps no memory across a
// synchronisation (its release threshold is 0), so in a loop that synchronises between calls, as a timed
// benchmark or a training step that reads its loss does, every call maps fresh memory again. This pool keeps
// up to kWorkspaceKeepBytes reserved.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/cuda_utils.cuh"

namespace pixelops::cuda {

constexpr uint64_t kWorkspaceKeepBytes = uint64_t(256) << 20;

// A workspace of `bytes` on stream s, and its return (stream-ordered). By default from the pool; where
// PIXELOPS_WORKSPACE_ARENA=1 (not yet timed), from an arena of the stream's own where it fits: see workspace.cu.
// `arena` says which, for the return.
void* workspace_take(size_t bytes, cudaStream_t s, const char* what, bool& arena);
void workspace_give(void* p, size_t bytes, cudaStream_t s, bool arena);

// n elements of T on stream s, returned (stream-ordered) when it goes out of scope. Scratches of one call nest:
// each goes out of scope before any made before it (the arena hands its memory out last in, first out).
template <class T>
class Scratch {
 public:
  Scratch(int64_t n, cudaStream_t s, const char* what)
      : bytes_(n > 0 ? size_t(n) * sizeof(T) : 0),
        p_(n > 0 ? static_cast<T*>(workspace_take(bytes_, s, what, arena_)) : nullptr),
        s_(s) {}
  ~Scratch() {
    if (p_) workspace_give(p_, bytes_, s_, arena_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return p_; }

 private:
  size_t bytes_;
  bool arena_ = false;
  T* p_;
  cudaStream_t s_;
};

}  // namespace pixelops::cuda
