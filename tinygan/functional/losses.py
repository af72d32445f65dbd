"""The losses of torch.nn.functional: L1, mean squared error, binary cross-entropy from logits."""
from __future__ import annotations

from ..tensor import Tensor
from .core import _as_tensor, _data, _require, _wants, _xp
from .elementwise import _sigmoid, _softplus, abs, mul, sub
from .shapes import mean, sum

__all__ = ["l1_loss", "mse_loss", "binary_cross_entropy_with_logits"]


def _reduce(loss, reduction, op):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_pair(input, target, op):
    _as_tensor(input, op)
    ts = tuple(_data(target).shape) if hasattr(_data(target), "shape") else ()
    _require(ts in ((), input.shape), op, f"input shape {input.shape} and target shape {ts} differ")


def l1_loss(input, target, reduction="mean"):
    """mean |input - target|."""
    _check_pair(input, target, "l1_loss")
    return _reduce(abs(sub(input, target)), reduction, "l1_loss")


def mse_loss(input, target, reduction="mean"):
    """mean (input - target)^2."""
    _check_pair(input, target, "mse_loss")
    d = sub(input, target)
    return _reduce(mul(d, d), reduction, "mse_loss")


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] = softplus(x) - t x, finite for any logit x."""
    op = "binary_cross_entropy_with_logits"
    _check_pair(input, target, op)
    xp = _xp(input, target)
    x, t = input.data, _data(target)
    loss = _softplus(xp, x) - t * x

    def backward(g):
        gx = g * (_sigmoid(xp, x) - t) if _wants(input) else None
        gt = -g * x if _wants(target) else None
        return gx, gt
    return _reduce(Tensor.from_op(loss, (input, target), backward), reduction, op)
