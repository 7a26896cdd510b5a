#!/usr/bin/env bash
# A short check of a build on the device machine (about a minute and a half), for a change to the resident
# pass's host side or its small kernels when little device time is left: selftest-cuda --quick (masks,
# summaries, compaction bit for bit the CPU's; whole resident passes against the CPU's, the wide-V case
# included), verify on 2 and 3 ranks in bf16 and int8, the 32K TopK pass handed bf16 tensors, and the 1M
# causal TopK pass (32768 mask rows through the compaction's scan).
# Usage: bash gpu-quick-check.sh [DIR]   (DIR holds `sparge` or `sparge.gz`; default: beside this script,
# with gpu-call.sh). Logs to $OUT/quick.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="$(cd "${1:-$here}" && pwd)"
call=quick
source "$here/gpu-call.sh"
step "selftest-cuda --quick"
run timeout -k 5 180 "$BIN" selftest-cuda --quick
llm=(--workload llm --seq 6144 --heads 4 --kv-heads 2 --head-dim 128 --causal --threads 2 --json --tolerance 2e-3)
step "verify on 2 and 3 ranks, bf16 and int8"
for precision in bf16 int8; do
    run timeout -k 5 120 mpirun -np 2 "$BIN" verify --backend cuda --precision "$precision" "${llm[@]}"
    run timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" verify --backend cuda --precision "$precision" \
        --workload random --seq 3000 --heads 2 --head-dim 128 --topk 0.3 --block-k 128 --threads 2 --json --tolerance 2e-3
done
step "32K, 8 heads, TopK 0.1, 128-key blocks, bf16 tensors"
run timeout -k 5 120 "$BIN" bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --topk 0.1 \
    --block-k 128 --dtype bf16 --repeat 10 --json --verify-sample 4
step "1M tokens, 4 heads, causal, TopK 0.004"
run timeout -k 5 200 "$BIN" bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal \
    --topk 0.004 --repeat 2 --json
echo; [ "$status" -eq 0 ] && echo "gpu-quick-check: PASSED" || echo "gpu-quick-check: FAILED"
date -u
exit "$status"
