// PER_ISA_CLONES: a function compiled for AVX-512BW, AVX2 and any x86-64, the loader picking the best this CPU
// has (ifunc), for plain C that moves or rounds every value of Q, K and V once per pass (the packing in
// bf16_tiles.c, int8's quantization in quantize.c): on the baseline's SSE2 alone each was ~10% of a sparse
// pass. Only for code whose operations cannot fuse or reorder, so that every clone gives the same bits.
#ifndef SPARGE_PER_ISA_CLONES_H
#define SPARGE_PER_ISA_CLONES_H
#if defined(__x86_64__)
#define PER_ISA_CLONES __attribute__((target_clones("avx512bw", "avx2", "default")))
#else
#define PER_ISA_CLONES
#endif
#endif
