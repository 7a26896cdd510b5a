#!/usr/bin/env bash
# Where the Xeon's sparse pass spends the time outside its tiles: SPARGE_PROFILE_PHASES=1 prints each step of
# the pass (K mean, summaries, mask rows, the ring's local rows, the block table, workers, finish) with its
# milliseconds, for AMX bf16, N = 32768, 8 heads, D = 128, TopK 0.1, 16 threads, beside PyTorch's own
# f32 → bf16 conversion of a K-sized tensor and the memory's read rate as ceilings:
#   bash benchmarks/cpu-amx-phase-marks.sh CARRY [OUT]   (OUT default $OUT)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" out="${2:-${OUT:-cpu-amx-phase-marks}}" log=phase-marks-log.txt
source "$here/cpu-call.sh"
step "ceilings: read rate and f32 -> bf16 of 32768 x 8 x 128 (torch, 16 threads, medians of 9)"
run 120 python3 - <<'PY' || fail "ceiling probe"
import statistics, time, torch
torch.set_num_threads(16)
x = torch.randn(8, 32768, 128)
def median(f):
    ts = []
    for _ in range(10):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts[1:])
s = median(lambda: x.sum().item())
print(f"read: {x.numel() * 4 / s / 1e9:.1f} GB/s ({s * 1e3:.2f} ms for 134 MB)")
s = median(lambda: x.to(torch.bfloat16))
print(f"f32 -> bf16 (fresh output): {s * 1e3:.2f} ms")
y = torch.empty(8, 32768, 128, dtype=torch.bfloat16)
s = median(lambda: y.copy_(x))
print(f"f32 -> bf16 (into a reused output): {s * 1e3:.2f} ms")
PY
for mode in sparse dense; do
    step "$mode pass, phase marks (3 timed passes after the first)"
    extra=(--topk 0.1); [ "$mode" = dense ] && extra=(--dense)
    SPARGE_PROFILE_PHASES=1 SPARGE_CPU_ISA=amx run 200 "$sparge" bench --workload random --seq 32768 --heads 8 \
        --head-dim 128 --precision bf16 --threads 16 --theta -1 "${extra[@]}" --repeat 3 2>&1 \
        | grep -E "^phase |^32768|^phases" || fail "$mode pass"
done
exit $status
