#!/usr/bin/env bash
# What a CTA of the Hopper kernel costs besides its steps, one call on the device machine: dense `bench-kernel`
# at the same FLOPs cut into 1024, 2048, 4096 and 8192 CTAs (N × heads = 65536 × 2, 32768 × 8, 16384 × 32,
# 8192 × 128; 512, 256, 128 and 64 steps a CTA), int8 and bf16, the tail left whole (SPARGE_CUDA_TAIL_SPLIT=0)
# and, with SPLIT=both, also split as by default; ROUNDS rounds (default 3), the shapes in reverse order
# every other round. The kernel runs one CTA an SM (~165 KB of shared memory each): with W CTAs on 132
# SMs, waves ⌈W/132⌉ each of (steps·t + c), so the first three shapes are 16 waves of 256 steps' work, and
# their differences the per-CTA cost c (T4096 − T2048 = 16c).
# Needs beside it: gpu-call.sh, sparge.gz. Usage: bash gpu-cta-overhead.sh [ROUNDS]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-3}"
call=cta-overhead
source "$here/gpu-call.sh"
splits=(0); [ "${SPLIT:-0}" = both ] && splits=(0 1)
results="$OUT/results-$$.txt"; : > "$results"  # this run's lines only ($call.log is appended to)
for round in $(seq 1 "$rounds"); do
    shapes=("65536 2" "32768 8" "16384 32" "8192 128")
    [ $((round % 2)) -eq 0 ] && shapes=("8192 128" "16384 32" "32768 8" "65536 2")
    step "round $round of $rounds"
    for split in "${splits[@]}"; do
        for precision in int8 bf16; do
            for shape in "${shapes[@]}"; do
                set -- $shape
                line="$(SPARGE_CUDA_TAIL_SPLIT=$split dense_kernel "$BIN" "$1" "$2" "$precision")" || { status=1; continue; }
                echo "$precision$([ "$split" = 1 ] && echo -split) $1 $2 kernel_ms $(field kernel_ms "$line") min $(field kernel_ms_min "$line") tflops $(field tflops_real "$line")" | tee -a "$results"
            done
        done
    done
done
step "medians"
python3 -c '
import sys, statistics
runs = {}
for line in sys.stdin:
    f = line.split(); runs.setdefault((f[0], int(f[1]), int(f[2])), []).append(float(f[4]))
for (p, n, h), ms in sorted(runs.items()):
    ctas = h * n // 128
    print(f"{p} N={n:6d} heads={h:3d} CTAs={ctas:5d} waves={-(-ctas // 132):3d} kernel {statistics.median(ms):.4f} ms of {ms}")
for p in ("int8", "bf16", "int8-split", "bf16-split"):
    t = {n: statistics.median(ms) for (q, n, h), ms in runs.items() if q == p}
    if 16384 in t and 32768 in t: print(f"{p}: c from T4096 − T2048 = {(t[16384] - t[32768]) / 16 * 1000:.2f} µs a CTA")
    if 32768 in t and 65536 in t: print(f"{p}: c from T2048 − T1024 = {(t[32768] - t[65536]) / 8 * 1000:.2f} µs a CTA")
' < "$results"
echo; [ "$status" -eq 0 ] && echo "gpu-cta-overhead: PASSED" || echo "gpu-cta-overhead: FAILED"
exit "$status"
