"""Finite-difference checks of the engine's gradients, in float64.

``gradcheck`` compares, for every input that requires grad, the analytic
gradient of ``sum(fn(*inputs) * r)`` (r a fixed random upstream gradient, so
every output element matters) with central differences
``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, element by element.

``gradcheck_directional`` is the cheap variant for inputs too large to perturb
one element at a time (Chainer's ``check_backward`` style): one random
direction d over all inputs and parameters together, comparing
``<grad, d>`` with ``(f(x + eps d) - f(x - eps d)) / (2 eps)``.

Both run on host copies: they are test tools, not part of a training step.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences."""


def _checked_inputs(inputs, fn_name):
    tensors = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not tensors:
        raise ValueError(f"gradcheck({fn_name}): no input requires grad")
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck({fn_name}): input {i} is {x.dtype}; finite differences "
                            "need float64 (float32 rounding swamps eps)")
    return tensors


def _projected(fn, inputs, kwargs, r):
    out = fn(*inputs, **kwargs)
    return out, float((backend.to_host(out.data) * r).sum())


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0, **kwargs):
    """Check d fn / d input for each tensor in ``inputs`` with requires_grad; True or GradcheckError.

    ``kwargs`` are passed to ``fn``. The error names the input, the worst
    element, and both values.
    """
    name = getattr(fn, "__name__", repr(fn))
    inputs = tuple(inputs)
    tensors = _checked_inputs(inputs, name)
    rng = np.random.default_rng(seed)
    out = fn(*inputs, **kwargs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck({name}): fn must return a Tensor, got {type(out).__name__}")
    r = rng.standard_normal(out.shape)
    for t in tensors:
        t.grad = None
    out.backward(backend.to_device(r, out.dtype))
    for k, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = backend.to_host(x.grad) if x.grad is not None else np.zeros(x.shape)
        numeric = np.zeros(x.shape)
        original = x.data
        # a contiguous copy: reshape(-1) of a non-contiguous array (a transposed view) is itself a
        # copy, and perturbing it would leave the input unchanged (numeric gradient 0)
        host = np.array(backend.to_host(original), order="C")
        flat = host.reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            x.data = backend.to_device(host)
            plus = _projected(fn, inputs, kwargs, r)[1]
            flat[i] = orig - eps
            x.data = backend.to_device(host)
            minus = _projected(fn, inputs, kwargs, r)[1]
            flat[i] = orig
            numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
        x.data = original
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if err.size and err.max() > 0:
            worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), x.shape))
            raise GradcheckError(
                f"gradcheck({name}): input {k} (shape {x.shape}) gradient mismatch at {worst}: "
                f"analytic {analytic[worst]:.8g}, numeric {numeric[worst]:.8g} "
                f"(max |diff| {np.abs(analytic - numeric).max():.3g}, atol {atol}, rtol {rtol})")
    return True


def gradcheck_directional(loss_fn, tensors, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, n_directions=3):
    """Directional check of a scalar ``loss_fn()`` with respect to all ``tensors`` at once.

    ``tensors`` (inputs and parameters, float64, requires_grad) are perturbed
    together along random unit directions; ``loss_fn`` takes no arguments and
    reads them (e.g. a closure over a model and a batch).
    """
    tensors = list(tensors)
    _checked_inputs(tensors, "loss_fn")
    rng = np.random.default_rng(seed)
    for t in tensors:
        t.grad = None
    loss = loss_fn()
    if loss.size != 1:
        raise ValueError(f"gradcheck_directional: loss_fn must return one value, got shape {loss.shape}")
    loss.backward()
    grads = [backend.to_host(t.grad) if t.grad is not None else np.zeros(t.shape) for t in tensors]
    hosts = [backend.to_host(t.data) for t in tensors]
    for _ in range(n_directions):
        dirs = [rng.standard_normal(t.shape) for t in tensors]
        norm = np.sqrt(sum((d * d).sum() for d in dirs))
        dirs = [d / norm for d in dirs]
        analytic = sum((g * d).sum() for g, d in zip(grads, dirs))
        values = []
        for sign in (1, -1):
            for t, h, d in zip(tensors, hosts, dirs):
                t.data = backend.to_device(h + sign * eps * d)
            values.append(loss_fn().item())
        for t, h in zip(tensors, hosts):
            t.data = backend.to_device(h)
        numeric = (values[0] - values[1]) / (2 * eps)
        if abs(analytic - numeric) > atol + rtol * abs(numeric):
            raise GradcheckError(f"gradcheck_directional: directional derivative mismatch: analytic "
                                 f"{analytic:.10g}, numeric {numeric:.10g} (|diff| {abs(analytic - numeric):.3g}); "
                                 + _worst_tensor(loss_fn, tensors, hosts, grads, dirs, eps))
    return True


def _worst_tensor(loss_fn, tensors, hosts, grads, dirs, eps):
    """On a failure only: name the tensor whose share of the directional derivative is furthest off."""
    worst = None
    for k, (t, h, g, d) in enumerate(zip(tensors, hosts, grads, dirs)):
        values = []
        for sign in (1, -1):
            t.data = backend.to_device(h + sign * eps * d)
            values.append(loss_fn().item())
        t.data = backend.to_device(h)
        numeric, analytic = (values[0] - values[1]) / (2 * eps), float((g * d).sum())
        if worst is None or abs(analytic - numeric) > worst[0]:
            worst = (abs(analytic - numeric), k, t.shape, analytic, numeric)
    _, k, shape, analytic, numeric = worst
    return f"worst: tensor {k} (shape {shape}), analytic {analytic:.10g}, numeric {numeric:.10g}"
