// The counter-based random numbers of the samplers: Philox-4x32-10 (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011), keyed by the seed and counted by (image, pixel). One function, compiled for
// the host and the device, so that a seed gives bit-identical uniforms on the CPU and on CUDA, and the naive
// sampler (which asks the extension for the same uniforms) draws exactly what the fused ones draw.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace pixelops {

struct Philox4 {
  uint32_t v[4];
};

// Philox-4x32 with 10 rounds. Products through 64-bit integers: exact, and the same on host and device.
PIXELOPS_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(M0) * c0, p1 = uint64_t(M1) * c2;
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The uniform of pixel `pixel` (raster index) of image `image` under `seed`, in [0, 1): the top 24 bits of the
// first output word times 2^-24, exact in float32 whatever the compiler or device.
PIXELOPS_HD float pixel_uniform(uint64_t seed, int64_t image, int64_t pixel) {
  const Philox4 r = philox4x32_10(uint32_t(pixel), uint32_t(uint64_t(image)), uint32_t(uint64_t(image) >> 32),
                                  0x70636e6eu /* "pcnn": a stream of its own */, uint32_t(seed),
                                  uint32_t(seed >> 32));
  return float(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

}  // namespace pixelops
