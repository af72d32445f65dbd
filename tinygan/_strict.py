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
  ``matmul_out_copies`` / ``matmul_out_copy_bytes`` so the cost is visible.

``module`` stands in for the array module: ``module.exp(a)`` checks the name
and keywords against CuPy, unwraps its arguments, calls NumPy, and wraps the
results again.

Without the cupy package installed the emulation still refuses host
transfers and keeps CuPy's layouts and index checks, but cannot check names
and keywords (``cupy_api()`` is then ``None``).
"""
from __future__ import annotations

import functools
import inspect
import re
import types

import numpy as np


class HostTransferError(TypeError):
    """A device array was converted to host memory without an explicit transfer."""


class CupyAPIError(AttributeError):
    """Code called a function, method or keyword that NumPy has and CuPy lacks."""


transfers = 0  # explicit device-to-host copies (StrictArray.get) since the last reset
matmul_out_copies = 0  # matmuls into a non-contiguous out=: a temporary plus a copy on CuPy
matmul_out_copy_bytes = 0


def reset_transfers():
    """Set the transfer counter (and the hidden-copy counters) back to zero."""
    global transfers, matmul_out_copies, matmul_out_copy_bytes
    transfers = matmul_out_copies = matmul_out_copy_bytes = 0


# ---- CuPy's API, read from the installed package ---------------------------------------

ANY = None  # keyword table entry: the callable takes **kwargs, every keyword goes through

# What introspection cannot see, each entry with its reason:
# - CuPy's where and clip are Python functions wrapping elementwise kernels (ufuncs inside),
#   so like ufuncs their results are freshly allocated C-contiguous arrays.
_ELEMENTWISE_FUNCTIONS = {"where", "clip"}


def _split_params(text):
    """Top-level comma split of a parameter list (defaults may hold brackets and strings)."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_DOC_SIGNATURE = re.compile(r"^\s*[\w.]+\((.*)\)")


def _keywords_from_doc(doc):
    """Keyword names of Cython's embedded signature line ``name(a, /, out=None, \\*, dtype=None)``."""
    first = (doc or "").strip().splitlines()[:1]
    match = _DOC_SIGNATURE.match(first[0]) if first else None
    if match is None:
        return ANY
    names = set()
    for p in _split_params(match.group(1).replace("\\*", "*")):
        if p == "/":
            names.clear()  # what comes before '/' cannot be passed by keyword
            continue
        if p.startswith("**"):
            return ANY
        if p.startswith("*"):
            continue
        name = p.split("=")[0].split(":")[0].strip().split()[-1]  # "Py_ssize_t axis1" -> axis1
        if name != "self":
            names.add(name)
    return frozenset(names)


def _keywords(f):
    """Keyword arguments a CuPy callable accepts, or ANY."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return _keywords_from_doc(getattr(f, "__doc__", None))
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return ANY
    return frozenset(n for n, p in sig.parameters.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


class _Table:
    """Names of one CuPy namespace (a module or ndarray) and, lazily, each callable's keywords."""

    def __init__(self, namespace, label):
        self.namespace, self.label = namespace, label
        self.names = frozenset(n for n in dir(namespace) if not n.startswith("__"))
        self._keywords = {}

    def keywords(self, name):
        if name not in self._keywords:
            self._keywords[name] = _keywords(getattr(self.namespace, name))
        return self._keywords[name]

    def check(self, name, kwargs):
        """Raise CupyAPIError if CuPy lacks ``name`` or one of ``kwargs``."""
        if name not in self.names:
            raise CupyAPIError(f"{self.label}{name} does not exist in cupy (NumPy has it): "
                               "CuPy would raise AttributeError on a GPU")
        if kwargs:
            allowed = self.keywords(name)
            if allowed is not ANY:
                bad = sorted(set(kwargs) - allowed)
                if bad:
                    raise CupyAPIError(f"{self.label}{name}() in cupy takes no keyword "
                                       f"{', '.join(map(repr, bad))} (it takes {', '.join(sorted(allowed)) or 'none'}): "
                                       "CuPy would raise TypeError on a GPU")


@functools.lru_cache(maxsize=None)
def _table(path):
    """The table of ``cupy.<path>`` ('' for cupy itself, 'ndarray' for the array type), or None."""
    from . import backend  # only backend.py imports cupy
    cupy = backend._cupy_package()
    if cupy is None:
        return None
    ns = cupy
    for part in filter(None, path.split(".")):
        ns = getattr(ns, part, None)
        if ns is None:
            return None
    label = "cupy.ndarray." if path == "ndarray" else f"cupy.{path + '.' if path else ''}"
    return _Table(ns, label)


def cupy_api():
    """The table of the installed cupy package's module namespace, or None without cupy."""
    return _table("")


# ---- wrapping ------------------------------------------------------------------------

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
            return _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return method

    def __getitem__(self, key):
        key = _unwrap(key)
        _check_key(self._a.shape, key)
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        key = _unwrap(key)
        _check_key(self._a.shape, key)
        self._a[key] = _unwrap(value)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # CuPy's ndarray takes NumPy ufuncs through here too, if CuPy has the same ufunc
        table = _table("")
        if table is not None:
            table.check(ufunc.__name__, kwargs)
            if method != "__call__" and not hasattr(getattr(table.namespace, ufunc.__name__), method):
                raise CupyAPIError(f"cupy.{ufunc.__name__}.{method} does not exist in cupy")
        out = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
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
    def op(self, *args):
        return _wrap(_contiguous(getattr(self._a, name)(*_unwrap(args))))
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

        def call(*a, **k):
            if table is not None:
                table.check(name, k)
            out = impl(*_unwrap(a), **_unwrap(k))
            return _wrap(_contiguous(out) if elementwise and "out" not in k else out)
        call.__name__ = name
        return call


module = _Module(np)
