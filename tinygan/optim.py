"""Optimisers with PyTorch's names, defaults and update rules.

Each optimiser keeps ``param_groups`` (one dict of hyperparameters per group
of parameters, as in PyTorch), so a learning rate can be changed during
training with ``opt.param_groups[i]["lr"] = ...``, or for every group with
``opt.lr = ...``; :class:`ReduceLROnStall` is a scheduler that does so.
Updates run in place on the device; the step counter is a Python int, so no
value ever travels to the host.
"""
from __future__ import annotations

from . import backend

__all__ = ["Optimizer", "Adam", "SGD", "ReduceLROnStall"]


class Optimizer:
    """Base class: the parameter groups, their hyperparameters and each parameter's state.

    ``params`` is an iterable of tensors, or of dicts ``{"params": [...], "lr": ...}``,
    one per group with its own hyperparameters (the others come from the
    keyword arguments, then from the defaults), as in PyTorch.
    """

    defaults: dict = {}

    def __init__(self, params, **hyper):
        name = type(self).__name__
        params = list(params)
        if not params:
            raise ValueError(f"{name} got an empty parameter list")
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for gi, given in enumerate(groups):
            if not isinstance(given, dict) or "params" not in given:
                raise TypeError(f"{name}: parameter group {gi} must be a dict with 'params', got {given!r}")
            extra = set(given) - set(self.defaults) - {"params"}
            if extra:
                raise TypeError(f"{name}: parameter group {gi} has unexpected settings {sorted(extra)}")
            group = dict(self.defaults, **hyper)
            group.update((k, v) for k, v in given.items() if k != "params")
            self._check(group)
            group["params"] = list(given["params"])
            self.param_groups.append(group)
        self.params = [p for g in self.param_groups for p in g["params"]]
        for i, p in enumerate(self.params):
            if not getattr(p, "requires_grad", False):
                raise TypeError(f"{name}: parameter {i} is not a tensor that requires grad")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears more than once (in one group or in two)")
        self.state = [{} for _ in self.params]

    def _check(self, group):
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']}")

    @property
    def lr(self):
        """The learning rate (of the first group; setting it sets every group's)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for g in self.param_groups:
            g["lr"] = value

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        states = iter(self.state)  # one per parameter, in the groups' order
        for group in self.param_groups:
            for p in group["params"]:
                state = next(states)
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


class ReduceLROnStall:
    """Multiply the learning rate of ``optimizers`` by ``factor`` when a watched value stops improving.

    As ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode "min", relative
    threshold), but judged on fixed windows of steps so that the decisions do
    not depend on how often values are reported: :meth:`observe` takes the
    value of each step; at every multiple of ``window`` the window's mean is
    compared with the best window mean so far, and unless it is at least
    ``tolerance`` (relative) below it, the learning rate becomes
    ``max(lr * factor, min_lr)``. BEGAN halves its rate this way when M_global
    stalls, with a floor (too low a rate late in training collapsed public runs).
    """

    def __init__(self, optimizers, window=3000, tolerance=0.02, factor=0.5, min_lr=0.0):
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"ReduceLROnStall: window must be a whole number of steps >= 1, got {window!r}")
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnStall: factor must be in (0, 1), got {factor}")
        self.window, self.tolerance, self.factor, self.min_lr = window, tolerance, factor, min_lr
        self.lr = self.optimizers[0].lr
        self.best = None
        self.total, self.count = 0.0, 0

    def observe(self, step, value):
        """Take the watched value of ``step`` (a host number); returns True when the rate changed."""
        self.total += value
        self.count += 1
        if step % self.window:
            return False
        mean, self.total, self.count = self.total / self.count, 0.0, 0
        if self.best is None or mean < self.best * (1 - self.tolerance):
            self.best = mean if self.best is None else min(self.best, mean)
            return False
        self.best = min(self.best, mean)
        new = max(self.lr * self.factor, self.min_lr)
        changed, self.lr = new != self.lr, new
        self._apply()
        return changed

    def _apply(self):
        for opt in self.optimizers:
            opt.lr = self.lr

    def state_dict(self):
        return dict(lr=self.lr, best=self.best, total=self.total, count=self.count)

    def load_state_dict(self, s):
        self.lr, self.best, self.total, self.count = s["lr"], s["best"], s["total"], s["count"]
        self._apply()
