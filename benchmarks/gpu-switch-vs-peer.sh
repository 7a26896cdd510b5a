#!/usr/bin/env bash
# One environment switch of the CUDA backend on (=1) and off (=0), beside the peer, in one call on the device
# machine (e.g. SPARGE_CUDA_TURNS):
#   1. the same bits both ways: one set of llm inputs (N = 8192, 4 heads, D = 128) run in int8 and bf16, TopK
#      0.3 non-causal, dense, and TopK 0.3 causal, outputs compared byte for byte;
#   2. `selftest-cuda --quick` both ways, and `verify --precision int8` on 1, 2 and 3 ranks with it on;
#   3. ROUNDS rounds (default 5), the order reversed every other round: `bench-kernel` dense (N = 32768, 8 heads,
#      D = 128, 128-key blocks, 20 launches) in int8 and bf16 both ways, the peer's INT8/FP8 kernel on an
#      all-ones mask, and the whole 32K pass (`bench --dtype bf16`, TopK 0.1, llm, non-causal) both ways;
#   4. the medians, int8 ÷ peer per round, and on ÷ off per round.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), peers/.
# Usage: bash gpu-switch-vs-peer.sh VARIABLE [ROUNDS]. Logs to $OUT/switch.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
switch="${1:?usage: gpu-switch-vs-peer.sh VARIABLE [ROUNDS]}"
rounds="${2:-5}"
call=switch
source "$here/gpu-call.sh"
echo "switch: $switch"

step "the same bits with $switch=1 and =0"
inputs=/tmp/switch-in
run timeout -k 5 120 "$BIN" bench-kernel --backend cuda --workload llm --seq 8192 --heads 4 --head-dim 128 --dense \
    --block-k 128 --repeat 1 --inputs-out "$inputs" --force
for precision in int8 bf16; do
    for mask in "--topk 0.3" "--dense" "--topk 0.3 --causal"; do
        for on in 1 0; do
            run env "$switch=$on" timeout -k 5 120 "$BIN" run --backend cuda --precision "$precision" --block-k 128 $mask \
                --q "${inputs}_q.npy" --k "${inputs}_k.npy" --v "${inputs}_v.npy" --output "/tmp/switch-out-$on.npy" --force
        done
        if cmp -s /tmp/switch-out-1.npy /tmp/switch-out-0.npy; then echo "same bits ($precision, $mask)"
        else echo "FAILED: outputs differ ($precision, $mask)"; status=1; fi
    done
done
for on in 1 0; do
    step "selftest-cuda --quick, $switch=$on"
    run env "$switch=$on" timeout -k 5 240 "$BIN" selftest-cuda --quick
done
step "int8 against one process and the Double reference: 1, 2, 3 ranks, $switch=1"
export "$switch=1"
verify_int8_ranks
unset "$switch"

step "waiting for the peer's build"
[ "${peer_build:-none}" != none ] && wait "$peer_build"
tail -n 2 "$OUT/peer-build.log"
results="$OUT/results-$$.txt"; : > "$results"  # this run's lines only ($call.log is appended to)
pass=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --dtype bf16 --topk 0.1 --block-k 128
      --repeat 10 --json)
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds"
    order=(1 0); [ $((round % 2)) -eq 0 ] && order=(0 1)
    for precision in int8 bf16; do
        for on in "${order[@]}"; do
            export "$switch=$on"
            line="$(dense_kernel "$BIN" 32768 8 "$precision")" || { status=1; unset "$switch"; continue; }
            unset "$switch"
            echo "R $round dense-$precision $on $(field tflops_real "$line")" | tee -a "$results"
        done
    done
    line="$(timeout -k 5 300 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk "" \
        2>&1 | grep '"kernel on mask"' | grep '"ones"' | tail -n 1)"
    [[ "$line" == "{"* ]] && echo "R $round peer - $(field tflops_real "$line")" | tee -a "$results" || { echo "FAILED: peer"; status=1; }
    for on in "${order[@]}"; do
        line="$(env "$switch=$on" timeout -k 5 120 "$BIN" "${pass[@]}" 2> "$OUT/stderr.txt" | tail -n 1)"
        [[ "$line" == "{"* ]] || { cat "$OUT/stderr.txt"; echo "FAILED: pass $on"; status=1; continue; }
        echo "R $round pass-ms $on $(python3 -c 'import json,sys; print(1000 * json.loads(sys.argv[1])["seconds"])' "$line")" | tee -a "$results"
    done
done
step "medians of the rounds"
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, r, what, on, x = line.split()
    runs.setdefault((what, on), {})[int(r)] = float(x)
for (what, on), xs in sorted(runs.items()):
    print(f"{what:12s} {on}  median {statistics.median(xs.values()):8.3f} of {[round(v, 3) for v in xs.values()]}")
def ratios(a, b):
    common = sorted(set(a) & set(b))
    return [a[r] / b[r] for r in common]
for what in ("dense-int8", "dense-bf16", "pass-ms"):
    if (what, "1") in runs and (what, "0") in runs:
        q = ratios(runs[(what, "1")], runs[(what, "0")])
        print(f"{what}: on / off per round {[round(x, 3) for x in q]}, median {statistics.median(q):.3f}")
if ("peer", "-") in runs:
    for on in ("1", "0"):
        if ("dense-int8", on) in runs:
            q = ratios(runs[("dense-int8", on)], runs[("peer", "-")])
            print(f"int8 ({on}) / peer per round {[round(x, 3) for x in q]}, median {statistics.median(q):.3f}")
PY
echo; [ "$status" -eq 0 ] && echo "gpu-switch-vs-peer: PASSED" || echo "gpu-switch-vs-peer: FAILED"
date -u
exit "$status"
