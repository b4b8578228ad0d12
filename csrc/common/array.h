// A view of an array that pixelops' kernels read or write: pointer, dtype, device, sizes and strides.
// It is all the C++/CUDA core knows of its callers: numpy arrays and torch tensors (CPU or CUDA) are
// described the same way by the Python layer, which also owns the memory.
#pragma once
#include <cstdint>
#include <string>

#include "common/error.h"

namespace pixelops {

// Codes shared with python/pixelops/_arrays.py (keep the two in step).
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3, i64 = 4, i32 = 5, u8 = 6, b8 = 7 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i64: return "int64";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
    case DType::b8: return "bool";
  }
  return "unknown";
}

inline int dtype_size(DType t) {
  switch (t) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: return 4;
    case DType::f16: case DType::bf16: return 2;
    default: return 1;
  }
}

constexpr int kMaxDims = 8;
constexpr int kCpu = -1;  // device index of host memory

struct Array {
  void* data = nullptr;
  DType dtype = DType::f32;
  int device = kCpu;  // kCpu, or the CUDA device ordinal
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};  // in elements, as torch counts them

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= size[i];
    return n;
  }
  // Dense row-major layout (size-1 dimensions may carry any stride; an empty array is dense whatever its
  // strides: numpy gives a batch of 0 strides of 0).
  bool contiguous() const {
    if (numel() == 0) return true;
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (size[i] != 1 && stride[i] != expected) return false;
      expected *= size[i];
    }
    return true;
  }
  bool on_cpu() const { return device == kCpu; }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

// Kernels trust the Python layer's checks; these guard the few assumptions a kernel cannot work without.
inline void expect_dtype(const Array& a, DType t, const char* what) {
  if (a.dtype != t)
    throw ValueError(std::string(what) + ": expected dtype " + dtype_name(t) + ", got " + dtype_name(a.dtype));
}
inline void expect_contiguous(const Array& a, const char* what) {
  if (!a.contiguous()) throw ValueError(std::string(what) + ": expected a contiguous array");
}

}  // namespace pixelops
