#!/usr/bin/env bash
# The whole dense pass in C with one release build's AVX2 kernels, on 1 and on THREADS threads, alternating
# round by round (cpu-threads-pass.c): per-thread CPU time, the share of the wall the last thread ran alone,
# the FMA probe on 1 and on THREADS threads, and the hot scores kernel against the probe (whether loads are
# slow at the moment):
#   bash benchmarks/cpu-threads-pass.sh BUILD [ROUNDS] [N] [HEADS] [THREADS]
# BUILD is a release build folder (`swift build -c release --build-path X`: X/release).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
object="$1/CSpargeKernels.build/kernels_avx2.c.o"
[ -f "$object" ] || { echo "cpu-threads-pass: no $object" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
clang -O2 -pthread -o "$work/pass" "$here/cpu-threads-pass.c" "$object" -I "$here/../Sources/CSpargeKernels/include" -lm
"$work/pass" "${2:-5}" "${3:-8192}" "${4:-4}" "${5:-2}"
