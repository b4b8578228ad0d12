// The bookkeeping of a stream's workspace arena (workspace.cu, PIXELOPS_WORKSPACE_ARENA=1), apart from its CUDA
// calls so that tests/cuda_host checks it on the host. One block of device memory, its pieces handed out last
// in, first out (the nesting of one call's Scratches); a piece that does not fit goes to the pool instead, and
// the block is then replaced by a larger one at the start of a later call, so that a call repeated (a layer in
// a loop) soon takes all its workspaces from the arena.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace pixelops::cuda {

constexpr size_t kArenaAlign = 256, kArenaMost = size_t(64) << 20;

struct ArenaBook {
  size_t size = 0;  // the block's bytes
  size_t used = 0;  // bytes handed out, from the block's start
  size_t want = 0;  // what the block should hold, from the calls that outgrew it (at most kArenaMost)

  static size_t rounded(size_t bytes) { return (bytes + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }
  // Whether to replace the block by one of `want` bytes before a take: at the start of a call (nothing handed
  // out), where an earlier call outgrew it.
  bool regrow() const { return used == 0 && want > size; }
  // The offset of a new piece of `bytes` in the block, or -1 where it does not fit (the pool serves it).
  int64_t take(size_t bytes) {
    const size_t need = rounded(bytes);
    if (need > kArenaMost) return -1;
    if (used + need <= size) {
      const size_t at = used;
      used += need;
      return int64_t(at);
    }
    want = std::min(kArenaMost, std::max(want, used + need));
    return -1;
  }
  // Returns the piece at `offset` of `bytes`, which must be the newest. (Were it not, a Scratch would have
  // outlived a later one: the pieces are then kept, never handed out twice, and the rest of the arena's life
  // goes to the pool.)
  void give(size_t offset, size_t bytes) {
    if (offset + rounded(bytes) == used) used = offset;
  }
};

}  // namespace pixelops::cuda
