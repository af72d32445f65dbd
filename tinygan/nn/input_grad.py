"""The gradient of a piecewise-linear network's output with respect to its input, as a graph in its
weights: what R1's gradient penalty (Mescheder et al. 2018) needs, without a second-order backward.

A network of linear maps (``Linear``, ``Conv2d``), batch norm and (Leaky)ReLUs is, around any input,
a product of linear maps: each LeakyReLU multiplies by a constant slope (1 or its negative slope)
wherever it is differentiable, and so does dropout's drawn mask. So

    d out / d x = W_1^T diag(s_1) W_2^T diag(s_2) ... W_L^T

where s_l are the slopes at x. :func:`input_gradient` finds the slopes by a forward without a graph
and then builds this product from the weights as tensors, last layer first: back through a
``Linear`` is ``v @ W``, back through a ``Conv2d`` is the transposed convolution with the same weight
(its adjoint), back through an activation or dropout is ``v * s``. The result is differentiable in
the weights, so a loss of it (R1's ``||grad||^2``) trains them with the ordinary backward.

Batch norm in training mode makes each output depend on the whole batch; here its batch statistics
are held fixed (a per-channel scale ``weight / sqrt(var + eps)``, differentiable in ``weight``), which
is the gradient of each sample's output with the batch around it as given. A penalty of it trains the
weights as if those statistics were constants too (they are computed without a graph), where
double backpropagation through the batch norm would also follow their dependence on the weights.
"""
from __future__ import annotations

from .. import backend
from .. import functional as F
from ..functional.core import pair
from ..tensor import Tensor, no_grad
from .layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU, Linear, ReLU)

__all__ = ["input_gradient"]


def _slopes(a, negative_slope):
    """A LeakyReLU's slope at each entry of ``a``: 1 where a > 0, else ``negative_slope``."""
    return (a > 0).astype(a.dtype) * (1 - negative_slope) + negative_slope


def input_gradient(layers, x, owner="input_gradient"):
    """d out_i / d x_i for each sample of ``x`` (a Tensor or array, (N, ...)), where out = the
    ``layers`` applied in turn, the last a ``Linear`` with one output; a Tensor of x's shape.

    ``owner`` names the caller in errors (a layer with no rule here, such as minibatch
    discrimination, which is not piecewise linear)."""
    a = x.data if isinstance(x, Tensor) else x
    n = a.shape[0]
    steps = []  # (kind, what) for each layer, to walk back through
    with no_grad():
        for mod in layers:
            if isinstance(mod, (Linear, Conv2d)):
                steps.append(("conv" if isinstance(mod, Conv2d) else "linear", (mod, a.shape[2:])))
                a = mod(Tensor(a)).data
            elif isinstance(mod, (LeakyReLU, ReLU)):
                s = _slopes(a, mod.negative_slope if isinstance(mod, LeakyReLU) else 0.0)
                steps.append(("scale", s))
                a = a * s
            elif isinstance(mod, Dropout):
                if mod.training and mod.p:
                    keep = F.dropout_mask(a, mod.p)
                    steps.append(("scale", keep))
                    a = a * keep
            elif isinstance(mod, (BatchNorm1d, BatchNorm2d)):
                axes, bshape = ((0,), (1, -1)) if a.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))
                if mod.training or not mod.track_running_stats:
                    mu, var = a.mean(axis=axes), a.var(axis=axes)   # the batch's, as F.batch_norm takes them
                else:
                    mu, var = mod.running_mean, mod.running_var
                inv = (1 / backend.get_array_module(a).sqrt(var + mod.eps)).reshape(bshape)
                steps.append(("bn", (mod, inv, bshape)))
                a = (a - mu.reshape(bshape)) * inv
                if mod.affine:
                    a = a * mod.weight.data.reshape(bshape) + mod.bias.data.reshape(bshape)
            elif isinstance(mod, Flatten):
                steps.append(("reshape", a.shape[1:]))
                a = a.reshape(n, -1)
            elif not isinstance(mod, Identity):
                raise ValueError(f"{owner}: no rule for {type(mod).__name__} (only linear maps, convolutions, "
                                 "batch norm, (Leaky)ReLU, dropout and Flatten)")
    kind, last = steps.pop() if steps else (None, None)
    if kind != "linear" or last[0].out_features != 1:
        raise ValueError(f"{owner}: the network must end in a Linear layer with one output")
    v = last[0].weight                              # (1, width): d out / d (the last layer's input)
    for kind, what in reversed(steps):
        if kind == "scale":
            v = v * what
        elif kind == "linear":
            v = v @ what[0].weight
        elif kind == "bn":
            mod, inv, bshape = what
            v = v * (mod.weight.reshape(bshape) * inv) if mod.affine else v * inv
        elif kind == "reshape":
            v = v.reshape(v.shape[0], *what)
        else:                                       # the adjoint of a convolution: its transposed convolution
            conv, size = what
            (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, pair(conv.stride, "stride", owner, 1), pair(conv.padding, "padding", owner, 0)
            rows, cols = v.shape[2:]
            extra = (size[0] - ((rows - 1) * sh - 2 * ph + kh), size[1] - ((cols - 1) * sw - 2 * pw + kw))
            v = F.conv_transpose2d(v, conv.weight, None, (sh, sw), (ph, pw), extra)
    if v.shape[0] != n:                             # no slope along the way: the same gradient for every sample
        v = v + backend.get_array_module(a).zeros((n,) + tuple(v.shape[1:]), dtype=a.dtype)
    return v
