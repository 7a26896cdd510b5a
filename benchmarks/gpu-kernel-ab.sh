#!/usr/bin/env bash
# Builds against each other on the Hopper kernel, one call on the device machine: `bench-kernel` dense
# (N = 32768, 8 heads, D = 128, 128-key blocks, 20 launches) in int8 and bf16, each build in turn (in
# reverse order every other round), ROUNDS rounds (default 3), then each build's medians. The builds: every sparge-NAME.gz (a static release build)
# in the folder this script was copied to, beside gpu-call.sh. Usage: bash gpu-kernel-ab.sh [ROUNDS]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-3}"
call=kernel-ab
names=()
for gz in "$here"/sparge-*.gz; do
    name="$(basename "$gz" .gz)"; name="${name#sparge-}"
    mkdir -p /tmp/ab-bin && gunzip -c "$gz" > "/tmp/ab-bin/$name" && chmod +x "/tmp/ab-bin/$name"
    names+=("$name")
done
export SPARGE_BIN="/tmp/ab-bin/${names[0]}"
source "$here/gpu-call.sh"
results="$OUT/results-$$.txt"; : > "$results"  # this run's lines only ($call.log is appended to)
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds"
    order=("${names[@]}")
    if [ $((round % 2)) -eq 0 ]; then order=(); for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done; fi
    for precision in int8 bf16; do
        for name in "${order[@]}"; do
            line="$(dense_kernel "/tmp/ab-bin/$name" 32768 8 "$precision")" || { status=1; continue; }
            echo "AB $name $precision $(field tflops_real "$line") TFLOP/s, launches $(field kernel_ms_min "$line")–$(field kernel_ms_max "$line") ms" | tee -a "$results"
        done
    done
done
step "medians"
python3 -c '
import sys, statistics
runs = {}
for line in sys.stdin:
    f = line.split(); runs.setdefault((f[2], f[1]), []).append(float(f[3]))
for (precision, name), xs in sorted(runs.items()):
    print(f"{precision} {name:12s} median {statistics.median(xs):7.1f} TFLOP/s of {xs}")
' < "$results"
echo; [ "$status" -eq 0 ] && echo "gpu-kernel-ab: PASSED" || echo "gpu-kernel-ab: FAILED"
exit "$status"
