// Turns a run-time dtype into a compile-time type: one kernel template, instantiated per dtype in one place.
#pragma once
#include "common/array.h"

namespace pixelops {

// PIXELOPS_DISPATCH_FLOAT(dtype, "name", [&](auto tag) { using T = typename decltype(tag)::type; ... })
template <class T> struct TypeTag { using type = T; };

template <class F>
void dispatch_cpu_float(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::f32: f(TypeTag<float>{}); return;
    case DType::f64: f(TypeTag<double>{}); return;
    default:
      throw ValueError(std::string(what) + ": the CPU kernels take float32 or float64, got " + dtype_name(dt));
  }
}

}  // namespace pixelops
