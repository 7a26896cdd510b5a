#!/usr/bin/env bash
# Facts for the next round of tuning, in one call on the device machine (needs sparge.gz beside it):
#   1. bf16 on AMX tiles and fp32 on AVX-512 at 1, 4 and 16 threads (dense, N = 8192, 8 heads, D = 128): does
#      the AMX rate per core fall with threads (memory, scaling) or is it low on one core already (the kernel)?
#   2. Nsight Compute's warp-state, occupancy and memory sections for the mask's summaries and scores kernels
#      of a 32K llm pass: why they run at a third of their bandwidth ceiling.
# Logs to $OUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$PWD/device-probe-out}"; mkdir -p "$OUT"
exec > >(tee -a "$OUT/probe.log") 2>&1
date -u
bin=/tmp/sparge-probe; gunzip -c "$here/sparge.gz" > "$bin" && chmod +x "$bin"
echo "== 1. CPU rate against threads"
for run in amx:bf16 avx512:fp32; do
    for t in 1 4 16; do
        line="$(SPARGE_CPU_ISA=${run%%:*} timeout 120 "$bin" bench --workload random --seq 8192 --heads 8 --head-dim 128 --dense \
            --precision ${run#*:} --threads $t --repeat $([ $t = 1 ] && echo 1 || echo 3) --json | tail -n 1)"
        echo "$run threads $t: $(echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d["gflops_dense_equiv"], "GFLOP/s; peak", d["peak_gflops"], "; ring", d["ring_seconds"], "s of", d["seconds"])')"
    done
done
echo "profilers: $(command -v perf || echo 'no perf') $(command -v vtune || echo 'no vtune')"
echo "== 2. ncu sections of the mask kernels (32K llm)"
export PATH="$PATH:/usr/local/cuda/bin:/opt/nvidia/nsight-compute/2025.3.1"
if command -v ncu > /dev/null; then
    timeout -k 5 300 ncu --clock-control none --section WarpStateStats --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --section SpeedOfLight -k regex:"summarize_blocks|sparge_scores" --launch-count 3 \
        "$bin" bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 1 > "$OUT/ncu-mask.log" 2>&1
    echo "ncu rc=$?"
    grep -vE "^==PROF==" "$OUT/ncu-mask.log" | grep -E "sparge_|Duration|Throughput|Stall|Warp Cycles|Occupancy|Registers|Block Limit|Issued|Eligible|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth" | head -120
else
    echo "no ncu"
fi
date -u
