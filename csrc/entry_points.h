// The conv2d entry points as a table of function pointers, for C++ code in another shared object (an
// autograd node built against libtorch: benchmarks/torch_node) to call the core that _C holds, without a
// second copy of the kernels and their state (the CUDA workspace arena). bindings.cpp hands the table out as
// the capsule _C.entry_points; its user checks `abi` before calling anything.
#pragma once
#include "ops.h"

namespace pixelops {

// Bump whenever Array or one of these signatures changes.
constexpr int kEntryPointsAbi = 1;

struct EntryPoints {
  int abi;
  // [0]: the CPU kernels, [1]: the CUDA kernels (null in a build without CUDA). The CUDA ones run on the
  // current device; the caller makes the arrays' device current.
  decltype(&cpu::conv2d_forward) conv2d_forward[2];
  decltype(&cpu::conv2d_backward) conv2d_backward[2];
};

constexpr const char* kEntryPointsCapsule = "pixelops._C.entry_points";

}  // namespace pixelops
