#!/usr/bin/env bash
# A short GPU check of a mask-kernel change, in one call on the GPU machine (needs sparge.gz beside it):
# `sparge selftest-cuda` (the GPU's summaries and masks bit for bit the CPU's, whole resident passes against
# the CPU's pass), the whole pass at 32K (8 heads, llm, traced once) and at 1M causal (4 heads), and the mask
# kernels' device times (Nsight Compute, clocks left alone). Logs to $OUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$PWD/gpu-mask-check-out}"; mkdir -p "$OUT"
exec > >(tee -a "$OUT/mask-check.log") 2>&1
date -u
bin=/tmp/sparge-mask; gunzip -c "$here/sparge.gz" > "$bin" && chmod +x "$bin"
timeout -k 5 240 "$bin" selftest-cuda > "$OUT/selftest.log" 2>&1; echo "selftest-cuda rc=$?"; tail -n 5 "$OUT/selftest.log"
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128)
timeout -k 5 60 "$bin" "${b[@]}" --repeat 10 --json | tail -n 1
SPARGE_CUDA_TRACE=1 timeout -k 5 60 "$bin" "${b[@]}" --repeat 2 2>&1 | grep -E "summaries on|mask: scores|mask: selection" | tail -n 3
timeout -k 5 120 "$bin" bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --repeat 3 --json | tail -n 1
export PATH="$PATH:/usr/local/cuda/bin:/opt/nvidia/nsight-compute/2025.3.1"
if command -v ncu > /dev/null; then
    timeout -k 5 120 ncu --clock-control none --metrics gpu__time_duration.sum,launch__registers_per_thread \
        -k regex:"sparge_scores|summarize_blocks" --launch-count 3 "$bin" "${b[@]}" --repeat 1 2>&1 | grep -E "^  sparge|duration|registers"
fi
date -u
