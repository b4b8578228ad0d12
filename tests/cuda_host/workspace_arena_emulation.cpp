// The workspace arena's bookkeeping (csrc/cuda/workspace_arena.h, PIXELOPS_WORKSPACE_ARENA=1) as workspace.cu
// drives it, with calls of nested Scratches: no two pieces alive at once overlap, every piece lies inside the
// block, the block is replaced only between calls, and a call repeated takes all its pieces from the arena by
// its third run. Fixed sequences, then (`prog fuzz <count> <seed>`) random calls.
// Built and run by tests/test_conv2d_cuda_host.py; it needs only a C++17 compiler, no GPU.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_utils.cuh"  // first: the host stand-in beside this file (conv_case.h's headers need it)
#include "cuda/workspace_arena.h"
#include "conv_case.h"  // fuzz_args, Uniform

using pixelops::cuda::ArenaBook;
using pixelops::cuda::kArenaMost;

static int failures = 0;
static void expect(bool ok, const std::string& what) {
  if (!ok) ++failures, std::printf("FAIL: %s\n", what.c_str());
}

// One call: Scratches of the given sizes, each made inside the one before (as a backward's workspaces nest),
// then returned in reverse. Returns how many came from the arena; checks the pieces alive at every point.
static int run_call(ArenaBook& book, const std::vector<size_t>& sizes) {
  expect(book.used == 0, "a call starts with nothing handed out");
  struct Piece { int64_t at; size_t bytes; };
  std::vector<Piece> alive;
  int from_arena = 0;
  for (size_t bytes : sizes) {
    if (book.regrow()) {  // workspace_take's replacement of the block, asked before every take
      for (const Piece& p : alive) expect(p.at < 0, "the block is not replaced while a piece of it is alive");
      book.size = book.want;
    }
    const int64_t at = book.take(bytes);
    if (at < 0) {
      alive.push_back({-1, bytes});
      continue;
    }
    ++from_arena;
    expect(size_t(at) + bytes <= book.size, "a piece inside the block");
    for (const Piece& p : alive)
      if (p.at >= 0) expect(size_t(at) >= size_t(p.at) + p.bytes || size_t(at) + bytes <= size_t(p.at),
                            "pieces alive at once do not overlap");
    alive.push_back({at, bytes});
  }
  for (auto it = alive.rbegin(); it != alive.rend(); ++it)
    if (it->at >= 0) book.give(size_t(it->at), it->bytes);
  expect(book.used == 0, "every piece returned");
  return from_arena;
}

static void repeated(const std::vector<size_t>& sizes, const std::string& name) {
  ArenaBook book;
  int fits = 0;
  size_t arena_sized = 0;
  for (size_t b : sizes) arena_sized += b <= kArenaMost ? 1 : 0;
  for (int run = 0; run < 3 + int(sizes.size()); ++run) fits = run_call(book, sizes);
  size_t total = 0;
  for (size_t b : sizes) total += ArenaBook::rounded(b);
  if (total <= kArenaMost)
    expect(size_t(fits) == arena_sized, name + ": a repeated call takes every workspace from the arena");
  expect(book.size <= kArenaMost, name + ": the block stays within kArenaMost");
}

int main(int argc, char** argv) {
  long count;
  unsigned seed;
  if (fuzz_args(argc, argv, count, seed)) {
    std::mt19937 rng(seed);
    Uniform pick{rng};
    for (long i = 0; i < count; ++i) {
      // a few call shapes, run in random order over one book
      ArenaBook book;
      std::vector<std::vector<size_t>> shapes(size_t(pick(1, 4)));
      for (auto& s : shapes) {
        s.resize(size_t(pick(0, 4)));
        for (auto& b : s) b = pick(0, 9) == 0 ? (kArenaMost >> pick(0, 2)) + size_t(pick(0, 3)) : size_t(pick(1, 1 << 20));
      }
      for (int k = 0; k < 40; ++k) run_call(book, shapes[size_t(pick(0, int(shapes.size()) - 1))]);
      for (const auto& s : shapes) repeated(s, "fuzz case " + std::to_string(i));
    }
    std::printf("fuzz seed %u: %ld cases, %d failed\n%s\n", seed, count, failures, failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
  }
  // growth: the first call goes to the pool and asks for its largest piece; then for the nest's sum
  ArenaBook book;
  expect(run_call(book, {100, 300}) == 0, "an empty arena hands out nothing");
  expect(book.want == 512, "the first call asks for its largest piece (rounded)");
  expect(run_call(book, {100, 300}) == 1, "the second call fits its first piece");
  expect(book.want == 768, "... and asks for both");
  expect(run_call(book, {100, 300}) == 2, "the third call fits both");
  // a piece past kArenaMost always goes to the pool, and asks for nothing
  ArenaBook big;
  run_call(big, {kArenaMost + 1});
  expect(big.want == 0, "a piece past kArenaMost asks for no block");
  // returned out of order: kept, never handed out twice
  ArenaBook odd;
  odd.size = odd.want = 4096;
  const int64_t a = odd.take(256), b = odd.take(256);
  odd.give(size_t(a), 256);
  const int64_t c = odd.take(256);
  expect(c != a && c != b, "a piece returned out of order is not handed out again");
  repeated({1000, 70000, 3, 5 << 20}, "a backward's nest");
  repeated({1 << 20}, "one piece");
  repeated({kArenaMost / 2, kArenaMost / 2 + 1}, "a nest past kArenaMost");
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
