"""libSpargeC through ctypes: finding and loading it, and the structs of sparge.h."""
import ctypes
import os

ABI_VERSION = 2
LIBRARY_NAME = "libSpargeC.so"

OK, INVALID_ARGUMENT, UNSUPPORTED, MPI_FAILURE, BACKEND = 0, 1, 2, 3, 4
DTYPE_F32, DTYPE_BF16, DTYPE_F16 = 0, 1, 2
PRECISION_DEFAULT, PRECISION_FP32, PRECISION_BF16, PRECISION_FP16, PRECISION_INT8 = 0, 1, 2, 3, 4
DEVICE_CPU, DEVICE_CUDA = 1, 2
ENGINE_CPU, ENGINE_CUDA = 0, 1
SELECT_CDF, SELECT_TOPK, SELECT_DENSE = 0, 1, 2
CONTEXT_TRACE = 1


class SpargeError(ValueError):
    """An error of the library (or of the arguments given to it), raised on every rank of a communicator.

    `status` is sparge.h's code: 1 invalid argument, 2 unsupported (e.g. CUDA tensors in this build),
    3 MPI, 4 compute backend."""

    def __init__(self, message, status=INVALID_ARGUMENT):
        super().__init__(message)
        self.status = status


class Tensor(ctypes.Structure):
    """sparge_tensor: a strided [B, H, N, D] view of a caller's memory."""
    _fields_ = [("data", ctypes.c_void_p), ("shape", ctypes.c_int64 * 4), ("strides", ctypes.c_int64 * 4),
                ("dtype", ctypes.c_int32), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("reserved", ctypes.c_int32)]


class Params(ctypes.Structure):
    """sparge_params."""
    _fields_ = [("selection", ctypes.c_int32), ("cdf_threshold", ctypes.c_float), ("topk", ctypes.c_float),
                ("sim_threshold", ctypes.c_float), ("pv_threshold", ctypes.c_float), ("scale", ctypes.c_float),
                ("causal", ctypes.c_int32), ("sink", ctypes.c_int32), ("block_q", ctypes.c_int32),
                ("block_k", ctypes.c_int32), ("kv_dtype", ctypes.c_int32), ("keep_mask", ctypes.c_int32),
                ("precision", ctypes.c_int32)]


class Statistics(ctypes.Structure):
    """sparge_statistics."""
    _fields_ = [("computed_blocks", ctypes.c_int64), ("block_area", ctypes.c_int64), ("density", ctypes.c_double),
                ("bytes_sent", ctypes.c_int64), ("dense_ring_bytes", ctypes.c_int64),
                ("skipped_pv_blocks", ctypes.c_int64), ("seq_len", ctypes.c_int64),
                ("summary_seconds", ctypes.c_double), ("mask_seconds", ctypes.c_double),
                ("ring_seconds", ctypes.c_double), ("total_seconds", ctypes.c_double)]

    def as_dict(self):
        return {name: getattr(self, name) for name, _ in self._fields_}


def candidates():
    """Where the library is looked for, in order: $SPARGE_LIBRARY; the checkout this package was installed
    from, or sits in, at .build/release (what `launch/setup.sh` builds) and then .build/debug; the loader's
    own search path."""
    if os.environ.get("SPARGE_LIBRARY"):
        return [os.environ["SPARGE_LIBRARY"]]
    checkouts = []
    try:
        from ._checkout import CHECKOUT
        if CHECKOUT:
            checkouts.append(CHECKOUT)
    except ImportError:
        pass
    checkouts.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    found = [os.path.join(c, ".build", kind, LIBRARY_NAME) for c in checkouts for kind in ("release", "debug")]
    return found + [LIBRARY_NAME]


_library = None


def library():
    """The loaded libSpargeC, its functions typed; loaded once."""
    global _library
    if _library is None:
        _library = _load()
    return _library


def _load():
    tried = []
    for path in candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path} (missing)")
            continue
        try:
            # RTLD_GLOBAL: Open MPI's components resolve symbols of libmpi, which the library brings in.
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError as e:
            tried.append(f"{path} ({e})")
    else:
        raise SpargeError("libSpargeC.so not found: build it with `bash launch/setup.sh` in the SpargeRing "
                          "checkout or set SPARGE_LIBRARY to its path; tried " + "; ".join(tried), UNSUPPORTED)
    lib.sparge_abi_version.restype = ctypes.c_int32
    if lib.sparge_abi_version() != ABI_VERSION:
        raise SpargeError(f"{path} speaks C interface version {lib.sparge_abi_version()}, this package "
                          f"{ABI_VERSION}: rebuild the library or reinstall the package", UNSUPPORTED)
    error = (ctypes.c_char_p, ctypes.c_size_t)
    P = ctypes.POINTER
    _type(lib.sparge_context_create, ctypes.c_uint64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
          ctypes.c_int32, P(ctypes.c_void_p), *error)
    lib.sparge_context_destroy.argtypes = [ctypes.c_void_p]
    lib.sparge_context_destroy.restype = None
    for name in ("sparge_context_rank", "sparge_context_size"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_int32
    _type(lib.sparge_forward, ctypes.c_void_p, P(Params), P(Tensor), P(Tensor), P(Tensor), P(Tensor),
          ctypes.c_void_p, P(Statistics), ctypes.c_char_p, *error)
    _type(lib.sparge_context_mask, ctypes.c_void_p, P(ctypes.c_int64), P(ctypes.c_int64), P(ctypes.c_int64),
          P(ctypes.c_int64), ctypes.c_void_p, ctypes.c_size_t, *error)
    _type(lib.sparge_shard_ranges, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, P(Params), P(ctypes.c_int64),
          ctypes.c_int32, P(ctypes.c_int32), *error)
    lib.path = path
    return lib


def _type(function, *argtypes):
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int32


def call(function, *arguments):
    """Calls a fallible sparge.h function; raises SpargeError with its message unless it returns SPARGE_OK."""
    message = ctypes.create_string_buffer(4096)
    status = function(*arguments, message, len(message))
    if status != OK:
        raise SpargeError(message.value.decode("utf-8", "replace"), status)
