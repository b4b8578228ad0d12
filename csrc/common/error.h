// Errors the core raises. bindings.cpp maps them to Python exceptions: ValueError for a bad argument,
// IndexError for an index out of range (a cross-entropy target, say), RuntimeError for a failed CUDA call.
#pragma once
#include <stdexcept>
#include <string>

namespace pixelops {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct IndexError : std::out_of_range {
  using std::out_of_range::out_of_range;
};
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace pixelops
