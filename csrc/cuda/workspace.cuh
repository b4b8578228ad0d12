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

void* workspace_alloc(size_t bytes, cudaStream_t s, const char* what);

// n elements of T on stream s, returned to the pool (stream-ordered) when it goes out of scope.
template <class T>
class Scratch {
 public:
  Scratch(int64_t n, cudaStream_t s, const char* what)
      : p_(n > 0 ? static_cast<T*>(workspace_alloc(size_t(n) * sizeof(T), s, what)) : nullptr), s_(s) {}
  ~Scratch() {
    if (p_) cudaFreeAsync(p_, s_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
  cudaStream_t s_;
};

}  // namespace pixelops::cuda
