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

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict"]


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
