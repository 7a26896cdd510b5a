#!/usr/bin/env bash
# AMX bf16 against PyTorch SDPA bf16 over a longer alternating run on the device machine's Xeon, to say which
# ratio is typical of a machine whose speed moves by 2× within a lease (BENCHMARKS.md, 2026-11-30):
#   bash benchmarks/cpu-amx-long.sh CARRY PYTHON [ROUNDS] [OUT]   (default 8 rounds; OUT default $OUT or ./cpu-amx-long)
# CARRY is built as for cpu-amx-device.sh (sparge.gz, peers/, a static amx-check); cpu-call.sh lies beside this
# script.
# 1. Correctness of the build: amx-check (the AMX and AVX512-BF16 kernels against their scalar twin, 100
#    trials) and `verify --precision bf16` on AMX and AVX512-BF16 (llm causal; AMX also on 2 ranks).
# 2. Dense N = 32768, 8 heads, D = 128, 16 threads: AMX bf16 (and the pairs of AMX_RUNS instead, e.g.
#    "amx:bf16 avx512bf16:bf16") then PyTorch SDPA fp32 and bf16, ROUNDS rounds (benchmarks/cpu-vs-torch.sh),
#    each round's numbers printed, so that every ratio is of one moment.
# 3. Each round's state beside it: before every round, one thread's visit with the AMX kernels and with
#    kernels that compute nothing (SPARGE_BF16_TILES=bookkeeping), N = 8192 (µs a visit).
# 4. Sparse (TopK 0.1) against its own dense mode, AMX bf16, 3 repeats each, twice, with the sparse pass's
#    phases (summaries, mask, and within the ring its setup, attend and finish).
# 5. The error beside the speed: dense N = 32768, AMX bf16, relative L1 against Double on 4 sampled blocks.
# With CARRY/sparge-base.gz (a baseline build) beside it, every round of 2–3 also times the baseline right
# after ours (its visit and its dense run, "base …"), and 4–5 run both: a change against its baseline in the
# same rounds of a machine whose speed moves within a lease. Odd rounds run ours first, even rounds the baseline.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" python="$2" rounds="${3:-8}" out="${4:-${OUT:-cpu-amx-long}}" log=log.txt
source "$here/cpu-call.sh"
binaries=("$sparge")
[ -n "${SPARGE_BASE:-}" ] && binaries+=("$SPARGE_BASE")

step "1. correctness"
timeout -k 5 150 "$carry/amx-check" 100 || fail "amx-check"
for isa in amx avx512bf16; do
    SPARGE_CPU_ISA=$isa verified "verify $isa bf16 llm causal" 90 "$sparge" verify --workload llm --causal --seq 3000 \
        --heads 4 --kv-heads 2 --head-dim 128 --precision bf16 --threads 16 --json
done
verified_amx_two_ranks

visit() {  # µs a visit on one thread: $1 empty (the AMX kernels) or bookkeeping; $2 the binary (default ours)
    local ms
    ms="$(SPARGE_BF16_TILES=$1 SPARGE_CPU_ISA=amx timeout -k 5 60 "${2:-$sparge}" bench-kernel --backend cpu --workload random \
        --seq 8192 --heads 8 --head-dim 128 --dense --precision bf16 --threads 1 --repeat 1 --json | tail -n 1 | field kernel_ms)"
    python3 -c "import sys
try: print('%.2f' % (float(sys.argv[1]) * 1e3 / 131072))
except ValueError: print('?')" "$ms"
}
step "2–3. dense N = 32768, 8 heads, 16 threads, $rounds rounds against PyTorch, each with the state before it"
for ((r = 1; r <= rounds; r++)); do
    echo "round $r ($(date -u +%T)): one thread's visit $(visit "") µs with the AMX kernels, $(visit bookkeeping) µs bookkeeping alone$([ -n "${SPARGE_BASE:-}" ] && echo "; base $(visit "" "$SPARGE_BASE") µs")"
    TORCH_SDPA="$carry/peers/torch_cpu_sdpa.py" RUNS="${AMX_RUNS:-amx:bf16}" SPARGE_BASE_FIRST=$(( (r + 1) % 2 )) \
        timeout -k 5 200 bash "$here/cpu-vs-torch.sh" "$sparge" "$python" 1 32768 8 16 | tail -n +3 || fail "round $r"
done

step "4. sparse TopK 0.1 against its own dense mode, AMX bf16"
for i in 1 2; do for bin in "${binaries[@]}"; do
    line="$(SPARGE_CPU_ISA=amx timeout -k 5 120 "$bin" bench --workload random --seq 32768 --heads 8 --head-dim 128 --theta -1 --topk 0.1 --precision bf16 --threads 16 --compare-dense --repeat 3 --json | tail -n 1)"
    echo "$(basename "$bin") sparse amx bf16: density $(echo "$line" | field density), $(echo "$line" | field speedup_over_dense)x over its dense mode ($(echo "$line" | field seconds) s against $(echo "$line" | field dense_seconds) s; summaries $(echo "$line" | field summary_seconds) s, mask $(echo "$line" | field mask_seconds) s, ring $(echo "$line" | field ring_seconds) s: setup $(echo "$line" | field setup_seconds) s, attend $(echo "$line" | field compute_seconds) s, finish $(echo "$line" | field finish_seconds) s)"
done; done

step "5. error beside the speed (dense 32K, AMX bf16, 4 sampled blocks against Double on the unrounded inputs)"
for bin in "${binaries[@]}"; do
    line="$(SPARGE_CPU_ISA=amx timeout -k 5 120 "$bin" bench --workload random --seq 32768 --heads 8 --head-dim 128 --dense --precision bf16 --threads 16 --verify-sample 4 --repeat 1 --json | tail -n 1)"
    echo "$(basename "$bin") dense 32K amx bf16: rel L1 $(echo "$line" | field rel_l1), $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
    [ -n "$line" ] || fail "the error run"
done
date -u
echo "cpu-amx-long: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
