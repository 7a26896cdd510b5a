#!/usr/bin/env bash
# AttentionPrecision.bf16 on AMX tiles, on the device machine's Xeon (16 cores, AMX-BF16), in one call:
#   bash benchmarks/cpu-amx-device.sh CARRY PYTHON [OUT]        (OUT: a folder for the log, default $OUT or ./cpu-amx-device)
# CARRY holds what was built elsewhere (no Swift there), on the development machine, from the repository root
# (.build/amx-carry is ignored by git: hand it to the device as a carried path):
#   swift build -c release --product sparge --build-path /tmp/amx-rel -Xswiftc -static-stdlib \
#       -Xswiftc -target-cpu -Xswiftc x86-64                 # a fresh build path
#   mkdir -p .build/amx-carry && gzip -c /tmp/amx-rel/release/sparge > .build/amx-carry/sparge.gz
#   cp -r ../shared/peers .build/amx-carry/peers
#   clang -O2 -static -pthread -ISources/CSpargeKernels/include -ISources/CSpargeKernels \
#       Sources/CSpargeKernels/*.c benchmarks/amx-check.c -lm -o .build/amx-carry/amx-check
# (the binary travels gzipped: 77 MB as built, over the 64 MiB a call may carry). On the device:
#   timeout -k 10 570 bash benchmarks/cpu-amx-device.sh .build/amx-carry python3 "$OUT"
# PYTHON has PyTorch (the peer: CARRY/peers/torch_cpu_sdpa.py).
#
# 1. The kernels: amx-check, the AMX bf16 kernels against their scalar twin on fresh random shapes (two
#    threads at once), and the same source with emulated tiles.
# 2. The dispatch: `bench` must name `amx` by default, and SPARGE_CPU_ISA=avx512 must still force AVX-512.
# 3. Correctness of whole passes: `verify --precision bf16` with the AMX set against the Double reference on
#    the rounded inputs (llm causal, video, random dense; D = 128 and 64; 1 and 2 ranks), beside AVX-512's
#    bf16 (fp32 products on the same inputs).
# 4. Speed: dense N = 32768, 8 heads, D = 128, 16 threads, AMX bf16 and AVX-512 fp32 against PyTorch SDPA
#    fp32 and bf16, alternating, 3 rounds, medians (benchmarks/cpu-vs-torch.sh); the error of that dense pass
#    on 4 sampled blocks; then one sparse run (TopK 0.1) against its own dense mode.
# 5. Error next to speed: `bench --dense --verify-sample 8` (relative L1 against Double on the unrounded
#    inputs) for AMX bf16, AVX-512 bf16 and AVX-512 fp32 on the three workloads, N = 8192.
# About 5 minutes in all; if a limit cuts it short, the log holds what ran.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" python="$2" out="${3:-${OUT:-cpu-amx-device}}"
sparge="$carry/sparge"
if [ ! -x "$sparge" ]; then
    sparge="$(mktemp -d)/sparge"
    gunzip -c "$carry/sparge.gz" > "$sparge" && chmod +x "$sparge" || { echo "no $carry/sparge or sparge.gz"; exit 1; }
fi
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
source "$here/../launch/env.sh" 2>/dev/null || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
date -u
lscpu | grep -E "Model name|^CPU\(s\)|MHz|L3" | cut -c1-200
echo "flags: $(grep -ow 'avx512f\|avx512bw\|avx512_bf16\|avx512_vnni\|amx_tile\|amx_bf16\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
status=0
fail() { echo "FAILED: $*"; status=1; }
# `field NAME`: NAME of the JSON line on stdin ("(no result)" when a run printed none).
field() {
    python3 -c 'import json, sys
try: print(json.loads(sys.stdin.read()).get(sys.argv[1]))
except ValueError: print("(no result)")' "$1"
}

echo "== 1. kernels against their scalar twin"
"$carry/amx-check" 300; rc=$?
[ $rc -eq 0 ] || fail "amx-check exited $rc"

echo "== 2. dispatch"
line="$("$sparge" bench --workload random --seq 2048 --heads 2 --head-dim 128 --dense --precision bf16 --threads 16 --json | tail -n 1)"
echo "default: $line"
[ "$(echo "$line" | field isa)" = amx ] || fail "the default kernel set is not amx"
line="$(SPARGE_CPU_ISA=avx512 "$sparge" bench --workload random --seq 2048 --heads 2 --head-dim 128 --dense --precision bf16 --threads 16 --json | tail -n 1)"
echo "forced avx512: $line"
[ "$(echo "$line" | field isa)" = avx512 ] || fail "SPARGE_CPU_ISA=avx512 did not force avx512"

echo "== 3. verify --precision bf16 against the Double reference on the rounded inputs"
for isa in amx avx512; do
    for w in "llm --causal" "video" "random --dense"; do
        for d in 128 64; do
            # shellcheck disable=SC2086
            line="$(SPARGE_CPU_ISA=$isa "$sparge" verify --workload $w --seq 3000 --heads 4 --kv-heads 2 --head-dim $d --precision bf16 --json | tail -n 1)"
            echo "verify $isa bf16 $w D=$d: rel L1 to masked reference $(echo "$line" | field rel_l1_vs_masked_reference), passed $(echo "$line" | field passed)"
            echo "$line" | grep -q '"passed": true' || fail "verify $isa bf16 $w D=$d: $line"
        done
    done
    line="$(SPARGE_CPU_ISA=$isa mpirun --oversubscribe -np 2 "$sparge" verify --workload llm --causal --seq 3001 --heads 2 --head-dim 128 --precision bf16 --json | tail -n 1)"
    echo "verify $isa bf16 2 ranks: $line"
    echo "$line" | grep -q '"passed": true' || fail "verify $isa bf16 on 2 ranks"
done

echo "== 4. speed: dense N = 32768, 8 heads, D = 128, 16 threads, against PyTorch in the same run"
TORCH_SDPA="$carry/peers/torch_cpu_sdpa.py" RUNS="amx:bf16 avx512:fp32" \
    bash "$here/cpu-vs-torch.sh" "$sparge" "$python" 3 32768 8 16 || fail "cpu-vs-torch.sh"
for isa in amx avx512; do
    precision=$([ $isa = amx ] && echo bf16 || echo fp32)
    line="$(SPARGE_CPU_ISA=$isa "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 --dense --precision $precision --threads 16 --verify-sample 4 --repeat 1 --json | tail -n 1)"
    echo "dense 32K $isa $precision: rel L1 $(echo "$line" | field rel_l1) on 4 sampled blocks vs Double on the unrounded inputs"
    line="$(SPARGE_CPU_ISA=$isa "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 --theta -1 --topk 0.1 --precision $precision --threads 16 --compare-dense --verify-sample 4 --repeat 3 --json | tail -n 1)"
    echo "sparse $isa $precision: density $(echo "$line" | field density), $(echo "$line" | field speedup_over_dense)x over its dense mode, rel L1 $(echo "$line" | field rel_l1)"
    echo "  $line"
done
echo "== 5. error next to speed (dense, N = 8192, 8 heads, D = 128, 16 threads; rel L1 on 8 sampled blocks vs Double on the unrounded inputs)"
for w in "llm --causal" "video" "random"; do
    for run in amx:bf16 avx512:bf16 avx512:fp32; do
        # shellcheck disable=SC2086
        line="$(SPARGE_CPU_ISA=${run%%:*} "$sparge" bench --workload $w --seq 8192 --heads 8 --head-dim 128 --dense --precision ${run#*:} --threads 16 --verify-sample 8 --repeat 3 --json | tail -n 1)"
        echo "$w $run: rel L1 $(echo "$line" | field rel_l1), $(echo "$line" | field seconds) s, $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
        echo "  $line"
        [ -n "$line" ] || fail "bench $w $run"
    done
done

echo "cpu-amx-device: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
