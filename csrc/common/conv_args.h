// The arguments both conv2d back ends divide by, checked again there whatever the Python layer checked: an
// internal caller (a vmap rule folding an empty vmap batch into the groups) once reached the kernels with
// groups 0, and the division killed the process (SIGFPE) instead of raising.
#pragma once
#include <cstdint>
#include <string>

#include "common/array.h"
#include "common/error.h"

namespace pixelops {

inline void check_conv_groups(const Array& x, const Array& w, int64_t groups) {
  if (groups < 1 || x.size[1] % groups != 0 || w.size[0] % groups != 0)
    throw ValueError("conv2d: groups must be a positive divisor of the input channels (" + std::to_string(x.size[1]) +
                     ") and output channels (" + std::to_string(w.size[0]) + "), got " + std::to_string(groups));
}

}  // namespace pixelops
