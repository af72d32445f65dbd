"""Initialisers with torch.nn.init's names: each fills a Parameter in place from tinygan's generator."""
from __future__ import annotations

import math

from .. import backend

__all__ = ["uniform_", "normal_", "zeros_", "ones_", "kaiming_uniform_default_", "dcgan_"]


def uniform_(p, a, b):
    """Fill ``p`` with U(a, b)."""
    p.data[...] = backend.uniform(a, b, p.shape, dtype=p.dtype)
    return p


def normal_(p, mean=0.0, std=1.0):
    """Fill ``p`` with N(mean, std^2)."""
    p.data[...] = mean + std * backend.randn(*p.shape, dtype=p.dtype)
    return p


def zeros_(p):
    p.data[...] = 0
    return p


def ones_(p):
    p.data[...] = 1
    return p


def kaiming_uniform_default_(weight, bias, fan_in):
    """PyTorch's default for Linear and conv layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform_ with a = sqrt(5) reduces to that bound for the weight;
    the bias uses the same bound.)
    """
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    uniform_(weight, -bound, bound)
    if bias is not None:
        uniform_(bias, -bound, bound)


def dcgan_(module):
    """DCGAN's initialisation (Radford et al. 2016): conv and linear weights ~ N(0, 0.02),
    batch-norm scales ~ N(1, 0.02), biases 0. Applies to every submodule; returns ``module``."""
    from .layers import BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Linear  # layers use this module
    for m in module.modules():
        if isinstance(m, (Conv2d, ConvTranspose2d, Linear)):
            normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                zeros_(m.bias)
        elif isinstance(m, (BatchNorm1d, BatchNorm2d)) and m.affine:
            normal_(m.weight, 1.0, 0.02)
            zeros_(m.bias)
    return module
