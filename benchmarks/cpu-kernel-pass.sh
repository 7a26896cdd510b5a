#!/usr/bin/env bash
# The AVX2 micro-kernels of two release builds in one thread's share of a dense pass (C, CPU time,
# alternating round by round; cpu-kernel-pass.c):
#   bash benchmarks/cpu-kernel-pass.sh BUILD_A BUILD_B [ROUNDS] [N] [QUERY_BLOCKS]
# BUILD_* are release build folders (`swift build -c release --build-path X`, e.g. X/release); their
# CSpargeKernels.build/kernels_avx2.c.o are linked as compiled, so that the package's flags are measured.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for side in a b; do
    build="$1"; shift
    object="$build/CSpargeKernels.build/kernels_avx2.c.o"
    [ -f "$object" ] || { echo "cpu-kernel-pass: no $object" >&2; exit 2; }
    # Every defined symbol gets the side's prefix, so both sets link into one program.
    nm "$object" | awk '$2 == "T" { print $3 " '"$side"'_" $3 }' > "$work/$side.map"
    objcopy --redefine-syms="$work/$side.map" "$object" "$work/$side.o"
done
clang -O2 -o "$work/pass" "$here/cpu-kernel-pass.c" "$work/a.o" "$work/b.o" -I "$here/../Sources/CSpargeKernels/include" -lm
"$work/pass" "${1:-9}" "${2:-8192}" "${3:-2}"
