// Host stand-in for csrc/cuda/cuda_utils.cuh: lets the conv2d kernels' index math (conv2d_tile.cuh,
// conv2d_problems.cuh, conv2d_direct.cuh) compile as plain C++, so conv2d_emulation.cpp can run it on a
// machine without a GPU. Only what those headers use is here.
#pragma once
#include <cstdint>

#define __device__
#define __global__
#define __forceinline__ inline
#define __host__
#define __shared__ static
inline void __syncthreads() {}

namespace pixelops::cuda {
inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }
template <class T> inline T from_float(float x) { return T(x); }
// The emulated launch sets these before calling a kernel body for one thread.
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
inline Dim3 blockIdx, threadIdx, blockDim, gridDim;
}  // namespace pixelops::cuda
