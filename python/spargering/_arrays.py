"""NumPy arrays and PyTorch tensors as sparge_tensor views (through DLPack, no copy), and new arrays of the
same kind on the same device."""
import ctypes

from . import _library as L

_DL_FLOAT, _DL_BFLOAT = 2, 4


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def is_torch(x):
    return type(x).__module__.startswith("torch")


def is_numpy(x):
    return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"


def describe(name, x):
    """`q [2, 4, 128, 64] float32 on cpu`: how a message names a tensor."""
    shape = list(getattr(x, "shape", ()))
    device = getattr(x, "device", "cpu")
    return f"{name} {shape} {getattr(x, 'dtype', type(x).__name__)} on {device}"


class View:
    """A 4-D array as a sparge_tensor: data pointer, shape and strides in elements, dtype, device; `keep`
    holds what must stay alive (the DLPack capsule) until the call returns."""

    def __init__(self, name, x, axes=(0, 1, 2, 3)):
        if not (is_numpy(x) or is_torch(x)):
            raise L.SpargeError(f"{name}: a {type(x).__module__}.{type(x).__name__}; spargering takes NumPy arrays "
                                "and PyTorch tensors")
        if len(x.shape) != 4:
            raise L.SpargeError(f"{describe(name, x)}: 4 axes expected ([B, H, N, D] or [B, N, H, D])")
        if is_torch(x) and x.requires_grad:
            x = x.detach()  # forward only: the library computes no gradient
        self.keep, dl = _dlpack(name, x)
        code, bits = dl.dtype.code, dl.dtype.bits
        dtypes = {(_DL_FLOAT, 32): L.DTYPE_F32, (_DL_BFLOAT, 16): L.DTYPE_BF16, (_DL_FLOAT, 16): L.DTYPE_F16}
        if (code, bits) not in dtypes or dl.dtype.lanes != 1:
            raise L.SpargeError(f"{describe(name, x)}: the dtype must be float32, bfloat16 or float16")
        shape = [dl.shape[i] for i in range(4)]
        if dl.strides:
            strides = [dl.strides[i] for i in range(4)]
        else:  # compact row-major
            strides = [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1]
        self.struct = L.Tensor()
        self.struct.data = (dl.data or 0) + dl.byte_offset
        for i, a in enumerate(axes):
            self.struct.shape[i], self.struct.strides[i] = shape[a], strides[a]
        self.struct.dtype = dtypes[(code, bits)]
        self.struct.device_type = dl.device.device_type
        self.struct.device_id = dl.device.device_id


def _dlpack(name, x):
    """(keep-alive, DLTensor) of x, without a copy. A read-only NumPy array, which DLPack cannot export,
    is read through its array interface instead (still no copy)."""
    try:
        capsule = x.__dlpack__()
    except BufferError:
        if not is_numpy(x):
            raise
        return x, _from_array_interface(x)
    address = _capsule_pointer(capsule, b"dltensor")
    if not address:
        raise L.SpargeError(f"{describe(name, x)}: its DLPack capsule holds no tensor")
    # DLManagedTensor starts with its DLTensor; the capsule (kept alive) frees it.
    return (capsule, x), _DLTensor.from_address(address)


def _from_array_interface(x):
    interface = x.__array_interface__
    dl = _DLTensor()
    dl.data = interface["data"][0]
    dl.device = _DLDevice(L.DEVICE_CPU, 0)
    dl.ndim = x.ndim
    dl.dtype = _DLDataType(_DL_FLOAT, x.dtype.itemsize * 8, 1) if x.dtype.kind == "f" and x.dtype.isnative else _DLDataType(0, 0, 1)
    dl._shape = (ctypes.c_int64 * x.ndim)(*x.shape)
    dl._strides = (ctypes.c_int64 * x.ndim)(*[s // x.itemsize for s in x.strides])
    dl.shape = dl._shape
    dl.strides = dl._strides
    return dl


def empty_like(x, shape, dtype=None, host=False):
    """A new array of shape `shape` of x's kind, on x's device (the CPU when `host`), of x's dtype (or float32
    for dtype="float32")."""
    if is_torch(x):
        import torch
        return torch.empty(shape, dtype=torch.float32 if dtype == "float32" else x.dtype,
                           device="cpu" if host else x.device)
    import numpy
    return numpy.empty(shape, dtype=numpy.float32 if dtype == "float32" else x.dtype)


def to_numpy(x):
    """A host NumPy copy of x, and how to turn such a copy back into x's kind and device (bfloat16 travels
    as its 16 bits)."""
    if not is_torch(x):
        return x, lambda a: a
    import torch
    dtype, device = x.dtype, x.device
    host = x.detach().cpu()
    if dtype == torch.bfloat16:
        return host.view(torch.int16).numpy(), lambda a: torch.from_numpy(a).view(torch.bfloat16).to(device)
    return host.numpy(), lambda a: torch.from_numpy(a).to(device)
