"""The other layers' ops: nearest upsampling, batch norm, dropout, one-hot labels and embedding."""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .core import _as_tensor, _check_nchw, _data, _require, _same_backend, size, _wants, _xp

__all__ = ["upsample_nearest", "batch_norm", "dropout", "check_indices", "one_hot", "embedding"]


def upsample_nearest(x, scale_factor=2):
    """Nearest-neighbour upsampling of NCHW by an integer factor (nn.Upsample(mode='nearest')).

    Forward is a broadcast (no repeat loop); backward sums each s x s block.
    """
    op = "upsample_nearest"
    _check_nchw(x, op)
    _require(isinstance(scale_factor, int) and scale_factor >= 1, op,
             f"scale_factor must be a positive int, got {scale_factor!r}")
    xp, s = _xp(x), scale_factor
    n, c, h, w = x.shape
    out = xp.broadcast_to(x.data[:, :, :, None, :, None], (n, c, h, s, w, s)).reshape(n, c, h * s, w * s)
    return Tensor.from_op(out, (x,), lambda g: (g.reshape(n, c, h, s, w, s).sum(axis=(3, 5)),))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over N (and H, W), as torch.nn.functional.batch_norm.

    Training normalises with the batch's mean and biased variance and updates
    the running statistics in place (running_var with the unbiased variance);
    evaluation normalises with the running statistics.
    """
    op = "batch_norm"
    _as_tensor(x, op)
    _require(x.ndim in (2, 4), op, f"expected (N, C) or (N, C, H, W), got shape {x.shape}")
    xp = _xp(x, weight, bias, running_mean, running_var)  # also the buffers: in-place updates would mix silently
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None:
            _require(tuple(_data(t).shape) == (c,), op, f"{name} has shape {tuple(_data(t).shape)}, expected ({c},)")
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    bshape = (1, c) if x.ndim == 2 else (1, c, 1, 1)
    count = x.size // c
    if training:
        _require(count > 1, op, f"training needs more than one value per channel, got shape {x.shape}")
        mu = x.data.mean(axis=axes)
        var = x.data.var(axis=axes)
        if running_mean is not None:
            rm, rv = _data(running_mean), _data(running_var)
            rm *= 1 - momentum
            rm += momentum * mu
            rv *= 1 - momentum
            rv += momentum * var * (count / (count - 1))
    else:
        mu, var = _data(running_mean), _data(running_var)
    inv = 1 / xp.sqrt(var + eps)
    xhat = (x.data - mu.reshape(bshape)) * inv.reshape(bshape)
    wd = weight.data.reshape(bshape) if weight is not None else 1
    out = xhat * wd + (bias.data.reshape(bshape) if bias is not None else 0)

    def backward(g):
        gxhat = g * wd
        if training:  # the batch statistics depend on x too
            gx = inv.reshape(bshape) * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                                        - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
        else:
            gx = gxhat * inv.reshape(bshape)
        gw = (g * xhat).sum(axis=axes) if _wants(weight) else None
        gb = g.sum(axis=axes) if _wants(bias) else None
        return gx, gw, gb
    inputs = (x, weight if weight is not None else 0, bias if bias is not None else 0)
    return Tensor.from_op(out, inputs, backward)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    _require(0 <= p < 1, "dropout", f"p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    keep = dropout_mask(x.data, p)
    return Tensor.from_op(x.data * keep, (x,), lambda g: (g * keep,))


def dropout_mask(a, p):
    """Inverted dropout's factors for an array like ``a``: 0 with probability p, else 1/(1-p).

    The mask is drawn on a's device (backend.rand_like), not on the host and copied every forward."""
    return ((backend.rand_like(a) >= p) / (1 - p)).astype(a.dtype)


def check_indices(labels, num_classes, what="labels"):
    """Raise IndexError unless every integer in ``labels`` lies in 0 .. num_classes - 1.

    Out-of-range labels do different wrong things per backend: NumPy's gather
    raises, CuPy's wraps silently, and a one-hot row of an unknown class is all
    zeros on both. Check them once where they come from, on the host (data
    loaders, before ``to_device``): that costs nothing on a GPU. Given a device
    array it works too, by one reduction and one explicit transfer, so call it
    there only at a logging point, never inside a training step. ``one_hot``
    and ``embedding`` call it on host inputs only, for the same reason.
    """
    size(num_classes, "num_classes", what)
    lab = _data(labels)
    if backend.is_host(lab):
        lab = backend.to_host(lab)  # lists and scalars too
    if lab.size == 0:  # an empty list has dtype float64, and no label out of range
        return
    _require_integers(lab, what)
    if backend.is_host(lab):
        lo, hi = int(lab.min()), int(lab.max())
    else:  # one reduction and one transfer: the caller chose to pay a synchronisation here
        xp = backend.get_array_module(lab)
        lo, hi = (int(v) for v in backend.to_host(xp.stack([lab.min(), lab.max()]).astype("int64")))
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{what}: {bad} is out of range for {num_classes} classes (expected 0..{num_classes - 1}, "
                         f"got values {lo}..{hi}); CuPy would not raise here but wrap or zero silently")


def _require_integers(lab, what):
    if lab.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {lab.dtype}")


def one_hot(labels, num_classes, dtype=None):
    """(N,) integer labels -> (N, num_classes) float array (no gradient).

    Host labels are range-checked (:func:`check_indices`); device labels are not
    (that would synchronise the GPU every step): check them where they come from.
    """
    lab = _data(labels)
    size(num_classes, "num_classes", "one_hot")
    _require_integers(lab, "one_hot: labels")
    if backend.is_host(lab):
        check_indices(lab, num_classes, "one_hot: labels")
    xp = backend.get_array_module(lab)
    return (lab.reshape(-1, 1) == xp.arange(num_classes).reshape(1, -1)).astype(dtype or backend.DEFAULT_DTYPE)


def embedding(indices, weight):
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices`` (any shape).

    The backward is a one-hot matrix product rather than a scatter-add, so
    repeated indices sum correctly on every backend.
    """
    idx = _data(indices)
    _same_backend(idx, weight)  # host labels with device weights: a BackendError here, not a silent copy
    _require_integers(idx, "embedding: indices")
    _require(weight.ndim == 2, "embedding", f"weight must be (num_embeddings, dim), got {weight.shape}")
    num, dim = weight.shape
    if backend.is_host(idx):  # device indices: see check_indices, where they come from
        check_indices(idx, num, "embedding: indices")
    out = weight.data[idx.reshape(-1)].reshape(tuple(idx.shape) + (dim,))

    def backward(g):
        onehot = one_hot(idx, num, dtype=g.dtype)
        return (onehot.T @ g.reshape(-1, dim),)
    return Tensor.from_op(out, (weight,), backward)
