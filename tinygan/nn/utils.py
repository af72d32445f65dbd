"""Tools around modules: gradient clipping, running a module frozen or in evaluation mode, and
recomputing its batch-norm statistics."""
from __future__ import annotations

import contextlib
import math

from .. import backend

__all__ = ["clip_grad_norm_", "frozen", "evaluating", "update_bn"]


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


def update_bn(batches, module):
    """Recompute the running statistics of every batch norm in ``module`` from ``batches``, as
    PyTorch's ``torch.optim.swa_utils.update_bn``: the statistics are reset, then set to the plain
    average over the batches of each batch's mean and (unbiased) variance. Each batch is the
    argument tuple of one ``module(*batch)`` call (no gradients are recorded).

    Why: an averaged network (``optim.EMA``, SWA) has weights that no training step ever ran with,
    so the statistics batch norm kept while training belong to another network. Evaluating the
    average with them feeds every layer inputs of the wrong scale; its own statistics fix that.
    Returns the number of batches; a module without batch norm is left as it is.
    """
    from ..tensor import no_grad
    from .layers import _BatchNorm
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    momenta, was_training = [m.momentum for m in norms], module.training
    for m in norms:
        m.running_mean[...] = 0
        m.running_var[...] = 1
    module.train()
    count = 0
    try:
        with no_grad():
            for count, batch in enumerate(batches, 1):
                for m in norms:
                    m.momentum = 1.0 / count   # running = (1 - 1/i) running + (1/i) batch: the mean of i batches
                module(*batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.train(was_training)
    return count
