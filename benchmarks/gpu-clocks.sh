#!/usr/bin/env bash
# What the H200's SM clock and power do while the Hopper kernel runs, int8 against bf16 (one call on the
# device machine): nvidia-smi samples every 50 ms beside `bench-kernel` dense at N = 32768, 8 heads, D = 128,
# 128-key blocks, 100 launches each, twice in turn; prints each run's rate, its launches' spread, and the
# samples' clock and power while it ran.
#   bash benchmarks/gpu-clocks.sh DIR   (DIR holds sparge or sparge.gz, and gpu-call.sh beside this script)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="$(cd "${1:-$here}" && pwd)"
call=clocks
source "$here/gpu-call.sh"
samples="$OUT/samples.csv"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv,noheader,nounits -lms 50 > "$samples" &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT
for round in 1 2; do
    for precision in int8 bf16; do
        start="$(date -u +%Y/%m/%d\ %H:%M:%S.%3N)"
        line="$(timeout -k 5 120 "$BIN" bench-kernel --backend cuda --workload random --seq 32768 --heads 8 \
            --head-dim 128 --dense --block-k 128 --repeat 100 --json --precision "$precision" 2>/dev/null | tail -n 1)"
        stop="$(date -u +%Y/%m/%d\ %H:%M:%S.%3N)"
        [ -n "$line" ] || { echo "FAILED: $precision, round $round"; status=1; continue; }
        echo "$precision, round $round: $(field tflops_real "$line") TFLOP/s, launches $(field kernel_ms_min "$line")–$(field kernel_ms_max "$line") ms (median $(field kernel_ms "$line"))"
        python3 - "$samples" "$start" "$stop" <<'PY'
import statistics, sys
rows = [l.split(", ") for l in open(sys.argv[1]) if l.count(",") >= 4]
inside = [r for r in rows if sys.argv[2] <= r[0] <= sys.argv[3] and float(r[2]) > 150]  # the kernel's samples
if inside:
    clocks, power = [float(r[1]) for r in inside], [float(r[2]) for r in inside]
    reasons = sorted({r[4].strip() for r in inside})
    print(f"  {len(inside)} busy samples: SM clock {min(clocks):.0f}–{max(clocks):.0f} MHz (median "
          f"{statistics.median(clocks):.0f}), power {min(power):.0f}–{max(power):.0f} W (median "
          f"{statistics.median(power):.0f}), throttle reasons {reasons}")
else:
    print("  no busy samples in the run's window")
PY
    done
done
echo; [ "$status" -eq 0 ] && echo "gpu-clocks: PASSED" || echo "gpu-clocks: FAILED"
exit "$status"
