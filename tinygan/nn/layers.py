"""Layers with PyTorch's names, arguments and default initialisations."""
from __future__ import annotations

import math

from .. import backend
from .. import functional as F
from ..functional.core import pair, size
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Conv2d", "ConvTranspose2d", "Upsample", "BatchNorm1d", "BatchNorm2d", "Embedding", "Dropout",
           "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Identity", "Flatten", "Unflatten",
           "MinibatchDiscrimination"]


def _zeros(*shape):
    """A new float32 array of zeros on the current backend, filled by the initialiser that follows."""
    return backend.xp().zeros(shape, dtype=backend.DEFAULT_DTYPE)


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        size(in_features, "in_features", "Linear")
        size(out_features, "out_features", "Linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_zeros(out_features, in_features))
        self.bias = Parameter(_zeros(out_features)) if bias else None
        init.kaiming_uniform_default_(self.weight, self.bias, in_features)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        size(in_channels, "in_channels", "Conv2d")
        size(out_channels, "out_channels", "Conv2d")
        kh, kw = pair(kernel_size, "kernel_size", "Conv2d", 1)
        pair(stride, "stride", "Conv2d", 1)
        pair(padding, "padding", "Conv2d", 0)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = Parameter(_zeros(out_channels, in_channels, kh, kw))
        self.bias = Parameter(_zeros(out_channels)) if bias else None
        init.kaiming_uniform_default_(self.weight, self.bias, in_channels * kh * kw)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class ConvTranspose2d(Module):
    """Weight layout (in, out, kh, kw), and fan_in = out * kh * kw, as in PyTorch."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, bias=True):
        super().__init__()
        size(in_channels, "in_channels", "ConvTranspose2d")
        size(out_channels, "out_channels", "ConvTranspose2d")
        kh, kw = pair(kernel_size, "kernel_size", "ConvTranspose2d", 1)
        pair(stride, "stride", "ConvTranspose2d", 1)
        pair(padding, "padding", "ConvTranspose2d", 0)
        pair(output_padding, "output_padding", "ConvTranspose2d", 0)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.output_padding = (kh, kw), stride, padding, output_padding
        self.weight = Parameter(_zeros(in_channels, out_channels, kh, kw))
        self.bias = Parameter(_zeros(out_channels)) if bias else None
        init.kaiming_uniform_default_(self.weight, self.bias, out_channels * kh * kw)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding}")


class Upsample(Module):
    """Nearest-neighbour upsampling by an integer scale_factor (the only mode tinygan has)."""

    def __init__(self, scale_factor=2, mode="nearest"):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is implemented, got {mode!r}")
        self.scale_factor = scale_factor

    def forward(self, x):
        return F.upsample_nearest(x, self.scale_factor)

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode='nearest'"


class _BatchNorm(Module):
    _ndim = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        size(num_features, "num_features", type(self).__name__)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = Parameter(backend.xp().ones(num_features, dtype=backend.DEFAULT_DTYPE)) if affine else None
        self.bias = Parameter(_zeros(num_features)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", _zeros(num_features))
            self.register_buffer("running_var", backend.xp().ones(num_features, dtype=backend.DEFAULT_DTYPE))
        self.track_running_stats = track_running_stats

    def forward(self, x):
        if x.ndim != self._ndim:
            raise ValueError(f"{type(self).__name__}: expected a {self._ndim}-D input, got shape {x.shape}")
        use_batch = self.training or not self.track_running_stats
        rm = self.running_mean if self.track_running_stats else None
        rv = self.running_var if self.track_running_stats else None
        return F.batch_norm(x, rm, rv, self.weight, self.bias, use_batch, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) inputs."""
    _ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs, per channel."""
    _ndim = 4


class Embedding(Module):
    """A lookup table initialised from N(0, 1), as in PyTorch."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        size(num_embeddings, "num_embeddings", "Embedding")
        size(embedding_dim, "embedding_dim", "Embedding")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(_zeros(num_embeddings, embedding_dim))
        init.normal_(self.weight)

    def forward(self, indices):
        return F.embedding(indices, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class _Activation(Module):
    """An activation layer: forward applies ``fn`` with the layer's keyword settings."""
    fn = None

    def forward(self, x):
        return type(self).fn(x, **self._settings())

    def _settings(self):
        return {}

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self._settings().items())


class ReLU(_Activation):
    """max(x, 0)"""
    fn = F.relu


class LeakyReLU(_Activation):
    """x if x > 0 else negative_slope * x"""
    fn = F.leaky_relu

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def _settings(self):
        return {"negative_slope": self.negative_slope}


class ELU(_Activation):
    """x if x > 0 else alpha * (exp(x) - 1)"""
    fn = F.elu

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def _settings(self):
        return {"alpha": self.alpha}


class Sigmoid(_Activation):
    """1 / (1 + exp(-x))"""
    fn = F.sigmoid


class Tanh(_Activation):
    """tanh(x)"""
    fn = F.tanh


class Identity(Module):
    """Returns its input."""

    def forward(self, x):
        return x


class Flatten(Module):
    """Flatten dims start_dim..end_dim (default: all but the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class Unflatten(Module):
    """Split axis ``dim`` into ``unflattened_size`` (PyTorch's ``nn.Unflatten``): the inverse of Flatten."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        dim = self.dim % x.ndim
        if math.prod(self.unflattened_size) != x.shape[dim]:
            raise ValueError(f"Unflatten: axis {self.dim} has {x.shape[dim]} elements, but the size "
                             f"{self.unflattened_size} holds {math.prod(self.unflattened_size)}")
        return x.reshape(*x.shape[:dim], *self.unflattened_size, *x.shape[dim + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class MinibatchDiscrimination(Module):
    """Minibatch discrimination (Salimans et al. 2016, "Improved Techniques for Training GANs", 3.2):
    features that tell D how close each sample is to the others of its batch.

    Each sample's features h (N, in_features) are projected by a learned tensor T into
    ``num_kernels`` rows of ``kernel_dim``: M_i = h_i T, shape (num_kernels, kernel_dim). Kernel b
    of sample i sums the closeness of i to every other sample j of the batch,

        o_i[b] = sum_{j != i} exp(-||M_i[b] - M_j[b]||_1),

    and the output is [h, o], (N, in_features + num_kernels). A batch drawn too often from a few
    modes (too many sevens, say) has closer neighbours than a batch of real data, which D can then
    see; a single sample scores o = 0. The output of a sample depends on its whole batch (as with
    batch norm), so real and fake batches must pass D separately (``GANTrainer`` does this).
    T ~ N(0, 0.05^2), as the paper's code.
    """

    def __init__(self, in_features, num_kernels=50, kernel_dim=5):
        super().__init__()
        for value, name in ((in_features, "in_features"), (num_kernels, "num_kernels"), (kernel_dim, "kernel_dim")):
            size(value, name, "MinibatchDiscrimination")
        self.in_features, self.num_kernels, self.kernel_dim = in_features, num_kernels, kernel_dim
        self.weight = Parameter(_zeros(in_features, num_kernels * kernel_dim))
        init.normal_(self.weight, 0.0, 0.05)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"MinibatchDiscrimination: expected features of shape (N, {self.in_features}), "
                             f"got {x.shape}")
        n, b, c = x.shape[0], self.num_kernels, self.kernel_dim
        m = F.matmul(x, self.weight).reshape(n, 1, b, c)
        l1 = F.sum(F.abs(m - m.reshape(1, n, b, c)), axis=3)       # (N, N, kernels): all pairs at once
        closeness = F.sum(F.exp(-l1), axis=1) - 1.0                 # minus exp(0), the sample itself
        return F.concat([x, closeness], axis=1)

    def extra_repr(self):
        return f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}"
