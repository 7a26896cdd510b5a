#!/usr/bin/env bash
# spargering with PyTorch CUDA tensors on a GPU machine, in one call (issue 16's device row):
# correctness against the CPU (masks bit for bit), the trace of one call (no host copy of Q, K, V), the call's
# time next to `sparge bench --backend cuda` on the same shape, and the Python tests that need a GPU.
#
# Build here (no Swift there), into a carried folder:
#   for p in SpargeC sparge; do swift build -c release --product $p --build-path /tmp/gpu-lib \
#       -Xswiftc -target-cpu -Xswiftc skylake-avx512 -Xswiftc -static-stdlib; done
#   mkdir -p .build/gpu-python && cp /tmp/gpu-lib/release/{libSpargeC.so,sparge} .build/gpu-python/
# then run `bash benchmarks/gpu-python.sh` there with .build/gpu-python carried. Logs to $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/gpu-python-out}"; mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-python.log") 2>&1
date -u; nvidia-smi -L
export SPARGE_LIBRARY="${SPARGE_LIBRARY:-$PWD/.build/gpu-python/libSpargeC.so}" PYTHONUNBUFFERED=1
bin="${SPARGE_BIN:-$PWD/.build/gpu-python/sparge}"
timeout -k 10 420 python3 benchmarks/gpu-python.py --sparge "$bin"; echo "gpu-python.py rc=$?"
if python3 -c "import pytest" 2>/dev/null; then
    SPARGE_BINARY="$bin" timeout -k 10 120 python3 -m pytest -q -rs python/tests/test_attention.py -k cuda
    echo "pytest rc=$?"
else
    echo "pytest: not installed here; gpu-python.py's checks above are the GPU ones"
fi
