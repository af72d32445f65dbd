"""The autograd engine: ``Tensor`` and reverse-mode differentiation.

A ``Tensor`` wraps one backend array (NumPy, CuPy or the strict emulation).
Every differentiable op (all of them live in ``tinygan.functional``) builds
its output with :meth:`Tensor.from_op`, handing over its inputs and a
closure ``backward(grad_out) -> grads`` that returns one gradient per input.
That closure sits next to the forward code of the op, so each op's math is in
one place.

``backward()`` then walks the recorded graph once in reverse topological
order. The walk is iterative (an explicit stack, not recursion), so a graph
thousands of ops deep never meets Python's recursion limit. Gradients of a
tensor used several times are summed; broadcasting in the forward pass is
undone by :func:`unbroadcast`, the one place that reduces a gradient back to
its input's shape.
"""
from __future__ import annotations

import contextlib
import threading

from . import backend


class _GradMode(threading.local):
    """Whether ops record the graph, per thread (as in PyTorch): a thread inside no_grad() does not
    switch recording off for another thread's ops."""
    enabled = True


_grad_mode = _GradMode()
#: The ops behind Tensor's operators and methods (``a + b`` is ``F.add(a, b)``). The engine sits below
#: the ops in the layers, so it does not import them: tinygan.functional puts itself here when imported.
F = None


@contextlib.contextmanager
def no_grad():
    """Within this block ops record no graph (inference, EMA updates, sampling)."""
    previous, _grad_mode.enabled = _grad_mode.enabled, False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def is_grad_enabled() -> bool:
    """Whether ops currently record the graph for backward."""
    return _grad_mode.enabled


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=axes, keepdims=True) if axes else grad
    return grad.reshape(shape)


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``data`` is the backend array, ``grad`` the accumulated gradient (a backend
    array, ``None`` until backward reaches it), ``requires_grad`` whether
    gradients flow to it. Non-leaf tensors keep their parents and a backward
    closure until ``backward()`` has used them.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if backend.is_host(data):
            data = backend.to_device(data)  # host data moves to the current backend
        if dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        self.data = data
        self.grad = None
        self._requires_grad = False
        self.requires_grad = requires_grad
        self._parents = ()
        self._backward = None
        self._freed = False  # an op output whose graph a backward() has released
        self._grad_into = None  # a leaf's place in a flat gradient buffer (set by an optimiser), or None

    @classmethod
    def from_op(cls, data, inputs, backward):
        """The output of an op: the one contract between the ops and the engine.

        ``inputs`` are the op's operands in order; those that are not tensors
        (numbers, arrays) are constants. ``backward(grad)`` returns one
        gradient (or None) per input; the constants' are dropped here.
        """
        out = cls(data)
        parents = [i for i, x in enumerate(inputs) if isinstance(x, Tensor)]
        if not (_grad_mode.enabled and any(inputs[i].requires_grad for i in parents)):
            return out
        out.requires_grad = True
        if len(parents) == len(inputs):
            out._parents, out._backward = tuple(inputs), backward
        else:
            out._parents = tuple(inputs[i] for i in parents)
            out._backward = lambda g: [grads[i] for grads in (backward(g),) for i in parents]
        return out

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value and self.data.dtype.kind not in "fc":  # as PyTorch: a gradient of an integer is not defined
            raise TypeError(f"only floating point tensors can require gradients; this tensor has dtype "
                            f"{self.data.dtype} (shape {tuple(self.data.shape)}): cast it first, e.g. "
                            "tensor(x, dtype=float32)")
        self._requires_grad = bool(value)

    # ---- properties shared with the array --------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._backward is None)

    def __len__(self):
        return self.shape[0]

    def __bool__(self):
        # An `if` on a device value would be a silent device-to-host copy (and is ambiguous
        # for more than one element): ask for the value explicitly instead.
        raise TypeError("the truth value of a Tensor is not defined; compare explicitly at a "
                        "logging point with t.item() or t.numpy()")

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={backend._label(backend.get_array_module(self.data))}{grad})"

    # ---- host transfers: explicit, for logging points only ----------------
    def numpy(self):
        """A host NumPy copy of the data (a device-to-host transfer on a GPU)."""
        return backend.to_host(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number (a device-to-host transfer)."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    # ---- reverse mode -----------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the upstream gradient; it may be omitted only for a
        one-element tensor (a loss). The graph is freed afterwards unless
        ``retain_graph`` is set, so a second backward needs a new forward.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor "
                                   f"(a loss); got shape {self.shape}. Pass grad= or reduce first.")
            grad = xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else grad
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"backward(): gradient shape {tuple(grad.shape)} does not match tensor shape {self.shape}")

        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._freed:  # otherwise taken for a leaf: the gradient would stop here, silently
                raise RuntimeError("backward() through a graph that an earlier backward() already freed; "
                                   "pass retain_graph=True to the first backward, or run a new forward")
            if node._backward is None:  # a leaf: keep its gradient
                # an owned copy: g may be a read-only broadcast view (sum, mean), the array another
                # leaf also got (add), or the caller's own; in-place edits of .grad must touch only it.
                # A parameter whose optimiser keeps all gradients in one flat buffer gets its copy there.
                into = node._grad_into
                if node.grad is None:
                    if into is None:
                        node.grad = g.copy()
                    else:
                        into[...] = g
                        node.grad = into
                elif node.grad is into:
                    into += g
                else:
                    node.grad = node.grad + g
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                if tuple(pg.shape) != parent.shape:
                    pg = unbroadcast(pg, parent.shape)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                node._parents, node._backward, node._freed = (), None, True

    # ---- operators: the ops themselves live in functional -----------------
    def __add__(self, o): return F.add(self, o)
    def __radd__(self, o): return F.add(o, self)
    def __sub__(self, o): return F.sub(self, o)
    def __rsub__(self, o): return F.sub(o, self)
    def __mul__(self, o): return F.mul(self, o)
    def __rmul__(self, o): return F.mul(o, self)
    def __truediv__(self, o): return F.div(self, o)
    def __rtruediv__(self, o): return F.div(o, self)
    def __pow__(self, o): return F.pow(self, o)
    def __rpow__(self, o): return F.pow(o, self)
    def __matmul__(self, o): return F.matmul(self, o)
    def __rmatmul__(self, o): return F.matmul(o, self)
    def __neg__(self): return F.neg(self)
    def __getitem__(self, index): return F.getitem(self, index)
    def __lt__(self, o): return F.compare("lt", self, o)
    def __le__(self, o): return F.compare("le", self, o)
    def __gt__(self, o): return F.compare("gt", self, o)
    def __ge__(self, o): return F.compare("ge", self, o)
    def __eq__(self, o): return F.compare("eq", self, o)
    def __ne__(self, o): return F.compare("ne", self, o)
    __hash__ = object.__hash__  # identity, so tensors can key dicts and sets

    def reshape(self, *shape): return F.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)
    def view(self, *shape): return self.reshape(*shape)
    def permute(self, *axes): return F.permute(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes)
    def transpose(self, dim0, dim1): return F.transpose(self, dim0, dim1)
    def flatten(self, start_dim=0, end_dim=-1): return F.flatten(self, start_dim, end_dim)
    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def abs(self): return F.abs(self)
    def sqrt(self): return F.sqrt(self)
    def clip(self, min=None, max=None): return F.clip(self, min, max)
    clamp = clip
    def sigmoid(self): return F.sigmoid(self)
    def tanh(self): return F.tanh(self)
    def relu(self): return F.relu(self)

    @property
    def T(self):
        return F.permute(self, tuple(reversed(range(self.ndim))))


def _topological_order(root):
    """Nodes reachable from ``root``, each after all of its parents, without recursion."""
    # A node is marked when it is expanded, not when it is pushed: marking at push time
    # let a node reached first through a short path be emitted before a longer path
    # to it had been explored, so its gradient was used before it was complete.
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node._parents:
            if id(p) not in seen and p.requires_grad:
                stack.append((p, False))
    return order


def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    """Make a tensor on the current backend (NCHW by convention).

    Arrays keep their dtype; Python numbers and lists of floats become
    float32 (``backend.DEFAULT_DTYPE``), as in PyTorch.
    """
    if dtype is None and not hasattr(data, "dtype"):
        data = backend.to_device(data)
        dtype = backend.DEFAULT_DTYPE if data.dtype.kind == "f" else None
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)

