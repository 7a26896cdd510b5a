#!/usr/bin/env bash
# Issue 15's dense yardstick in one call on the device machine: our Hopper kernel (`bench-kernel`, N = 32768,
# 8 heads, D = 128, dense, 128-key blocks) in int8 and bf16, and the peer's INT8/FP8 kernel on an all-ones
# mask (upstream SpargeAttn built from ../shared/peers, `bench_spargeattn.py`), alternating for ROUNDS rounds
# (default 3), after a short correctness check of the build: selftest-cuda --quick (its λ-rule cases against
# the CPU's skips) and `verify --precision int8` on 1, 2 and 3 ranks.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), peers/ (with bench_spargeattn.py).
# Usage: bash gpu-int8-vs-peer.sh [ROUNDS]. Logs to $OUT/vs-peer.log; one JSON line a measurement.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-3}"
call=vs-peer
source "$here/gpu-call.sh"

step "selftest-cuda --quick"
run timeout -k 5 180 "$BIN" selftest-cuda --quick
step "int8 against one process and the Double reference: 1, 2, 3 ranks"
verify_int8_ranks

step "waiting for the peer's build"
[ "${peer_build:-none}" != none ] && wait "$peer_build"
tail -n 2 "$OUT/peer-build.log"
kernel=(bench-kernel --backend cuda --workload random --seq 32768 --heads 8 --head-dim 128 --dense --block-k 128
        --repeat 20 --json)
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds"
    for precision in int8 bf16; do
        echo "ours, $precision, dense, 128-key blocks"
        run timeout -k 5 120 "$BIN" "${kernel[@]}" --precision "$precision"
    done
    echo "peer, its kernel on all ones (and its defaults end to end, and its dense error)"
    run timeout -k 5 300 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk ""
done
step "medians of the rounds"
python3 - "$OUT/$call.log" <<'PY'
import json, statistics, sys
series = {}
for line in open(sys.argv[1]):
    if not line.startswith("{"): continue
    j = json.loads(line)
    if "tflops_real" in j and "precision" in j: series.setdefault(f"ours {j['precision']}", []).append(j["tflops_real"])
    elif j.get("case") == "kernel on mask" and j.get("mask") == "ones": series.setdefault("peer", []).append(j["tflops_real"])
for name, xs in series.items(): print(f"{name:10s} median {statistics.median(xs):7.1f} TFLOP/s of {[round(x, 1) for x in xs]}")
if "ours int8" in series and "peer" in series and len(series["ours int8"]) == len(series["peer"]):
    ratios = [a / b for a, b in zip(series["ours int8"], series["peer"])]
    print(f"int8 / peer: {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}, "
          f"of the medians {statistics.median(series['ours int8']) / statistics.median(series['peer']):.3f}")
PY
echo; [ "$status" -eq 0 ] && echo "gpu-int8-vs-peer: PASSED" || echo "gpu-int8-vs-peer: FAILED"
date -u
exit "$status"
