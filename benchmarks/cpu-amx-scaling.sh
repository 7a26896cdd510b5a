#!/usr/bin/env bash
# What bounds the sparse pass's fixed phases on the device machine's Xeon: the memory's read bandwidth
# (PyTorch summing a 2 GiB float tensor on 1 and 16 threads, medians of 5) beside the summaries and the mask
# of one sparse pass (AMX bf16, N = 32768, 8 heads, D = 128, TopK 0.1) on 1, 4, 8 and 16 threads:
#   bash benchmarks/cpu-amx-scaling.sh CARRY [OUT]   (OUT default $OUT)
# CARRY holds sparge.gz; cpu-call.sh lies beside this script. The summaries read Q once and K twice (its mean,
# then its blocks): 402 MB at this shape. If they are bound by bandwidth, their time stops falling with threads
# where the read rate reaches the probe's.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" out="${2:-${OUT:-cpu-amx-scaling}}" log=scaling-log.txt
source "$here/cpu-call.sh"
step "read bandwidth (torch sum of 2 GiB of floats)"
for threads in 1 16; do
    run 120 python3 - "$threads" <<'PY' || fail "bandwidth probe"
import statistics, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
x = torch.ones(512 * 1024 * 1024)  # 2 GiB, touched
times = []
for _ in range(6):
    t = time.perf_counter(); x.sum().item(); times.append(time.perf_counter() - t)
s = statistics.median(times[1:])
print(f"{sys.argv[1]:>2} threads: {x.numel() * 4 / s / 1e9:.1f} GB/s (median of 5)")
PY
done
step "the sparse pass's phases by threads"
for threads in 1 4 8 16; do
    line="$(SPARGE_CPU_ISA=amx run 150 "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 \
        --precision bf16 --threads "$threads" --theta -1 --topk 0.1 --repeat 3 --json 2>/dev/null | tail -n 1)"
    [ -n "$line" ] || fail "$threads threads: no result"
    summaries="$(echo "$line" | field summary_seconds)"
    echo "$threads threads: summaries $summaries s ($(python3 -c "print(f'{402e6 / $summaries / 1e9:.1f}')" 2>/dev/null) GB/s of Q and K read), mask $(echo "$line" | field mask_seconds) s, ring $(echo "$line" | field ring_seconds) s, pass $(echo "$line" | field seconds) s"
done
date -u
[ "$status" -eq 0 ] && echo "cpu-amx-scaling: PASSED" || echo "cpu-amx-scaling: FAILED"
exit "$status"
