# Sourced by the one-call CPU scripts for the device machine's Xeon (cpu-amx-device.sh, cpu-amx-long.sh,
# cpu-amx-visit-keys.sh, cpu-amx-sparse-profile.sh, cpu-amx-sparse-ab.sh, cpu-amx-scaling.sh,
# cpu-amx-phase-marks.sh, cpu-amx-hugepages.sh, cpu-amx-same-bits.sh), with `carry`
# (the carried folder: sparge.gz or sparge, and optionally sparge-base.gz or sparge-base), `out` (the log's
# folder) and `log` (its file name) set: the binary unpacked into $sparge (and a baseline into $SPARGE_BASE,
# exported, where one is carried), everything logged to $out/$log, the environment of a run as root under
# mpirun, the machine printed, and fail, step, run, field, verified.
sparge="$carry/sparge"
if [ ! -x "$sparge" ]; then
    sparge="$(mktemp -d)/sparge"
    gunzip -c "$carry/sparge.gz" > "$sparge" && chmod +x "$sparge" || { echo "no $carry/sparge or sparge.gz"; exit 1; }
fi
if [ -x "$carry/sparge-base" ]; then
    SPARGE_BASE="$carry/sparge-base"
    export SPARGE_BASE
elif [ -f "$carry/sparge-base.gz" ]; then
    SPARGE_BASE="$(dirname "$sparge")/sparge-base"
    gunzip -c "$carry/sparge-base.gz" > "$SPARGE_BASE" && chmod +x "$SPARGE_BASE" || { echo "$carry/sparge-base.gz does not unpack"; exit 1; }
    export SPARGE_BASE
fi
mkdir -p "$out"
exec > >(tee "$out/$log") 2>&1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
date -u
lscpu | grep -E "Model name|^CPU\(s\)|MHz|L3" | cut -c1-200
echo "flags: $(grep -ow 'avx512f\|avx512bw\|avx512_bf16\|avx512_vnni\|amx_tile\|amx_bf16\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
status=0
fail() { echo "FAILED: $*"; status=1; }
step() { echo "== $* ($(date -u +%T))"; }
# `run SECONDS COMMAND...`: COMMAND with a time limit (a hang or a slow run costs its step, not the call).
run() { local limit="$1"; shift; timeout -k 5 "$limit" "$@"; }
# `field NAME`: NAME of the JSON line on stdin ("(no result)" when a run printed none).
field() {
    python3 -c 'import json, sys
try: print(json.loads(sys.stdin.read()).get(sys.argv[1]))
except ValueError: print("(no result)")' "$1"
}
# `verified NAME SECONDS COMMAND...`: a `verify … --json` run with a time limit, its line printed as NAME's, and
# a failure unless it passed.
verified() {
    local name="$1" limit="$2" line
    shift 2
    line="$(timeout -k 5 "$limit" "$@" | tail -n 1)"
    echo "$name: $line"
    echo "$line" | grep -q '"passed": true' || fail "$name"
}
# The AMX pass on two ranks against one process (llm causal, a partial last block).
verified_amx_two_ranks() {
    SPARGE_CPU_ISA=amx verified "verify amx bf16 2 ranks" 120 mpirun --oversubscribe -np 2 "$sparge" verify --workload llm \
        --causal --seq 3001 --heads 2 --head-dim 128 --precision bf16 --json
}
