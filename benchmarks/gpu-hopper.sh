#!/usr/bin/env bash
# The Hopper kernel (wgmma/TMA, sparge_attention_sm90.cu) on the device machine, in one call:
#   1. builds the peer (upstream SpargeAttn, ../shared/peers) in the background;
#   2. launch/gpu-check.sh all: selftest-cuda (masks bit for bit; every kernel — mma.sync at 16 and 32 rows a
#      warp, wgmma/TMA — against the CPU tiles and Double; whole resident passes), 2 ranks on one GPU, then
#      bench-kernel (now the wgmma kernel) beside PyTorch SDPA flash/cuDNN and FlexAttention on the same masks;
#   3. the mma.sync kernel on the same shapes (SPARGE_CUDA_KERNEL=mma), for the before/after;
#   4. bench-kernel with 128-key blocks (dense and the llm mask, written for the peer);
#   5. the whole pass at N=32768, 8 heads (llm TopCdf, TopK 0.1, dense), both kernels; 1M causal, one rank
#      (TopCdf, and TopK 0.004 and 0.02 as the peer's);
#   6. the peer: end to end (32K: TopK 1, 0.3, 0.1; 1M causal: TopK 0.004, 0.02) and its kernel on our
#      128×128 llm mask and on all ones.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), gpu-check.sh, gpu_bench_torch.py, peers/. Logs to $OUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
call=hopper
source "$here/gpu-call.sh"

step "gpu-check.sh all (correctness, then the kernel beside PyTorch)"
OUT="$OUT/check" timeout -k 10 540 bash "$here/gpu-check.sh" all; echo "gpu-check.sh rc=$?"

common=(--seq 32768 --heads 8 --head-dim 128 --repeat 20 --json --force)
step "the mma.sync kernel on the same shapes"
SPARGE_CUDA_KERNEL=mma timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --dense
SPARGE_CUDA_KERNEL=mma timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm
SPARGE_CUDA_KERNEL=mma timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.1 --block-k 128
step "128-key blocks: wgmma dense and on the llm mask (written for the peer)"
timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --dense --block-k 128
timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm --block-k 128 --mask-out "$OUT/mask-llm-cdf-k128.npy"
timeout -k 5 120 "$BIN" bench-kernel "${common[@]}" --workload llm --topk 0.1 --block-k 128 --mask-out "$OUT/mask-llm-top10-k128.npy"

b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 10 --json --verify-sample 4)
for kernel in auto mma; do
    for sel in "" "--topk 0.1" "--dense"; do
        step "whole pass 32K, 8 heads, ${sel:-TopCdf 0.98}, kernel $kernel"
        # shellcheck disable=SC2086
        SPARGE_CUDA_KERNEL=$kernel timeout -k 5 120 "$BIN" "${b[@]}" $sel; echo "rc=$?"
    done
done
for sel in "" "--topk 0.004" "--topk 0.02"; do
    step "1M causal, one rank, ${sel:-TopCdf 0.98} (the peer's TopK at the same fractions below)"
    # shellcheck disable=SC2086
    timeout -k 5 200 "$BIN" bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --json --repeat 3 $sel
    echo "rc=$?"
done

if [ -n "${peer_build:-}" ]; then
    step "peer: waiting for its build"
    [ "$peer_build" = none ] || wait "$peer_build"; tail -n 3 "$OUT/peer-build.log"
    step "peer: 32K, 8 heads, end to end, and its kernel on our masks"
    timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk 1,0.3,0.1 \
        --mask "$OUT/mask-llm-cdf-k128.npy:128:128" --mask "$OUT/mask-llm-top10-k128.npy:128:128"; echo "rc=$?"
    step "peer: 1M, 4 heads, causal, end to end"
    timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 1048576 --heads 4 --causal --topk 0.004,0.02; echo "rc=$?"
fi
date -u
