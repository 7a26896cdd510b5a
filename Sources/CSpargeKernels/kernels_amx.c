// tile_kernels_bf16.h on AMX (Sapphire Rapids and later Xeons): TDPBF16PS on tiles, AVX512-BF16's
// vcvtne2ps2bf16 for P, AVX-512 for the softmax; and tile_kernels_int8_amx.h, int8's scores on TDPBSSD. The rest
// of the AMX set is the avx512bf16 set's kernels (VNNI for int8's P·V; cpu_isa.c). Runs only where sparge_cpu_isa says AMX: cpuid, XCR0 and Linux's permission for the tiles.
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <immintrin.h>
#define KERNEL(name) sparge_##name##_amx
#define VW 16
#define HAS_FMA 1
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,amx-tile,amx-bf16,amx-int8,avx2,fma"))), apply_to = function)
#include "vector_ops.h"

/// The palette-1 configuration: 64 bytes, palette at byte 0, bytes per row of tile t at 16 + 2t, rows at 48 + t.
typedef struct __attribute__((aligned(64))) {
    unsigned char palette, startRow, reserved[14];
    unsigned short bytesPerRow[16];
    unsigned char rows[16];
} tile_configuration;

/// Whether this thread's tiles hold the configuration (set by tile_configure, cleared by tile_release). A
/// thread configures once and keeps it across kernel calls: loading it at every call cost a serializing
/// LDTILECFG (which also zeroes every tile) twice per visit. A caller that lets other code use the tiles on
/// the same thread releases them first (`sparge_bf16_tile_kernels.release`); the driver releases them when
/// a worker's share of a pass is done.
static __thread int tiles_configured;

INLINE void tile_configure(void) {
    if (__builtin_expect(tiles_configured, 1)) return;
    tile_configuration c = {0};
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.bytesPerRow[t] = 64;
        c.rows[t] = 16;
    }
    _tile_loadconfig(&c);
    tiles_configured = 1;
}

INLINE void tile_release(void) {
    if (!tiles_configured) return;
    _tile_release();
    tiles_configured = 0;
}

#define TILE_CONFIGURE() tile_configure()
#define TILE_RELEASE() tile_release()
#define TILE_ZERO(t) _tile_zero(t)
#define TILE_LOAD(t, p, rowBytes) _tile_loadd(t, p, rowBytes)
#define TILE_STORE(t, p, rowBytes) _tile_stored(t, p, rowBytes)
#define TILE_DP(c, a, b) _tile_dpbf16ps(c, a, b)
#define TILE_DP_INT8(c, a, b) _tile_dpbssd(c, a, b)

#define BF16_PAIRS_NATIVE 1
#include "bf16_pairs.h"
#include "tile_kernels_bf16.h"
#include "tile_kernels_int8_amx.h"
#pragma clang attribute pop
#endif
