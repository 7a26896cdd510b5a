#!/usr/bin/env bash
# The CPU kernel sets on the device machine's CPU (16-core Xeon with AVX-512 and AMX), in one call:
#   bash benchmarks/cpu-device.sh SPARGE PYTHON [OUT]        (OUT: a folder for the log, default ./cpu-device)
# SPARGE is one portable, static binary built elsewhere (no Swift there), e.g. on the development machine:
#   swift build -c release --product sparge --build-path /tmp/portable -Xswiftc -static-stdlib \
#       -Xswiftc -target-cpu -Xswiftc x86-64
# PYTHON has PyTorch (the peer, ../shared/peers/torch_cpu_sdpa.py; TORCH_SDPA=path overrides it).
#
# 1. Correctness where it could not be run before: every kernel set against the Double reference
#    (`verify`, relative L1 to the masked reference ≤ 1e-5, masks and outputs of 1 vs 2 ranks equal), and
#    int8's integer kernels (`verify --precision int8`: ≤ 1e-2 of the reference, 2 ranks within 2e-4).
# 2. Speed: dense fp32, N = 32768, 8 heads, D = 128, 16 threads, AVX-512 and AVX2 kernels against PyTorch
#    SDPA fp32 and bf16 (AMX), alternating, 3 rounds (benchmarks/cpu-vs-torch.sh), in fp32 and int8; then the peak of each
#    set and a sparse run (time must follow density).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sparge="$1" python="$2" out="${3:-cpu-device}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
source "$here/../launch/env.sh" 2>/dev/null || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400
status=0
for isa in avx512 avx2 portable; do
    for w in "llm --causal" "video" "random --dense"; do
        # shellcheck disable=SC2086
        line="$(SPARGE_CPU_ISA=$isa "$sparge" verify --workload $w --seq 3000 --heads 4 --kv-heads 2 --head-dim 128 --json | tail -n 1)"
        echo "verify $isa $w: $line"
        echo "$line" | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); sys.exit(0 if j["passed"] and j["rel_l1_vs_masked_reference"] <= 1e-5 else 1)' \
            || { echo "FAILED: $isa $w"; status=1; }
    done
    line="$(SPARGE_CPU_ISA=$isa mpirun --oversubscribe -np 2 "$sparge" verify --workload llm --causal --seq 3001 --heads 2 --head-dim 128 --json | tail -n 1)"
    echo "verify 2 ranks $isa: $line"
    echo "$line" | grep -q '"passed": true' || { echo "FAILED: 2 ranks $isa"; status=1; }
    line="$(SPARGE_CPU_ISA=$isa mpirun --oversubscribe -np 2 "$sparge" verify --workload llm --causal --seq 3001 --heads 2 --head-dim 128 --precision int8 --json | tail -n 1)"
    echo "verify int8 2 ranks $isa: $line"
    echo "$line" | grep -q '"passed": true' || { echo "FAILED: int8 $isa"; status=1; }
done
ISAS="avx512 avx2" PRECISIONS="fp32 int8" bash "$here/cpu-vs-torch.sh" "$sparge" "$python" 3 32768 8 16
for isa in avx512 avx2; do
    for d in "--dense" "--theta -1 --topk 0.1"; do
        # shellcheck disable=SC2086
        echo "sparse $isa $d: $(SPARGE_CPU_ISA=$isa "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 $d --threads 16 --repeat 3 --json | tail -n 1)"
    done
done
echo "cpu-device: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
