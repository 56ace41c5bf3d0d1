"""Addresses of caller buffers, and buffers over deft's own memory.

A float32 buffer is anything with the buffer protocol whose items are
4-byte floats and which is C-contiguous (numpy arrays, array.array("f"),
memoryviews, ctypes arrays), or a torch tensor (dense, CPU, float32,
contiguous). Nothing is copied: deft reads and writes the caller's memory.
"""
import ctypes

_FLOAT_FORMATS = ("f", "<f", "=f", "@f")


def _torch_address(t, n, name):
    import torch
    if t.layout != torch.strided:
        raise ValueError("%s: a sparse tensor (layout %s); pass a dense "
                         "tensor" % (name, t.layout))
    if t.device.type != "cpu":
        raise ValueError("%s: on device %s; deft works on CPU tensors"
                         % (name, t.device))
    if t.dtype != torch.float32:
        raise ValueError("%s: dtype %s; deft needs torch.float32" % (name, t.dtype))
    if not t.is_contiguous():
        raise ValueError("%s: not contiguous; pass t.contiguous()" % name)
    if n is not None and t.numel() != n:
        raise ValueError("%s: %d floats, expected %d" % (name, t.numel(), n))
    return t.data_ptr(), t.numel(), t


def _mv_address(mv, name, writable):
    """(address, keepalive) of a C-contiguous memoryview's bytes: the
    caller's own memory, or a copy of a read-only buffer that deft only
    reads; None for an empty one."""
    if mv.nbytes == 0:
        return None, mv
    if mv.readonly:
        if writable:
            raise ValueError("%s: read-only buffer; deft writes into it" % name)
        keep = (ctypes.c_char * mv.nbytes).from_buffer_copy(mv)
        return ctypes.addressof(keep), keep
    arr = (ctypes.c_char * mv.nbytes).from_buffer(mv.cast("B"))
    return ctypes.addressof(arr), (arr, mv)


def float_address(obj, n, name, writable=False):
    """(address, count, keepalive) of obj's float32 items; n is the count
    required (None: any).
    Raises ValueError naming `name` when obj is not such a buffer."""
    if type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr"):
        return _torch_address(obj, n, name)
    try:
        mv = memoryview(obj)
    except TypeError:
        raise ValueError("%s: a %s is not a float32 buffer (numpy array, torch "
                         "tensor, array.array('f'), memoryview)"
                         % (name, type(obj).__name__)) from None
    if mv.format not in _FLOAT_FORMATS or mv.itemsize != 4:
        raise ValueError("%s: items of format %r; deft needs float32 ('f')"
                         % (name, mv.format))
    if not mv.c_contiguous:
        raise ValueError("%s: not C-contiguous" % name)
    count = mv.nbytes // 4
    if n is not None and count != n:
        raise ValueError("%s: %d floats, expected %d" % (name, count, n))
    addr, keep = _mv_address(mv, name, writable)
    return addr, count, keep


def bytes_address(obj, name, writable=False):
    """(address, nbytes, keepalive) of any C-contiguous buffer."""
    if type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr"):
        if not obj.is_contiguous() or obj.device.type != "cpu":
            raise ValueError("%s: needs a contiguous CPU tensor" % name)
        return obj.data_ptr(), obj.numel() * obj.element_size(), obj
    mv = memoryview(obj)
    if not mv.c_contiguous:
        raise ValueError("%s: not C-contiguous" % name)
    addr, keep = _mv_address(mv, name, writable)
    return addr, mv.nbytes, keep


def float_view(address, n, owner=None):
    """A writable memoryview of n float32 at address (deft's memory). The
    view keeps `owner` alive, so the memory outlives every view of it."""
    if n == 0 or not address:
        return memoryview(bytearray()).cast("f")

    class _Floats(ctypes.c_float * n):
        pass

    arr = _Floats.from_address(address)
    arr._owner = owner
    return memoryview(arr).cast("B").cast("f")


def bytes_view(address, nbytes):
    """A writable memoryview of nbytes bytes at address (a callback's
    argument, valid during the callback only)."""
    if nbytes == 0 or not address:
        return memoryview(bytearray())
    return memoryview((ctypes.c_char * nbytes).from_address(address)).cast("B")
