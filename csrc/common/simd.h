// Run-time CPU dispatch without -march=native: a function marked PIXELOPS_CPU_CLONES is compiled once per
// instruction set below and the loader picks the best one this CPU supports (GCC/Clang function
// multi-versioning through an ifunc). Mark the innermost loops that the compiler should vectorise.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PIXELOPS_NO_CLONES)
#define PIXELOPS_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PIXELOPS_CPU_CLONES
#endif
