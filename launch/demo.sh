#!/usr/bin/env bash
# Builds sparge (launch/setup.sh) and runs the LLM benchmark on 2 ranks of this machine: 65,536 causal
# tokens, 4 heads of 128, against dense mode on the same input and with its error measured on 8 sampled
# query blocks. Extra arguments go to `sparge bench`; SPARGE_NP changes the number of ranks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh
source launch/env.sh

np="${SPARGE_NP:-2}"
mpirun_flags=(-np "$np")
cores="$(nproc)"
if [ "$np" -gt "$cores" ]; then
    echo "demo: $np ranks on $cores cores: oversubscribed, timings will not mean much" >&2
    mpirun_flags+=(--oversubscribe)
fi
set -x
mpirun "${mpirun_flags[@]}" .build/release/sparge bench \
    --workload llm --seq 65536 --heads 4 --head-dim 128 --causal --compare-dense --verify-sample 8 "$@"
