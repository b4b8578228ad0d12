// CPU threading: OpenMP, skipped for work too small to repay waking the thread pool.
#pragma once
#include <omp.h>
#include <algorithm>
#include <cstdint>

namespace pixelops {

// Calls body(begin, end) over [0, n) in contiguous chunks, on several threads when n >= grain.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  int threads = omp_get_max_threads();
  if (threads <= 1 || n < grain || omp_in_parallel()) {
    body(int64_t(0), n);
    return;
  }
  int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / grain);
#pragma omp parallel num_threads(int(chunks))
  {
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
}

}  // namespace pixelops
