#!/usr/bin/env bash
# --precision int8 on the Hopper kernel (INT8 Q·Kᵀ, 16-bit P·V) beside bf16 and the peers, in one call on the
# device machine:
#   1. the peer (upstream SpargeAttn, ../shared/peers) builds in the background;
#   2. correctness: selftest-cuda (every bf16 kernel against the CPU tiles and Double), then `verify
#      --precision int8` on 1, 2 and 3 ranks (masks identical, output against one process and against the
#      Double reference on the unquantized inputs), bf16 on 2 ranks;
#   3. error on the same inputs (random, llm, video; 2 heads × 4096 tokens, D 128, every block): ours in int8
#      and bf16 (`verify --dense`), the peer's INT8/FP8 kernel (peer-error.py);
#   4. speed at N = 32768, 8 heads, D 128: the bf16 kernel alone (bench-kernel, writing the masks), the whole
#      pass in bf16 and int8 (dense, TopK 0.1, TopCdf; 64- and 128-key blocks; its kernel time is
#      compute_seconds; also handed bf16 tensors, --dtype bf16, as the peer is), 1M tokens causal (TopK 0.004 and 0.02, and the mask's TopK selection traced, radix
#      select against the heap, SPARGE_CUDA_TOPK=heap); PyTorch SDPA (cuDNN) and FlexAttention on
#      the same masks; the peer end to end and its kernel on our 128-key masks and on all ones.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), gpu_bench_torch.py, peer-error.py, peers/.
# Logs to $OUT/int8.log (inputs to /tmp/sparge-int8-inputs). `bash gpu-int8.sh trace`: only step 2's int8
# checks and the whole pass at 32K traced (SPARGE_CUDA_TRACE=1: where the time goes), bf16 beside int8.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
call=int8
mode="${1:-all}"
source "$here/gpu-call.sh"
inputs=/tmp/sparge-int8-inputs; mkdir -p "$inputs"

[ "$mode" = all ] && { step "selftest-cuda (the bf16 kernels against the CPU tiles and Double)"; run timeout -k 5 180 "$BIN" selftest-cuda; }

step "int8 against one process and the Double reference: 1, 2, 3 ranks"
llm=(--workload llm --seq 6144 --heads 4 --kv-heads 2 --head-dim 128 --causal --threads 2 --json)
run timeout -k 5 120 "$BIN" verify --backend cuda --precision int8 "${llm[@]}"
run timeout -k 5 120 mpirun -np 2 "$BIN" verify --backend cuda --precision int8 "${llm[@]}" --tolerance 2e-3
run timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" verify --backend cuda --precision int8 "${llm[@]}" --tolerance 2e-3
run timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" verify --backend cuda --precision int8 --workload random \
    --seq 3000 --heads 2 --head-dim 128 --dense --block-k 128 --threads 2 --json --tolerance 2e-3
run timeout -k 5 120 mpirun -np 2 "$BIN" verify --backend cuda --precision int8 --workload video --seq 4096 --heads 2 \
    --head-dim 128 --topk 0.2 --threads 2 --json --tolerance 2e-3
run timeout -k 5 120 mpirun -np 2 "$BIN" verify --backend cuda "${llm[@]}" --tolerance 2e-3
if [ "$mode" = trace ]; then
    for sel in "--block-k 128" "--dense --block-k 128"; do
        for precision in bf16 int8; do
            step "traced whole pass, 32K, 8 heads, $precision $sel"
            # shellcheck disable=SC2086
            SPARGE_CUDA_TRACE=1 run timeout -k 5 120 "$BIN" bench --backend cuda --workload llm --seq 32768 --heads 8 \
                --head-dim 128 --repeat 2 --json --precision "$precision" $sel
        done
    done
    exit $status
fi

step "error on the same inputs: ours in int8 and bf16, then the peer's"
for w in random llm video; do
    run timeout -k 5 120 "$BIN" bench-kernel --backend cpu --workload "$w" --seq 4096 --heads 2 --head-dim 128 --dense \
        --repeat 1 --inputs-out "$inputs/in-$w" --force
    files=(--q "$inputs/in-${w}_q.npy" --k "$inputs/in-${w}_k.npy" --v "$inputs/in-${w}_v.npy")
    for precision in int8 bf16; do
        echo "inputs $w, precision $precision"
        # (bf16's output is within 2e-3 of the Double reference: bf16-rounded P.)
        run timeout -k 5 120 "$BIN" verify --backend cuda --precision "$precision" "${files[@]}" --dense --threads 8 --json \
            --tolerance 2e-3
    done
done

common=(--seq 32768 --heads 8 --head-dim 128 --repeat 20 --json --force)
step "the bf16 kernel alone, writing the masks"
run timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --dense
run timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --dense --block-k 128
run timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --causal --dense
run timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.1 --mask-out "$OUT/mask-top10.npy"
run timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.1 --block-k 128 --mask-out "$OUT/mask-top10-k128.npy"
run timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm --block-k 128 --mask-out "$OUT/mask-cdf-k128.npy"

step "the whole pass at 32K, 8 heads: bf16 and int8"
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 10 --json --verify-sample 4)
for sel in "--dense --block-k 128" "--dense" "--topk 0.1 --block-k 128" "--topk 0.1" "--block-k 128" "--causal --dense"; do
    for precision in bf16 int8; do
        echo "whole pass: $precision $sel"
        # shellcheck disable=SC2086
        run timeout -k 5 120 "$BIN" "${b[@]}" --precision "$precision" $sel
    done
done
step "the whole pass at 32K, 8 heads, handed bf16 tensors (--dtype bf16, as the peer is)"
for sel in "--dense --block-k 128" "--topk 0.1 --block-k 128" "--block-k 128"; do
    for precision in bf16 int8; do
        echo "whole pass, bf16 inputs: $precision $sel"
        # shellcheck disable=SC2086
        run timeout -k 5 120 "$BIN" "${b[@]}" --dtype bf16 --precision "$precision" $sel
    done
done
step "1M tokens, 4 heads, causal, one GPU: bf16 and int8 (TopK's radix select), bf16 with the heap it replaced"
m=(bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --json)
for sel in "--topk 0.004" "--topk 0.02"; do
    for precision in bf16 int8; do
        echo "1M: $precision $sel"
        # shellcheck disable=SC2086
        run timeout -k 5 200 "$BIN" "${m[@]}" --repeat 3 --precision "$precision" $sel
    done
    echo "1M: bf16 $sel, SPARGE_CUDA_TOPK=heap"
    # shellcheck disable=SC2086
    SPARGE_CUDA_TOPK=heap run timeout -k 5 200 "$BIN" "${m[@]}" --repeat 3 $sel
    # shellcheck disable=SC2086
    SPARGE_CUDA_TRACE=1 run timeout -k 5 120 "$BIN" "${m[@]}" --repeat 1 $sel 2>&1 | grep -E "trace: mask"
done

step "PyTorch (cuDNN SDPA, FlexAttention) on the same shapes and masks"
run timeout -k 5 200 python3 "$here/gpu_bench_torch.py" --seq 32768 --heads 8 --head-dim 128 \
    --mask "$OUT/mask-top10.npy:128:64" --mask "$OUT/mask-top10-k128.npy:128:128" --mask "$OUT/mask-cdf-k128.npy:128:128"

if [ -n "${peer_build:-}" ]; then
    step "peer: waiting for its build"
    [ "$peer_build" = none ] || wait "$peer_build"; tail -n 3 "$OUT/peer-build.log"
    step "peer: its error on the same inputs"
    run timeout -k 5 120 python3 "$here/peer-error.py" --dir "$peer_dir" "$inputs/in-random" "$inputs/in-llm" "$inputs/in-video"
    step "peer: 32K, 8 heads, end to end, and its kernel on our masks and all ones"
    run timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk 1,0.1 \
        --mask "$OUT/mask-top10-k128.npy:128:128" --mask "$OUT/mask-cdf-k128.npy:128:128"
fi
date -u
[ $status -eq 0 ] && echo "gpu-int8: PASSED" || echo "gpu-int8: FAILED"
exit $status
