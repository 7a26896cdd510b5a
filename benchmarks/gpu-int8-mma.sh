#!/usr/bin/env bash
# --precision int8 on the mma.sync kernel (INT8 Q·Kᵀ with mma.m16n8k32, P·V in fp16: what GPUs before Hopper
# run), forced on the H200 with SPARGE_CUDA_KERNEL=mma, in one call on the device machine (about 3 minutes):
#   1. selftest-cuda --quick: the 16-bit kernels against the CPU tiles and Double (the mma.sync kernel's source
#      changed around its new int8 path; its 16-bit results must not);
#   2. verify --precision int8 on 1, 2, 3 ranks, each time masks identical, outputs within 2e-3 of one process,
#      within verify's GPU int8 bound (3e-2) of the Double reference on the unquantized inputs, ring bytes as
#      expected: llm, causal, GQA 4/2, D 128, 6144 tokens (the Hopper kernel's int8 measured 1.98e-2 there,
#      BENCHMARKS.md: the same quantized Q and K, so about the same here); random inputs, every block, 3000
#      tokens (a partial tail block) with 64- and 128-key blocks, and 128-row tiles; D 64, llm and random,
#      which only the mma.sync kernel runs in int8 (without SPARGE_CUDA_KERNEL too: the Hopper kernel hands it
#      over; int8-smoothing.py on llm inputs, 4096 tokens dense: 1.58e-2 at D 64 against 1.76e-2 at D 128);
#      the compiled kernel traced (QK_INT8=1, its registers and spill bytes);
#   3. speed at N = 32768, 8 heads, D 128 on the mma.sync kernel: the whole pass in bf16 and int8, dense and
#      TopK 0.1 (64-row tiles and 64-key blocks, then --tile-q 128 --block-k 128), with the error a sample of
#      rows costs against Double (--verify-sample), as JSON lines. Prediction: Q·Kᵀ is half the tile's tensor
#      work and int8 runs it at twice bf16's rate on the same tensor cores (H200: 1979 dense int8 TOPS against
#      989 bf16 TFLOP/s), so with P·V and the softmax unchanged the kernel should gain at most ~1.3x; K's tiles
#      in shared memory halve (a 64-row CTA takes 57 KB against 82 KB), but registers (~225 a thread) keep two
#      4-warp CTAs an SM either way.
# Usage: bash gpu-int8-mma.sh [DIR]   (DIR holds `sparge` or `sparge.gz`, a static release build; default: the
# folder of this script, which needs gpu-call.sh beside it). Logs to $OUT/int8-mma.log ($OUT default
# ./gpu-int8-mma-out).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="$(cd "${1:-$here}" && pwd)"
call=int8-mma
source "$here/gpu-call.sh"
# verify, its JSON line checked: passed, the backend int8, bytes_sent == bytes_expected.
check() {
    echo "+ $*"
    local json; json="$("$@" | grep '^{')"; echo "$json"
    if [ "$(field passed "$json")" != true ] || [[ "$(field backend "$json")" != *"cuda int8"* ]] \
        || [ "$(field bytes_sent "$json")" != "$(field bytes_expected "$json")" ]; then
        echo "FAILED: expected passed, cuda int8, bytes_sent == bytes_expected"; status=1
    fi
}

step "selftest-cuda --quick (the 16-bit kernels against the CPU tiles and Double)"
run timeout -k 5 150 "$BIN" selftest-cuda --quick

export SPARGE_CUDA_KERNEL=mma
step "int8 on the mma.sync kernel against one process and the Double reference: 1, 2, 3 ranks"
llm=(verify --backend cuda --precision int8 --workload llm --seq 6144 --heads 4 --kv-heads 2 --head-dim 128 --causal --threads 2 --json)
SPARGE_CUDA_TRACE=1 check timeout -k 5 120 "$BIN" "${llm[@]}" 2> >(grep -E "trace: kernel sparge_attention|error" >&2)
check timeout -k 5 120 mpirun -np 2 "$BIN" "${llm[@]}" --tolerance 2e-3
check timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" "${llm[@]}" --tolerance 2e-3
random=(verify --backend cuda --precision int8 --workload random --seq 3000 --heads 2 --head-dim 128 --dense --threads 2 --json)
for np in 1 2 3; do
    for shape in "--block-k 64" "--block-k 128" "--tile-q 128 --block-k 128"; do
        # shellcheck disable=SC2086
        check timeout -k 5 120 mpirun -np "$np" --oversubscribe "$BIN" "${random[@]}" $shape --tolerance 2e-3
    done
done
d64=(verify --backend cuda --precision int8 --head-dim 64 --threads 2 --json --tolerance 2e-3)
check timeout -k 5 120 "$BIN" "${d64[@]}" --workload llm --seq 6144 --heads 4 --kv-heads 2 --causal
check timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" "${d64[@]}" --workload llm --seq 6144 --heads 4 --kv-heads 2 --causal
check timeout -k 5 120 mpirun -np 2 "$BIN" "${d64[@]}" --workload random --seq 3000 --heads 2 --dense --block-k 128
echo "D 64 without SPARGE_CUDA_KERNEL (the Hopper kernel takes int8 at D 128 only):"
SPARGE_CUDA_KERNEL= SPARGE_CUDA_TRACE=1 check timeout -k 5 120 "$BIN" "${d64[@]}" --workload llm --seq 6144 --heads 4 --kv-heads 2 \
    --causal 2> >(grep -E "trace: kernel sparge_attention|error" >&2)

step "the whole pass at 32K, 8 heads, on the mma.sync kernel: bf16 and int8"
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 10 --json --verify-sample 4)
for sel in "--dense" "--topk 0.1" "--dense --tile-q 128 --block-k 128" "--topk 0.1 --tile-q 128 --block-k 128"; do
    for precision in bf16 int8; do
        echo "whole pass, mma.sync: $precision $sel"
        # shellcheck disable=SC2086
        run timeout -k 5 120 "$BIN" "${b[@]}" --precision "$precision" $sel
    done
done
date -u
[ $status -eq 0 ] && echo "gpu-int8-mma: PASSED" || echo "gpu-int8-mma: FAILED"
exit $status
