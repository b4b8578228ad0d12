// Element-wise loops over arrays of one shape but any strides (views, transposes, broadcasts by stride 0).
// Contiguous arrays take the flat fast path in each kernel; this is the general path beside it.
#pragma once
#include "common/array.h"
#include "common/parallel.h"

namespace pixelops {

// Calls f(offset_in_a, offset_in_b) for every element, row by row over the last dimension.
template <class F>
void for_each_element2(const Array& a, const Array& b, F&& f) {
  const int nd = a.ndim;
  if (nd == 0) { f(int64_t(0), int64_t(0)); return; }
  const int64_t inner = a.size[nd - 1];
  if (inner == 0) return;
  const int64_t rows = a.numel() / inner;
  const int64_t sa = a.stride[nd - 1], sb = b.stride[nd - 1];
  parallel_for(rows, std::max<int64_t>(1, 32768 / inner), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t oa = 0, ob = 0, rest = r;
      for (int d = nd - 2; d >= 0; --d) {
        int64_t i = rest % a.size[d];
        rest /= a.size[d];
        oa += i * a.stride[d];
        ob += i * b.stride[d];
      }
      for (int64_t j = 0; j < inner; ++j) f(oa + j * sa, ob + j * sb);
    }
  });
}

// The same for three arrays of one shape.
template <class F>
void for_each_element3(const Array& a, const Array& b, const Array& c, F&& f) {
  const int nd = a.ndim;
  if (nd == 0) { f(int64_t(0), int64_t(0), int64_t(0)); return; }
  const int64_t inner = a.size[nd - 1];
  if (inner == 0) return;
  const int64_t rows = a.numel() / inner;
  const int64_t sa = a.stride[nd - 1], sb = b.stride[nd - 1], sc = c.stride[nd - 1];
  parallel_for(rows, std::max<int64_t>(1, 32768 / inner), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t oa = 0, ob = 0, oc = 0, rest = r;
      for (int d = nd - 2; d >= 0; --d) {
        int64_t i = rest % a.size[d];
        rest /= a.size[d];
        oa += i * a.stride[d];
        ob += i * b.stride[d];
        oc += i * c.stride[d];
      }
      for (int64_t j = 0; j < inner; ++j) f(oa + j * sa, ob + j * sb, oc + j * sc);
    }
  });
}

}  // namespace pixelops
