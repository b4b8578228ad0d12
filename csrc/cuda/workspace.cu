// The workspace pool (workspace.cuh): one cudaMemPool per device, made on first use; and the streams' arenas.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/workspace.cuh"
#include "cuda/workspace_arena.h"

namespace pixelops::cuda {

namespace {

cudaMemPool_t pool_of(int device) {
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;
  std::lock_guard<std::mutex> lock(mutex);
  if (int(pools.size()) <= device) pools.resize(size_t(device) + 1, nullptr);
  if (!pools[size_t(device)]) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    check(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate (workspace pool)");
    uint64_t keep = kWorkspaceKeepBytes;
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
    pools[size_t(device)] = pool;
  }
  return pools[size_t(device)];
}

// PIXELOPS_WORKSPACE_ARENA=1: each stream's workspaces come from an arena of its own, one block of device
// memory handed out last in, first out (Scratch's nesting), instead of a cudaMallocFromPoolAsync and a
// cudaFreeAsync each. Those are two driver calls a workspace on the host's path to the kernels: on a slow host
// they add to a small layer's time, which is host time (the halo forward takes one workspace, its packed
// weights; a backward up to three). Safe as the pool is: only work on that stream touches an arena, in stream
// order, so memory handed out again is written by kernels that run after every earlier user. Not used while
// the stream is being captured into a CUDA graph (the graph must own its memory: an arena may move), and not
// for a workspace past kArenaMost. An arena that a call outgrew is replaced, larger, at the start of a later
// call (freed in stream order). At most kArenas streams a process have one; others use the pool.
struct Arena {
  int device = -1;
  cudaStream_t stream = nullptr;
  char* base = nullptr;
  ArenaBook book;
};
constexpr int kArenas = 16;
std::mutex arena_mutex;
Arena arenas[kArenas];

bool arena_asked() {
  static const bool asked = [] {
    const char* e = std::getenv("PIXELOPS_WORKSPACE_ARENA");
    return e && std::strcmp(e, "1") == 0;
  }();
  return asked;
}

// The stream's arena (a free slot claimed on first use), or null where every slot is taken. Under arena_mutex.
Arena* arena_of(int device, cudaStream_t s) {
  Arena* empty = nullptr;
  for (Arena& a : arenas) {
    if (a.device == device && a.stream == s) return &a;
    if (a.device < 0 && !empty) empty = &a;
  }
  if (empty) empty->device = device, empty->stream = s;
  return empty;
}

void* pool_alloc(size_t bytes, int device, cudaStream_t s, const char* what) {
  void* p = nullptr;
  check(cudaMallocFromPoolAsync(&p, bytes, pool_of(device), s), (std::string(what) + " (workspace)").c_str());
  return p;
}

bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &status) != cudaSuccess) {
    (void)cudaGetLastError();  // (a query refused: taken as capturing, the pool being right either way)
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace

void* workspace_take(size_t bytes, cudaStream_t s, const char* what, bool& arena) {
  arena = false;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (arena_asked() && !capturing(s)) {
    std::lock_guard<std::mutex> lock(arena_mutex);
    if (Arena* a = arena_of(device, s)) {
      if (a->book.regrow()) {  // outgrown by an earlier call: replaced, larger (the old block freed in stream order)
        if (a->base) check(cudaFreeAsync(a->base, s), "cudaFreeAsync (workspace arena)");
        a->base = nullptr;
        a->book.size = 0;
        a->base = static_cast<char*>(pool_alloc(a->book.want, device, s, what));
        a->book.size = a->book.want;
      }
      const int64_t at = a->book.take(bytes);
      if (at >= 0) {
        arena = true;
        return a->base + at;
      }
    }
  }
  return pool_alloc(bytes, device, s, what);
}

void workspace_give(void* p, size_t bytes, cudaStream_t s, bool arena) {
  if (!arena) {
    cudaFreeAsync(p, s);
    return;
  }
  int device = 0;
  cudaGetDevice(&device);
  std::lock_guard<std::mutex> lock(arena_mutex);
  if (Arena* a = arena_of(device, s)) a->book.give(size_t(static_cast<char*>(p) - a->base), bytes);
}

}  // namespace pixelops::cuda
