// PIXELOPS_HD marks a small function that the CPU and CUDA kernels share: compiled for both where nvcc
// compiles it, a plain inline function in the CPU build.
#pragma once

#if defined(__CUDACC__)
#define PIXELOPS_HD __host__ __device__ __forceinline__
#else
#define PIXELOPS_HD inline
#endif
