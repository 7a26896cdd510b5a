#!/usr/bin/env bash
# Where one whole GPU pass spends its wall time, in one call on the device machine: N = 32768, 8 heads,
# D = 128, llm inputs, TopK 0.1 with 128-key blocks (the shape compared with the peer end to end), bf16 and
# int8, with the inputs handed over in f32 and in bf16 (`--dtype`; the peer is handed bf16).
#   1. `bench --json` (median of 10) for each precision and input type: the pass's phases as bench reports them;
#   2. with nsys on the machine: a timeline of the last of six passes — every driver call and every kernel
#      and copy on the device, with the idle gaps between them (timeline.py), so that host work on the
#      critical path shows as device idle time;
#   3. otherwise the last pass traced without waits (SPARGE_CUDA_TRACE=host: when each phase ended, the pass
#      as it runs untraced) and with them (SPARGE_CUDA_TRACE=1: each phase's own device time).
# Needs beside it: gpu-call.sh, timeline.py, sparge.gz (a static release build). Logs to $OUT/timeline.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
call=timeline
source "$here/gpu-call.sh"
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --topk 0.1 --block-k 128)
for dt in f32 bf16; do
    for p in bf16 int8; do
        step "whole pass, $p, inputs in $dt: ${b[*]}"
        timeout -k 5 120 "$BIN" "${b[@]}" --precision "$p" --dtype "$dt" --repeat 10 --json; echo "rc=$?"
    done
done
b+=(--dtype bf16)
export PATH="$PATH:/usr/local/cuda/bin"
for d in /opt/nvidia/nsight-systems/*/bin /usr/local/cuda/nsight-systems*/bin; do [ -d "$d" ] && PATH="$PATH:$d"; done
if command -v nsys > /dev/null; then
    for p in bf16 int8; do
        step "timeline of the last of six passes, $p (nsys)"
        timeout -k 5 180 nsys profile -t cuda -o "/tmp/sparge-tl-$p" --force-overwrite true \
            "$BIN" "${b[@]}" --precision "$p" --repeat 6 > /dev/null 2>&1; echo "nsys rc=$?"
        for r in cuda_gpu_trace cuda_api_trace; do
            timeout -k 5 120 nsys stats --report "$r" --format csv --output "/tmp/sparge-tl-$p-$r" \
                "/tmp/sparge-tl-$p.nsys-rep" > /dev/null 2>&1
        done
        python3 "$here/timeline.py" "/tmp/sparge-tl-$p-cuda_gpu_trace_cuda_gpu_trace.csv" \
            "/tmp/sparge-tl-$p-cuda_api_trace_cuda_api_trace.csv" 2>&1 | tee "$OUT/timeline-$p.txt" | tail -80
    done
else
    echo "no nsys: the traces instead"
    for p in bf16 int8; do
        # Without waits (the pass as it runs: when each phase ended), then each phase with its device work.
        for mode in host 1; do
            step "traced pass, $p, SPARGE_CUDA_TRACE=$mode"
            SPARGE_CUDA_TRACE=$mode timeout -k 5 120 "$BIN" "${b[@]}" --precision "$p" --repeat 3 2> "$OUT/trace-$p-$mode.log" > /dev/null
            awk '/enter: tensors on the device/ { n = NR } { line[NR] = $0 } END { for (i = n; i <= NR; i++) print line[i] }' "$OUT/trace-$p-$mode.log"
        done
    done
fi
date -u
