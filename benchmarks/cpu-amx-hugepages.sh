#!/usr/bin/env bash
# Whether the sparse pass's fixed phases on the device machine's Xeon are page faults on fresh memory: the
# same binary with and without glibc's malloc asking for transparent huge pages on its large blocks
# (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, madvise(MADV_HUGEPAGE) on every mmap-ed block), alternating, AMX
# bf16, N = 32768, 8 heads, D = 128, TopK 0.1, 16 threads, sparse and dense, with SPARGE_PROFILE_PHASES=1:
#   bash benchmarks/cpu-amx-hugepages.sh CARRY [OUT] [ROUNDS]   (OUT default $OUT, ROUNDS default 3)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" out="${2:-${OUT:-cpu-amx-hugepages}}" log=hugepages-log.txt rounds="${3:-3}"
source "$here/cpu-call.sh"
ldd --version | head -n 1
cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag
for round in $(seq 1 "$rounds"); do
    for tunables in "" "glibc.malloc.hugetlb=1"; do
        for mode in sparse dense; do
            step "round $round, $mode, GLIBC_TUNABLES='$tunables'"
            extra=(--topk 0.1); [ "$mode" = dense ] && extra=(--dense)
            GLIBC_TUNABLES="$tunables" SPARGE_PROFILE_PHASES=1 SPARGE_CPU_ISA=amx run 200 "$sparge" bench \
                --workload random --seq 32768 --heads 8 --head-dim 128 --precision bf16 --threads 16 --theta -1 \
                "${extra[@]}" --repeat 3 2>&1 | grep -E "^phase |^32768" | tail -n 14 | tr '\n' ' ' | sed 's/phase //g'
            echo
        done
    done
done
exit $status
