#!/usr/bin/env bash
# The resident GPU pass on a GPU machine, in one call (issue: the forward pass lives on the GPU):
#   1. builds the peer (upstream SpargeAttn, ../shared/peers) in the background;
#   2. gpu-check.sh test: GPU masks vs the CPU's (bit for bit, incl. whole resident passes), mpirun -np 2
#      and -np 3 on one GPU vs one process (masks identical, outputs within 2e-3, ring bytes as predicted);
#      then `sparge run` from .npy files, CUDA (1 and 2 ranks) against the CPU;
#   3. the whole pass at N=32768, 8 heads, D=128: llm TopCdf, TopK 0.1 and 0.3, dense; traced once; and the
#      kernel alone (bench-kernel) dense on the same shape;
#   4. N=1048576, 4 heads, causal, llm: one rank, then 2 ranks sharing the GPU (and both sizes on 2 ranks
#      through MPS, where the machine has it);
#   5. the peer's end-to-end call on the same shapes (TopK 1, 0.3, 0.1, 0.03; at 1M causal TopK 0.004, 0.02);
#      where the machine still holds its build from an earlier call, it is not built again.
# With nsys on the machine, also the kernel times of five 32K passes.
# Needs beside it: gpu-call.sh, sparge.gz (a static release build), gpu-check.sh, gpu_bench_torch.py and peers/ (a copy of
# ../shared/peers). Logs to $OUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
call=resident
source "$here/gpu-call.sh"

step "correctness: gpu-check.sh test"
timeout -k 10 420 bash "$here/gpu-check.sh" test; echo "gpu-check.sh test rc=$?"

step "sparge run from files: the CUDA backend (files read in pinned chunks onto the device) against the CPU"
# Smooth random Q, K, V (cumulative sums, so that blocks are self-similar and the mask is sparse), N = 20000
# (partial tail blocks), GQA 8/2, causal; one process and 2 ranks sharing the GPU; masks must be identical
# and outputs within the GPU's bf16 tolerance.
runs=/tmp/sparge-run; mkdir -p "$runs"
python3 - "$runs" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(3)
for name, heads in (("q", 8), ("k", 2), ("v", 2)):
    x = np.cumsum(rng.standard_normal((heads, 20000, 128)), axis=1) / 60
    np.save(f"{sys.argv[1]}/{name}.npy", x.astype(np.float32))
PY
r=(run --q "$runs/q.npy" --k "$runs/k.npy" --v "$runs/v.npy" --causal --force)
timeout -k 5 120 "$BIN" "${r[@]}" --backend cpu --output "$runs/cpu.npy" --mask-output "$runs/cpu-mask.npy"; echo "cpu rc=$?"
timeout -k 5 120 "$BIN" "${r[@]}" --backend cuda --output "$runs/gpu.npy" --mask-output "$runs/gpu-mask.npy"; echo "cuda rc=$?"
timeout -k 5 120 mpirun -np 2 "$BIN" "${r[@]}" --backend cuda --output "$runs/gpu2.npy" --mask-output "$runs/gpu2-mask.npy"; echo "cuda 2 ranks rc=$?"
python3 - "$runs" <<'PY'
import sys, numpy as np
d = sys.argv[1]
cpu, mask = np.load(f"{d}/cpu.npy").astype(np.float64), np.load(f"{d}/cpu-mask.npy")
ok = True
for name in ("gpu", "gpu2"):
    out, m = np.load(f"{d}/{name}.npy").astype(np.float64), np.load(f"{d}/{name}-mask.npy")
    rel = np.abs(out - cpu).sum() / np.abs(cpu).sum()
    same = bool((m == mask).all())
    print(f"run from files, {name}: {mask.mean():.3f} of all blocks computed, masks identical {same}, rel L1 to the CPU {rel:.2e}")
    ok = ok and same and rel < 2e-3
print("run from files:", "PASSED" if ok else "FAILED")
PY

b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128)
step "32K, 8 heads: one traced pass (entry, then three passes)"
SPARGE_CUDA_TRACE=1 timeout -k 5 120 "$BIN" "${b[@]}" --repeat 3 2> "$OUT/trace-32k.log"; echo "rc=$?"
cat "$OUT/trace-32k.log"
# The last pass's phases: 14 lines from its entry on; the host-only ones are labelled "host:".
awk '/enter: tensors on the device/ { n = NR } { line[NR] = $0 } END {
    for (i = n; i <= NR; i++) if (line[i] ~ /cuda trace/) { split(line[i], f, " "); ms = f[length(f) - 1];
        total += ms; if (line[i] ~ /host:/) host += ms }
    printf "last pass: %.3f ms in traced phases, of which host work %.3f ms\n", total, host }' "$OUT/trace-32k.log"
for sel in "" "--topk 0.1" "--topk 0.3" "--dense"; do
    step "32K, 8 heads, whole pass ${sel:-TopCdf 0.98}"
    # shellcheck disable=SC2086
    timeout -k 5 120 "$BIN" "${b[@]}" --repeat 10 --json --verify-sample 4 $sel; echo "rc=$?"
done
export PATH="$PATH:/usr/local/cuda/bin"
if command -v nsys > /dev/null; then
    step "32K, 8 heads: kernel times of five passes (nsys)"
    timeout -k 5 180 nsys profile -o /tmp/sparge-prof --force-overwrite true "$BIN" "${b[@]}" --repeat 5 > /dev/null 2>&1
    timeout -k 5 120 nsys stats --report cuda_gpu_kern_sum --format csv /tmp/sparge-prof.nsys-rep 2>/dev/null | cut -d, -f1-4,9 | head -30
    timeout -k 5 120 nsys stats --report cuda_gpu_mem_time_sum --format csv /tmp/sparge-prof.nsys-rep 2>/dev/null | cut -d, -f1-4,9 | head -12
fi
step "32K, 8 heads, kernel alone, dense"
timeout -k 5 120 "$BIN" bench-kernel --seq 32768 --heads 8 --head-dim 128 --repeat 20 --json --dense; echo "rc=$?"

c=(bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --json)
step "32K, 8 heads, 2 ranks sharing the GPU, traced"
SPARGE_CUDA_TRACE=1 timeout -k 5 120 mpirun -np 2 "$BIN" "${b[@]}" --repeat 3 --json 2> "$OUT/trace-32k-2ranks.log"; echo "rc=$?"
tail -n 40 "$OUT/trace-32k-2ranks.log"

if command -v nvidia-cuda-mps-control > /dev/null; then
    # Without MPS two processes' kernels take turns on the GPU in time slices; with it they share it.
    step "32K and 1M, 2 ranks sharing the GPU through MPS (its daemon started for this step only)"
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/sparge-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/sparge-mps/log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d; then
        sleep 1
        timeout -k 5 120 mpirun -np 2 "$BIN" "${b[@]}" --repeat 10 --json; echo "rc=$?"
        timeout -k 5 300 mpirun -np 2 "$BIN" "${c[@]}" --repeat 3; echo "rc=$?"
        echo quit | nvidia-cuda-mps-control; sleep 1
    else
        echo "MPS did not start"
    fi
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
fi

step "1M causal, one rank"
timeout -k 5 200 "$BIN" "${c[@]}" --repeat 3; echo "rc=$?"
step "1M causal, one rank, traced"
SPARGE_CUDA_TRACE=1 timeout -k 5 200 "$BIN" "${c[@]}" --repeat 1; echo "rc=$?"
step "1M causal, 2 ranks sharing the GPU"
timeout -k 5 300 mpirun -np 2 "$BIN" "${c[@]}" --repeat 3; echo "rc=$?"

if [ -n "${peer_build:-}" ]; then
    step "peer: waiting for its build"
    [ "$peer_build" = none ] || wait "$peer_build"; tail -n 3 "$OUT/peer-build.log"
    step "peer: 32K, 8 heads, end to end"
    timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 32768 --heads 8 --topk 1,0.3,0.1,0.03; echo "rc=$?"
    step "peer: 1M, 4 heads, causal, end to end"
    timeout -k 5 240 python3 "$here/peers/bench_spargeattn.py" --dir "$peer_dir" --seq 1048576 --heads 4 --causal --topk 0.004,0.02; echo "rc=$?"
fi
date -u
