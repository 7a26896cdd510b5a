#!/usr/bin/env bash
# The Hopper kernel with each launched CTA taking two work-list CTAs in turn (the default in large launches)
# against one each (SPARGE_CUDA_CTA_ITEMS=1), in one call on the device machine:
#   1. the same bits: llm inputs (N = 16384, 12 heads: 1536 CTAs) run both ways, int8 and bf16, TopK 0.3,
#      dense and causal, the tail left whole in both (a split tile's parts merge in another order), outputs
#      compared byte for byte; `selftest-cuda --quick` (its resident cases include launches of two a CTA);
#      `verify --precision int8` on 1, 2 and 3 ranks;
#   2. ROUNDS rounds (default 5) alternating `bench-kernel` dense (N = 32768, 8 heads, D = 128, 128-key
#      blocks) in int8 and bf16 both ways, the whole TopK 0.1 pass both ways, and the peer's INT8/FP8 kernel
#      on an all-ones mask with its end-to-end TopK 0.1 call;
#   3. the medians of the rounds and the ratios.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), peers/. Usage: bash gpu-cta-items.sh [ROUNDS]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-5}"
call=cta-items
source "$here/gpu-call.sh"

step "the same bits with two work-list CTAs a CTA and with one"
run timeout -k 5 120 "$BIN" bench-kernel --backend cuda --workload llm --seq 16384 --heads 12 --head-dim 128 --dense \
    --block-k 128 --repeat 1 --inputs-out /tmp/items-in --force
for precision in int8 bf16; do
    for mask in "--topk 0.3" "--dense" "--causal --topk 0.3"; do
        for items in 2 1; do
            run env SPARGE_CUDA_CTA_ITEMS=$items SPARGE_CUDA_TAIL_SPLIT=0 timeout -k 5 120 "$BIN" run --backend cuda \
                --precision $precision --block-k 128 $mask --q /tmp/items-in_q.npy --k /tmp/items-in_k.npy \
                --v /tmp/items-in_v.npy --output /tmp/items-out-$items.npy --force --json
        done
        if cmp /tmp/items-out-2.npy /tmp/items-out-1.npy; then echo "same bits ($precision $mask)"
        else echo "FAILED: outputs differ ($precision $mask)"; status=1; fi
    done
done
rm -f /tmp/items-out-*.npy
step "selftest-cuda --quick"
run timeout -k 5 300 "$BIN" selftest-cuda --quick
step "int8 against one process and the Double reference: 1, 2, 3 ranks"
verify_int8_ranks

step "waiting for the peer's build"
[ "${peer_build:-none}" != none ] && wait "$peer_build"
tail -n 2 "$OUT/peer-build.log"
kernel=(bench-kernel --backend cuda --workload random --seq 32768 --heads 8 --head-dim 128 --dense --block-k 128
        --repeat 20 --json)
pass=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --topk 0.1 --block-k 128 --dtype bf16
      --repeat 10 --json)
# One of ours: its last JSON line, tagged `name`, into the log.
ours() {
    local name=$1; shift
    echo "+ $name: $*"
    local line
    line="$("$@" 2> "$OUT/stderr.txt" | tail -n 1)"
    [[ "$line" == "{"* ]] || { cat "$OUT/stderr.txt"; echo "FAILED: $name"; status=1; return; }
    echo "OURS|$name|$line"
}
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds"
    for precision in int8 bf16; do
        for items in 2 1; do
            ours "$precision dense, items $items" env SPARGE_CUDA_CTA_ITEMS=$items timeout -k 5 120 "$BIN" "${kernel[@]}" --precision "$precision"
        done
    done
    for items in 2 1; do
        ours "bf16 TopK 0.1 pass, items $items" env SPARGE_CUDA_CTA_ITEMS=$items timeout -k 5 120 "$BIN" "${pass[@]}"
    done
    echo "peer: its kernel on all ones, and its end-to-end TopK 0.1"
    run timeout -k 5 300 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk 0.1
done
step "medians of the rounds"
python3 - "$OUT/$call.log" <<'PY'
import json, statistics, sys
ours, peer_kernel, peer_pass = {}, [], []
for line in open(sys.argv[1]):
    if line.startswith("OURS|"):
        _, name, j = line.rstrip("\n").split("|", 2)
        j = json.loads(j)
        ours.setdefault(name, []).append(j["tflops_real"] if "dense," in name else j.get("seconds", float("nan")) * 1e3)
    elif line.startswith("{"):
        j = json.loads(line)
        if j.get("case") == "kernel on mask" and j.get("mask") == "ones": peer_kernel.append(j["tflops_real"])
        elif j.get("case", "").startswith("end-to-end") and j.get("density", 1) < 1: peer_pass.append(j["seconds"] * 1e3)
med = statistics.median
for name, xs in ours.items():
    unit = "TFLOP/s" if "dense," in name else "ms"
    print(f"{name:28s} median {med(xs):8.3f} {unit} of {[round(x, 3) for x in xs]}")
if peer_kernel: print(f"{'peer kernel, all ones':28s} median {med(peer_kernel):8.3f} TFLOP/s of {[round(x, 1) for x in peer_kernel]}")
if peer_pass: print(f"{'peer end to end, TopK 0.1':28s} median {med(peer_pass):8.3f} ms of {[round(x, 3) for x in peer_pass]}")
for items in (2, 1):
    xs = ours.get(f"int8 dense, items {items}", [])
    if xs and len(xs) == len(peer_kernel):
        r = [a / b for a, b in zip(xs, peer_kernel)]
        print(f"int8 items {items} / peer: {[round(x, 3) for x in r]}, median {med(r):.3f}")
for p in ("int8", "bf16"):
    a, b = ours.get(f"{p} dense, items 2", []), ours.get(f"{p} dense, items 1", [])
    if a and len(a) == len(b): print(f"{p}: items 2 / items 1 per round {[round(x / y, 3) for x, y in zip(a, b)]}, median {med([x / y for x, y in zip(a, b)]):.3f}")
a, b = ours.get("bf16 TopK 0.1 pass, items 2", []), ours.get("bf16 TopK 0.1 pass, items 1", [])
if a and b and peer_pass: print(f"TopK 0.1 pass / peer end to end: items 2 {med(a) / med(peer_pass):.3f}, items 1 {med(b) / med(peer_pass):.3f}")
PY
echo; [ "$status" -eq 0 ] && echo "gpu-cta-items: PASSED" || echo "gpu-cta-items: FAILED"
date -u
exit "$status"
