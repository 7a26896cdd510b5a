#!/usr/bin/env bash
# Is the Hopper kernel's last, partly filled wave worth splitting? One call on the device machine: dense
# `bench-kernel` (8 heads, D = 128, 128-key blocks, int8 and bf16) at three lengths whose CTAs (128 query rows
# each) fill the GPU's waves differently: N = 31744 (1984 CTAs: 15.03 waves of 132 SMs), 32768 (2048: 15.52, the
# issue's shape) and 33792 (2112: 16.00). Each CTA does work proportional to N, so without a tail effect the
# three read the same TFLOP/s; with one, 33792 reads the most and 31744 the least.
# Needs beside it: gpu-call.sh, sparge.gz. Usage: bash gpu-wave-tail.sh [ROUNDS] (default 3).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-3}"
call=wave-tail
source "$here/gpu-call.sh"
nvidia-smi --query-gpu=name,multiprocessor_count --format=csv 2>/dev/null || true
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds"
    for seq in 31744 32768 33792; do
        for precision in int8 bf16; do
            line="$(timeout -k 5 120 "$BIN" bench-kernel --backend cuda --workload random --seq "$seq" --heads 8 \
                --head-dim 128 --dense --block-k 128 --repeat 20 --json --precision "$precision" | tail -n 1)"
            echo "$line"
            echo "N $seq $precision: $(field tflops_real "$line") TFLOP/s"
        done
    done
done
step "medians"
python3 - "$OUT/$call.log" <<'PY'
import json, statistics, sys
series = {}
for line in open(sys.argv[1]):
    if line.startswith("{") and "tflops_real" in line:
        j = json.loads(line)
        series.setdefault((j["precision"], j["seq"]), []).append(j["tflops_real"])
for (precision, seq), xs in sorted(series.items()):
    print(f"{precision} N {seq}: median {statistics.median(xs):.1f} TFLOP/s of {[round(x, 1) for x in xs]}")
PY
date -u
exit "$status"
