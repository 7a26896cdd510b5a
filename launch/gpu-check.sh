#!/usr/bin/env bash
# The CUDA backend on a GPU machine, in one call: builds nothing there (it has no Swift), runs the GPU tests
# and the benchmark against PyTorch, and writes one log.
#
#   bash launch/gpu-check.sh [probe|test|bench|all]      (default all)
#
# Needs a release `sparge` built elsewhere with the Swift runtime linked in:
#   swift build -c release --product sparge -Xswiftc -static-stdlib -Xswiftc -target-cpu -Xswiftc skylake-avx512
# found as $SPARGE_BIN, else beside this script (or gzipped beside it, as sparge.gz, to travel small), else
# .build/release/sparge; and python3 with PyTorch for the
# comparison (launch/gpu_bench_torch.py, or beside this script). Logs go to $OUT (default ./gpu-check-out):
# gpu-check.log (everything), and the masks the benchmark exported. SPARGE_SKIP_TORCH=1 skips PyTorch.
#
# What it checks:
#   test   sparge selftest-cuda: GPU mask prediction vs the CPU's (summaries and mask bits identical, on
#          Float inputs from the workloads, with both sides' times); GPU attention kernels vs the CPU tiles and a Double reference (rel L1 ≤ 2e-3 on
#          bf16-rounded inputs, LSE, visited/skipped counters, calls split as a ring splits them);
#          mpirun -np 2 on one GPU vs one process (sparge verify --backend cuda: masks identical, outputs
#          within 2e-3, ring traffic as the mask predicts); the whole forward pass with the mask on the GPU
#          and, for comparison, on the CPU (SPARGE_CUDA_MASK=cpu), at 32K and 1M tokens.
#   bench  sparge bench-kernel (kernel alone, device events) on N=32768, 8 heads, D=128, bf16: dense and
#          masks from the llm workload; then PyTorch SDPA (flash, cuDNN) and FlexAttention on the same masks.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:-all}"
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1

BIN="${SPARGE_BIN:-}"
if [ -z "$BIN" ] && [ ! -x "$here/sparge" ] && [ -f "$here/sparge.gz" ]; then
    mkdir -p /tmp/sparge-bin && gunzip -c "$here/sparge.gz" > /tmp/sparge-bin/sparge && chmod +x /tmp/sparge-bin/sparge
    BIN=/tmp/sparge-bin/sparge
fi
for candidate in "$here/sparge" "$here/../.build/release/sparge"; do
    [ -z "$BIN" ] && [ -x "$candidate" ] && BIN="$candidate"
done
[ -n "$BIN" ] || { echo "gpu-check: no sparge binary (set SPARGE_BIN)"; exit 2; }
TORCH_BENCH="$here/gpu_bench_torch.py"
[ -f "$TORCH_BENCH" ] || TORCH_BENCH="$here/../launch/gpu_bench_torch.py"

if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_btl_vader_single_copy_mechanism=none PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
run() { echo "+ $*"; "$@" || { echo "gpu-check: FAILED (status $?): $*"; status=1; }; }

step "probe"
date -u
echo "binary: $BIN"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv 2>&1 || echo "nvidia-smi failed"
libraries="$(ldconfig -p 2>/dev/null)"  # (grep -q on the pipe would end ldconfig early: pipefail)
grep -E "libcuda\.so|libnvrtc" <<<"$libraries" || echo "ldconfig knows no libcuda/libnvrtc"
if ! grep -q 'libnvrtc\.so' <<<"$libraries"; then
    found="$(find /usr/local /usr/lib /opt -name 'libnvrtc.so*' -not -name '*builtins*' 2>/dev/null | sort | head -n 1)"
    if [ -n "$found" ]; then
        export SPARGE_NVRTC="$found"
        echo "NVRTC not on the loader path; using SPARGE_NVRTC=$SPARGE_NVRTC"
    fi
fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' 2>&1
mpirun --version 2>&1 | head -n 1
[ "$mode" = probe ] && exit $status

if [ "$mode" = test ] || [ "$mode" = all ]; then
    step "GPU kernels vs CPU tiles and Double reference"
    run "$BIN" selftest-cuda
    step "2 ranks on one GPU vs one process"
    run mpirun -np 2 "$BIN" verify --backend cuda --workload llm --seq 8192 --heads 4 --kv-heads 2 --head-dim 128 \
        --causal --tolerance 2e-3 --threads 4
    run mpirun -np 2 "$BIN" verify --backend cuda --workload video --seq 8192 --heads 2 --head-dim 64 \
        --topk 0.2 --tolerance 2e-3 --threads 4
    run mpirun -np 3 --oversubscribe "$BIN" verify --backend cuda --workload llm --seq 6144 --heads 4 --kv-heads 1 \
        --head-dim 128 --causal --tolerance 2e-3 --threads 4
    step "whole forward pass, cuda backend (mask on the GPU), 1 and 2 ranks; then the mask on the CPU"
    run "$BIN" bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 3 --verify-sample 4
    run mpirun -np 2 "$BIN" bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 3 --threads 8
    SPARGE_CUDA_MASK=cpu run "$BIN" bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 3
    step "a million tokens, one GPU: mask on the GPU, then on the CPU; then 2 ranks sharing it"
    run "$BIN" bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --repeat 2
    SPARGE_CUDA_MASK=cpu run "$BIN" bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --repeat 2
    run mpirun -np 2 "$BIN" bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --repeat 2 --threads 8
    step "the same forward pass on the 16 CPU cores, for comparison"
    run "$BIN" bench --backend cpu --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 3
fi

if [ "$mode" = bench ] || [ "$mode" = all ]; then
    step "kernel alone: N 32768, 8 heads, D 128, bf16, non-causal"
    common=(--seq 32768 --heads 8 --head-dim 128 --repeat 20 --json --force)
    run "$BIN" bench-kernel "${common[@]}" --dense
    SPARGE_CUDA_MTILES=2 run "$BIN" bench-kernel "${common[@]}" --dense --tile-q 128
    run "$BIN" bench-kernel "${common[@]}" --workload llm --mask-out "$OUT/mask-llm-cdf.npy"
    run "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.3 --mask-out "$OUT/mask-llm-top30.npy"
    run "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.1 --mask-out "$OUT/mask-llm-top10.npy"
    run "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.1 --block-k 128 --mask-out "$OUT/mask-llm-top10-k128.npy"
    step "kernel alone, causal"
    run "$BIN" bench-kernel "${common[@]}" --causal --dense
    run "$BIN" bench-kernel "${common[@]}" --causal --workload llm --mask-out "$OUT/mask-llm-causal-cdf.npy"
    step "PyTorch on the same shapes and masks"
    if [ -n "${SPARGE_SKIP_TORCH:-}" ]; then
        echo "skipped (SPARGE_SKIP_TORCH)"
    else
        run python3 "$TORCH_BENCH" --seq 32768 --heads 8 --head-dim 128 \
            --mask "$OUT/mask-llm-cdf.npy:128:64" --mask "$OUT/mask-llm-top30.npy:128:64" \
            --mask "$OUT/mask-llm-top10.npy:128:64" --mask "$OUT/mask-llm-top10-k128.npy:128:128"
        run python3 "$TORCH_BENCH" --seq 32768 --heads 8 --head-dim 128 --causal \
            --mask "$OUT/mask-llm-causal-cdf.npy:128:64"
    fi
fi

echo
[ $status -eq 0 ] && echo "gpu-check: PASSED ($mode)" || echo "gpu-check: FAILED ($mode)"
exit $status
