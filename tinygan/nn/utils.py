"""Tools around modules: gradient clipping, and running a module frozen or in evaluation mode."""
from __future__ import annotations

import contextlib
import math

from .. import backend

__all__ = ["clip_grad_norm_", "frozen", "evaluating"]


def clip_grad_norm_(parameters, max_norm, eps=1e-6):
    """Scale the gradients of ``parameters`` so their joint L2 norm is at most ``max_norm`` (torch.nn.utils).

    Returns the norm before clipping as a 0-d device array: reading it on the
    host is the caller's choice (and a synchronisation on a GPU). The scaling
    is computed on the device, so clipping itself never waits for it.
    """
    if not (isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"clip_grad_norm_: max_norm must be a finite number > 0, got {max_norm!r}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    xp = backend.get_array_module(*grads)
    total = xp.sqrt(sum((g.astype("float32") ** 2).sum() for g in grads))
    scale = xp.minimum(max_norm / (total + eps), 1.0).astype(grads[0].dtype)
    for g in grads:
        g *= scale
    return total


@contextlib.contextmanager
def frozen(module):
    """Within the block, ``module``'s parameters need no gradient: a GAN's G step treats D as a constant,
    so D's weight gradients are not even computed. Restores each parameter's flag afterwards."""
    params = module.parameters()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    try:
        yield module
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag


@contextlib.contextmanager
def evaluating(module):
    """Within the block, ``module`` runs in evaluation mode (batch norm with running statistics, no
    dropout), as for sampling; its training mode is restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
