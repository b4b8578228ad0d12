// Device queries and selection, so that a kernel runs on the GPU that holds its arrays.
#include "cuda/cuda_utils.cuh"
#include "ops.h"

namespace pixelops::cuda {

int device_count() {
  int n = 0;
  // No driver or no GPU (a CI machine): report none instead of failing.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

}  // namespace pixelops::cuda
