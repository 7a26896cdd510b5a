#!/usr/bin/env bash
# Two sparge binaries on the same CPU workloads, alternating, one JSON line per run:
#   bash benchmarks/compare-cpu.sh OLD_SPARGE NEW_SPARGE [ROUNDS]     (default 3 rounds)
# Prints, per workload, each binary's median seconds over the rounds (each run is itself the median of
# --repeat 3) and NEW/OLD. Run on an idle machine: two cores are all there is.
set -euo pipefail
old="$1" new="$2" rounds="${3:-3}"
workloads=(
    "dense N=8192|--workload random --seq 8192 --heads 4 --head-dim 128 --dense --threads 2"
    "sparse TopK 0.1 N=16384|--workload random --seq 16384 --heads 4 --head-dim 128 --theta -1 --topk 0.1 --threads 2"
    "llm causal N=32768|--workload llm --seq 32768 --heads 4 --head-dim 128 --causal --threads 2"
)
echo "CPU: $(lscpu | sed -n "s/^Model name: *//p"), $(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || (grep -qw avx2 /proc/cpuinfo && echo "AVX2, no AVX-512" || echo "no AVX2")), $(nproc) cores"
for w in "${workloads[@]}"; do
    label="${w%%|*}" args="${w#*|}"
    declare -a a=() b=()
    for ((r = 0; r < rounds; r++)); do
        # shellcheck disable=SC2086
        a+=("$("$old" bench $args --repeat 3 --json 2>/dev/null | tail -n 1)")
        # shellcheck disable=SC2086
        b+=("$("$new" bench $args --repeat 3 --json 2>/dev/null | tail -n 1)")
    done
    python3 - "$label" "${#a[@]}" "${a[@]}" "${b[@]}" <<'PY'
import json, statistics, sys
label, n = sys.argv[1], int(sys.argv[2])
rows = [json.loads(x) for x in sys.argv[3:]]
old, new = rows[:n], rows[n:]
mo = statistics.median(r["seconds"] for r in old)
mn = statistics.median(r["seconds"] for r in new)
print(f"{label}: old {mo:.3f} s {[round(r['seconds'], 3) for r in old]}, new {mn:.3f} s {[round(r['seconds'], 3) for r in new]}, "
      f"new/old {mn / mo:.3f}, density {new[0]['density']:.4f}, peak {new[0].get('peak_gflops')}")
PY
done
