#!/usr/bin/env bash
# Where the AMX sparse pass spends what does not follow density, on the device machine's Xeon (one call):
#   bash benchmarks/cpu-amx-sparse-profile.sh CARRY [OUT]     (CARRY holds sparge.gz, a static release build)
# 1. The bf16-tile driver with kernels that compute nothing (SPARGE_BF16_TILES=bookkeeping), N = 32768, 8 heads,
#    16 threads, sparse (TopK 0.1) and dense: what the driver costs around the kernels, in each mode.
# 2. The real AMX sparse pass under `perf record` where the machine has perf: its hottest symbols.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" out="${2:-${OUT:-cpu-amx-sparse-profile}}" log=log.txt
source "$here/cpu-call.sh"
common=(--backend cpu --workload random --seq 32768 --heads 8 --head-dim 128 --precision bf16 --threads 16 --json)
echo "== 1. the driver alone (bookkeeping kernels), kernel_ms"
for i in 1 2; do
    for mode in "--topk 0.1 --theta -1" "--dense"; do
        ms="$(SPARGE_BF16_TILES=bookkeeping timeout -k 5 120 "$sparge" bench-kernel "${common[@]}" $mode --repeat 3 | tail -n 1 |
              python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print(j["kernel_ms"], j["density"])')"
        echo "bookkeeping $mode: $ms"
    done
done
echo "== 2. the AMX sparse pass under perf"
if command -v perf > /dev/null; then
    SPARGE_CPU_ISA=amx timeout -k 5 200 perf record -q -o "$out/perf.data" "$sparge" bench --workload random --seq 32768 \
        --heads 8 --head-dim 128 --theta -1 --topk 0.1 --precision bf16 --threads 16 --repeat 10 --json | tail -n 1
    perf report -i "$out/perf.data" --no-children --sort sym 2>/dev/null | grep -v "^#" | grep "%" | head -40 | cut -c1-160
    rm -f "$out/perf.data"
else
    echo "no perf on this machine"
fi
date -u
