"""A strict emulation of a device backend, for tests on machines without a GPU.

``StrictArray`` wraps a NumPy array and behaves like ``cupy.ndarray`` where it
matters for correctness on a GPU: it refuses implicit conversion to host
memory (``np.asarray``, ``float()``, ``int()``, ``bool()``, ``.item()``,
``.tolist()``, iteration), and reductions return 0-d arrays rather than
Python scalars. The only way out is the explicit ``.get()`` that
``tinygan.backend.to_host`` uses, and every such transfer is counted in
``transfers`` so a test can assert that a training step made none.

``module`` stands in for the array module: ``module.exp(a)`` unwraps its
arguments, calls NumPy, and wraps array results again.
"""
from __future__ import annotations

import types

import numpy as np


class HostTransferError(TypeError):
    """A device array was converted to host memory without an explicit transfer."""


transfers = 0  # explicit device-to-host copies (StrictArray.get) since the last reset


def reset_transfers():
    """Set the transfer counter back to zero."""
    global transfers
    transfers = 0


def _unwrap(x):
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


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


def _refuse(what):
    def method(self, *args, **kwargs):
        raise HostTransferError(
            f"{what} on a device array would copy it to host memory; CuPy would synchronise "
            "here. Use tinygan.backend.to_host() at a logging point instead.")
    return method


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
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return _wrap(attr)

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        return _wrap(out)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))


def _operator(name):
    def op(self, *args):
        return _wrap(getattr(self._a, name)(*_unwrap(args)))
    return op


def _inplace(name):
    def op(self, other):
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
    """NumPy, seen through StrictArray: functions unwrap their arguments and wrap results."""

    def __init__(self, inner):
        super().__init__(f"tinygan.strict<{inner.__name__}>")
        self._inner = inner

    def __getattr__(self, name):
        if name == "ndarray":
            return StrictArray
        attr = getattr(self._inner, name)
        if isinstance(attr, types.ModuleType):
            return _Module(attr)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (np.float32), constants (np.pi, np.newaxis)

        def call(*a, **k):
            return _wrap(attr(*_unwrap(a), **_unwrap(k)))
        call.__name__ = name
        return call


module = _Module(np)
