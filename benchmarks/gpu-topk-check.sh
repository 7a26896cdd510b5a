#!/usr/bin/env bash
# TopK's radix select on the GPU, in one call on the device machine (needs sparge.gz beside it: a static
# release build, see launch/gpu-check.sh): `sparge selftest-cuda` (masks bit for bit the CPU's, two TopK
# cases with rows of 4096 and 6144 key blocks among them), then the 1M causal pass (4 heads, D 128, llm) at
# TopK 0.004 and 0.02 with the radix select and, in the same call on the same rows, with the heap kernel it
# replaces (SPARGE_CUDA_TOPK=heap): whole passes (median of 5, with their mask_seconds), one traced pass each
# (the mask's phases: scores, selection, rules, compaction), and the mask kernels' device times under Nsight
# Compute where it is installed (clocks left alone). Logs to $OUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$PWD/gpu-topk-check-out}"; mkdir -p "$OUT"
exec > >(tee -a "$OUT/topk-check.log") 2>&1
date -u; nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
bin=/tmp/sparge-topk; gunzip -c "$here/sparge.gz" > "$bin" && chmod +x "$bin"
timeout -k 5 300 "$bin" selftest-cuda > "$OUT/selftest.log" 2>&1; echo "selftest-cuda rc=$?"
grep -E "^case|topk|FAIL" "$OUT/selftest.log"; tail -n 3 "$OUT/selftest.log"

b=(bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal)
for topk in 0.004 0.02; do
    for selection in radix heap; do
        echo; echo "=== 1M causal, TopK $topk, $selection ($(date -u +%H:%M:%S))"
        SPARGE_CUDA_TOPK=$selection timeout -k 5 200 "$bin" "${b[@]}" --topk "$topk" --repeat 5 --json | tail -n 1
        SPARGE_CUDA_TOPK=$selection SPARGE_CUDA_TRACE=1 timeout -k 5 120 "$bin" "${b[@]}" --topk "$topk" --repeat 1 2>&1 \
            | grep -E "trace: mask" | tail -n 8
    done
done

export PATH="$PATH:/usr/local/cuda/bin:/opt/nvidia/nsight-compute/2025.3.1"
if command -v ncu > /dev/null; then
    for selection in radix heap; do
        echo; echo "=== Nsight Compute, 1M causal, TopK 0.02, $selection"
        SPARGE_CUDA_TOPK=$selection timeout -k 5 240 ncu --clock-control none \
            --metrics gpu__time_duration.sum,launch__registers_per_thread,dram__bytes.sum \
            -k regex:"sparge_scores|softmax_rows|topk_rows|select_rows|mask_rules" --launch-count 5 \
            "$bin" "${b[@]}" --topk 0.02 --repeat 1 2>&1 | grep -E "^  sparge|duration|registers|dram__bytes"
    done
fi
date -u
