#!/usr/bin/env bash
# One round of work on the 32K whole pass, in one call on the device machine (about 8 minutes):
#   1. the peer's build started first, in the background (about 2.5 minutes), so that the GPU is not idle for it;
#   2. gpu-quick-check.sh (selftest-cuda --quick, verify on 2 and 3 ranks against one process, the 32K and
#      1M passes), from a copy of it that does not start a second build of the peer;
#   3. gpu-pass-vs-peer.sh ROUNDS (ours in its variants and the peer, alternating; medians of the rounds);
#   4. our bf16 pass handed bf16 tensors traced without waits (SPARGE_CUDA_TRACE=host), with the work list
#      built on the device and by the host, and traced with waits (each phase's device time); then int8's.
# Usage: bash gpu-pass-round.sh [ROUNDS]   (default 5). Needs beside it: gpu-call.sh, gpu-quick-check.sh,
# gpu-pass-vs-peer.sh, sparge.gz, peers/. Logs to $OUT (quick.log, vspeer.log, round.log).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rounds="${1:-5}"
OUT="${OUT:-$PWD/gpu-round-out}"; export OUT
mkdir -p "$OUT"
peer_dir=/tmp/spargeattn
if ! ls "$peer_dir"/spas_sage_attn/_qattn*.so > /dev/null 2>&1; then
    ( bash "$here/peers/build_spargeattn.sh" "$peer_dir" > "$OUT/peer-build-early.log" 2>&1
      echo "peer build rc=$?" >> "$OUT/peer-build-early.log" ) &
    early_build=$!
fi
quick=$(mktemp -d)
cp "$here/gpu-call.sh" "$here/gpu-quick-check.sh" "$quick/"
status=0
bash "$quick/gpu-quick-check.sh" "$here" || status=1
[ -n "${early_build:-}" ] && wait "$early_build"
tail -n 1 "$OUT/peer-build-early.log" 2> /dev/null
bash "$here/gpu-pass-vs-peer.sh" "$rounds" || status=1
call=round
prior=$status
source "$here/gpu-call.sh"  # (sets status to 0)
status=$prior
b=(bench --backend cuda --workload llm --seq 32768 --heads 8 --head-dim 128 --topk 0.1 --block-k 128 --dtype bf16)
for variant in "host device bf16" "host host bf16" "1 device bf16" "host device int8"; do
    set -- $variant
    step "traced pass, $3, SPARGE_CUDA_TRACE=$1, work list built by the $2"
    SPARGE_CUDA_TRACE=$1 SPARGE_CUDA_WORK_LIST=$2 timeout -k 5 120 "$BIN" "${b[@]}" --precision "$3" --repeat 3 2> "$OUT/trace.log" > /dev/null
    awk '/enter: tensors on the device/ { n = NR } { line[NR] = $0 } END { for (i = n; i <= NR; i++) print line[i] }' "$OUT/trace.log"
done
rm -f "$OUT/trace.log"
date -u
exit $status
