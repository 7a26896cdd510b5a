#!/usr/bin/env bash
# How many keys should one visit of the AMX tiles take? One call on the device machine's Xeon:
#   bash benchmarks/cpu-amx-visit-keys.sh CARRY PYTHON [ROUNDS] [OUT]   (default 5 rounds; OUT default $OUT)
# CARRY holds sparge.gz (a static release build), a static amx-check and peers/ (torch_cpu_sdpa.py); cpu-call.sh
# lies beside this script.
# 1. Correctness: amx-check (the AMX kernels against their twin on visits of one to three blocks) and
#    `verify --precision bf16` on AMX (llm causal, random dense with a partial last block, 2 ranks).
# 2. One core's visit rates (amx-check): one, two and four 64-key blocks a call.
# 3. Dense N = 32768, 8 heads, D = 128, 16 threads, AMX bf16, visits of 64, 128 and 256 keys
#    (SPARGE_BF16_VISIT_KEYS; the mask's blocks stay 128 × 64), then PyTorch SDPA, ROUNDS alternating rounds.
# 4. Sparse TopK 0.1 against its own dense mode, visits of 64 and 256 keys, twice each, with the phases; and
#    the same with 128-key mask blocks (64 keys a block) for comparison.
# 5. The error beside the speed: dense 32K, 256-key visits, relative L1 against Double on 4 sampled blocks.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" python="$2" rounds="${3:-5}" out="${4:-${OUT:-cpu-amx-visit-keys}}" log=visit-keys-log.txt
source "$here/cpu-call.sh"
bench() { SPARGE_CPU_ISA=amx timeout -k 5 150 "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 --precision bf16 --threads 16 --json "$@" 2>/dev/null | tail -n 1; }

step "1–2. correctness and one core's rates"
timeout -k 5 200 "$carry/amx-check" 40 || fail "amx-check"
for args in "--workload llm --causal --seq 3000 --heads 4 --kv-heads 2" "--workload random --dense --seq 3001 --heads 2"; do
    # shellcheck disable=SC2086
    SPARGE_CPU_ISA=amx verified "verify amx bf16 $args" 90 "$sparge" verify $args --head-dim 128 --precision bf16 --threads 16 --json
done
verified_amx_two_ranks

step "3. dense N = 32768, 8 heads, 16 threads: AMX bf16 by keys a visit, then PyTorch, $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
    for keys in 64 128 256; do
        echo "round $r: amx bf16 dense, $keys keys a visit: $(SPARGE_BF16_VISIT_KEYS=$keys bench --dense --repeat 3 | field gflops_dense_equiv) GFLOP/s"
    done
    timeout -k 5 200 "$python" "$carry/peers/torch_cpu_sdpa.py" --seq 32768 --heads 8 --threads 16 | while read -r line; do
        echo "round $r: torch $(echo "$line" | field dtype): $(echo "$line" | field gflops) GFLOP/s"
    done
done

step "4. sparse TopK 0.1 against its own dense mode, AMX bf16"
for i in 1 2; do for case in "64 64" "256 64" "256 128"; do
    set -- $case
    line="$(SPARGE_BF16_VISIT_KEYS=$1 bench --theta -1 --topk 0.1 --block-k "$2" --compare-dense --repeat 3)"
    echo "$1 keys a visit, $2-key blocks: density $(echo "$line" | field density), $(echo "$line" | field speedup_over_dense)x over its dense mode ($(echo "$line" | field seconds) s against $(echo "$line" | field dense_seconds) s; summaries $(echo "$line" | field summary_seconds) s, mask $(echo "$line" | field mask_seconds) s, ring $(echo "$line" | field ring_seconds) s: setup $(echo "$line" | field setup_seconds) s, attend $(echo "$line" | field compute_seconds) s, finish $(echo "$line" | field finish_seconds) s)"
done; done

step "5. error beside the speed (dense 32K, 256 keys a visit)"
line="$(bench --dense --verify-sample 4 --repeat 1)"
echo "dense 32K amx bf16, 256 keys a visit: rel L1 $(echo "$line" | field rel_l1), $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
date -u
[ "$status" -eq 0 ] && echo "cpu-amx-visit-keys: PASSED" || echo "cpu-amx-visit-keys: FAILED"
exit "$status"
