"""Optimisers with PyTorch's names, defaults and update rules.

Each optimiser keeps ``param_groups`` (a list with one dict of
hyperparameters per group, as in PyTorch), so the learning rate can be changed
during training with ``opt.param_groups[0]["lr"] = ...`` or simply
``opt.lr = ...``. Updates run in place on the device; the step counter is a
Python int, so no value ever travels to the host.
"""
from __future__ import annotations

from . import backend

__all__ = ["Optimizer", "Adam", "SGD"]


class Optimizer:
    """Base class: holds the parameters, their per-parameter state and the hyperparameters."""

    defaults: dict = {}

    def __init__(self, params, **hyper):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for i, p in enumerate(params):
            if not getattr(p, "requires_grad", False):
                raise TypeError(f"{type(self).__name__}: parameter {i} is not a tensor that requires grad")
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(unknown)}")
        group = dict(self.defaults, **hyper)
        self._check(group)
        self.params = params
        self.param_groups = [dict(group, params=params)]
        self.state = [{} for _ in params]

    def _check(self, group):
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']}")

    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for g in self.param_groups:
            g["lr"] = value

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        group = self.param_groups[0]
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self._update(p, p.grad, state, group)

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    # ---- state: arrays by name, numbers as plain Python values ---------------
    def state_dict(self):
        """{"param_groups": [hyperparameters], "state": {i: {name: array or int}}}, as PyTorch."""
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"param_groups": groups, "state": {i: dict(s) for i, s in enumerate(self.state) if s}}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(groups)} parameter groups, expected {len(self.param_groups)}")
        for own, saved in zip(self.param_groups, groups):
            own.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
        self.state = [{} for _ in self.params]
        for i, s in state_dict["state"].items():
            i = int(i)
            if not 0 <= i < len(self.params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameter {i}, "
                                 f"but the optimiser has {len(self.params)} parameters")
            for k, v in s.items():
                if hasattr(v, "shape"):
                    if tuple(v.shape) != self.params[i].shape:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: '{k}' of parameter {i} has "
                                         f"shape {tuple(v.shape)}, the parameter has {self.params[i].shape}")
                    v = backend.to_device(v, self.params[i].dtype) if backend.is_host(v) else v
                    # always a copy: on the numpy backend to_device returns host arrays as they are,
                    # and step() updates the state in place, which would write into the caller's
                    # arrays (or another optimiser's live state, as state_dict() shares them)
                    v = v.copy()
                self.state[i][k] = v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), bias-corrected, with PyTorch's defaults.

        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

    weight_decay adds ``weight_decay * p`` to the gradient (L2, as torch.optim.Adam).
    """

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def _check(self, group):
        super()._check(group)
        b1, b2 = group["betas"]
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {group['betas']}")

    def _update(self, p, grad, state, group):
        xp = backend.get_array_module(p.data)
        b1, b2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * (grad * grad)
        step_size = group["lr"] / (1 - b1 ** t)
        denom = xp.sqrt(v)
        denom /= (1 - b2 ** t) ** 0.5
        denom += group["eps"]
        p.data -= step_size * (m / denom)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov-free) momentum, as torch.optim.SGD:

        b_t = momentum b_{t-1} + g_t  (b_1 = g_1);   p_t = p_{t-1} - lr b_t
    """

    defaults = dict(lr=1e-2, momentum=0.0, weight_decay=0.0)

    def _update(self, p, grad, state, group):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= group["momentum"]
                buf += grad
            grad = state["momentum_buffer"]
        p.data -= group["lr"] * grad
