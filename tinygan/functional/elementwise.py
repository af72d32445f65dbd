"""Elementwise ops: arithmetic, exp and log, and the activations (stable for large |x|)."""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .core import _data, _same_backend, _split_elementwise, _wants, _xp

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "compare", "exp", "log", "abs", "sqrt", "clip", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "logsigmoid"]


def add(a, b):
    _same_backend(a, b)
    return Tensor.from_op(_data(a) + _data(b), (a, b), lambda g: (g, g))


def sub(a, b):
    _same_backend(a, b)
    return Tensor.from_op(_data(a) - _data(b), (a, b), lambda g: (g, -g))


def mul(a, b):
    _same_backend(a, b)
    da, db = _data(a), _data(b)
    return Tensor.from_op(da * db, (a, b), lambda g: (g * db if _wants(a) else None,
                                             g * da if _wants(b) else None))


def div(a, b):
    _same_backend(a, b)
    da, db = _data(a), _data(b)
    out = da / db
    return Tensor.from_op(out, (a, b), lambda g: (g / db if _wants(a) else None,
                                         -g * out / db if _wants(b) else None))


def neg(a):
    return Tensor.from_op(-a.data, (a,), lambda g: (-g,))


def pow(a, b):
    """a ** b; the gradient with respect to b needs a > 0 (it is b's log a term)."""
    xp = _xp(a, b)
    da, db = _data(a), _data(b)
    out = da ** db

    def backward(g):
        ga = g * db * da ** (db - 1) if _wants(a) else None
        gb = g * out * xp.log(da) if _wants(b) else None
        return ga, gb
    return Tensor.from_op(out, (a, b), backward)


def compare(op, a, b):
    """Elementwise comparison ('lt', 'le', 'gt', 'ge', 'eq', 'ne'); the result has no gradient."""
    _same_backend(a, b)
    da, db = _data(a), _data(b)
    result = {"lt": da.__lt__, "le": da.__le__, "gt": da.__gt__, "ge": da.__ge__,
              "eq": da.__eq__, "ne": da.__ne__}[op](db)
    return Tensor(result)


def exp(x):
    out = _xp(x).exp(x.data)
    return Tensor.from_op(out, (x,), lambda g: (g * out,))


def log(x):
    return Tensor.from_op(_xp(x).log(x.data), (x,), lambda g: (g / x.data,))


def abs(x):
    xp = _xp(x)
    return Tensor.from_op(xp.abs(x.data), (x,), lambda g: (g * xp.sign(x.data),))


def sqrt(x):
    out = _xp(x).sqrt(x.data)
    return Tensor.from_op(out, (x,), lambda g: (g / (2 * out),))


def clip(x, min=None, max=None):
    """Clamp to [min, max]; the gradient passes where min <= x <= max (as torch.clamp)."""
    xp = _xp(x)
    out = xp.clip(x.data, min, max)
    inside = (out == x.data)
    return Tensor.from_op(out, (x,), lambda g: (g * inside,))


def relu(x):
    out = _xp(x).maximum(x.data, 0)
    return Tensor.from_op(out, (x,), lambda g: (g * (x.data > 0),))


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, negative_slope * x otherwise. The slope is a Python number: the products stay in
    x's dtype (an array of slopes made with where(..., 1, slope) would be float64 first).
    For a slope of at most 1 the forward is max(x, slope * x): two passes over x instead of three
    (compare, scale, select); the backward makes its mask when it runs, not kept from the forward.
    With a backward that is five operations as before (NumPy's maximum runs faster than where);
    without one (G under no_grad in D's step) one fewer, and no mask held in memory."""
    xp = _xp(x)
    if negative_slope <= 1:
        out = xp.maximum(x.data, x.data * negative_slope)
    else:
        out = xp.where(x.data > 0, x.data, x.data * negative_slope)
    return Tensor.from_op(out, (x,), lambda g: (xp.where(x.data > 0, g, g * negative_slope),))


def _elu_forward_host(xp, x, alpha, y):
    """y = max(x, alpha expm1(min(x, 0))), for 0 < alpha <= 1, split over the CPU cores."""
    def forward(xs, ys):
        xp.minimum(xs, 0, out=ys)
        xp.expm1(ys, out=ys)
        if alpha != 1:
            ys *= alpha
        xp.maximum(xs, ys, out=ys)
    _split_elementwise(xp, forward, x, y)


def _elu_backward_host(xp, y, g, alpha, d):
    """d = g where y > 0, g (y + alpha) elsewhere; for alpha = 1 that is g min(y + 1, 1)."""
    if alpha != 1:
        xp.multiply(g, xp.where(y > 0, 1, y + alpha), out=d)
        return

    def backward(ys, gs, ds):
        xp.add(ys, 1, out=ds)
        xp.minimum(ds, 1, out=ds)
        xp.multiply(gs, ds, out=ds)
    _split_elementwise(xp, backward, y, g, d)


# ELU and its derivative as one kernel each on a GPU (CUDA C), three array passes on the host.
_ELU_FORWARD = backend.ElementwiseKernel("elu_forward", "T x, T alpha", "T y",
                                         "y = x > 0 ? x : alpha * expm1(x)", _elu_forward_host)
_ELU_BACKWARD = backend.ElementwiseKernel("elu_backward", "T y, T g, T alpha", "T d",
                                          "d = y > 0 ? g : g * (y + alpha)", _elu_backward_host)


def elu(x, alpha=1.0):
    """x for x > 0, alpha (e^x - 1) otherwise; expm1 keeps small |x| exact, min() keeps e^x finite.

    For 0 < alpha <= 1 the two branches meet in one maximum: alpha (e^v - 1) >= v for every v <= 0
    (equal at 0, and the difference falls as v rises), so ELU(x) = max(x, alpha expm1(min(x, 0))):
    three passes over the data and one new array, the fewest of the forms measured (the where() form
    took four passes and three arrays; BEGAN spends a quarter of a CPU step in ELU and its backward).
    The backward keeps only the output: d/dx alpha (e^x - 1) = alpha e^x = out + alpha where x <= 0,
    and for alpha > 0 the output is positive exactly where x is. For alpha = 1 that is
    min(out + 1, 1) everywhere (out + 1 > 1 exactly where x > 0): again three passes. On a GPU
    each direction is one kernel (_ELU_FORWARD, _ELU_BACKWARD).
    """
    xp = _xp(x)
    out = xp.empty_like(x.data)  # an array also for 0-d input, which the out= calls need
    if not 0 < alpha <= 1:  # the branches do not meet in a maximum: where(), and the input's sign kept
        positive = x.data > 0
        xp.expm1(xp.minimum(x.data, 0), out=out)
        out = xp.where(positive, x.data, alpha * out)
        return Tensor.from_op(out, (x,), lambda g: (g * xp.where(positive, 1, out + alpha),))
    _ELU_FORWARD(x.data, alpha, out)

    def backward(g):
        d = xp.empty_like(out)
        _ELU_BACKWARD(out, g, alpha, d)
        return (d,)
    return Tensor.from_op(out, (x,), backward)


def _sigmoid(xp, v):
    # e = exp(-|v|) never overflows; the two branches are the same function
    e = xp.exp(-xp.abs(v))
    return xp.where(v >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(xp, v):
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|): finite for every v."""
    return xp.maximum(v, 0) + xp.log1p(xp.exp(-xp.abs(v)))


def sigmoid(x):
    out = _sigmoid(_xp(x), x.data)
    return Tensor.from_op(out, (x,), lambda g: (g * out * (1 - out),))


def tanh(x):
    out = _xp(x).tanh(x.data)
    return Tensor.from_op(out, (x,), lambda g: (g * (1 - out * out),))


def softplus(x):
    xp = _xp(x)
    return Tensor.from_op(_softplus(xp, x.data), (x,), lambda g: (g * _sigmoid(xp, x.data),))


def logsigmoid(x):
    """log sigmoid(x) = -softplus(-x), stable for large |x|."""
    xp = _xp(x)
    return Tensor.from_op(-_softplus(xp, -x.data), (x,), lambda g: (g * _sigmoid(xp, -x.data),))
