// The workspace pool (workspace.cuh): one cudaMemPool per device, made on first use.
#include <mutex>
#include <string>
#include <vector>

#include "cuda/workspace.cuh"

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

}  // namespace

void* workspace_alloc(size_t bytes, cudaStream_t s, const char* what) {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  void* p = nullptr;
  check(cudaMallocFromPoolAsync(&p, bytes, pool_of(device), s), (std::string(what) + " (workspace)").c_str());
  return p;
}

}  // namespace pixelops::cuda
