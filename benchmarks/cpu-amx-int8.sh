#!/usr/bin/env bash
# int8's scores on AMX-INT8 tiles, on the device machine's Xeon, in one short call:
#   bash benchmarks/cpu-amx-int8.sh CARRY [ROUNDS] [OUT]   (default 2 rounds; OUT default $OUT)
# CARRY holds sparge.gz (a static release build) and a static amx-check; cpu-call.sh lies beside this script.
# 1. amx-check: the AMX int8 scores against the same CPU's vpdpwssd kernels, bit for bit (with the bf16
#    kernels' checks), and one core's time for a 64 × 64 visit's scores on each.
# 2. `verify --precision int8` on the AMX set (llm causal; 2 ranks) and its output against the avx512bf16 set's
#    (the same integers: `rel_l1_vs_single` of the AMX run is against one process of the same set).
# 3. Dense int8, N = 32768, 8 heads, D = 128, 16 threads: the AMX set (scores on tiles) against the avx512bf16
#    set (scores in vpdpwssd), ROUNDS alternating rounds; the error on 4 sampled blocks.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" rounds="${2:-2}" out="${3:-${OUT:-cpu-amx-int8}}" log=int8-log.txt
source "$here/cpu-call.sh"

step "1. amx-check"
run 200 "$carry/amx-check" 60 | grep -v 'trials: scores' || fail "amx-check"
step "2. verify int8 on AMX"
SPARGE_CPU_ISA=amx verified "verify amx int8 llm causal" 90 "$sparge" verify --workload llm --causal --seq 3000 --heads 4 \
    --kv-heads 2 --head-dim 128 --precision int8 --threads 16 --json
SPARGE_CPU_ISA=amx verified "verify amx int8 2 ranks" 120 mpirun --oversubscribe -np 2 "$sparge" verify --workload llm \
    --causal --seq 3001 --heads 2 --head-dim 128 --precision int8 --json
step "3. dense int8 N = 32768, 8 heads, 16 threads: scores on tiles (amx) against vpdpwssd (avx512bf16)"
for ((r = 1; r <= rounds; r++)); do
    for isa in amx avx512bf16; do
        line="$(SPARGE_CPU_ISA=$isa run 150 "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 --dense \
            --precision int8 --threads 16 --repeat 3 --json 2>/dev/null | tail -n 1)"
        echo "round $r: $isa int8 dense: $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
    done
done
line="$(SPARGE_CPU_ISA=amx run 150 "$sparge" bench --workload llm --seq 32768 --heads 8 --head-dim 128 --dense --precision int8 \
    --threads 16 --verify-sample 4 --repeat 1 --json | tail -n 1)"
echo "dense 32K llm amx int8: rel L1 $(echo "$line" | field rel_l1), $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
date -u
[ "$status" -eq 0 ] && echo "cpu-amx-int8: PASSED" || echo "cpu-amx-int8: FAILED"
exit "$status"
