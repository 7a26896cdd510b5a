# Sourced by the one-call GPU scripts (gpu-resident.sh, gpu-hopper.sh, gpu-int8.sh, …), from the folder they
# were copied to with sparge.gz and peers/, with `call` set to the call's name: the log ($OUT, default
# ./gpu-$call-out, everything also in $OUT/$call.log, headed by the date and the GPU), the environment of a run
# as root under mpirun, the binary, a step header, `run` and `field` (below), and the peer's build started in
# the background, and `verify_int8_ranks`. Sets BIN (exported as SPARGE_BIN), status, peer_dir, peer_build
# (the build's pid, `none` when the machine still holds a build, unset without peers/).
OUT="${OUT:-$PWD/gpu-$call-out}"; export OUT
mkdir -p "$OUT"
exec > >(tee -a "$OUT/$call.log") 2>&1
date -u; nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMPI_MCA_btl_vader_single_copy_mechanism=none PYTHONUNBUFFERED=1
# The binary: SPARGE_BIN, else sparge or sparge.gz in $bin_dir (a script's argument, where it takes one) or
# beside the script.
bin_dir="${bin_dir:-$here}"
BIN="${SPARGE_BIN:-$bin_dir/sparge}"
if [ ! -x "$BIN" ]; then mkdir -p /tmp/sparge-bin && gunzip -c "$bin_dir/sparge.gz" > /tmp/sparge-bin/sparge && chmod +x /tmp/sparge-bin/sparge; BIN=/tmp/sparge-bin/sparge; fi
export SPARGE_BIN="$BIN"
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
# A command echoed, and its failure logged and kept in `status` (the script's exit status at its end).
status=0
run() { echo "+ $*"; "$@" || { echo "FAILED (status $?): $*"; status=1; }; }
# `verify --precision int8` on 1, 2 and 3 ranks (llm causal GQA; random dense with a partial last block on
# 3): masks identical, outputs against one process and the Double reference.
verify_int8_ranks() {
    local llm=(--workload llm --seq 6144 --heads 4 --kv-heads 2 --head-dim 128 --causal --threads 2 --json)
    run timeout -k 5 120 "$BIN" verify --backend cuda --precision int8 "${llm[@]}"
    run timeout -k 5 120 mpirun -np 2 "$BIN" verify --backend cuda --precision int8 "${llm[@]}" --tolerance 2e-3
    run timeout -k 5 120 mpirun -np 3 --oversubscribe "$BIN" verify --backend cuda --precision int8 --workload random \
        --seq 3000 --heads 2 --head-dim 128 --dense --block-k 128 --threads 2 --json --tolerance 2e-3
}
# One dense `bench-kernel` of the binary $1 (random inputs, N = $2, $3 heads, D = 128, 128-key blocks, 20
# launches) in precision $4, with the environment's settings: its JSON line on stdout; on a failure its
# stderr and a FAILED line on stderr and a non-zero status.
dense_kernel() {
    local line
    line="$(timeout -k 5 120 "$1" bench-kernel --backend cuda --workload random --seq "$2" --heads "$3" --head-dim 128 \
        --dense --block-k 128 --repeat 20 --json --precision "$4" 2> "$OUT/stderr.txt" | tail -n 1)"
    [[ "$line" == "{"* ]] && { echo "$line"; return 0; }
    cat "$OUT/stderr.txt" >&2; echo "FAILED: $(basename "$1") $2 × $3 $4" >&2; return 1
}
# The raw value of "name": in a JSON line.
field() { grep -o "\"$1\": [^,}]*" <<< "$2" | head -n 1 | sed 's/.*: //'; }

peer_dir=/tmp/spargeattn
if [ -d "$here/peers" ]; then
    if ls "$peer_dir"/spas_sage_attn/_qattn*.so > /dev/null 2>&1; then
        echo "peer: already built in $peer_dir" > "$OUT/peer-build.log"; peer_build=none
    else
        ( bash "$here/peers/build_spargeattn.sh" "$peer_dir" > "$OUT/peer-build.log" 2>&1; echo "peer build rc=$?" >> "$OUT/peer-build.log" ) &
        peer_build=$!
    fi
fi
