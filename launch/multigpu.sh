#!/usr/bin/env bash
# One rank per GPU on a multi-GPU node, in one call: each multi-GPU result against one GPU (masks exactly,
# outputs within the GPU backend's tolerance), then a strong-scaling table over 1, 2, 4 … GPUs.
#
#   bash launch/multigpu.sh [SPARGE_BINARY]
#
# Environment: MULTIGPU_SEQS (default "262144 1048576"), MULTIGPU_RANKS (default: 1, 2, 4, … up to the
# GPUs found), LOG_DIR (where multigpu.jsonl and multigpu.log go; default .). Each rank takes the GPU of its
# node-local rank and (cores / ranks) host threads. NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and the
# like): sparge does not use it, and a program that does can take a shared host's GPUs out of service.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/env.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
binary="${1:-.build/release/sparge}"
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
[ "$gpus" -ge 1 ] || { echo "multigpu: no GPU found (nvidia-smi -L)" >&2; exit 2; }
cores="$(nproc)"
seqs="${MULTIGPU_SEQS:-262144 1048576}"
if [ -z "${MULTIGPU_RANKS:-}" ]; then
    MULTIGPU_RANKS=""
    for p in 1 2 4 8 16; do [ "$p" -le "$gpus" ] && MULTIGPU_RANKS="$MULTIGPU_RANKS $p"; done
fi
log="${LOG_DIR:-.}/multigpu.jsonl"
: > "$log"
exec > >(tee -a "${LOG_DIR:-.}/multigpu.log") 2>&1
echo "multigpu: $gpus GPU(s), $cores cores, ranks:$MULTIGPU_RANKS, N: $seqs ($(date -u))"
nvidia-smi -L
status=0
common=(--backend cuda --workload llm --heads 4 --head-dim 128 --causal --json)
for n in $seqs; do
    for p in $MULTIGPU_RANKS; do
        [ "$p" -gt 1 ] || continue
        echo "=== verify: $p GPUs against one GPU, N=$n"
        mpirun -np "$p" --bind-to none "$binary" verify "${common[@]}" --seq "$n" --no-reference \
            --tolerance 2e-3 --threads "$((cores / p))" | tee -a "$log" || status=1
    done
    for p in $MULTIGPU_RANKS; do
        echo "=== bench: $p GPU(s), N=$n"
        mpirun -np "$p" --bind-to none "$binary" bench "${common[@]}" --seq "$n" --verify-sample 4 \
            --threads "$((cores / p))" | tee -a "$log" || status=1
    done
done
echo "multigpu: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
