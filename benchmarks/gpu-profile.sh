#!/usr/bin/env bash
# Where a resident GPU pass spends its time, in one call on the GPU machine: the synchronizing trace
# (SPARGE_CUDA_TRACE=1: every host phase and, per phase, the device work it waited for) and, where Nsight
# Compute runs, every kernel's device time (ncu, clocks left alone), for N=32768, 8 heads, D=128: llm
# TopCdf and dense. Needs sparge.gz (a static release build) beside it. Logs to $OUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$PWD/gpu-profile-out}"; mkdir -p "$OUT"
exec > >(tee -a "$OUT/profile.log") 2>&1
date -u; nvidia-smi -L
BIN="${SPARGE_BIN:-}"
if [ -z "$BIN" ]; then mkdir -p /tmp/sparge-bin && gunzip -c "$here/sparge.gz" > /tmp/sparge-bin/sparge && chmod +x /tmp/sparge-bin/sparge; BIN=/tmp/sparge-bin/sparge; fi
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128)
for sel in "" "--dense"; do
    echo; echo "=== trace: 32K, 8 heads ${sel:-TopCdf 0.98} ($(date -u +%H:%M:%S))"
    # shellcheck disable=SC2086
    SPARGE_CUDA_TRACE=1 timeout -k 5 120 "$BIN" "${b[@]}" --repeat 3 $sel 2> "$OUT/trace.log"; echo "rc=$?"
    # The last pass only: from its last "enter: tensors on the device" on.
    awk '/enter: tensors on the device/ { n = NR } { line[NR] = $0 } END {
        for (i = n; i <= NR; i++) if (line[i] ~ /cuda trace/) { print line[i]; split(line[i], f, " "); ms = f[length(f) - 1];
            total += ms; if (line[i] ~ /host:/) host += ms }
        printf "last pass: %.3f ms in traced phases, of which host work %.3f ms\n", total, host }' "$OUT/trace.log"
    # shellcheck disable=SC2086
    timeout -k 5 120 "$BIN" "${b[@]}" --repeat 10 --json $sel; echo "rc=$?"
done
export PATH="$PATH:/usr/local/cuda/bin:/opt/nvidia/nsight-compute/2025.3.1"
if command -v ncu > /dev/null; then
    for sel in "" "--dense"; do
        echo; echo "=== ncu: kernel times, 32K ${sel:-TopCdf 0.98}, 2 passes ($(date -u +%H:%M:%S))"
        # shellcheck disable=SC2086
        timeout -k 5 240 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
            "$BIN" "${b[@]}" --repeat 2 $sel > "$OUT/ncu$sel.log" 2>&1; echo "rc=$?"
        grep -E "^  [a-z_]+|gpu__time_duration|invocations|Invocations" "$OUT/ncu$sel.log" | head -120
    done
else
    echo "no ncu"
fi
date -u
