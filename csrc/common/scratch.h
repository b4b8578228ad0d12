// Per-thread scratch memory for the CPU kernels.
//
// A kernel's multi-megabyte work buffers, allocated afresh at every call, came from mmap each time and were
// faulted in page by page (grad_weight of a 64-channel 28x28 layer on one thread: some 900 page faults a
// call, 0.3 ms). Here each (thread, slot) keeps one buffer that grows to the largest request and is reused,
// so a layer called again finds its memory mapped. The contents are left from the last use: callers write
// everything they read. OpenMP's threads live as long as the process, and so do their buffers (the largest
// a conv asks for: its padded planes of a few images, some MiB a thread).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace pixelops {

// n values of T, 64-byte aligned, for this thread; slot (0, 1 or 2) tells apart buffers in use together.
template <class T>
T* thread_scratch(int slot, size_t n) {
  constexpr int kSlots = 3;
  struct Buffer { std::unique_ptr<unsigned char[]> data; size_t bytes = 0; };
  thread_local Buffer buffers[kSlots];
  Buffer& b = buffers[slot];
  const size_t need = n * sizeof(T) + 64;
  if (b.bytes < need) {
    b.data.reset(new unsigned char[need]);
    b.bytes = need;
  }
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data.get());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

}  // namespace pixelops
