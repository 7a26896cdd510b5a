#!/usr/bin/env bash
# Where the Xeon's AMX visits spend their time, sparse against dense (SPARGE_PROFILE_VISITS=1: each mode's
# visits, their scores, softmax and P·V per visit, and the kernels' seconds over all workers), AMX bf16,
# N = 32768, 8 heads, D = 128, 16 threads, TopK 0.1, three rounds. Run on the device machine from a carried
# folder holding this script and sparge.gz:  bash cpu-amx-visit-profile.sh
set -u
cd "$(dirname "$0")"
gunzip -c sparge.gz > /tmp/sparge && chmod +x /tmp/sparge
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
date -u
for round in 1 2 3; do
    SPARGE_PROFILE_VISITS=1 SPARGE_CPU_ISA=amx timeout 150 /tmp/sparge bench --workload random --seq 32768 --heads 8 \
        --head-dim 128 --precision bf16 --threads 16 --theta -1 --topk 0.1 --compare-dense --repeat 3 2>&1 \
        | grep -E "visit profile|^32768|phases"
done
