"""Differentiable ops, each with its forward and backward side by side: ``tinygan.functional``.

Every op takes its array module from its inputs (``xp``), so the same code
runs on NumPy, CuPy and the strict emulation, and returns
``Tensor.from_op(out, inputs, backward)`` where ``backward(g)`` gives one
gradient per input, in order (:mod:`.core`). Gradients may have the
broadcast shape: the engine reduces them (``tensor.unbroadcast``).

Names, argument orders and layouts follow PyTorch (``torch.nn.functional``):
NCHW images, conv weight (out, in, kh, kw), transposed-conv weight
(in, out, kh, kw). Read in this order:

* :mod:`.core`: the op contract, argument checks, the GEMM, profiling hooks;
* :mod:`.elementwise`: arithmetic and activations;
* :mod:`.shapes`: shapes, indexing, reductions, matmul and linear;
* :mod:`.conv`: conv2d by im2col, col2im, conv_transpose2d, avg_pool2d;
* :mod:`.winograd`: F(4x4, 3x3) for 3x3 stride-1 convs;
* :mod:`.layers`: upsampling, batch norm, dropout, one_hot, embedding;
* :mod:`.losses`: L1, MSE, binary cross-entropy with logits.
"""
from .core import profile
from .elementwise import (abs, add, clip, compare, div, elu, exp, leaky_relu, log, logsigmoid, mul, neg, pow, relu,
                          sigmoid, softplus, sqrt, sub, tanh)
from .shapes import cat, concat, flatten, getitem, linear, matmul, max, mean, permute, reshape, stack, sum, transpose
from .conv import avg_pool2d, conv2d, conv_transpose2d
from .winograd import WINOGRAD_RTOL
from .layers import batch_norm, check_indices, dropout, dropout_mask, embedding, one_hot, upsample_nearest
from .losses import binary_cross_entropy_with_logits, l1_loss, mse_loss

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "compare", "getitem",
    "reshape", "permute", "transpose", "flatten", "concat", "cat", "stack",
    "sum", "mean", "max", "exp", "log", "abs", "sqrt", "clip",
    "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "logsigmoid",
    "linear", "conv2d", "conv_transpose2d", "upsample_nearest", "avg_pool2d",
    "batch_norm", "dropout", "dropout_mask", "embedding", "one_hot", "check_indices",
    "l1_loss", "mse_loss", "binary_cross_entropy_with_logits", "profile", "WINOGRAD_RTOL",
]

# Tensor's operators and methods (a + b, x.sum(), ...) call these ops; the engine below does not import them.
import sys as _sys  # noqa: E402

from ..tensor import Tensor as _Tensor  # noqa: E402

_sys.modules[_Tensor.__module__].F = _sys.modules[__name__]
