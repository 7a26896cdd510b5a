#!/usr/bin/env bash
# The sparse pass's phases and its ratio to its own dense mode on the device machine's Xeon, several builds
# alternating in one call:
#   bash benchmarks/cpu-amx-sparse-ab.sh CARRY [ROUNDS] [OUT]   (default 4 rounds; OUT default $OUT)
# CARRY holds sparge.gz (the build under test) and sparge-base.gz (the build before), and optionally more
# variants as sparge-NAME.gz; any of them may lie there unpacked instead (sparge, sparge-base, sparge-NAME).
# cpu-call.sh lies beside this script. Each round runs every build on AMX bf16, N = 32768, 8 heads, D = 128,
# 16 threads, TopK 0.1 against its own dense mode, and prints the phases: summaries, mask, ring, and the
# ratio; the medians of the rounds come last.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" rounds="${2:-4}" out="${3:-${OUT:-cpu-amx-sparse-ab}}" log=sparse-ab-log.txt
source "$here/cpu-call.sh"
[ -n "${SPARGE_BASE:-}" ] || fail "no sparge-base.gz in $carry"
builds=(base new)
declare -A binaries=([base]="$SPARGE_BASE" [new]="$sparge")
for variant in "$carry"/sparge-*; do
    name="$(basename "$variant" .gz)"; name="${name#sparge-}"
    if [ "$name" = base ] || [ ! -f "$variant" ] || [[ " ${builds[*]} " == *" $name "* ]]; then continue; fi
    if [[ "$variant" == *.gz ]]; then
        binaries[$name]="$(dirname "$sparge")/sparge-$name"
        if gunzip -c "$variant" > "${binaries[$name]}" && chmod +x "${binaries[$name]}"; then
            builds+=("$name")
        else
            fail "$variant does not unpack"
        fi
    elif [ -x "$variant" ]; then
        binaries[$name]="$variant"; builds+=("$name")
    fi
done
results="$(mktemp)"  # the rounds' lines, for the medians (the log is written through tee, later)
for ((r = 1; r <= rounds; r++)); do
    for build in "${builds[@]}"; do
        line="$(SPARGE_CPU_ISA=amx run 150 "${binaries[$build]}" bench --workload random --seq 32768 --heads 8 \
            --head-dim 128 --precision bf16 --threads 16 --theta -1 --topk 0.1 --compare-dense --repeat 3 --json \
            2>/dev/null | tail -n 1)"
        [ -n "$line" ] || fail "round $r, $build: no result"
        echo "round $r, $build: summaries $(echo "$line" | field summary_seconds) s, mask $(echo "$line" | field mask_seconds) s, ring $(echo "$line" | field ring_seconds) s, pass $(echo "$line" | field seconds) s, dense $(echo "$line" | field dense_seconds) s, $(echo "$line" | field speedup_over_dense)x" | tee -a "$results"
    done
done
python3 - "$results" <<'PY'
import re, statistics, sys
rows = {}
number = r"([0-9.e+-]+)"
pattern = re.compile(rf"round \d+, (\S+): summaries {number} s, mask {number} s, ring {number} s, pass {number} s, "
                     rf"dense {number} s, {number}x")
for line in open(sys.argv[1]):
    m = pattern.match(line)  # a round without a number (a failed run) is left out
    if m: rows.setdefault(m[1], []).append([float(x) for x in m.groups()[1:]])
for name, xs in rows.items():
    med = [statistics.median(c) for c in zip(*xs)]
    print(f"median of {len(xs)} rounds, {name}: summaries {med[0]:.4f} s, mask {med[1]:.4f} s, ring {med[2]:.4f} s, "
          f"pass {med[3]:.4f} s, dense {med[4]:.3f} s, {med[5]:.2f}x")
PY
date -u
[ "$status" -eq 0 ] && echo "cpu-amx-sparse-ab: PASSED" || echo "cpu-amx-sparse-ab: FAILED"
exit "$status"
