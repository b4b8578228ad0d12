// Shared CUDA helpers: error checks that become Python exceptions, float conversions for the half types,
// and the dtype dispatch of CUDA kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "common/array.h"
#include "common/error.h"

namespace pixelops::cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw RuntimeError(std::string("pixelops CUDA error in ") + what + ": " + cudaGetErrorString(err));
}
// After a launch: a bad configuration surfaces here instead of at some later, unrelated call.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Loads and stores through float, whatever the storage type.
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ double to_float(double x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <class T> struct TypeTag { using type = T; };

// Floating dtypes of the CUDA kernels: float32, float16, bfloat16 and (for checks in float64) float64.
template <class F>
void dispatch_float(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::f32: f(TypeTag<float>{}); return;
    case DType::f64: f(TypeTag<double>{}); return;
    case DType::f16: f(TypeTag<__half>{}); return;
    case DType::bf16: f(TypeTag<__nv_bfloat16>{}); return;
    default:
      throw ValueError(std::string(what) + ": the CUDA kernels take float32, float16, bfloat16 or float64, got " +
                       dtype_name(dt));
  }
}

// Sizes and strides passed by value to kernels that walk arbitrary views.
struct Shape {
  int ndim;
  int64_t size[kMaxDims];
  int64_t stride[kMaxDims];
};
inline Shape shape_of(const Array& a) {
  Shape s{};
  s.ndim = a.ndim;
  for (int i = 0; i < a.ndim; ++i) { s.size[i] = a.size[i]; s.stride[i] = a.stride[i]; }
  return s;
}
// Element offset of the linear (row-major) index i in a strided view.
__device__ __forceinline__ int64_t offset_of(const Shape& s, int64_t i) {
  int64_t off = 0;
  for (int d = s.ndim - 1; d >= 0; --d) {
    int64_t q = i / s.size[d];
    off += (i - q * s.size[d]) * s.stride[d];
    i = q;
  }
  return off;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace pixelops::cuda
