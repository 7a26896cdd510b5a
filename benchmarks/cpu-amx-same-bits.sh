#!/usr/bin/env bash
# Whether two builds compute the same thing on the device machine's Xeon (AMX): `bench --verify-sample` on
# the llm workload (N = 16384, 8 heads, 16 threads) in bf16 and int8, each build's error against exact dense
# attention on the same sampled query blocks; builds that differ only in how the work is scheduled print
# the same errors to the last digit.
#   bash benchmarks/cpu-amx-same-bits.sh CARRY [OUT]   (CARRY holds sparge.gz and sparge-base.gz)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" out="${2:-${OUT:-cpu-amx-same-bits}}" log=same-bits-log.txt
source "$here/cpu-call.sh"
[ -n "${SPARGE_BASE:-}" ] || fail "no sparge-base.gz in $carry"
for precision in bf16 int8; do
    for build in base new; do
        binary="$sparge"; [ "$build" = base ] && binary="$SPARGE_BASE"
        line="$(SPARGE_CPU_ISA=amx run 200 "$binary" bench --workload llm --seq 16384 --heads 8 --precision "$precision" \
            --threads 16 --verify-sample 8 --json 2>/dev/null | tail -n 1)"
        echo "$precision, $build: rel L1 $(echo "$line" | field rel_l1), density $(echo "$line" | field density), $(echo "$line" | field seconds) s"
    done
done
exit $status
