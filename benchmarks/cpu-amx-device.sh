#!/usr/bin/env bash
# AttentionPrecision.bf16 on AMX tiles, on the device machine's Xeon (16 cores, AMX-BF16), in one call:
#   bash benchmarks/cpu-amx-device.sh CARRY PYTHON [OUT]        (OUT: a folder for the log, default $OUT or ./cpu-amx-device)
# CARRY holds what was built elsewhere (no Swift there), on the development machine, from a clean tree of the
# commit (e.g. `git archive HEAD | tar -x -C /tmp/src`), in that tree:
#   swift build -c release --product sparge --build-path /tmp/amx-rel -Xswiftc -static-stdlib \
#       -Xswiftc -target-cpu -Xswiftc x86-64                 # a fresh build path
#   mkdir -p CARRY && gzip -c /tmp/amx-rel/release/sparge > CARRY/sparge.gz
#   cp -r ../shared/peers CARRY/peers
#   clang -O2 -static -pthread -ISources/CSpargeKernels/include -ISources/CSpargeKernels \
#       Sources/CSpargeKernels/*.c benchmarks/amx-check.c -lm -o CARRY/amx-check
# (the binary travels gzipped: 77 MB as built, over the 64 MiB a call may carry; out/ is ignored by git, so
# out/amx-carry can be carried). On the device:
#   timeout -k 10 560 bash benchmarks/cpu-amx-device.sh out/amx-carry python3 "$OUT/amx"
# PYTHON has PyTorch (the peer: CARRY/peers/torch_cpu_sdpa.py).
#
# 1. The kernels: amx-check, the AMX bf16 kernels against their scalar twin on fresh random shapes (two
#    threads at once), the same source with emulated tiles; then a visit's time on one core (the tiles' peak,
#    a configuration load, the kernels together and apart, blocks in the L2 and from the L3, and with K/Vᵀ and
#    Oᵀ off their cache lines as the driver had them before 0c1cdd6/3cc9a5d).
# 2. The dispatch: `bench` must name `amx` by default, and SPARGE_CPU_ISA=avx512 must still force AVX-512.
# 3. Correctness of whole passes: `verify --precision bf16` with the AMX set against the Double reference on
#    the rounded inputs (llm causal, video, random dense at D = 128, llm at D = 64, 2 ranks), and AVX-512's
#    bf16 (fp32 products on the same inputs) on one.
# 4. Rate against threads: dense N = 8192, 8 heads, D = 128, AMX bf16 and AVX-512 fp32 at 1 and 16 threads;
#    then the driver's time a visit around the kernels: `bench-kernel` (the pass alone) with the AMX kernels
#    and with kernels that compute nothing (SPARGE_BF16_TILES=bookkeeping), 1 and 16 threads: a pass's time
#    × threads / 131072 visits.
# 5. Speed: dense N = 32768, 8 heads, D = 128, 16 threads, AMX bf16 and AVX-512 fp32 against PyTorch SDPA
#    fp32 and bf16, alternating, 3 rounds, medians (benchmarks/cpu-vs-torch.sh); the error of that dense pass
#    on 4 sampled blocks; then sparse (TopK 0.1) against its own dense mode, AMX bf16 and AVX-512 fp32.
# 6. Error next to speed: `bench --dense --verify-sample 8` (relative L1 against Double on the unrounded
#    inputs) for AMX bf16 on the three workloads, N = 8192.
# About 6–7 minutes in all; every run has its own time limit, and the log holds what ran.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$(cd "$1" && pwd)" python="$2" out="${3:-${OUT:-cpu-amx-device}}" log=log.txt
source "$here/cpu-call.sh"

step "1. kernels against their scalar twin, then a visit's time on one core"
run 150 "$carry/amx-check" 200; rc=$?
[ $rc -eq 0 ] || fail "amx-check exited $rc"

step "2. dispatch"
line="$(run 60 "$sparge" bench --workload random --seq 2048 --heads 2 --head-dim 128 --dense --precision bf16 --threads 16 --json | tail -n 1)"
echo "default: $line"
[ "$(echo "$line" | field isa)" = amx ] || fail "the default kernel set is not amx"
line="$(SPARGE_CPU_ISA=avx512 run 60 "$sparge" bench --workload random --seq 2048 --heads 2 --head-dim 128 --dense --precision bf16 --threads 16 --json | tail -n 1)"
echo "forced avx512: $line"
[ "$(echo "$line" | field isa)" = avx512 ] || fail "SPARGE_CPU_ISA=avx512 did not force avx512"

step "3. verify --precision bf16 against the Double reference on the rounded inputs"
for run in "amx llm --causal 128" "amx video 128" "amx random --dense 128" "amx llm --causal 64" "avx512 random --dense 128"; do
    read -r isa w <<< "${run% *}"; d="${run##* }"
    # shellcheck disable=SC2086
    line="$(SPARGE_CPU_ISA=$isa run 90 "$sparge" verify --workload $w --seq 3000 --heads 4 --kv-heads 2 --head-dim $d --precision bf16 --threads 16 --json | tail -n 1)"
    echo "verify $isa bf16 $w D=$d: rel L1 to masked reference $(echo "$line" | field rel_l1_vs_masked_reference), passed $(echo "$line" | field passed)"
    echo "$line" | grep -q '"passed": true' || fail "verify $isa bf16 $w D=$d: $line"
done
verified_amx_two_ranks

step "4. rate against threads (dense N = 8192, 8 heads, D = 128)"
for run in amx:bf16 avx512:fp32; do
    for t in 1 16; do
        line="$(SPARGE_CPU_ISA=${run%%:*} run 120 "$sparge" bench --workload random --seq 8192 --heads 8 --head-dim 128 --dense \
            --precision ${run#*:} --threads $t --repeat $([ $t = 1 ] && echo 1 || echo 3) --json | tail -n 1)"
        echo "$run threads $t: $(echo "$line" | field gflops_dense_equiv) GFLOP/s, $(echo "$line" | field seconds) s (ring $(echo "$line" | field ring_seconds) s, attend $(echo "$line" | field compute_seconds) s), peak $(echo "$line" | field peak_gflops)"
    done
done

for t in 1 16; do
    for tiles in amx bookkeeping; do
        standin="$([ $tiles = bookkeeping ] && echo bookkeeping)"  # empty: the AMX kernels
        line="$(SPARGE_BF16_TILES=$standin SPARGE_CPU_ISA=amx run 120 "$sparge" bench-kernel \
            --backend cpu --workload random --seq 8192 --heads 8 --head-dim 128 --dense --precision bf16 --threads $t \
            --repeat 3 --json | tail -n 1)"
        ms="$(echo "$line" | field kernel_ms)"
        echo "bench-kernel bf16 $tiles threads $t: $ms ms a pass (median of 3), $(python3 -c "import sys
try: print('%.2f' % (float(sys.argv[1]) * 1e3 * int(sys.argv[2]) / 131072))
except ValueError: print('?')" "$ms" $t) µs a visit on each thread; $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
    done
done

step "5. speed: dense N = 32768, 8 heads, D = 128, 16 threads, against PyTorch in the same run"
TORCH_SDPA="$carry/peers/torch_cpu_sdpa.py" RUNS="amx:bf16 avx512:fp32" \
    run 300 bash "$here/cpu-vs-torch.sh" "$sparge" "$python" 3 32768 8 16 || fail "cpu-vs-torch.sh"
line="$(SPARGE_CPU_ISA=amx run 60 "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 --dense --precision bf16 --threads 16 --verify-sample 4 --repeat 1 --json | tail -n 1)"
echo "dense 32K amx bf16: rel L1 $(echo "$line" | field rel_l1) on 4 sampled blocks vs Double on the unrounded inputs, $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
for isa in amx avx512; do
    precision=$([ $isa = amx ] && echo bf16 || echo fp32)
    line="$(SPARGE_CPU_ISA=$isa run 120 "$sparge" bench --workload random --seq 32768 --heads 8 --head-dim 128 --theta -1 --topk 0.1 --precision $precision --threads 16 --compare-dense --repeat 3 --json | tail -n 1)"
    echo "sparse $isa $precision: density $(echo "$line" | field density), $(echo "$line" | field speedup_over_dense)x over its dense mode ($(echo "$line" | field seconds) s against $(echo "$line" | field dense_seconds) s; ring $(echo "$line" | field ring_seconds) s, attend $(echo "$line" | field compute_seconds) s)"
    echo "  $line"
done

step "6. error next to speed (dense, N = 8192, 8 heads, D = 128, 16 threads; rel L1 on 8 sampled blocks vs Double on the unrounded inputs)"
for w in "llm --causal" "video" "random"; do
    # shellcheck disable=SC2086
    line="$(SPARGE_CPU_ISA=amx run 60 "$sparge" bench --workload $w --seq 8192 --heads 8 --head-dim 128 --dense --precision bf16 --threads 16 --verify-sample 8 --repeat 3 --json | tail -n 1)"
    echo "$w amx:bf16: rel L1 $(echo "$line" | field rel_l1), $(echo "$line" | field seconds) s, $(echo "$line" | field gflops_dense_equiv) GFLOP/s"
    [ -n "$line" ] || fail "bench $w amx:bf16"
done

date -u
echo "cpu-amx-device: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
