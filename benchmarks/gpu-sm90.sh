#!/bin/bash
# The Hopper kernel alone (benchmarks/gpu-sm90-harness.cu), one call on the device machine: correctness against
# Double on random inputs (and keys whose mean drifts), then speed at N = 32768, 8 heads, for each built (D, BK),
# Q·Kᵀ in bf16 and (D 128) in int8 with K smoothed by the head's mean or by each block's (K_BLOCK_MEAN), P·V in
# bf16 and (128-key blocks) in fp8. Usage, from a folder holding the harness binaries h<D>_<BK>[_variant]
# (built here: `bash benchmarks/gpu-sm90.sh build DIR [FLAGS SUFFIX]`: FLAGS, such as -DPING_PONG=0, added
# to each build, whose binaries are then named h<D>_<BK>[_variant]SUFFIX; NAMES after SUFFIX: only those):
#   bash gpu-sm90.sh run DIR [NAME ...]        (NAME: only those binaries)
set -u
if [ "${1:-}" = build ]; then
    out=$2; mkdir -p "$out"; flags=${3:-}; suffix=${4:-}; only=" ${*:5} "
    here=$(cd "$(dirname "$0")/.." && pwd)
    # D, BK, stages, int8 Q·Kᵀ, K smoothed by block means, fp8 P·V, name
    for cfg in "128 64 2 0 0 0 h128_64" "128 128 2 0 0 0 h128_128" "64 64 2 0 0 0 h64_64" "64 128 2 0 0 0 h64_128" \
               "128 64 3 1 0 0 h128_64_int8" "128 128 3 1 0 0 h128_128_int8" "128 128 3 1 1 0 h128_128_int8_blockmean" \
               "128 64 3 1 1 0 h128_64_int8_blockmean" "128 128 2 1 0 1 h128_128_int8_fp8"; do
        set -- $cfg
        [ "$only" != "  " ] && [[ "$only" != *" $7 "* ]] && continue
        nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -DHEAD_DIM=$1 -DBLOCK_K=$2 -DKV_STAGES=$3 -DQK_BF16=1 \
            -DQK_INT8=$4 -DK_BLOCK_MEAN=$5 -DPV_FP8=$6 -DPV_BF16=1 $flags -I"$here/Sources/SpargeCUDA/Kernels" -diag-suppress 177 -ldl \
            -o "$out/$7$suffix" "$here/benchmarks/gpu-sm90-harness.cu" || exit 1
    done
    exit 0
fi
dir=$2
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
status=0
names=(h128_64 h128_128 h64_64 h64_128 h128_64_int8 h128_128_int8 h128_128_int8_blockmean h128_64_int8_blockmean
       h128_128_int8_fp8)
[ $# -gt 2 ] && names=("${@:3}")
for name in "${names[@]}"; do
    h="$dir/$name"
    echo "== $(basename "$h")"
    timeout -k 5 120 "$h" || { status=1; echo "FAILED: $h"; timeout -k 5 120 compute-sanitizer --tool memcheck "$h" check 2>&1 | head -30; }
done
exit $status
