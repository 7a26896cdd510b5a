#!/usr/bin/env bash
# Our whole pass against the peer's end-to-end call, alternating, in one call on the device machine:
# N = 32768, 8 heads, D = 128, TopK 0.1 with 128-key blocks (density 0.0977 for both). Per round: ours in
# bf16 handed bf16 tensors (as the peer is), the same with the work list built by the host
# (SPARGE_CUDA_WORK_LIST=host, as before it was built on the device), ours handed f32 tensors, ours in int8
# handed bf16, then the peer
# (`peers/bench_spargeattn.py --topk 0.1`: spas_sage2_attn_meansim_topk_cuda on bf16 tensors, median of
# triton's do_bench). Rounds alternate so that a slow stretch of the machine falls on both; the medians of the
# rounds are printed at the end. Ours is host wall time of a whole pass (`bench`'s median of 10), the peer's
# the device time of a call between events with the host queueing ahead.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), peers/. Logs to $OUT/vspeer.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
call=vspeer
rounds="${1:-5}"
source "$here/gpu-call.sh"
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --topk 0.1 --block-k 128 --repeat 10 --json)
step "peer: waiting for its build"
[ "${peer_build:-none}" = none ] || wait "$peer_build"; tail -n 2 "$OUT/peer-build.log"
declare -A times
for r in $(seq 1 "$rounds"); do
    step "round $r"
    for variant in "bf16 bf16 device" "bf16 bf16 host" "bf16 f32 device" "int8 bf16 device"; do
        set -- $variant
        line=$(SPARGE_CUDA_WORK_LIST=$3 timeout -k 5 120 "$BIN" "${b[@]}" --precision "$1" --dtype "$2")
        s=$(grep -o '"seconds": [^,]*' <<< "$line" | sed 's/.*: //')
        name="ours $1, $2 inputs$([ "$3" = host ] && echo ", host work list")"
        echo "$name: ${s:-FAILED} s"
        if [ -n "$s" ]; then times["$name"]+="$s "; else status=1; fi
    done
    line=$(timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk 0.1 \
        2>/dev/null | grep '"end-to-end topk"')
    s=$(grep -o '"seconds": [^,]*' <<< "$line" | sed 's/.*: //')
    echo "peer, end to end: ${s:-FAILED} s ($line)"
    if [ -n "$s" ]; then times["peer end to end"]+="$s "; else status=1; fi
done
step "medians of $rounds rounds"
for k in "ours bf16, bf16 inputs" "ours bf16, bf16 inputs, host work list" "ours bf16, f32 inputs" "ours int8, bf16 inputs" \
         "peer end to end"; do
    [ -n "${times[$k]:-}" ] || { echo "$k: no run succeeded"; continue; }
    python3 -c "import statistics, sys; v = [float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: median {statistics.median(v) * 1e3:.3f} ms of', ' '.join(f'{x * 1e3:.3f}' for x in v))" "$k" ${times[$k]}
done
date -u
exit $status
