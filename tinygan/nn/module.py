"""Module and Parameter: the containers every layer and model is built from, as in torch.nn.

``Module`` registers the ``Parameter`` s, buffers and submodules assigned to
it, so ``parameters()``, ``state_dict()`` and ``train()``/``eval()`` find them
by walking attributes, exactly as in ``torch.nn``. A state dict is a plain
mapping from dotted names ("layers.0.weight") to backend arrays.
"""
from __future__ import annotations

from collections import OrderedDict

from .. import backend
from ..tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "StateDictError", "check_state_matches"]


class Parameter(Tensor):
    """A tensor that is a trainable weight of a Module (requires_grad=True)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of layers and models: subclasses set attributes in __init__ and define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        if isinstance(value, Parameter):
            home = self._parameters
        elif isinstance(value, Module):
            home = self._modules
        elif name in self._buffers and hasattr(value, "shape") and not isinstance(value, Tensor):
            home = self._buffers  # rebinding a buffer to a new array keeps it in state_dict(), as in torch
        else:
            home = None
        for table in (self._parameters, self._buffers, self._modules):
            if table is not home:
                table.pop(name, None)
        if home is not None:
            home[name] = value  # a name already there keeps its place, so parameters() keeps its order
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A state array that is saved in state_dict() but not trained (e.g. running_mean)."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def __getattr__(self, name):  # buffers may be rebound by load_state_dict
        buffers = self.__dict__.get("_buffers", {})
        if name in buffers:
            return buffers[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal ---------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self):
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, m in self.named_modules():
            for name, b in m._buffers.items():
                yield (f"{prefix}.{name}" if prefix else name), b

    # ---- modes and gradients ----------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- state -------------------------------------------------------------
    def state_dict(self):
        """Name -> backend array for every parameter and buffer (no copies)."""
        state = OrderedDict((n, p.data) for n, p in self.named_parameters())
        state.update(self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into this module's parameters and buffers.

        Missing, unexpected and mis-shaped entries raise an error that names
        them; arrays are moved to the backend of the receiving parameter.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict for {type(self).__name__}: missing {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                           f"{' ...' if len(unexpected) > 5 else ''}")
        for name, target in own.items():
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"load_state_dict for {type(self).__name__}: '{name}' has shape "
                                 f"{tuple(value.shape)}, the module expects {tuple(target.shape)}")
            if backend.is_host(value) and not backend.is_host(target):
                value = backend.to_device(value)
            target[...] = value  # in place: optimisers and buffers keep their references
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        body = "\n  ".join(lines)
        return f"{type(self).__name__}({self.extra_repr()}" + (f"\n  {body}\n)" if lines else ")")


class Sequential(Module):
    """Modules applied in order; indexable like a list."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):  # as torch.nn.Sequential; it was silently dropped
                raise TypeError(f"Sequential: argument {i} is a {type(layer).__name__} ({layer!r}), not an "
                                "nn.Module; wrap a function in a Module subclass that calls it in forward()")
            setattr(self, str(i), layer)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x


class ModuleList(Module):
    """Modules held in a list, registered so that parameters() and state_dict() see them (torch.nn.ModuleList)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: expected an nn.Module, got {type(module).__name__} ({module!r})")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)


class ModuleDict(Module):
    """Modules held by name, registered so that parameters() and state_dict() see them (torch.nn.ModuleDict)."""

    def __init__(self, modules=None):
        super().__init__()
        for name, m in dict(modules or {}).items():
            self[name] = m

    def __setitem__(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict[{name!r}]: expected an nn.Module, got {type(module).__name__}")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"ModuleDict: names must be non-empty strings without '.', got {name!r}")
        setattr(self, name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __contains__(self, name):
        return name in self._modules

    def __iter__(self):
        return iter(self._modules)

    def __len__(self):
        return len(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()


# ---- checking a loaded state dict against a model, before loading it ----------------------

class StateDictError(ValueError):
    """A state dict does not fit the module it is loaded into (names or shapes differ)."""


def _shape_str(shape):
    return str(tuple(int(s) for s in shape))


def check_state_matches(expected, got, what="generator",
                        hint="was it saved with other --filters/--size?"):
    """Check that a loaded state dict has exactly the names and shapes a model expects.

    Parameters
    ----------
    expected : dict[str, tuple of int]
        Name -> shape that the model needs, in the model's parameter order,
        e.g. ``{k: v.shape for k, v in model.state_dict().items()}``.
    got : dict[str, numpy.ndarray]
        Name -> array found in the checkpoint (anything with ``.shape``).
    what : str
        What the state belongs to, used in the message ("generator",
        "discriminator", "optimizer", ...).
    hint : str or None
        A likely cause appended to the message; ``None`` for no hint.

    Raises
    ------
    StateDictError
        Naming the first problem, looked for in this order: walking ``expected``
        in its order, a missing entry or one of another shape; then an entry of
        ``got`` that the model does not have. The number of further problems
        is added. For example: ``checkpoint does not match the generator:
        parameter 'layers.0.weight' has shape (64, 3, 3, 3) in the checkpoint,
        expected (32, 3, 3, 3) — was it saved with other --filters/--size?``
    """
    problems = []
    for name, shape in expected.items():
        if name not in got:
            problems.append(
                f"parameter {name!r} with shape {_shape_str(shape)} is missing from the checkpoint")
            continue
        got_shape = tuple(int(s) for s in got[name].shape)
        if got_shape != tuple(int(s) for s in shape):
            problems.append(
                f"parameter {name!r} has shape {_shape_str(got_shape)} in the checkpoint, "
                f"expected {_shape_str(shape)}")
    for name, value in got.items():
        if name not in expected:
            problems.append(
                f"the checkpoint has an unexpected entry {name!r} with shape "
                f"{_shape_str(value.shape)}, which the {what} does not have")
    if problems:
        more = f" (and {len(problems) - 1} more mismatch{'es' if len(problems) > 2 else ''})" \
            if len(problems) > 1 else ""
        tail = f" — {hint}" if hint else ""
        raise StateDictError(f"checkpoint does not match the {what}: {problems[0]}{more}{tail}")
