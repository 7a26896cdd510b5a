// tile_kernels.h for any CPU: 4 floats per vector (SSE2 on x86-64, NEON on arm64), multiply and add
// rounded separately (no FMA is assumed). The fallback, and the path tests force to cover both.
#include "CSpargeKernels.h"
#define KERNEL(name) sparge_##name##_portable
#define VW 4
#define LV 2
#define MR 4
#define HAS_FMA 0
#define PROBE_CHAINS 8
#define HAS_F16C 0
#include "tile_kernels.h"
