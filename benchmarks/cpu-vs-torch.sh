#!/usr/bin/env bash
# The CPU kernels against PyTorch's CPU attention, measured in the same run (alternating, one round after
# the other), dense fp32, D = 128:
#   bash benchmarks/cpu-vs-torch.sh SPARGE PYTHON [ROUNDS] [SEQ] [HEADS] [THREADS]
# (defaults: 3 rounds, N = 8192, 4 heads, all cores). PYTHON is an interpreter with PyTorch for the CPU; the
# peer is ../shared/peers/torch_cpu_sdpa.py (or $TORCH_SDPA). Each round runs `sparge bench --dense` with every
# kernel set this CPU has (SPARGE_CPU_ISA; `ISAS="avx512 avx2"` chooses) in every precision of PRECISIONS
# (default fp32; e.g. `PRECISIONS="fp32 int8"`), or exactly the pairs of RUNS (e.g. `RUNS="amx:bf16 avx512:fp32"`),
# then the peer (fp32 and bf16). With SPARGE_BASE set to a second binary (a baseline build), each run is also
# made with it, right after (right before with SPARGE_BASE_FIRST=1), and printed as "base …": a change against
# its baseline in the same rounds.
# Prints the median GFLOP/s of each (each run itself the median of 3 repeats), its ratio to PyTorch fp32, and
# the peak of the same kernel set that `bench` measured before each run (FMA; int16 multiply-adds for int8).
set -euo pipefail
sparge="$1" python="$2" rounds="${3:-3}" seq="${4:-8192}" heads="${5:-4}" threads="${6:-$(nproc)}"
peer="${TORCH_SDPA:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/peers/torch_cpu_sdpa.py}"
if [ -n "${ISAS:-}" ]; then
    read -r -a isas <<< "$ISAS"
else
    isas=(portable avx2)
    grep -qw avx512f /proc/cpuinfo && isas+=(avx512)
    grep -qw avx512_bf16 /proc/cpuinfo && isas+=(avx512bf16)
fi
echo "CPU: $(lscpu | sed -n "s/^Model name: *//p"), flags: $(grep -ow 'avx2\|avx512f\|avx512_bf16\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')$(nproc) cores; $(date -u +%F)"
echo "shape: N=$seq, $heads heads, D=128, dense, non-causal, $threads threads"
if [ -n "${RUNS:-}" ]; then
    read -r -a runs <<< "$RUNS"
else
    runs=()
    for isa in "${isas[@]}"; do for precision in ${PRECISIONS:-fp32}; do runs+=("$isa:$precision"); done; done
fi
lines=()
for ((r = 0; r < rounds; r++)); do
    for run in "${runs[@]}"; do
        order=(ours)
        if [ -n "${SPARGE_BASE:-}" ]; then
            [ "${SPARGE_BASE_FIRST:-0}" = 1 ] && order=(base ours) || order=(ours base)
        fi
        for who in "${order[@]}"; do
            binary="$sparge" tag=""
            [ "$who" = base ] && binary="$SPARGE_BASE" tag="base "
            line="$(SPARGE_CPU_ISA=${run%%:*} "$binary" bench --workload random --seq "$seq" --heads "$heads" \
                --head-dim 128 --dense --threads "$threads" --repeat 3 --precision "${run#*:}" --json 2>/dev/null | tail -n 1 || true)"
            # A baseline built before a kernel set existed cannot run it: that run is left out.
            [ -n "$line" ] || [ "$who" = base ] || { echo "cpu-vs-torch: no result from $run" >&2; exit 1; }
            [ -z "$line" ] || lines+=("$tag$line")
        done
    done
    while IFS= read -r line; do lines+=("$line"); done < <("$python" "$peer" --seq "$seq" --heads "$heads" --threads "$threads")
done
python3 - "${lines[@]}" <<'PY'
import json, statistics, sys
runs = {}
for line in sys.argv[1:]:
    of_baseline = line.startswith("base ")
    j = json.loads(line[5:] if of_baseline else line)
    if "peer" in j:
        runs.setdefault(f"torch sdpa {j['dtype']}", []).append((j["gflops"], None))
    else:
        name = f"{'base' if of_baseline else 'sparge'} {j['isa']} {j['precision']}"
        runs.setdefault(name, []).append((j["gflops_dense_equiv"], j["peak_gflops"]))
base = statistics.median(g for g, _ in runs["torch sdpa float32"])
for name, rs in runs.items():
    g = statistics.median(x for x, _ in rs)
    peaks = [p for _, p in rs if p is not None]
    peak = f", peak {statistics.median(peaks):.0f} ({g / statistics.median(peaks):.0%})" if peaks else ""
    print(f"{name:26s} {g:7.1f} GFLOP/s {[round(x, 1) for x, _ in rs]}  {g / base:.2f}x torch fp32{peak}")
PY
