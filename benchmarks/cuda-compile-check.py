"""Compiles the Hopper attention kernel as the package does (NVRTC, then ptxas for sm_90a) on a machine
without a GPU, to read its registers, spills and ptxas's warnings (serialized wgmma), and to disassemble it.

    python3 cuda-compile-check.py KERNELS_DIR OUT_PREFIX DEFINE=VALUE ...
e.g. python3 benchmarks/cuda-compile-check.py Sources/SpargeCUDA/Kernels /tmp/k HEAD_DIM=128 BLOCK_K=128 \\
         KV_STAGES=3 QK_BF16=1 QK_INT8=1 PV_BF16=0
writes OUT_PREFIX.ptx and OUT_PREFIX.cubin and prints ptxas -v. The tools come from PyPI's wheels:
nvidia-cuda-nvrtc-cu12 (libnvrtc), nvidia-cuda-nvcc (ptxas) and nvidia-cuda-nvdisasm (nvdisasm -c
OUT_PREFIX.cubin); NVRTC_LIBRARY and PTXAS name them (defaults: on the library path and PATH).
"""
import ctypes, os, subprocess, sys

kernels, prefix, defines = sys.argv[1], sys.argv[2], sys.argv[3:]
nvrtc = ctypes.CDLL(os.environ.get("NVRTC_LIBRARY", "libnvrtc.so.12"))
source = "".join(open(os.path.join(kernels, name)).read()
                 for name in ("sparge_attention_common.cu", "sparge_attention_sm90.cu"))
program = ctypes.c_void_p()
assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"sparge_attention_sm90.cu", 0, None, None) == 0
options = [b"--gpu-architecture=compute_90a", b"--std=c++17", b"--generate-line-info"]
options += [f"--define-macro={d}".encode() for d in defines]
status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
size = ctypes.c_size_t()
nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
log = ctypes.create_string_buffer(size.value)
nvrtc.nvrtcGetProgramLog(program, log)
if log.value.strip():
    print(log.value.decode())
if status != 0:
    sys.exit("NVRTC failed")
nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
ptx = ctypes.create_string_buffer(size.value)
nvrtc.nvrtcGetPTX(program, ptx)
with open(prefix + ".ptx", "wb") as f:
    f.write(ptx.value)
run = subprocess.run([os.environ.get("PTXAS", "ptxas"), "-arch=sm_90a", "-v", prefix + ".ptx", "-o", prefix + ".cubin"],
                     capture_output=True, text=True)
print(run.stdout + run.stderr)
sys.exit(run.returncode)
