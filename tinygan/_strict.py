"""A strict emulation of a device backend, for tests on machines without a GPU.

``StrictArray`` wraps a NumPy array and behaves like ``cupy.ndarray`` wherever
the difference could change a result on a GPU or hide a cost there:

* no implicit conversion to host memory (``np.asarray``, ``float()``,
  ``int()``, ``bool()``, ``.item()``, ``.tolist()``, iteration): the only way
  out is the explicit ``.get()`` that ``tinygan.backend.to_host`` uses, and
  every such transfer is counted in ``transfers``;
* only the functions, array methods and keyword arguments that the installed
  ``cupy`` package has. The tables are read from the package itself (``dir``,
  ``inspect.signature``, and for CuPy's Cython methods and ufuncs the
  signature line Cython embeds in their docstrings), once per process; see
  :func:`cupy_api`. A NumPy function reached through ``__array_function__``
  (``np.pad(a)``) runs only if CuPy has it too; otherwise it fails naming it;
* elementwise results (ufuncs, operators) are C-contiguous, as CuPy's always
  are, where NumPy keeps its input's memory order;
* reductions return 0-d arrays, never Python or NumPy scalars;
* integer-array indices out of range raise ``IndexError`` naming the bad
  range, in ``[]``, ``take`` and assignments: CuPy would wrap them silently
  (NumPy raises, so code tested only on NumPy never sees the difference);
* ``matmul`` into a non-C-contiguous ``out=`` is done as CuPy does it, into a
  C-contiguous temporary and then a copy, and counted in
  ``matmul_out_copies`` / ``matmul_out_copy_bytes`` so the cost is visible;
* every device operation is counted in ``ops`` by kind, as CuPy would
  launch kernels (``python -m tinygan.bench --ops`` prints them per step).

``module`` stands in for the array module: ``module.exp(a)`` checks the name
and keywords against CuPy, unwraps its arguments, calls NumPy, and wraps the
results again.

Without the cupy package installed the emulation still refuses host
transfers and keeps CuPy's layouts and index checks, but cannot check names
and keywords (``cupy_api()`` is then ``None``).
"""
from __future__ import annotations

import collections
import types

import numpy as np

from ._cupy_api import CupyAPIError, _ELEMENTWISE_FUNCTIONS, _table, cupy_api

__all__ = ["StrictArray", "module", "HostTransferError", "CupyAPIError", "cupy_api", "device_memory", "ops", "reset_ops",
           "transfers", "reset_transfers", "matmul_out_copies", "matmul_out_copy_bytes"]


class HostTransferError(TypeError):
    """A device array was converted to host memory without an explicit transfer."""


transfers = 0  # explicit device-to-host copies (StrictArray.get) since the last reset
matmul_out_copies = 0  # matmuls into a non-contiguous out=: a temporary plus a copy on CuPy
matmul_out_copy_bytes = 0


#: Device operations since the last :func:`reset_ops`, by kind, as CuPy would launch them: one kernel
#: per array-module call, ufunc, operator, in-place operator, setitem, gather, copy and transfer; none
#: for calls that only make a view of the same memory, nor for ``empty`` (memory from the pool). The
#: patterns CuPy expands into extra kernels are counted apart, under names starting "matmul:".
ops = collections.Counter()
_VIEW_CALLS = {"reshape", "transpose", "swapaxes", "broadcast_to", "expand_dims", "squeeze", "moveaxis",
               "as_strided", "ravel", "view", "asarray", "ascontiguousarray", "diagonal"}
_ALLOCATIONS = {"empty", "empty_like"}


def reset_ops():
    """Set the device-operation counts back to zero."""
    ops.clear()


def _count(kind, name, result=None, source=None):
    """Count one operation of ``kind``, unless ``name`` made a view of ``source``'s memory or only allocated."""
    if name in _ALLOCATIONS:
        return
    if name in _VIEW_CALLS and isinstance(result, np.ndarray) and isinstance(source, np.ndarray) \
            and np.may_share_memory(result, source):
        return
    ops[kind] += 1


def _first_array(args):
    for a in args:
        if isinstance(a, np.ndarray):
            return a
        if isinstance(a, (list, tuple)):
            inner = _first_array(a)
            if inner is not None:
                return inner
    return None


def _gemm_ready(m):
    """cuBLAS takes a matrix (or a stack of them) as it is when its last two axes are C- or F-ordered."""
    return m.ndim < 2 or m.flags.c_contiguous or m.swapaxes(-1, -2).flags.c_contiguous


def _count_matmul_patterns(a, b, out=None):
    """The extra kernels CuPy's matmul launches: pointer-array batched GEMM for a broadcast operand,
    a contiguous copy of an operand cuBLAS cannot read in place, a copy out of a temporary."""
    a, b = np.asarray(a), np.asarray(b)
    if (a.ndim > 2 or b.ndim > 2) and a.shape[:-2] != b.shape[:-2]:
        ops["matmul: broadcast operand (pointer-array batched GEMM)"] += 3
    for m in (a, b):
        if not _gemm_ready(m):
            ops["matmul: non-contiguous operand copied"] += 1
    if out is not None and not out.flags.c_contiguous:
        ops["matmul: non-contiguous out= (temporary and copy)"] += 1


def reset_transfers():
    """Set the transfer counter (and the hidden-copy counters) back to zero."""
    global transfers, matmul_out_copies, matmul_out_copy_bytes
    transfers = matmul_out_copies = matmul_out_copy_bytes = 0


# ---- wrapping ------------------------------------------------------------------------

def _unwrap(x):
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def device_memory(a):
    """The NumPy array behind a StrictArray (the emulated device memory itself, no transfer counted),
    for collectives that run in device memory as NCCL does (tinygan.distributed); others as they are."""
    return a._a if isinstance(a, StrictArray) else a


def _wrap(x):
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, np.generic):  # CuPy reductions give 0-d arrays, never host scalars
        return StrictArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _contiguous(x):
    """CuPy allocates every elementwise result C-contiguous; NumPy follows its inputs' order."""
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        return np.ascontiguousarray(x)
    if isinstance(x, tuple):
        return tuple(_contiguous(v) for v in x)
    return x


def _refuse(what):
    def method(self, *args, **kwargs):
        raise HostTransferError(
            f"{what} on a device array would copy it to host memory; CuPy would synchronise "
            "here. Use tinygan.backend.to_host() at a logging point instead.")
    return method


def _check_range(idx, size, axis):
    """Integer indices must lie in [-size, size): CuPy would wrap the others silently."""
    if idx.size == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < -size or hi >= size:
        bad = lo if lo < -size else hi
        raise IndexError(f"index {bad} is out of range for axis {axis} of size {size} "
                         f"(valid: -{size}..{size - 1}; indices span {lo}..{hi}): CuPy would wrap "
                         "it silently on a GPU")


def _integer_array(p):
    if isinstance(p, list):
        p = np.asarray(p)
    return p if isinstance(p, np.ndarray) and p.dtype.kind in "iu" else None


def _check_key(shape, key):
    """Bounds of the integer-array parts of an (unwrapped) index, axis by axis."""
    parts = key if isinstance(key, tuple) else (key,)

    def consumes(p):
        if p is None or p is Ellipsis:
            return 0
        if isinstance(p, np.ndarray) and p.dtype == bool:
            return p.ndim
        return 1
    axis = 0
    for i, p in enumerate(parts):
        if p is Ellipsis:
            axis = len(shape) - sum(consumes(q) for q in parts[i + 1:])
            continue
        idx = _integer_array(p)
        if idx is not None and axis < len(shape):
            _check_range(idx, shape[axis], axis)
        axis += consumes(p)


def _take(a, indices, axis=None, out=None):
    idx = _integer_array(indices)
    if idx is None and isinstance(indices, (int, np.integer)):
        idx = np.asarray(indices)
    if idx is not None:
        _check_range(idx, a.size if axis is None else a.shape[axis], 0 if axis is None else axis)
    return np.take(a, indices, axis=axis, out=out)


def _matmul(a, b, out=None, **kwargs):
    """CuPy writes a product into a non-contiguous out= through a C-contiguous temporary."""
    global matmul_out_copies, matmul_out_copy_bytes
    _count_matmul_patterns(a, b, out)
    if out is None or out.flags.c_contiguous:
        return np.matmul(a, b, out=out, **kwargs)
    product = np.matmul(a, b, **kwargs)
    out[...] = product
    matmul_out_copies += 1
    matmul_out_copy_bytes += product.nbytes
    return out


# functions whose NumPy version is replaced by one that behaves as CuPy's
_SPECIAL = {"take": _take, "matmul": _matmul}


class StrictArray:
    """A NumPy array pretending to live on a device (see the module docstring)."""

    __slots__ = ("_a",)
    __array_priority__ = 1000

    def __init__(self, a: np.ndarray):
        self._a = a

    # explicit transfer, as cupy.ndarray.get()
    def get(self):
        global transfers
        transfers += 1
        ops["transfer to host"] += 1
        return self._a.copy()

    __array__ = _refuse("np.asarray()")
    __float__ = _refuse("float()")
    __int__ = _refuse("int()")
    __index__ = _refuse("int()")
    __bool__ = _refuse("bool() (an `if` on an array?)")
    __complex__ = _refuse("complex()")
    __iter__ = _refuse("iterating")
    item = _refuse(".item()")
    tolist = _refuse(".tolist()")

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"StrictArray(shape={self._a.shape}, dtype={self._a.dtype})"

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: StrictArray(self._a.T))

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__ & co: they would bypass __array__
            raise AttributeError(name)
        table = _table("ndarray")
        if table is not None and name not in table.names:
            raise CupyAPIError(f"cupy.ndarray has no attribute {name!r} (numpy.ndarray has): "
                               "CuPy would raise AttributeError on a GPU")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        if name == "take":
            return lambda indices, axis=None, out=None: _wrap(_take(self._a, _unwrap(indices), axis, _unwrap(out)))

        def method(*a, **k):
            if table is not None:
                table.check(name, k)
            out = attr(*_unwrap(a), **_unwrap(k))
            _count(f"ndarray.{name}", name, out, self._a)
            return _wrap(out)
        return method

    def __getitem__(self, key):
        key = _unwrap(key)
        _check_key(self._a.shape, key)
        out = self._a[key]
        if isinstance(out, np.ndarray) and not np.may_share_memory(out, self._a):
            ops["getitem (gather)"] += 1  # basic indexing is a view; integer arrays gather
        return _wrap(out)

    def __setitem__(self, key, value):
        key = _unwrap(key)
        _check_key(self._a.shape, key)
        ops["setitem"] += 1
        self._a[key] = _unwrap(value)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # CuPy's ndarray takes NumPy ufuncs through here too, if CuPy has the same ufunc
        table = _table("")
        if table is not None:
            table.check(ufunc.__name__, kwargs)
            if method != "__call__" and not hasattr(getattr(table.namespace, ufunc.__name__), method):
                raise CupyAPIError(f"cupy.{ufunc.__name__}.{method} does not exist in cupy")
        out = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        ops[ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"] += 1
        return _wrap(_contiguous(out) if "out" not in kwargs else out)

    def __array_function__(self, func, types, args, kwargs):
        # CuPy's ndarray answers a NumPy function only with its own function of the same name
        path = func.__module__.split(".")[1:] if func.__module__ else []
        path = ".".join(p for p in path if not p.startswith("_"))
        namespace = module
        for part in filter(None, path.split(".")):
            namespace = getattr(namespace, part)
        try:
            replacement = getattr(namespace, func.__name__)
        except CupyAPIError:
            raise CupyAPIError(f"numpy.{path + '.' if path else ''}{func.__name__}() was called on a "
                               f"device array, and cupy has no {func.__name__}: on a GPU this call "
                               "would fail. Use a function that NumPy and CuPy both have.") from None
        return replacement(*args, **kwargs)


def _operator(name):
    kind = f"operator {name.strip('_')}"

    def op(self, *args):
        ops[kind] += 1
        if name in ("__matmul__", "__rmatmul__"):
            _count_matmul_patterns(*((self._a, _unwrap(args[0])) if name == "__matmul__" else (_unwrap(args[0]), self._a)))
        return _wrap(_contiguous(getattr(self._a, name)(*_unwrap(args))))
    return op


def _inplace(name):
    kind = f"in-place {name.strip('_')}"

    def op(self, other):
        ops[kind] += 1
        getattr(self._a, name)(_unwrap(other))
        return self
    return op


for _n in ("add sub mul truediv floordiv mod pow matmul and or xor lshift rshift").split():
    setattr(StrictArray, f"__{_n}__", _operator(f"__{_n}__"))
    setattr(StrictArray, f"__r{_n}__", _operator(f"__r{_n}__"))
    setattr(StrictArray, f"__i{_n}__", _inplace(f"__i{_n}__"))
for _n in ("neg pos abs invert lt le gt ge eq ne").split():
    setattr(StrictArray, f"__{_n}__", _operator(f"__{_n}__"))
StrictArray.__hash__ = None


class _Module(types.ModuleType):
    """NumPy, seen through StrictArray and CuPy's API: names and keywords CuPy lacks are refused."""

    def __init__(self, inner, path=""):
        super().__init__(f"tinygan.strict<{inner.__name__}>")
        self._inner = inner
        self._path = path

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "ndarray":
            return StrictArray
        table = _table(self._path)
        if table is not None and name not in table.names:
            table.check(name, {})  # raises, naming it
        attr = getattr(self._inner, name)
        if isinstance(attr, types.ModuleType):
            return _Module(attr, f"{self._path}.{name}" if self._path else name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (np.float32), constants (np.pi, np.newaxis)
        impl = _SPECIAL.get(name, attr) if not self._path else attr
        elementwise = isinstance(attr, np.ufunc) or (not self._path and name in _ELEMENTWISE_FUNCTIONS)

        kind = f"{self._path}.{name}" if self._path else name

        def call(*a, **k):
            if table is not None:
                table.check(name, k)
            args = _unwrap(a)
            out = impl(*args, **_unwrap(k))
            if name in ("asarray", "array", "ascontiguousarray") and a and not isinstance(a[0], StrictArray):
                ops["transfer to device"] += 1  # host data (an array, a list, a number) copied to the GPU
            else:
                _count(kind, name, out, _first_array(args))
            return _wrap(_contiguous(out) if elementwise and "out" not in k else out)
        call.__name__ = name
        return call


module = _Module(np)
