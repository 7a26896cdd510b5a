#!/usr/bin/env bash
# Every device check of the project in one call on the GPU machine (its H200 and its 16-core Xeon):
#   1. benchmarks/gpu-resident.sh: GPU correctness (gpu-check.sh test) and the resident pass, 32K and 1M
#      (the peer too when a copy of ../shared/peers lies beside the binary);
#   2. benchmarks/gpu-python.sh: spargering with PyTorch CUDA tensors;
#   3. benchmarks/cpu-device.sh: the CPU kernel sets (AVX-512, AVX2, portable) on the Xeon against PyTorch
#      (skipped with DEVICE_CPU=0).
# Needs, in $BIN_DIR (default .build/device): sparge.gz and libSpargeC.so.gz (a static, portable release
# build: -Xswiftc -static-stdlib -Xswiftc -target-cpu -Xswiftc x86-64, gzipped to travel), and gpu-check.sh,
# gpu_bench_torch.py, gpu-resident.sh and gpu-call.sh copied beside them. Logs to $OUT (default ./device-out).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN_DIR="${BIN_DIR:-$PWD/.build/device}"
OUT="${OUT:-$PWD/device-out}"; mkdir -p "$OUT"
bin=/tmp/sparge-device; mkdir -p "$bin"
for f in sparge libSpargeC.so; do gunzip -c "$BIN_DIR/$f.gz" > "$bin/$f"; done
chmod +x "$bin/sparge"
export SPARGE_BIN="$bin/sparge"
echo "=== 1. GPU: resident pass ($(date -u +%H:%M:%S))"
OUT="$OUT/gpu" timeout -k 10 420 bash "$BIN_DIR/gpu-resident.sh" > /dev/null 2>&1; echo "gpu-resident.sh rc=$?"
grep -E "gpu-check: |FAILED|last pass" "$OUT/gpu/resident.log" | head -20
echo "=== 2. GPU: Python with CUDA tensors ($(date -u +%H:%M:%S))"
mkdir -p .build/gpu-python && cp "$bin/sparge" "$bin/libSpargeC.so" .build/gpu-python/
OUT="$OUT/python" timeout -k 10 300 bash benchmarks/gpu-python.sh > /dev/null 2>&1; echo "gpu-python.sh rc=$?"
tail -n 25 "$OUT/python/gpu-python.log"
[ "${DEVICE_CPU:-1}" = 0 ] && { echo "=== 3. CPU kernel sets: skipped (DEVICE_CPU=0)"; date -u; exit 0; }
echo "=== 3. CPU kernel sets on the Xeon ($(date -u +%H:%M:%S))"
timeout -k 10 300 bash benchmarks/cpu-device.sh "$bin/sparge" python3 "$OUT/cpu" > /dev/null 2>&1; echo "cpu-device.sh rc=$?"
tail -n 30 "$OUT/cpu/log.txt"
date -u
