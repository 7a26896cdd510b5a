#!/usr/bin/env bash
# Strong scaling on one many-core node: the same problem on 1, 2, 4, … ranks of one thread each, then a few
# thread/rank splits. Prints one JSON line per run (sparge bench --json) and a table; writes them to $LOG_DIR
# when set.
#
#   bash launch/scaling.sh [SPARGE_BINARY] [extra sparge bench options…]
#
# Environment: SCALING_SEQ (default 131072), SCALING_RANKS (default "1 2 4 8 16"), SCALING_HEADS (4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/env.sh
binary="${1:-.build/release/sparge}"
shift || true
seq="${SCALING_SEQ:-131072}"
heads="${SCALING_HEADS:-4}"
ranks="${SCALING_RANKS:-1 2 4 8 16}"
log="${LOG_DIR:-.}/scaling.jsonl"
: > "$log"
common=(bench --workload llm --seq "$seq" --heads "$heads" --head-dim 128 --causal --verify-sample 4 --json "$@")
for p in $ranks; do
    echo "scaling: $p rank(s) × 1 thread, N=$seq" >&2
    mpirun -np "$p" --oversubscribe --bind-to core "$binary" "${common[@]}" --threads 1 | tee -a "$log"
done
cores="$(nproc)"
echo "scaling: 1 rank × $cores threads" >&2
mpirun -np 1 --bind-to none "$binary" "${common[@]}" --threads "$cores" | tee -a "$log"
echo "scaling: 2 ranks × $((cores / 2)) threads" >&2
mpirun -np 2 --bind-to none "$binary" "${common[@]}" --threads "$((cores / 2))" | tee -a "$log"
