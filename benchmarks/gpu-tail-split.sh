#!/usr/bin/env bash
# The split last wave (TailSplit) in one call on the device machine:
# 1. correctness: selftest-cuda --quick (its resident sweep has two passes whose last waves are split: a
#    dense pass's list split by the host, a causal TopK mask's by the device; masks exactly, output and LSE
#    against the CPU, the tiles' counters); `verify` of dense 1-rank passes that split (bf16 and int8, N =
#    20480, one head: 160 CTAs), and `verify --precision int8` on 1, 2 and 3 ranks as before (never split);
# 2. issue 15's dense yardstick, ROUNDS alternating rounds (default 5): ours int8 with the split and without
#    (SPARGE_CUDA_TAIL_SPLIT=0), and the build before (sparge-base.gz, where carried), `bench-kernel` dense
#    N = 32768, 8 heads, D = 128, 128-key blocks, then the peer's kernel on an all-ones mask
#    (bench_spargeattn.py), where peers/ is carried;
#    Each round also runs the whole dense bf16 pass (`bench`, bf16 tensors), split and not;
# 3. the whole bf16 pass (`bench`, llm, TopK 0.1, 128-key blocks, bf16 tensors: lists too short to split),
#    with the switch on and off, against the peer's end-to-end call.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build); optionally sparge-base.gz, peers/.
# Logs to $OUT/tail-split.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-5}"
call=tail-split
source "$here/gpu-call.sh"

step "selftest-cuda --quick"
run timeout -k 5 240 "$BIN" selftest-cuda --quick
if [ "$status" -ne 0 ]; then
    [ "${peer_build:-none}" = none ] || kill "$peer_build" 2> /dev/null
    echo "gpu-tail-split: FAILED (the self-test)"; exit 1
fi
step "verify: dense passes that split (bf16, int8); int8 on 1, 2 and 3 ranks"
for precision in bf16 int8; do
    run timeout -k 5 120 "$BIN" verify --backend cuda --precision "$precision" --workload random --seq 20480 --heads 1 \
        --head-dim 128 --dense --threads 2 --json --tolerance 2e-3
done
verify_int8_ranks

base=""
if [ -f "$here/sparge-base.gz" ]; then
    base=/tmp/sparge-base/sparge; mkdir -p /tmp/sparge-base && gunzip -c "$here/sparge-base.gz" > "$base" && chmod +x "$base"
fi
step "waiting for the peer's build"
[ "${peer_build:-none}" = none ] || wait "$peer_build"
[ -f "$OUT/peer-build.log" ] && tail -n 2 "$OUT/peer-build.log"
kernel=(bench-kernel --backend cuda --workload random --seq 32768 --heads 8 --head-dim 128 --block-k 128 --repeat 20
        --precision int8 --json)
ours() {  # NAME SPLIT BINARY ARGS...: one run, its JSON line tagged with NAME
    local name="$1" split="$2" binary="$3"; shift 3
    local line; line="$(SPARGE_CUDA_TAIL_SPLIT=$split timeout -k 5 120 "$binary" "$@" | tail -n 1)"
    echo "{\"series\": \"$name\", ${line#\{}"
}
for round in $(seq 1 "$rounds"); do
    step "round $round of $rounds: dense"
    ours "int8 dense, split" 1 "$BIN" "${kernel[@]}" --dense
    ours "int8 dense, not split" 0 "$BIN" "${kernel[@]}" --dense
    [ -n "$base" ] && ours "int8 dense, build before" 1 "$base" "${kernel[@]}" --dense
    for split in 1 0; do
        ours "whole pass bf16 dense, split $split" "$split" "$BIN" bench --backend cuda --workload random --seq 32768 \
            --heads 8 --head-dim 128 --dense --block-k 128 --dtype bf16 --repeat 10 --json
    done
    [ -n "$peer_dir" ] && [ -d "$here/peers" ] &&
        timeout -k 5 300 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk "" |
        grep '"kernel on mask"' | sed 's/^{/{"series": "peer, all ones", /'
done
for round in $(seq 1 2); do
    step "round $round of 2: the whole pass, TopK 0.1"
    for split in 1 0; do
        line="$(SPARGE_CUDA_TAIL_SPLIT=$split timeout -k 5 120 "$BIN" bench --backend cuda --workload llm --seq 32768 --heads 8 \
            --head-dim 128 --topk 0.1 --block-k 128 --repeat 10 --dtype bf16 --json | tail -n 1)"
        echo "{\"series\": \"whole pass bf16, split $split\", ${line#\{}"
    done
    [ -d "$here/peers" ] && timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 \
        --heads 8 --topk 0.1 2>/dev/null | grep '"end-to-end topk"' | sed 's/^{/{"series": "peer end to end", /'
done
step "medians"
python3 - "$OUT/$call.log" <<'PY'
import json, statistics, sys
series = {}
for line in open(sys.argv[1]):
    if not line.startswith('{"series"'): continue
    j = json.loads(line)
    # Milliseconds of a whole pass (ours, the peer's end to end), else the kernel's real TFLOP/s.
    value = j.get("seconds", 0) * 1e3 if j["series"].startswith(("whole pass", "peer end")) else j.get("tflops_real")
    if value is not None: series.setdefault(j["series"], []).append(value)
for name, xs in series.items():
    print(f"{name:28s} median {statistics.median(xs):8.3f} of {[round(x, 3) for x in xs]}")
a, b, p = series.get("int8 dense, split", []), series.get("int8 dense, not split", []), series.get("peer, all ones", [])
if a and p and len(a) == len(p):
    print("int8 dense split / peer per round:", [round(x / y, 3) for x, y in zip(a, p)], "median", round(statistics.median([x / y for x, y in zip(a, p)]), 3))
if a and b and len(a) == len(b):
    print("split / not split per round:", [round(x / y, 4) for x, y in zip(a, b)])
c = series.get("int8 dense, build before", [])
if b and c and len(b) == len(c):
    print("not split / build before per round:", [round(x / y, 4) for x, y in zip(b, c)])
PY
echo; [ "$status" -eq 0 ] && echo "gpu-tail-split: PASSED" || echo "gpu-tail-split: FAILED"
date -u
exit "$status"
