// Which kernel set this CPU runs: cpuid for the instructions, xgetbv for whether the OS saves the ymm/zmm
// registers on a context switch (a CPU with AVX-512 under an OS that does not would fault on the first use).
#include "CSpargeKernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

int sparge_cpu_isa(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return SPARGE_ISA_PORTABLE;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx)) return SPARGE_ISA_PORTABLE;
    unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return SPARGE_ISA_PORTABLE;  // xmm and ymm state
    if (__get_cpuid_max(0, 0) < 7) return SPARGE_ISA_PORTABLE;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    if (!avx2) return SPARGE_ISA_PORTABLE;
    if (avx512f && (xcr0 & 0xE6) == 0xE6) return SPARGE_ISA_AVX512;  // opmask, zmm0–15 upper, zmm16–31
    return SPARGE_ISA_AVX2;
}
#else
int sparge_cpu_isa(void) { return SPARGE_ISA_PORTABLE; }
#endif

sparge_tile_kernels sparge_kernels_portable(void);
sparge_tile_kernels sparge_kernels_avx2(void);
sparge_tile_kernels sparge_kernels_avx512(void);

sparge_tile_kernels sparge_kernels(int isa) {
#if defined(__x86_64__)
    if (isa == SPARGE_ISA_AVX512) return sparge_kernels_avx512();
    if (isa == SPARGE_ISA_AVX2) return sparge_kernels_avx2();
#endif
    return sparge_kernels_portable();
}
