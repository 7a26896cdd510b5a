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

# The CPU the release binary's Swift code is compiled for. The attention kernels are compiled for every ISA
# and picked at run time whatever this says; the rest (mask prediction, summaries) gets no AVX without a
# target CPU. `native` is this machine; `x86-64` makes one binary for every x86-64 CPU (mask prediction ~6x
# slower), `skylake-avx512` or `haswell` one for AVX-512 or AVX2 machines. Override by setting
# SPARGE_TARGET_CPU before running the scripts.
SPARGE_TARGET_CPU="${SPARGE_TARGET_CPU:-native}"
export SPARGE_TARGET_CPU
