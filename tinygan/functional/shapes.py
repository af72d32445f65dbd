"""Shapes, indexing, reductions, and the matrix products (matmul, linear)."""
from __future__ import annotations

from ..tensor import Tensor
from .core import _axes, _expand_reduced, _gemm, _require, _same_backend, _xp, profiled

__all__ = ["matmul", "getitem", "reshape", "permute", "transpose", "flatten", "concat", "cat", "stack", "sum", "mean", "max", "linear"]


def matmul(a, b):
    """Matrix product with NumPy's broadcasting of leading (batch) axes."""
    _same_backend(a, b)
    a, b = (x if isinstance(x, Tensor) else Tensor(x) for x in (a, b))
    _require(a.ndim >= 1 and b.ndim >= 1, "matmul", "both operands need at least one dimension")
    # b first: for vector @ vector the inner call then yields (1,), and dropping b's
    # column axis gives NumPy's 0-d result (a first would leave shape (1,))
    if b.ndim == 1:  # a vector is a one-column matrix whose column axis is then dropped
        out = matmul(a, reshape(b, b.shape + (1,)))
        return reshape(out, out.shape[:-1])
    if a.ndim == 1:  # a vector is a one-row matrix whose row axis is then dropped
        out = matmul(reshape(a, (1,) + a.shape), b)
        return reshape(out, out.shape[:-2] + out.shape[-1:])
    _require(a.shape[-1] == b.shape[-2], "matmul",
             f"shapes {a.shape} and {b.shape} do not align (inner sizes {a.shape[-1]} and {b.shape[-2]})")
    da, db = a.data, b.data
    return Tensor.from_op(_gemm(da, db), (a, b), lambda g: (_gemm(g, db.swapaxes(-1, -2)) if a.requires_grad else None,
                                                   _gemm(da.swapaxes(-1, -2), g) if b.requires_grad else None))


def _basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


def getitem(x, index):
    """Basic indexing and slicing (ints, slices, None, ...), as x[index]."""
    if not _basic_index(index):
        raise TypeError("Tensor indexing takes ints, slices, None and ...; for a gather by "
                        "integer labels use functional.embedding or one_hot, got "
                        f"{type(index).__name__}")
    xp = _xp(x)

    def backward(g):
        gx = xp.zeros(x.shape, dtype=g.dtype)
        gx[index] = g  # basic indexing never repeats a position, so plain assignment suffices
        return (gx,)
    return Tensor.from_op(x.data[index], (x,), backward)


def reshape(x, shape):
    """x.reshape(shape); one entry may be -1."""
    try:
        out = x.data.reshape(tuple(shape))
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                         f"({x.size} elements) into {tuple(shape)}") from None
    return Tensor.from_op(out, (x,), lambda g: (g.reshape(x.shape),))


def permute(x, axes):
    """Reorder the axes (torch.permute / numpy.transpose)."""
    axes = tuple(a % x.ndim for a in axes)
    _require(sorted(axes) == list(range(x.ndim)), "permute",
             f"axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    inverse = tuple(sorted(range(x.ndim), key=lambda i: axes[i]))
    return Tensor.from_op(x.data.transpose(axes), (x,), lambda g: (g.transpose(inverse),))


def transpose(x, dim0, dim1):
    """Swap two axes (torch.transpose)."""
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return permute(x, axes)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes start_dim..end_dim into one (torch.flatten)."""
    s, e = start_dim % x.ndim, end_dim % x.ndim
    shape = x.shape[:s] + (-1,) + x.shape[e + 1:]
    return reshape(x, shape)


def concat(tensors, axis=0):
    """Join tensors along an existing axis (torch.cat)."""
    tensors = list(tensors)
    _require(len(tensors) > 0, "concat", "needs at least one tensor")
    xp = _xp(*tensors)
    ref = tensors[0].shape
    ax = axis % len(ref)
    for t in tensors:
        _require(t.ndim == len(ref) and all(n == m for i, (n, m) in enumerate(zip(t.shape, ref)) if i != ax),
                 "concat", f"shapes {[u.shape for u in tensors]} differ outside axis {axis}")
    bounds = [0]
    for t in tensors:
        bounds.append(bounds[-1] + t.shape[ax])

    def backward(g):
        index = [slice(None)] * g.ndim
        grads = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            index[ax] = slice(lo, hi)
            grads.append(g[tuple(index)])
        return grads
    return Tensor.from_op(xp.concatenate([t.data for t in tensors], axis=ax), tensors, backward)


cat = concat


def stack(tensors, axis=0):
    """Join tensors along a new axis (torch.stack)."""
    tensors = list(tensors)
    ax = axis % (tensors[0].ndim + 1)
    return concat([reshape(t, t.shape[:ax] + (1,) + t.shape[ax:]) for t in tensors], axis=ax)


def sum(x, axis=None, keepdims=False):
    axis = tuple(axis) if isinstance(axis, list) else axis
    xp = _xp(x)
    return Tensor.from_op(x.data.sum(axis=axis, keepdims=keepdims), (x,),
                 lambda g: (_expand_reduced(g, x.shape, axis, keepdims, xp),))


def mean(x, axis=None, keepdims=False):
    axis = tuple(axis) if isinstance(axis, list) else axis
    xp = _xp(x)
    count = 1
    for a in _axes(axis, x.ndim):
        count *= x.shape[a]
    return Tensor.from_op(x.data.mean(axis=axis, keepdims=keepdims), (x,),
                 lambda g: (_expand_reduced(g / count, x.shape, axis, keepdims, xp),))


def max(x, axis=None, keepdims=False):
    """Maximum; with ties the gradient is shared equally among the maxima."""
    axis = tuple(axis) if isinstance(axis, list) else axis
    xp = _xp(x)
    out = x.data.max(axis=axis, keepdims=keepdims)

    def backward(g):
        mask = x.data == _expand_reduced(out, x.shape, axis, keepdims, xp)
        mask = mask.astype(g.dtype)
        share = mask / mask.sum(axis=axis, keepdims=True)
        return (share * _expand_reduced(g, x.shape, axis, keepdims, xp),)
    return Tensor.from_op(out, (x,), backward)


@profiled("linear")
def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch.

    A 2-D x (a batch of feature rows, every MLP layer) is one node of the graph with its own backward:

        out = x W^T + b,   dx = g W,   dW = (x^T g)^T,   db = sum_rows g

    the same products (and so the same bits) as the composite matmul(x, W.T) + b below, which any
    other x takes, at a third of the engine's bookkeeping: the toy GAN's small layers pay more for
    the graph than for their arithmetic.
    """
    _require(weight.ndim == 2, "linear", f"weight must be 2-D (out, in), got shape {weight.shape}")
    _require(x.ndim >= 1 and x.shape[-1] == weight.shape[1], "linear",
             f"input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}) "
             f"but weight expects {weight.shape[1]} (weight shape {weight.shape})")
    if bias is not None:
        _require(bias.shape == (weight.shape[0],), "linear",
                 f"bias shape {bias.shape} does not match {weight.shape[0]} output features")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    if x.ndim != 2 or not all(isinstance(t, Tensor) for t in inputs):
        out = matmul(x, transpose(weight, 0, 1))
        return out if bias is None else out + bias
    _same_backend(*inputs)
    xd, wd = x.data, weight.data
    out = _gemm(xd, wd.T)
    if bias is not None:
        out += bias.data

    def backward(g):
        return (_gemm(g, wd) if x.requires_grad else None,
                _gemm(xd.T, g).T if weight.requires_grad else None,
                g.sum(axis=0) if bias is not None and bias.requires_grad else None)
    return Tensor.from_op(out, inputs, backward)
