#!/usr/bin/env bash
# The Hopper kernel's int8 Q·Kᵀ with Q in registers (the default) against Q read from shared memory at every
# step (SPARGE_CUDA_Q_REGISTERS=0), in one call on the device machine:
#   1. the same bits: one set of llm inputs (N = 8192, 4 heads) run both ways, TopK 0.3 and dense, outputs
#      compared byte for byte; `verify --precision int8` on 1, 2 and 3 ranks; `selftest-cuda --quick`;
#   2. ROUNDS rounds (default 5) alternating `bench-kernel` dense int8 both ways, bf16, and the peer's INT8/FP8
#      kernel on an all-ones mask (N = 32768, 8 heads, D = 128, 128-key blocks), nvidia-smi sampling the SM
#      clock and power every 50 ms beside each of ours;
#   3. the medians of the rounds, int8 ÷ peer per round, and each series' clock while busy.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), peers/. Usage: bash gpu-q-registers.sh [ROUNDS]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-5}"
call=q-registers
source "$here/gpu-call.sh"

step "the same bits with Q in registers and in shared memory"
run timeout -k 5 120 "$BIN" bench-kernel --backend cuda --workload llm --seq 8192 --heads 4 --head-dim 128 --dense \
    --block-k 128 --repeat 1 --inputs-out /tmp/qreg-in --force
for mask in "--topk 0.3" "--dense"; do
    for q in 1 0; do
        run env SPARGE_CUDA_Q_REGISTERS=$q timeout -k 5 120 "$BIN" run --backend cuda --precision int8 --block-k 128 $mask \
            --q /tmp/qreg-in_q.npy --k /tmp/qreg-in_k.npy --v /tmp/qreg-in_v.npy --output /tmp/qreg-out-$q.npy --force --json
    done
    if cmp /tmp/qreg-out-1.npy /tmp/qreg-out-0.npy; then echo "same bits ($mask)"; else echo "FAILED: outputs differ ($mask)"; status=1; fi
done
step "selftest-cuda --quick"
run timeout -k 5 180 "$BIN" selftest-cuda --quick
step "int8 against one process and the Double reference: 1, 2, 3 ranks"
verify_int8_ranks

step "waiting for the peer's build"
[ "${peer_build:-none}" != none ] && wait "$peer_build"
tail -n 2 "$OUT/peer-build.log"
samples="$OUT/samples.csv"; windows="$OUT/windows.txt"; : > "$windows"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv,noheader,nounits -lms 50 > "$samples" &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT
kernel=(bench-kernel --backend cuda --workload random --seq 32768 --heads 8 --head-dim 128 --dense --block-k 128
        --repeat 20 --json)
# One of ours: its JSON line, and the window nvidia-smi's samples are read in, under `name`.
ours() {
    local name=$1; shift
    local start line stop
    start="$(date -u +%Y/%m/%d\ %H:%M:%S.%3N)"
    echo "+ $name: $*"
    line="$("$@" 2> "$OUT/stderr.txt" | tail -n 1)"
    stop="$(date -u +%Y/%m/%d\ %H:%M:%S.%3N)"
    echo "$line"
    [[ "$line" == "{"* ]] || { cat "$OUT/stderr.txt"; echo "FAILED: $name"; status=1; return; }
    echo "$name|$start|$stop|$line" >> "$windows"
}
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds"
    ours "int8 Q in registers" env SPARGE_CUDA_Q_REGISTERS=1 timeout -k 5 120 "$BIN" "${kernel[@]}" --precision int8
    ours "int8 Q in shared memory" env SPARGE_CUDA_Q_REGISTERS=0 timeout -k 5 120 "$BIN" "${kernel[@]}" --precision int8
    ours "bf16" timeout -k 5 120 "$BIN" "${kernel[@]}" --precision bf16
    echo "peer, its kernel on all ones"
    run timeout -k 5 300 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk ""
done
kill $sampler 2>/dev/null
step "medians of the rounds"
python3 - "$OUT/$call.log" "$windows" "$samples" <<'PY'
import json, statistics, sys
log, windows, samples = sys.argv[1:]
series, peer = {}, []
for line in open(windows):
    name, start, stop, j = line.rstrip("\n").split("|", 3)
    series.setdefault(name, []).append((json.loads(j), start, stop))
for line in open(log):
    if line.startswith("{") and '"kernel on mask"' in line:
        j = json.loads(line)
        if j.get("mask") == "ones": peer.append(j["tflops_real"])
rows = [l.split(", ") for l in open(samples) if l.count(",") >= 4]
for name, runs in series.items():
    rates = [j["tflops_real"] for j, _, _ in runs]
    busy = [r for _, a, b in runs for r in rows if a <= r[0] <= b and float(r[2]) > 150]
    clock = statistics.median(float(r[1]) for r in busy) if busy else float("nan")
    power = statistics.median(float(r[2]) for r in busy) if busy else float("nan")
    print(f"{name:24s} median {statistics.median(rates):6.1f} TFLOP/s of {[round(x, 1) for x in rates]}; "
          f"busy: SM clock median {clock:.0f} MHz, power median {power:.0f} W ({len(busy)} samples)")
if peer: print(f"{'peer, all ones':24s} median {statistics.median(peer):6.1f} TFLOP/s of {[round(x, 1) for x in peer]}")
for name in ("int8 Q in registers", "int8 Q in shared memory"):
    rates = [j["tflops_real"] for j, _, _ in series.get(name, [])]
    if rates and len(rates) == len(peer):
        ratios = [a / b for a, b in zip(rates, peer)]
        print(f"{name} / peer: {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")
a, b = series.get("int8 Q in registers", []), series.get("int8 Q in shared memory", [])
if a and len(a) == len(b):
    ratios = [x[0]["tflops_real"] / y[0]["tflops_real"] for x, y in zip(a, b)]
    print(f"registers / shared memory: {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")
PY
rm -f /tmp/qreg-out-*.npy
echo; [ "$status" -eq 0 ] && echo "gpu-q-registers: PASSED" || echo "gpu-q-registers: FAILED"
date -u
exit "$status"
