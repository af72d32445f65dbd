"""What every op shares: the op contract, one backend per op, argument checks, the GEMM, profiling.

An op computes its forward with the array module of its inputs (``_xp``) and
returns ``Tensor.from_op(out, inputs, backward)``, where ``backward(g)``
returns one gradient per input, in order (see :mod:`tinygan.tensor`); inputs
that are not tensors are constants. An op whose forward needs no array
module still calls ``_same_backend`` first, so that mixing NumPy and device
arrays is an error, never a silent copy. Argument errors name the op, what
it got and what it expected. Every matrix product goes through ``_gemm``,
and the hot helpers are marked ``profiled``, so the benchmark times and
counts them with :func:`profile` instead of patching private names.
"""
from __future__ import annotations

import contextlib
import functools

from .. import backend
from ..tensor import Tensor


# ---- profiling: the benchmark's view into the hot helpers ----------------------------------

_profiler = None


def profiled(part):
    """Mark a function as a ``part`` ("gemm", "transform", "conv2d", ...) that :func:`profile` sees."""
    def mark(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if _profiler is None:
                return fn(*args, **kwargs)
            return _profiler(part, fn, args, kwargs)
        return call
    return mark


@contextlib.contextmanager
def profile(callback):
    """Within the block, each call of a :func:`profiled` function goes through
    ``callback(part, fn, args, kwargs)``, which must return ``fn(*args, **kwargs)``.

    The benchmark times the GEMMs and the conv transforms, and counts the
    FLOPs of ``conv2d``, ``conv_transpose2d`` and ``linear``, this way.
    """
    global _profiler
    previous, _profiler = _profiler, callback
    try:
        yield
    finally:
        _profiler = previous


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _xp(*xs):
    """The array module of the inputs' data (numbers are ignored); BackendError if they differ."""
    return backend.get_array_module(*(_data(x) for x in xs))


def _same_backend(*xs):
    """Raise BackendError unless the inputs live on one backend (before a forward that needs no xp)."""
    _xp(*xs)


def _wants(x):
    return isinstance(x, Tensor) and x.requires_grad


def _require(cond, op, message):
    if not cond:
        raise ValueError(f"{op}: {message}")


def _as_tensor(x, op):
    if isinstance(x, Tensor):
        return x
    raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def pair(v, name, op, least=None):
    """(v, v) or the pair v itself; with ``least``, each must be >= least (a ValueError naming it)."""
    if _is_int(v):
        pair = (v, v)
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(i) for i in v):
        pair = tuple(v)
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    if least is not None and min(pair) < least:
        raise ValueError(f"{op}: {name} must be {'positive' if least == 1 else f'at least {least}'}, got {v!r}")
    return pair


def size(v, name, op):
    """A layer size (features, channels, classes): a positive int, else an error naming it."""
    if not _is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__} {v!r}")
    if v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v}")
    return v


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def _expand_reduced(g, shape, axis, keepdims, xp):
    """Undo a reduction's shape change: put back the reduced axes and broadcast."""
    if not keepdims:
        axes = _axes(axis, len(shape))
        g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return xp.broadcast_to(g, shape)


def _check_nchw(x, op):
    _as_tensor(x, op)
    _require(x.ndim == 4, op, f"expected an NCHW input of 4 dimensions, got shape {x.shape}")


@profiled("gemm")
def _gemm(a, b, out=None):
    """Every matrix product of the ops goes through here (one place to time and to change).

    ``out``, when given, receives the product (a work buffer reused across calls).
    """
    if out is None:
        return a @ b
    return _xp(a, b).matmul(a, b, out=out)


def _split_elementwise(xp, fn, *arrays):
    """``fn(*views)`` on slices of same-shape ``arrays`` along their outermost memory axis, on
    every CPU core (backend.split_run): for elementwise work, which NumPy runs on one thread."""
    a = arrays[0]
    if a.ndim == 0 or backend.cpu_workers(xp) == 1:
        fn(*arrays)
        return
    axis = max(range(a.ndim), key=lambda i: abs(a.strides[i]) if a.shape[i] > 1 else -1)

    def part(s):
        idx = (slice(None),) * axis + (s,)
        fn(*(x[idx] for x in arrays))
    backend.split_run(xp, part, a.shape[axis], a.size)
