"""Layers with PyTorch's names, arguments and default initialisations.

``Module`` registers the ``Parameter`` s, buffers and submodules assigned to
it, so ``parameters()``, ``state_dict()`` and ``train()``/``eval()`` find them
by walking attributes, exactly as in ``torch.nn``. A state dict is a plain
mapping from dotted names ("layers.0.weight") to backend arrays.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from . import backend
from . import functional as F
from .tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "Linear", "Conv2d", "ConvTranspose2d", "Upsample",
           "BatchNorm1d", "BatchNorm2d", "Embedding", "Dropout", "ReLU", "LeakyReLU", "ELU",
           "Sigmoid", "Tanh", "Flatten", "Identity", "init"]


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


# ---- initialisation (torch.nn.init's rules) ----------------------------------

class init:
    """Initialisers; each fills a Parameter in place from tinygan's random generator."""

    @staticmethod
    def uniform_(p, a, b):
        p.data[...] = backend.uniform(a, b, p.shape, dtype=p.dtype)
        return p

    @staticmethod
    def normal_(p, mean=0.0, std=1.0):
        p.data[...] = mean + std * backend.randn(*p.shape, dtype=p.dtype)
        return p

    @staticmethod
    def zeros_(p):
        p.data[...] = 0
        return p

    @staticmethod
    def ones_(p):
        p.data[...] = 1
        return p

    @staticmethod
    def kaiming_uniform_default_(weight, bias, fan_in):
        """PyTorch's default for Linear and conv layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

        (kaiming_uniform_ with a = sqrt(5) reduces to that bound for the weight;
        the bias uses the same bound.)
        """
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(weight, -bound, bound)
        if bias is not None:
            init.uniform_(bias, -bound, bound)

    @staticmethod
    def dcgan_(module):
        """DCGAN's initialisation (Radford et al. 2016): conv and linear weights ~ N(0, 0.02),
        batch-norm scales ~ N(1, 0.02), biases 0. Applies to every submodule."""
        for m in module.modules():
            if isinstance(m, (Conv2d, ConvTranspose2d, Linear)):
                init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    init.zeros_(m.bias)
            elif isinstance(m, (BatchNorm1d, BatchNorm2d)) and m.affine:
                init.normal_(m.weight, 1.0, 0.02)
                init.zeros_(m.bias)
        return module


def _empty(*shape):
    return backend.xp().zeros(shape, dtype=backend.DEFAULT_DTYPE)


# ---- layers ------------------------------------------------------------------

class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        F._size(in_features, "in_features", "Linear")
        F._size(out_features, "out_features", "Linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_empty(out_features, in_features))
        self.bias = Parameter(_empty(out_features)) if bias else None
        init.kaiming_uniform_default_(self.weight, self.bias, in_features)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        F._size(in_channels, "in_channels", "Conv2d")
        F._size(out_channels, "out_channels", "Conv2d")
        kh, kw = F._pair(kernel_size, "kernel_size", "Conv2d", 1)
        F._pair(stride, "stride", "Conv2d", 1)
        F._pair(padding, "padding", "Conv2d", 0)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = Parameter(_empty(out_channels, in_channels, kh, kw))
        self.bias = Parameter(_empty(out_channels)) if bias else None
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
        F._size(in_channels, "in_channels", "ConvTranspose2d")
        F._size(out_channels, "out_channels", "ConvTranspose2d")
        kh, kw = F._pair(kernel_size, "kernel_size", "ConvTranspose2d", 1)
        F._pair(stride, "stride", "ConvTranspose2d", 1)
        F._pair(padding, "padding", "ConvTranspose2d", 0)
        F._pair(output_padding, "output_padding", "ConvTranspose2d", 0)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.output_padding = (kh, kw), stride, padding, output_padding
        self.weight = Parameter(_empty(in_channels, out_channels, kh, kw))
        self.bias = Parameter(_empty(out_channels)) if bias else None
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
        F._size(num_features, "num_features", type(self).__name__)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = Parameter(backend.xp().ones(num_features, dtype=backend.DEFAULT_DTYPE)) if affine else None
        self.bias = Parameter(_empty(num_features)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", _empty(num_features))
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
        F._size(num_embeddings, "num_embeddings", "Embedding")
        F._size(embedding_dim, "embedding_dim", "Embedding")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(_empty(num_embeddings, embedding_dim))
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


def _activation(name, fn, doc, **defaults):
    def __init__(self, *args, **kwargs):
        Module.__init__(self)
        params = dict(defaults)
        params.update(zip(defaults, args))
        params.update(kwargs)
        unknown = set(params) - set(defaults)
        if unknown:
            raise TypeError(f"{name}: unexpected arguments {sorted(unknown)}")
        for k, v in params.items():
            object.__setattr__(self, k, v)

    def forward(self, x):
        return fn(x, **{k: getattr(self, k) for k in defaults})

    def extra_repr(self):
        return ", ".join(f"{k}={getattr(self, k)}" for k in defaults)
    return type(name, (Module,), {"__init__": __init__, "forward": forward, "extra_repr": extra_repr,
                                  "__doc__": doc})


ReLU = _activation("ReLU", F.relu, "max(x, 0)")
LeakyReLU = _activation("LeakyReLU", F.leaky_relu, "x if x > 0 else negative_slope * x", negative_slope=0.01)
ELU = _activation("ELU", F.elu, "x if x > 0 else alpha * (exp(x) - 1)", alpha=1.0)
Sigmoid = _activation("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")
Tanh = _activation("Tanh", F.tanh, "tanh(x)")
Identity = _activation("Identity", lambda x: x, "returns its input")


class Flatten(Module):
    """Flatten dims start_dim..end_dim (default: all but the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)
