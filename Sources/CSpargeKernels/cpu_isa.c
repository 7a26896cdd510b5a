// Which kernel set this CPU runs: cpuid for the instructions, xgetbv for whether the OS saves the ymm/zmm
// registers on a context switch (a CPU with AVX-512 under an OS that does not would fault on the first use).
#include "CSpargeKernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

/// Whether the Linux kernel lets this process use the tile data (ARCH_REQ_XCOMP_PERM for XTILEDATA, feature
/// 18): asked before any thread touches a tile (asking again is harmless); the answer holds for every thread
/// of the process.
static int tiles_permitted(void) {
#if defined(__linux__)
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}

/// AVX512-BF16 (cpuid 7.1 EAX bit 5), AVX512-VNNI (cpuid 7.0 ECX bit 11) and the AVX-512 their set also uses:
/// BW, DQ, VL (cpuid 7.0 EBX bits 30, 17, 31). `maxLeaf7`, `ebx7`, `ecx7`: cpuid 7.0's EAX, EBX, ECX.
static int avx512_bf16_usable(unsigned maxLeaf7, unsigned ebx7, unsigned ecx7) {
    if (!(((ebx7 >> 30) & 1) && ((ebx7 >> 17) & 1) && ((ebx7 >> 31) & 1) && ((ecx7 >> 11) & 1))) return 0;
    if (maxLeaf7 < 1) return 0;
    unsigned a, b, c, d;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;
}

/// AMX-BF16 and AMX-TILE (cpuid 7.0 EDX bits 22, 24) on top of AVX512-BF16, the OS saving the tile state
/// (XCR0 bits 17, 18), and Linux's permission. `edx7`: cpuid 7.0's EDX.
static int amx_usable(unsigned edx7, unsigned long long xcr0) {
    if (!(((edx7 >> 22) & 1) && ((edx7 >> 24) & 1))) return 0;
    if ((xcr0 & 0x60000) != 0x60000) return 0;
    return tiles_permitted();
}

int sparge_cpu_isa(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return SPARGE_ISA_PORTABLE;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c)) return SPARGE_ISA_PORTABLE;
    unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return SPARGE_ISA_PORTABLE;  // xmm and ymm state
    if (__get_cpuid_max(0, 0) < 7) return SPARGE_ISA_PORTABLE;
    __cpuid_count(7, 0, a, b, c, d);
    // The avx512 set is compiled for AVX-512F with VL (256-bit forms of its instructions, ymm16–31): a CPU
    // with F alone (Knights Landing) runs avx2.
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512vl = (b >> 31) & 1;
    if (!avx2) return SPARGE_ISA_PORTABLE;
    if (!(avx512f && avx512vl && (xcr0 & 0xE6) == 0xE6)) return SPARGE_ISA_AVX2;  // opmask, zmm0–15 upper, zmm16–31
    if (!avx512_bf16_usable(a, b, c)) return SPARGE_ISA_AVX512;
    return amx_usable(d, xcr0) ? SPARGE_ISA_AMX : SPARGE_ISA_AVX512_BF16;
}
#else
int sparge_cpu_isa(void) { return SPARGE_ISA_PORTABLE; }
#endif

sparge_tile_kernels sparge_kernels_portable(void);
sparge_tile_kernels sparge_kernels_avx2(void);
sparge_tile_kernels sparge_kernels_avx512(void);
sparge_tile_kernels sparge_kernels_avx512bf16(void);
sparge_bf16_tile_kernels sparge_bf16_kernels_avx512bf16(void);
sparge_bf16_tile_kernels sparge_bf16_kernels_amx(void);
void sparge_int8_tile_scores_amx(const int *queriesT, long stride, long lanes, const float *laneScale, const int *keys,
                                 long pairs, long keyCount, float keyScale, const float *keyMean, float *scores,
                                 float *rowMax, const void *aheadKeys, const void *aheadValues, long aheadBytes);

#if defined(__x86_64__)
/// AMX-INT8 (cpuid 7.0 EDX bit 25), on a CPU already found to run the AMX set.
static int amx_int8_present(void) {
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    return (d >> 25) & 1;
}
#endif

sparge_tile_kernels sparge_kernels(int isa) {
#if defined(__x86_64__)
    if (isa == SPARGE_ISA_AMX) {
        // The AVX512-BF16 set's kernels (VNNI for int8's P·V), with bf16 products and int8's scores on tiles.
        sparge_tile_kernels k = sparge_kernels_avx512bf16();
        k.bf16 = sparge_bf16_kernels_amx();
        if (amx_int8_present()) k.int8Scores = sparge_int8_tile_scores_amx;
        return k;
    }
    if (isa == SPARGE_ISA_AVX512_BF16) {
        // The AVX-512 kernels with VNNI for int8, and bf16 products in VDPBF16PS.
        sparge_tile_kernels k = sparge_kernels_avx512bf16();
        k.bf16 = sparge_bf16_kernels_avx512bf16();
        return k;
    }
    if (isa == SPARGE_ISA_AVX512) return sparge_kernels_avx512();
    if (isa == SPARGE_ISA_AVX2) return sparge_kernels_avx2();
#endif
    return sparge_kernels_portable();
}
