# Sourced by the other launch scripts (and handy in a shell: `source launch/env.sh`).
#
# - OpenMPI refuses to start as root unless both OMPI_ALLOW_RUN_AS_ROOT variables are set; they are set only
#   when running as root (containers, CI), never for ordinary users.
# - Swift is put on PATH from /opt/swift when it is installed there but not on PATH.
#
# In a container that refuses `process_vm_readv` (no ptrace rights), OpenMPI's shared-memory transport fails
# on large messages with "Read -1, expected …, errno = 1"; then also
#   export OMPI_MCA_btl_vader_single_copy_mechanism=none
# (the tests set it themselves).

if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1
    export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

# The CPU the release binary's Swift code is compiled for. The hot code is C compiled for every ISA and picked
# at run time whatever this says (the attention tiles, int8's kernels, the mask's compressed scores), so on
# x86-64 the default is `x86-64`: one binary for every x86-64 CPU, as fast as one built for this machine
# (BENCHMARKS.md). `native` is this machine; `skylake-avx512` or `haswell` also work. Elsewhere (arm64) the
# default is `native`. Override by setting SPARGE_TARGET_CPU before running the scripts.
if [ -z "${SPARGE_TARGET_CPU:-}" ]; then
    if [ "$(uname -m)" = x86_64 ]; then SPARGE_TARGET_CPU=x86-64; else SPARGE_TARGET_CPU=native; fi
fi
export SPARGE_TARGET_CPU
