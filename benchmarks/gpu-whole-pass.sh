#!/usr/bin/env bash
# On a GPU machine, in one call: gpu-check.sh's tests, then the whole forward pass at N = 32768, 8 heads,
# D = 128 (llm) with K/V stored as bf16 and as f32, and once each traced (SPARGE_CUDA_TRACE=1) and with the
# mask on the host (SPARGE_CUDA_MASK=cpu). Needs sparge (or sparge.gz) and launch/gpu-check.sh beside it
# (as launch/gpu-check.sh explains); logs to $OUT/gpu-check.log and $OUT/whole-pass.log.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${OUT:-$PWD/gpu-check-out}"; export OUT
mkdir -p "$OUT"
date -u; nvidia-smi -L
timeout -k 10 420 bash "$here/gpu-check.sh" test; echo "gpu-check.sh rc=$?"
BIN="${SPARGE_BIN:-$here/sparge}"
if [ ! -x "$BIN" ]; then mkdir -p /tmp/sparge-bin && gunzip -c "$here/sparge.gz" > /tmp/sparge-bin/sparge && chmod +x /tmp/sparge-bin/sparge; BIN=/tmp/sparge-bin/sparge; fi
exec > >(tee -a "$OUT/whole-pass.log") 2>&1
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --repeat 3 --json)
for p in bf16 f32; do
    echo "=== --kv-precision $p"; timeout -k 5 90 "$BIN" "${b[@]}" --kv-precision "$p"; echo "rc=$?"
    echo "=== --kv-precision $p, SPARGE_CUDA_TRACE=1"; SPARGE_CUDA_TRACE=1 timeout -k 5 90 "$BIN" "${b[@]}" --kv-precision "$p"; echo "rc=$?"
done
echo "=== SPARGE_CUDA_MASK=cpu"; SPARGE_CUDA_MASK=cpu timeout -k 5 90 "$BIN" "${b[@]}"; echo "rc=$?"
c=(bench --backend cuda --workload llm --seq 1048576 --heads 4 --head-dim 128 --causal --json)
for p in bf16 f32; do echo "=== 1M causal, --kv-precision $p"; timeout -k 5 120 "$BIN" "${c[@]}" --kv-precision "$p"; echo "rc=$?"; done
date -u
