#!/usr/bin/env bash
# int8's ring carrying K as the kernel reads it (int8 rows and the block's scale in a 16-byte slot, V in
# --kv-precision), in one call on the device machine (a few minutes):
#   1. `verify --precision int8` on 1, 2, 3 ranks (llm 6144 tokens, 4 heads / 2 kv heads, D 128, causal, as
#      gpu-int8.sh): masks identical, bytes_sent == bytes_expected, and the bytes and rel_l1_vs_single that
#      the layout and the results before it say (below); the same with --kv-precision f32, and random inputs
#      with 128-key blocks and a partial tail block (3000 tokens) on 3 ranks;
#   2. with SPARGE_BIN_BEFORE (a build of main before this change, e.g. sparge-before.gz unpacked beside it),
#      `run` writes the output of both binaries on 2 and 3 ranks, which must be equal byte for byte, and
#      `bench` times the whole pass at 32K on 2 ranks with both (bytes_sent, ring_seconds, compute_seconds).
# Expected (64-key blocks, every one whole): a block is 64·128 + 16 + 64·128·2 = 24592 bytes with bf16 V
# against 32768 before, 64·128 + 16 + 64·128·4 = 40976 with f32 V against 65536. Before (2026-11-30, bf16):
# 2 ranks 688128 bytes (21 blocks), dense ring 6291456 (192), rel_l1_vs_single 3.51213e-05; 3 ranks 1736704
# (53 blocks), dense ring 12582912 (384), rel_l1_vs_single 3.54609e-05. So now: 2 ranks 516432, dense ring
# 4721664; 3 ranks 1303376, dense ring 9443328; f32: 860496 and 2171728; rel_l1_vs_single unchanged.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build of this branch). Logs to $OUT/ring-int8.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
call=ring-int8
source "$here/gpu-call.sh"
# verify with its JSON checked against the expected bytes, dense-ring bytes and rel_l1_vs_single ('-': any).
check() {
    local bytes=$1 dense=$2 single=$3; shift 3
    echo "+ $*"
    local json; json="$("$@" | grep '^{')"; echo "$json"
    local sent; sent="$(field bytes_sent "$json")"
    if [ "$(field passed "$json")" != true ] || [ "$sent" != "$(field bytes_expected "$json")" ] || [ "$sent" != "$bytes" ] \
        || [ "$(field bytes_dense_ring "$json")" != "$dense" ] || { [ "$single" != - ] && [ "$(field rel_l1_vs_single "$json")" != "$single" ]; }; then
        echo "FAILED: expected bytes_sent $bytes (= bytes_expected), bytes_dense_ring $dense, rel_l1_vs_single $single"; status=1
    fi
}

step "verify int8: 1, 2, 3 ranks, bytes and results against the layout and the results before"
llm=(verify --backend cuda --precision int8 --workload llm --seq 6144 --heads 4 --kv-heads 2 --head-dim 128 --causal --threads 2 --json)
check 0 0 0 timeout -k 5 120 "$BIN" "${llm[@]}"
check 516432 4721664 3.51213e-05 timeout -k 5 120 mpirun -np 2 "$BIN" "${llm[@]}" --tolerance 2e-3
check 1303376 9443328 3.54609e-05 timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" "${llm[@]}" --tolerance 2e-3
check 860496 7867392 - timeout -k 5 120 mpirun -np 2 "$BIN" "${llm[@]}" --tolerance 2e-3 --kv-precision f32
check 2171728 15734784 - timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" "${llm[@]}" --tolerance 2e-3 --kv-precision f32
# (Random inputs, every block, 128-key blocks, 3000 = 23·128 + 56 tokens: the partial block travels too;
# bytes_sent against bytes_expected only.)
run timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" verify --backend cuda --precision int8 --workload random \
    --seq 3000 --heads 2 --head-dim 128 --dense --block-k 128 --threads 2 --json --tolerance 2e-3

if [ -n "${SPARGE_BIN_BEFORE:-}" ]; then
    step "outputs byte for byte against $SPARGE_BIN_BEFORE"
    inputs=/tmp/sparge-ring-int8-inputs; mkdir -p "$inputs"
    run timeout -k 5 120 "$BIN" bench-kernel --backend cpu --workload llm --seq 6144 --heads 4 --kv-heads 2 --head-dim 128 \
        --dense --repeat 1 --inputs-out "$inputs/llm" --force
    files=(--q "$inputs/llm_q.npy" --k "$inputs/llm_k.npy" --v "$inputs/llm_v.npy")
    for np in 2 3; do
        for bin in "$BIN" "$SPARGE_BIN_BEFORE"; do
            tag="$([ "$bin" = "$BIN" ] && echo after || echo before)"
            run timeout -k 5 120 mpirun -np "$np" --oversubscribe "$bin" run --backend cuda --precision int8 "${files[@]}" \
                --causal --json --force --output "$inputs/out-$np-$tag.npy"
        done
        if cmp "$inputs/out-$np-after.npy" "$inputs/out-$np-before.npy"; then echo "$np ranks: outputs identical"
        else echo "FAILED: $np ranks: the outputs differ"; status=1; fi
    done
    # Prediction: K is half of a bf16 block, so the ring's bytes fall by a quarter (0.7505×), and a receiver
    # runs one copy instead of three quantizing kernels a payload; at 32K on one GPU shared by two ranks the
    # pass is bound by the kernels' time slices, not the ring, so ring_seconds should move by little.
    step "the whole pass at 32K, 8 heads, 2 ranks: before and after"
    for bin in "$SPARGE_BIN_BEFORE" "$BIN"; do
        run timeout -k 5 200 mpirun -np 2 "$bin" bench --backend cuda --precision int8 --workload llm --seq 32768 --heads 8 \
            --head-dim 128 --causal --repeat 5 --json
    done
fi
date -u
[ $status -eq 0 ] && echo "gpu-ring-int8: PASSED" || echo "gpu-ring-int8: FAILED"
exit $status
