#!/bin/bash
# Variants of the Hopper kernel against each other, alone (benchmarks/gpu-sm90-harness.cu), in one call on the
# device machine: each NAME=FLAGS is built with nvcc (D = 128, 128-key blocks, int8 Q·Kᵀ unless FLAGS say
# otherwise; FLAGS such as "-DPV_FP8=1 -DKV_STAGES=2 -DTURNS=0"), all builds at once; then ROUNDS rounds in
# which each runs the harness (its checks against Double, then dense, causal and random 0.1 at N = 32768, 8
# heads), in reverse order every other round; then each variant's medians.
# Usage, from the repository (the kernel sources and the harness): bash benchmarks/gpu-sm90-ab.sh ROUNDS NAME=FLAGS ...
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=$1; shift
out=/tmp/sm90-ab; mkdir -p "$out"  # the binaries (ROUNDS 0: only built, e.g. for gpu-sm90-profile.sh)
date -u; nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
names=()
for spec in "$@"; do
    name=${spec%%=*}; flags=${spec#*=}; names+=("$name")
    # The defaults that FLAGS do not set.
    defines=()
    for d in HEAD_DIM=128 BLOCK_K=128 KV_STAGES=3 QK_BF16=1 QK_INT8=1 K_BLOCK_MEAN=0 PV_FP8=0 PV_BF16=1; do
        [[ " $flags" == *" -D${d%%=*}="* ]] || defines+=("-D$d")
    done
    nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a "${defines[@]}" $flags -I"$here/Sources/SpargeCUDA/Kernels" \
        -diag-suppress 177 -ldl -o "$out/$name" "$here/benchmarks/gpu-sm90-harness.cu" > "$out/$name.build.txt" 2>&1 &
done
wait
status=0
for name in "${names[@]}"; do
    [ -x "$out/$name" ] || { echo "FAILED: build of $name"; cat "$out/$name.build.txt"; exit 1; }
done
results="$out/results.txt"; : > "$results"
for round in $(seq 1 "$rounds"); do
    echo "=== round $round of $rounds ($(date -u +%H:%M:%S))"
    order=("${names[@]}")
    if [ $((round % 2)) -eq 0 ]; then order=(); for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done; fi
    for name in "${order[@]}"; do
        echo "== $name"
        timeout -k 5 120 "$out/$name" > "$out/run.txt" 2>&1 || { status=1; echo "FAILED: $name"; }
        cat "$out/run.txt"
        grep "speed" "$out/run.txt" | sed "s/^/$round $name |/" >> "$results"
    done
done
echo "=== medians"
python3 - "$results" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    head, text = line.split("|", 1)
    name = head.split()[1]
    m = re.search(r"speed (.+?)\s+N=.*?([0-9.]+) TFLOP/s", text)
    runs.setdefault((m.group(1), name), []).append(float(m.group(2)))
for (case, name), xs in sorted(runs.items()):
    print(f"{case:12s} {name:20s} median {statistics.median(xs):7.1f} TFLOP/s of {xs}")
PY
exit $status
