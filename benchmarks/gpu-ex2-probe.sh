#!/usr/bin/env bash
# Whether the GPU's packed half exponential (ex2.approx.f16x2) computes two values in one MUFU operation, on the
# device machine: builds benchmarks/gpu-ex2-probe.cu for sm_90a, prints the MUFU instructions of its SASS and
# the rates of ex2.approx.f32 against ex2.approx.f16x2 (values a second; eight independent chains a thread).
#   bash benchmarks/gpu-ex2-probe.sh   (from a copy of the repository on the device; nvcc on PATH or in /usr/local/cuda)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$PATH:/usr/local/cuda/bin"
build="$(mktemp -d)"
nvcc -O2 -gencode=arch=compute_90a,code=sm_90a -o "$build/ex2" "$here/gpu-ex2-probe.cu"
cuobjdump -sass "$build/ex2" | { grep -E "MUFU" || true; } | sed 's/ *\/\*[^*]*\*\/ *$//' | sort | uniq -c | head
"$build/ex2"
