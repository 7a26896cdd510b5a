#!/usr/bin/env bash
# Prepares this machine and builds the release `sparge`.
#
#   bash launch/setup.sh              install what is missing, then build .build/release/sparge
#   bash launch/setup.sh --no-build   install what is missing only (launch/test.sh uses this)
#
# Installs, on Debian/Ubuntu, only when missing: OpenMPI (libopenmpi-dev, openmpi-bin) and pkg-config,
# through apt-get (with sudo unless already root). Swift itself must be installed (on PATH or in /opt/swift).
#
# Environment:
#   SPARGE_TARGET_CPU  CPU the Swift code is compiled for (default `x86-64` on x86-64: one binary for every
#                      x86-64 CPU, its hot C kernels picked per ISA at run time; `native` elsewhere).
#                      `native`, `skylake-avx512` and `haswell` also work; this Swift rejects the
#                      `x86-64-v3` style names.
#   SPARGE_STATIC=1    link the Swift runtime statically (-static-stdlib), to carry the binary to a machine
#                      without Swift (it still needs OpenMPI there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/env.sh

build=1
case "${1:-}" in
    --no-build) build=0 ;;
    "") ;;
    *) echo "usage: bash launch/setup.sh [--no-build]" >&2; exit 2 ;;
esac

have_openmpi() {
    command -v mpirun >/dev/null 2>&1 \
        && command -v pkg-config >/dev/null 2>&1 \
        && pkg-config --exists ompi-c
}

if have_openmpi; then
    echo "setup: OpenMPI found ($(mpirun --version 2>/dev/null | head -n 1))"
else
    echo "setup: installing OpenMPI and pkg-config"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "setup: error: OpenMPI is missing and this user is not root and has no sudo;" \
            "install libopenmpi-dev, openmpi-bin and pkg-config" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: error: OpenMPI is missing and there is no apt-get; install OpenMPI (with ompi-c.pc)" \
            "and pkg-config with this system's package manager" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y libopenmpi-dev openmpi-bin pkg-config
    if ! have_openmpi; then
        echo "setup: error: OpenMPI still not usable after installing (mpirun or pkg-config ompi-c missing)" >&2
        exit 1
    fi
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: error: swift is not on PATH (nor in /opt/swift/usr/bin); install a Swift 6 toolchain" >&2
    exit 1
fi

[ "$build" -eq 1 ] || exit 0

flags=(-c release -Xswiftc -target-cpu -Xswiftc "$SPARGE_TARGET_CPU")
if [ "${SPARGE_STATIC:-0}" = 1 ]; then
    flags+=(-Xswiftc -static-stdlib)
fi
echo "setup: swift build ${flags[*]}"
swift build "${flags[@]}"
echo "setup: built $(swift build "${flags[@]}" --show-bin-path)/sparge (target CPU: $SPARGE_TARGET_CPU)"
