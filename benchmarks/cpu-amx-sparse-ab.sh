#!/usr/bin/env bash
# The sparse pass's phases and its ratio to its own dense mode on the device machine's Xeon, two builds
# alternating (one call):
#   bash benchmarks/cpu-amx-sparse-ab.sh CARRY [ROUNDS] [OUT]   (default 4 rounds; OUT default $OUT)
# CARRY holds sparge.gz (the build under test) and sparge-base.gz (the build before); cpu-call.sh lies beside
# this script. Each round runs both on AMX bf16, N = 32768, 8 heads, D = 128, 16 threads, TopK 0.1 against its
# own dense mode, and prints the phases: summaries, mask, ring, and the ratio.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" rounds="${2:-4}" out="${3:-${OUT:-cpu-amx-sparse-ab}}" log=sparse-ab-log.txt
source "$here/cpu-call.sh"
[ -n "${SPARGE_BASE:-}" ] || fail "no sparge-base.gz in $carry"
for ((r = 1; r <= rounds; r++)); do
    for build in base new; do
        binary="$sparge"; [ "$build" = base ] && binary="$SPARGE_BASE"
        line="$(SPARGE_CPU_ISA=amx run 150 "$binary" bench --workload random --seq 32768 --heads 8 --head-dim 128 \
            --precision bf16 --threads 16 --theta -1 --topk 0.1 --compare-dense --repeat 3 --json 2>/dev/null | tail -n 1)"
        echo "round $r, $build: summaries $(echo "$line" | field summary_seconds) s, mask $(echo "$line" | field mask_seconds) s, ring $(echo "$line" | field ring_seconds) s, pass $(echo "$line" | field seconds) s, dense $(echo "$line" | field dense_seconds) s, $(echo "$line" | field speedup_over_dense)x"
    done
done
date -u
[ "$status" -eq 0 ] && echo "cpu-amx-sparse-ab: PASSED" || echo "cpu-amx-sparse-ab: FAILED"
exit "$status"
