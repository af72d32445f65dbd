"""Differentiable ops, each with its forward and backward side by side.

Every op takes its array module from its inputs (``xp``), so the same code
runs on NumPy, CuPy and the strict emulation. Each builds its result with
``_make(data, inputs, backward)`` where ``backward(g)`` returns one gradient
per input, in order; inputs that are not tensors (Python numbers, arrays) are
constants and their gradients are dropped. Gradients may have the broadcast
shape: the engine reduces them (``tensor.unbroadcast``).

Names, argument orders and layouts follow PyTorch (``torch.nn.functional``):
NCHW images, conv weight (out, in, kh, kw), transposed-conv weight
(in, out, kh, kw).

Convolution is im2col through strided views (``lib.stride_tricks.as_strided``)
and one large GEMM; its adjoint, col2im, is a sum over the kh*kw kernel
positions of strided slices. No scatter-add, no loop over pixels.
3x3 convs at stride 1 (nearly all of BEGAN's work) take Winograd's F(4x4, 3x3)
instead, a batch of GEMMs between small-matrix transforms, forward and
backward alike (``_conv2d_winograd``); its output is an NCHW view of
(H, W, N, C) memory, the layout its transforms read fastest.
"""
from __future__ import annotations

from . import backend
from .tensor import Tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "compare", "getitem",
    "reshape", "permute", "transpose", "flatten", "concat", "cat", "stack",
    "sum", "mean", "max", "exp", "log", "abs", "sqrt", "clip",
    "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "logsigmoid",
    "linear", "conv2d", "conv_transpose2d", "upsample_nearest", "avg_pool2d",
    "batch_norm", "dropout", "embedding", "one_hot", "check_indices",
    "l1_loss", "mse_loss", "binary_cross_entropy_with_logits",
]


# ---- plumbing --------------------------------------------------------------

def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _xp(*xs):
    return backend.get_array_module(*(_data(x) for x in xs))


def _make(data, inputs, backward):
    """Wrap an op's result; constants among ``inputs`` get no gradient."""
    tensors = [i for i, x in enumerate(inputs) if isinstance(x, Tensor)]
    if len(tensors) == len(inputs):
        return Tensor.from_op(data, inputs, backward)
    parents = tuple(inputs[i] for i in tensors)

    def backward_tensors(g):
        grads = backward(g)
        return [grads[i] for i in tensors]
    return Tensor.from_op(data, parents, backward_tensors)


def _gemm(a, b, out=None):
    """Every matrix product of the library goes through here (the benchmark times this one place).

    ``out``, when given, receives the product (a work buffer reused across calls).
    """
    if out is None:
        return a @ b
    return _xp(a, b).matmul(a, b, out=out)


# Work buffers reused from call to call, one per (array module and device, dtype, tag). Large arrays
# come from fresh mmap'ed pages each time they are allocated, and first-touch page faults
# cost about as much as a pass over the data: the conv's big temporaries (tiles, their
# transforms, the batched products) take their memory from here instead. A buffer's
# contents are undefined when handed out and stay valid only until the next request
# for the same tag; nothing that leaves an op (outputs, gradients) lives in one. They
# stay allocated between steps (BEGAN 64x64, n = 64: about 250 MB) until _release_scratch().
_SCRATCH = {}


def _scratch(xp, tag, shape, dtype):
    size = 1
    for d in shape:
        size *= d
    key = (backend.cache_key(xp), tag, dtype)
    buf = _SCRATCH.get(key)
    if buf is None or buf.size < size:
        _SCRATCH.pop(key, None)  # drop the old one before allocating the larger one
        buf = _SCRATCH[key] = xp.empty((size,), dtype=dtype)
    return buf[:size].reshape(shape)


def _release_scratch():
    """Free the conv's reusable work buffers (the next convs allocate them again)."""
    _SCRATCH.clear()


def _wants(x):
    return isinstance(x, Tensor) and x.requires_grad


def _require(cond, op, message):
    if not cond:
        raise ValueError(f"{op}: {message}")


def _as_tensor(x, op):
    if isinstance(x, Tensor):
        return x
    raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v, name, op, least=None):
    """(v, v) or the pair v itself; with ``least``, each must be >= least (a ValueError naming it)."""
    if _is_int(v):
        pair = (v, v)
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(i) for i in v):
        pair = tuple(v)
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    if least is not None and min(pair) < least:
        raise ValueError(f"{op}: {name} must be {'positive' if least == 1 else f'at least {least}'}, got {v!r}")
    return pair


def _size(v, name, op):
    """A layer size (features, channels, classes): a positive int, else an error naming it."""
    if not _is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__} {v!r}")
    if v < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {v}")
    return v


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


def _expand_reduced(g, shape, axis, keepdims, xp):
    """Undo a reduction's shape change: put back the reduced axes and broadcast."""
    if not keepdims:
        axes = _axes(axis, len(shape))
        g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return xp.broadcast_to(g, shape)


# ---- arithmetic ------------------------------------------------------------

def add(a, b):
    _xp(a, b)
    return _make(_data(a) + _data(b), (a, b), lambda g: (g, g))


def sub(a, b):
    _xp(a, b)
    return _make(_data(a) - _data(b), (a, b), lambda g: (g, -g))


def mul(a, b):
    _xp(a, b)
    da, db = _data(a), _data(b)
    return _make(da * db, (a, b), lambda g: (g * db if _wants(a) else None,
                                             g * da if _wants(b) else None))


def div(a, b):
    _xp(a, b)
    da, db = _data(a), _data(b)
    out = da / db
    return _make(out, (a, b), lambda g: (g / db if _wants(a) else None,
                                         -g * out / db if _wants(b) else None))


def neg(a):
    return _make(-a.data, (a,), lambda g: (-g,))


def pow(a, b):
    """a ** b; the gradient with respect to b needs a > 0 (it is b's log a term)."""
    xp = _xp(a, b)
    da, db = _data(a), _data(b)
    out = da ** db

    def backward(g):
        ga = g * db * da ** (db - 1) if _wants(a) else None
        gb = g * out * xp.log(da) if _wants(b) else None
        return ga, gb
    return _make(out, (a, b), backward)


def matmul(a, b):
    """Matrix product with NumPy's broadcasting of leading (batch) axes."""
    _xp(a, b)
    a, b = (x if isinstance(x, Tensor) else Tensor(x) for x in (a, b))
    _require(a.ndim >= 1 and b.ndim >= 1, "matmul", "both operands need at least one dimension")
    # b first: for vector @ vector the inner call then yields (1,), and dropping b's
    # column axis gives NumPy's 0-d result (a first would leave shape (1,))
    if b.ndim == 1:  # a vector is a one-column matrix whose column axis is then dropped
        out = matmul(a, reshape(b, b.shape + (1,)))
        return reshape(out, out.shape[:-1])
    if a.ndim == 1:  # a vector is a one-row matrix whose row axis is then dropped
        out = matmul(reshape(a, (1,) + a.shape), b)
        return reshape(out, out.shape[:-2] + out.shape[-1:])
    _require(a.shape[-1] == b.shape[-2], "matmul",
             f"shapes {a.shape} and {b.shape} do not align (inner sizes {a.shape[-1]} and {b.shape[-2]})")
    da, db = a.data, b.data
    return _make(_gemm(da, db), (a, b), lambda g: (_gemm(g, db.swapaxes(-1, -2)) if a.requires_grad else None,
                                                   _gemm(da.swapaxes(-1, -2), g) if b.requires_grad else None))


def compare(op, a, b):
    """Elementwise comparison ('lt', 'le', 'gt', 'ge', 'eq', 'ne'); the result has no gradient."""
    _xp(a, b)
    da, db = _data(a), _data(b)
    result = {"lt": da.__lt__, "le": da.__le__, "gt": da.__gt__, "ge": da.__ge__,
              "eq": da.__eq__, "ne": da.__ne__}[op](db)
    return Tensor(result)


# ---- shapes ----------------------------------------------------------------

def _basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


def getitem(x, index):
    """Basic indexing and slicing (ints, slices, None, ...), as x[index]."""
    if not _basic_index(index):
        raise TypeError("Tensor indexing takes ints, slices, None and ...; for a gather by "
                        "integer labels use functional.embedding or one_hot, got "
                        f"{type(index).__name__}")
    xp = _xp(x)

    def backward(g):
        gx = xp.zeros(x.shape, dtype=g.dtype)
        gx[index] = g  # basic indexing never repeats a position, so plain assignment suffices
        return (gx,)
    return _make(x.data[index], (x,), backward)


def reshape(x, shape):
    """x.reshape(shape); one entry may be -1."""
    try:
        out = x.data.reshape(tuple(shape))
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                         f"({x.size} elements) into {tuple(shape)}") from None
    return _make(out, (x,), lambda g: (g.reshape(x.shape),))


def permute(x, axes):
    """Reorder the axes (torch.permute / numpy.transpose)."""
    axes = tuple(a % x.ndim for a in axes)
    _require(sorted(axes) == list(range(x.ndim)), "permute",
             f"axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    inverse = tuple(sorted(range(x.ndim), key=lambda i: axes[i]))
    return _make(x.data.transpose(axes), (x,), lambda g: (g.transpose(inverse),))


def transpose(x, dim0, dim1):
    """Swap two axes (torch.transpose)."""
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return permute(x, axes)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes start_dim..end_dim into one (torch.flatten)."""
    s, e = start_dim % x.ndim, end_dim % x.ndim
    shape = x.shape[:s] + (-1,) + x.shape[e + 1:]
    return reshape(x, shape)


def concat(tensors, axis=0):
    """Join tensors along an existing axis (torch.cat)."""
    tensors = list(tensors)
    _require(len(tensors) > 0, "concat", "needs at least one tensor")
    xp = _xp(*tensors)
    ref = tensors[0].shape
    ax = axis % len(ref)
    for t in tensors:
        _require(t.ndim == len(ref) and all(n == m for i, (n, m) in enumerate(zip(t.shape, ref)) if i != ax),
                 "concat", f"shapes {[u.shape for u in tensors]} differ outside axis {axis}")
    bounds = [0]
    for t in tensors:
        bounds.append(bounds[-1] + t.shape[ax])

    def backward(g):
        index = [slice(None)] * g.ndim
        grads = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            index[ax] = slice(lo, hi)
            grads.append(g[tuple(index)])
        return grads
    return _make(xp.concatenate([t.data for t in tensors], axis=ax), tensors, backward)


cat = concat


def stack(tensors, axis=0):
    """Join tensors along a new axis (torch.stack)."""
    tensors = list(tensors)
    ax = axis % (tensors[0].ndim + 1)
    return concat([reshape(t, t.shape[:ax] + (1,) + t.shape[ax:]) for t in tensors], axis=ax)


# ---- reductions ------------------------------------------------------------

def sum(x, axis=None, keepdims=False):
    axis = tuple(axis) if isinstance(axis, list) else axis
    xp = _xp(x)
    return _make(x.data.sum(axis=axis, keepdims=keepdims), (x,),
                 lambda g: (_expand_reduced(g, x.shape, axis, keepdims, xp),))


def mean(x, axis=None, keepdims=False):
    axis = tuple(axis) if isinstance(axis, list) else axis
    xp = _xp(x)
    count = 1
    for a in _axes(axis, x.ndim):
        count *= x.shape[a]
    return _make(x.data.mean(axis=axis, keepdims=keepdims), (x,),
                 lambda g: (_expand_reduced(g / count, x.shape, axis, keepdims, xp),))


def max(x, axis=None, keepdims=False):
    axis = tuple(axis) if isinstance(axis, list) else axis
    """Maximum; with ties the gradient is shared equally among the maxima."""
    xp = _xp(x)
    out = x.data.max(axis=axis, keepdims=keepdims)

    def backward(g):
        mask = x.data == _expand_reduced(out, x.shape, axis, keepdims, xp)
        mask = mask.astype(g.dtype)
        share = mask / mask.sum(axis=axis, keepdims=True)
        return (share * _expand_reduced(g, x.shape, axis, keepdims, xp),)
    return _make(out, (x,), backward)


# ---- elementwise -----------------------------------------------------------

def exp(x):
    out = _xp(x).exp(x.data)
    return _make(out, (x,), lambda g: (g * out,))


def log(x):
    return _make(_xp(x).log(x.data), (x,), lambda g: (g / x.data,))


def abs(x):
    xp = _xp(x)
    return _make(xp.abs(x.data), (x,), lambda g: (g * xp.sign(x.data),))


def sqrt(x):
    out = _xp(x).sqrt(x.data)
    return _make(out, (x,), lambda g: (g / (2 * out),))


def clip(x, min=None, max=None):
    """Clamp to [min, max]; the gradient passes where min <= x <= max (as torch.clamp)."""
    xp = _xp(x)
    out = xp.clip(x.data, min, max)
    inside = (out == x.data)
    return _make(out, (x,), lambda g: (g * inside,))


# ---- activations -----------------------------------------------------------

def relu(x):
    out = _xp(x).maximum(x.data, 0)
    return _make(out, (x,), lambda g: (g * (x.data > 0),))


def leaky_relu(x, negative_slope=0.01):
    xp = _xp(x)
    slope = xp.where(x.data > 0, 1, negative_slope).astype(x.dtype)
    return _make(x.data * slope, (x,), lambda g: (g * slope,))


def elu(x, alpha=1.0):
    """x for x > 0, alpha (e^x - 1) otherwise; expm1 keeps small |x| exact, min() keeps e^x finite."""
    xp = _xp(x)
    positive = x.data > 0
    negative_part = alpha * xp.expm1(xp.minimum(x.data, 0))
    out = xp.where(positive, x.data, negative_part)
    # d/dx alpha (e^x - 1) = alpha e^x = negative_part + alpha: reuse the forward's array
    return _make(out, (x,), lambda g: (g * xp.where(positive, 1, negative_part + alpha),))


def _sigmoid(xp, v):
    # e = exp(-|v|) never overflows; the two branches are the same function
    e = xp.exp(-xp.abs(v))
    return xp.where(v >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(xp, v):
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|): finite for every v."""
    return xp.maximum(v, 0) + xp.log1p(xp.exp(-xp.abs(v)))


def sigmoid(x):
    out = _sigmoid(_xp(x), x.data)
    return _make(out, (x,), lambda g: (g * out * (1 - out),))


def tanh(x):
    out = _xp(x).tanh(x.data)
    return _make(out, (x,), lambda g: (g * (1 - out * out),))


def softplus(x):
    xp = _xp(x)
    return _make(_softplus(xp, x.data), (x,), lambda g: (g * _sigmoid(xp, x.data),))


def logsigmoid(x):
    """log sigmoid(x) = -softplus(-x), stable for large |x|."""
    xp = _xp(x)
    return _make(-_softplus(xp, -x.data), (x,), lambda g: (g * _sigmoid(xp, -x.data),))


# ---- layers ----------------------------------------------------------------

def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch."""
    _require(weight.ndim == 2, "linear", f"weight must be 2-D (out, in), got shape {weight.shape}")
    _require(x.ndim >= 1 and x.shape[-1] == weight.shape[1], "linear",
             f"input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}) "
             f"but weight expects {weight.shape[1]} (weight shape {weight.shape})")
    out = matmul(x, transpose(weight, 0, 1))
    if bias is not None:
        _require(bias.shape == (weight.shape[0],), "linear",
                 f"bias shape {bias.shape} does not match {weight.shape[0]} output features")
        out = out + bias
    return out


def _windows(xpad, kh, kw, sh, sw, ho, wo, xp):
    """View (N, C, kh, kw, Ho, Wo) of a padded NCHW array: window (i, j) at output (h, w)."""
    n, c = xpad.shape[:2]
    s0, s1, s2, s3 = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, c, kh, kw, ho, wo), strides=(s0, s1, s2, s3, s2 * sh, s3 * sw))


def _im2col(xpad, kh, kw, sh, sw, ho, wo, xp):
    """Columns (C*kh*kw, N*Ho*Wo): one GEMM with the (O, C*kh*kw) weight makes the conv."""
    n, c = xpad.shape[:2]
    win = _windows(xpad, kh, kw, sh, sw, ho, wo, xp)
    return win.transpose(1, 2, 3, 0, 4, 5).reshape(c * kh * kw, n * ho * wo)


def _col2im(cols6, shape, sh, sw, xp, dtype):
    """Adjoint of im2col: add each kernel position's (C, N, Ho, Wo) slab into a strided slice.

    ``cols6`` has shape (C, kh, kw, N, Ho, Wo); the result has ``shape`` (N, C, Hp, Wp).
    Writes to one slice never overlap, so each += is a plain vectorised add.
    """
    _, kh, kw, _, ho, wo = cols6.shape
    out = xp.zeros(shape, dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += cols6[:, i, j].transpose(1, 0, 2, 3)
    return out


def _pad(x, ph, pw, xp):
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _check_nchw(x, op):
    _as_tensor(x, op)
    _require(x.ndim == 4, op, f"expected an NCHW input of 4 dimensions, got shape {x.shape}")


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation, as torch.nn.functional.conv2d (no dilation or groups).

    out[n, o, h, w] = bias[o] + sum_{c,i,j} weight[o, c, i, j] * xpad[n, c, h*s + i, w*s + j]

    3x3 kernels at stride 1 (any padding) take Winograd's minimal filtering
    algorithm (:func:`_conv2d_winograd`); every other shape takes im2col and
    one GEMM (:func:`_conv2d_direct`), which is also the reference the
    Winograd path is tested against.
    """
    op = "conv2d"
    _check_nchw(x, op)
    _require(weight.ndim == 4, op, f"weight must be (out, in, kh, kw), got shape {weight.shape}")
    _require(x.shape[1] == weight.shape[1], op,
             f"input has {x.shape[1]} channels (shape {x.shape}) but weight expects "
             f"{weight.shape[1]} (weight shape {weight.shape})")
    _xp(x, weight, bias)
    (sh, sw), (ph, pw) = _pair(stride, "stride", op, 1), _pair(padding, "padding", op, 0)
    _, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    _require(ho > 0 and wo > 0, op, f"kernel {kh}x{kw} is larger than the padded input "
             f"{h + 2 * ph}x{w + 2 * pw} (input shape {x.shape}, padding {padding})")
    if bias is not None:
        _require(bias.shape == (o,), op, f"bias shape {bias.shape} does not match {o} output channels")
    if (kh, kw, sh, sw) == (3, 3, 1, 1):
        return _conv2d_winograd(x, weight, bias, ph, pw)
    return _conv2d_direct(x, weight, bias, sh, sw, ph, pw)


def _conv2d_direct(x, weight, bias, sh, sw, ph, pw):
    """conv2d by im2col and one GEMM (arguments already checked by conv2d).

    The backward recomputes the columns from the padded input instead of
    keeping them: they are kh*kw times the size of the output map, and the
    strided copy costs far less than the GEMMs around it.
    """
    xp = _xp(x, weight, bias)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xpad = _pad(x.data, ph, pw, xp)
    w2 = weight.data.reshape(o, -1)
    out = xp.ascontiguousarray(_gemm(w2, _im2col(xpad, kh, kw, sh, sw, ho, wo, xp))
                               .reshape(o, n, ho, wo).transpose(1, 0, 2, 3))
    if bias is not None:
        out += bias.data.reshape(1, o, 1, 1)

    def backward(g):
        g2 = g.transpose(1, 0, 2, 3).reshape(o, n * ho * wo)
        gw = _gemm(g2, _im2col(xpad, kh, kw, sh, sw, ho, wo, xp).T).reshape(weight.shape) if _wants(weight) else None
        gb = g.sum(axis=(0, 2, 3)) if _wants(bias) else None
        gx = None
        if _wants(x):
            gcols = _gemm(w2.T, g2).reshape(c, kh, kw, n, ho, wo)
            gx = _col2im(gcols, xpad.shape, sh, sw, xp, g.dtype)[:, :, ph:ph + h, pw:pw + w]
        return gx, gw, gb
    return _make(out, (x, weight, bias) if bias is not None else (x, weight), backward)


# ---- Winograd F(m x m, 3 x 3) -------------------------------------------------------------

# Lavin & Gray 2016 (arXiv 1509.09308), section 4: interpolation points 0, -1, 1 (and infinity)
# for F(2x2, 3x3); 0, +-1, +-2 (and infinity) for F(4x4, 3x3). (B^T, G, A^T) per output tile size m.
_WINOGRAD = {
    2: ([[1, 0, -1, 0],
         [0, 1, 1, 0],
         [0, -1, 1, 0],
         [0, 1, 0, -1]],
        [[1, 0, 0],
         [1 / 2, 1 / 2, 1 / 2],
         [1 / 2, -1 / 2, 1 / 2],
         [0, 0, 1]],
        [[1, 1, 1, 0],
         [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0],
         [0, -4, -4, 1, 1, 0],
         [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0],
         [-1 / 6, -1 / 6, -1 / 6],
         [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6],
         [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0],
         [0, 1, -1, 2, -2, 0],
         [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}
# Output tile size of the Winograd path: F(4x4) needs 4x fewer multiplications than im2col,
# F(2x2) 2.25x. Measured forward + backward of one layer, batch 16, 1 BLAS thread (a shared machine):
# 64x64, 64 -> 64 channels: F(4x4) 234 ms, F(2x2) 340 ms, im2col 420 ms; 32x32, 128 -> 128:
# 110, 215 and 327 ms. F(4x4) rounds worse (WINOGRAD_RTOL), well inside float32 training noise.
WINOGRAD_TILE = 4
# Float32 error of the Winograd path: max |y - y_ref| / max |y_ref|, y_ref the float64 direct
# conv, on ELU activations with PyTorch's default init at BEGAN's sizes (8..64 px, 3..256
# channels), for the output and the input and weight gradients alike. Measured: F(4x4) up to
# 1.4e-5, F(2x2) up to 4e-6, im2col in float32 up to 7e-7. tests/test_conv_fast.py holds
# both tile sizes to this bound.
WINOGRAD_RTOL = 5e-5


_WINOGRAD_ARRAYS = {}


def _winograd_matrices(m, xp, dtype):
    """(B^T, G, A^T) of F(m x m, 3 x 3) as arrays of ``dtype`` on ``xp`` (made once, then cached)."""
    lists = _WINOGRAD[m]
    key = (m, backend.cache_key(xp), dtype)
    cached = _WINOGRAD_ARRAYS.get(key)
    if cached is None or cached[0] is not lists:  # a replaced table (a test's mutation) is re-read
        cached = _WINOGRAD_ARRAYS[key] = (lists, tuple(xp.asarray(mat, dtype=dtype) for mat in lists))
    return cached[1]


def _to_tiles(x, top, left, hp, wp, xp):
    """(hp, wp, N, C) work array: NCHW ``x`` moved to rows x columns x batch x channels, zero-padded.

    In this layout a tile row (all columns, images and channels) is one long
    contiguous vector, so each 1-D transform is a few large products. An
    input that already has this memory order (the output of a 3x3 conv, and
    elementwise ops of it) is copied without transposing.
    """
    n, c, h, w = x.shape
    out = _scratch(xp, "tiles", (hp, wp, n, c), x.dtype)
    out[:top] = 0
    out[top + h:] = 0
    out[top:top + h, :left] = 0
    out[top:top + h, left + w:] = 0
    out[top:top + h, left:left + w] = x.transpose(2, 3, 0, 1)
    return out


def _winograd_input(xt, bt, th, tw, xp):
    """V = B^T d B for every a x a input tile d: (hp, wp, N, C) -> (a, a, th, tw, N, C) work array.

    Tile (t, u) starts at row t*m, column u*m; neighbouring tiles overlap by 2.
    Rows first (one product per tile row over every column, image and channel),
    then columns.
    """
    hp, wp, n, c = xt.shape
    a = bt.shape[0]
    m = a - 2
    item = xt.itemsize
    rows = xp.lib.stride_tricks.as_strided(xt, (th, a, wp * n * c), (m * xt.strides[0], xt.strides[0], item))
    half = _scratch(xp, "half", (a, th, wp, n, c), xt.dtype)
    xp.matmul(bt, rows, out=half.reshape(a, th, wp * n * c).transpose(1, 0, 2))
    s = half.strides
    cols = xp.lib.stride_tricks.as_strided(half, (a, th, tw, a, n * c), (s[0], s[1], m * s[2], s[2], item))
    v = _scratch(xp, "v", (a, a, th, tw, n, c), xt.dtype)
    xp.matmul(bt, cols, out=v.reshape(a, a, th, tw, n * c).transpose(0, 2, 3, 1, 4))
    return v


def _winograd_input_adjoint(dv, bt, hp, wp, xp):
    """Adjoint of _winograd_input: B dV B^T per tile, summed where tiles overlap -> (hp, wp, N, C).

    Of each tile's a output columns (rows), the first m tile the image without
    overlap and are written in place; the last a - m = 2 fall on the next
    tile's first two and are added as two strided slices (no scatter).
    """
    a, _, th, tw, n, c = dv.shape
    m = a - 2
    b = bt.T
    nc = n * c
    per_tile = dv.reshape(a, a, th, tw, nc).transpose(0, 2, 3, 1, 4)   # (a_i, th, tw, a_j, nc)
    half = _scratch(xp, "half", (a, th, wp, nc), dv.dtype)
    xp.matmul(b[:m], per_tile, out=half[:, :, :tw * m].reshape(a, th, tw, m, nc))
    half[:, :, tw * m:] = 0
    spill = xp.matmul(b[m:], per_tile, out=_scratch(xp, "spill", (a, th, tw, a - m, nc), dv.dtype))
    for k in range(a - m):
        half[:, :, m + k:m + k + tw * m:m] += spill[:, :, :, k]
    rows = half.reshape(a, th, wp * nc).transpose(1, 0, 2)             # (th, a_i, wp*nc)
    dx = xp.empty((hp, wp, n, c), dtype=dv.dtype)
    xp.matmul(b[:m], rows, out=dx[:th * m].reshape(th, m, wp * nc))
    dx[th * m:] = 0
    spill = xp.matmul(b[m:], rows, out=_scratch(xp, "spill", (th, a - m, wp * nc), dv.dtype))
    for k in range(a - m):
        dx[m + k:m + k + th * m:m] += spill[:, k].reshape(th, wp, n, c)
    return dx


def _winograd_output(mm, at, xp):
    """Y = A^T M A for every tile: (a, a, th, tw, N, O) -> (th*m, tw*m, N, O), a new array."""
    a, _, th, tw, n, o = mm.shape
    m = at.shape[0]
    half = _scratch(xp, "half", (m, a, th, tw, n * o), mm.dtype)
    xp.matmul(at, mm.reshape(a, a * th * tw * n * o), out=half.reshape(m, -1))
    y = xp.empty((th, m, tw, m, n, o), dtype=mm.dtype)
    xp.matmul(at, half.transpose(0, 2, 3, 1, 4), out=y.reshape(th, m, tw, m, n * o).transpose(1, 0, 2, 3, 4))
    return y.reshape(th * m, tw * m, n, o)


def _winograd_output_adjoint(gy, at, th, tw, xp):
    """Adjoint of _winograd_output: dM = A dY A^T per tile, (th*m, tw*m, N, O) -> (a*a, P, O) work array."""
    _, _, n, o = gy.shape
    m, a = at.shape
    half = _scratch(xp, "half", (m, a, th, tw, n * o), gy.dtype)
    xp.matmul(at.T, gy.reshape(th, m, tw, m, n * o).transpose(1, 0, 2, 3, 4), out=half.transpose(0, 2, 3, 1, 4))
    dm = _scratch(xp, "m", (a * a, th * tw * n, o), gy.dtype)
    xp.matmul(at.T, half.reshape(m, -1), out=dm.reshape(a, -1))
    return dm


def _winograd_weight(weight, g):
    """U = G w G^T for every (o, c) kernel: (O, C, 3, 3) -> (a*a, C, O), one product with G (x) G."""
    o, c = weight.shape[:2]
    a = g.shape[0]
    kron = (g[:, None, :, None] * g[None, :, None, :]).reshape(a * a, 9)  # row a*i + j: (G w G^T)[i, j]
    xp = _xp(weight)
    return xp.ascontiguousarray(xp.matmul(weight.reshape(o * c, 9), kron.T).reshape(o, c, a * a).transpose(2, 1, 0))


def _winograd_weight_adjoint(du, g):
    """Adjoint of _winograd_weight: dw = G^T dU G, (a*a, C, O) -> (O, C, 3, 3)."""
    a = g.shape[0]
    _, c, o = du.shape
    kron = (g[:, None, :, None] * g[None, :, None, :]).reshape(a * a, 9)
    xp = _xp(du)
    return xp.matmul(du.reshape(a * a, c * o).T, kron).reshape(c, o, 3, 3).transpose(1, 0, 2, 3)


def _conv2d_winograd(x, weight, bias, ph, pw, m=None):
    """conv2d for 3x3 kernels at stride 1 by Winograd's minimal filtering F(m x m, 3 x 3).

    Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"
    (arXiv 1509.09308). The padded input is cut into a x a tiles d (a = m + 2)
    that overlap by 2 and advance by m; each gives an m x m output tile. With
    g the 3x3 kernel of output channel o and input channel c, and p a tile
    (image, tile row, tile column):

        forward                                   backward, from dY = dL/dY
        U[o,c]   = G g[o,c] G^T                   dM[o,p]  = A dY[o,p] A^T
        V[c,p]   = B^T d[c,p] B                   dV[c,p]  = sum_o U[o,c] (.) dM[o,p]
        M[o,p]   = sum_c U[o,c] (.) V[c,p]        dU[o,c]  = sum_p dM[o,p] (.) V[c,p]
        Y[o,p]   = A^T M[o,p] A                   dd[c,p]  = B dV[c,p] B^T  (summed where tiles overlap)
                                                  dg[o,c]  = G^T dU[o,c] G

    (.) is the elementwise product, so for each of the a*a positions (xi, nu)
    of a tile the sums over c, o and p are ordinary matrix products: a batch of
    a*a GEMMs (P x C)(C x O), (P x O)(O x C) and (C x P)(P x O) through _gemm,
    with P = N * tiles. The backward is the exact adjoint of the forward.
    Column 1 of A^T is all ones, so the bias is added to M[1, 1] (it then
    reaches each output of the tile once) and dbias is the sum of dM[1, 1].

    F(2x2, 3x3), interpolation points 0, -1, 1:

        B^T = [1  0 -1  0]     G = [ 1    0    0 ]     A^T = [1  1  1  0]
              [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
              [0 -1  1  0]         [1/2 -1/2  1/2]
              [0  1  0 -1]         [ 0    0    1 ]

    F(4x4, 3x3), interpolation points 0, -1, 1, -2, 2:

        B^T = [4  0 -5  0  1  0]   G = [ 1/4    0     0  ]   A^T = [1  1  1  1  1  0]
              [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]         [0  1 -1  2 -2  0]
              [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]         [0  1  1  4  4  0]
              [0 -2 -1  2  1  0]       [1/24  1/12   1/6 ]         [0  1 -1  8 -8  1]
              [0  2 -1 -2  1  0]       [1/24 -1/12   1/6 ]
              [0  4  0 -5  0  1]       [  0     0     1  ]

    Per output pixel F(m x m, 3 x 3) needs (m + 2)^2 / m^2 multiplications per
    (c, o) pair instead of 9: 4 for m = 2 (2.25x fewer), 2.25 for m = 4 (4x
    fewer). Odd sizes: the output is padded up to whole tiles (the input with
    zeros below and to the right) and cropped.

    Layout: the tiles live as (rows, columns, N, C) so each 1-D transform is a
    few large products with the small matrices (xp.matmul directly: they are
    data movement, timed with the transforms, not GEMMs of the convolution);
    the result is returned as an NCHW view of (H, W, N, O) memory, which
    elementwise ops keep and the next 3x3 conv reads without a transposing copy.

    Memory: nothing but the input tensor itself is kept for the backward; the
    padded tiles and V (a^2/m^2 times the input) are recomputed there when the
    weight gradient is wanted. Temporaries live in reused work buffers.

    Rounding (float32, vs the direct conv; see tests/test_conv_fast.py): the
    transforms' larger coefficients of F(4x4) cost accuracy, so the result
    differs from im2col by more than float32 rounding of a direct sum but
    stays within WINOGRAD_RTOL of the output's scale (measurements there).
    """
    m = WINOGRAD_TILE if m is None else m
    xp = _xp(x, weight, bias)
    n, c, h, w = x.shape
    o = weight.shape[0]
    a = m + 2
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = -(-ho // m), -(-wo // m)
    hp, wp = th * m + 2, tw * m + 2
    p = th * tw * n
    dtype = x.dtype
    bt, gm, at = _winograd_matrices(m, xp, dtype)
    u = _winograd_weight(weight.data, gm)
    v = _winograd_input(_to_tiles(x.data, ph, pw, hp, wp, xp), bt, th, tw, xp).reshape(a * a, p, c)
    mm = _gemm(v, u, out=_scratch(xp, "m", (a * a, p, o), dtype))
    if bias is not None:
        mm[a + 1] += bias.data
    out = _winograd_output(mm.reshape(a, a, th, tw, n, o), at, xp)[:ho, :wo].transpose(2, 3, 0, 1)

    def backward(g):
        gy = g.transpose(2, 3, 0, 1)
        if (th * m, tw * m) != (ho, wo) or not gy.flags.c_contiguous:
            gy = xp.zeros((th * m, tw * m, n, o), dtype=g.dtype)
            gy[:ho, :wo] = g.transpose(2, 3, 0, 1)
        dm = _winograd_output_adjoint(gy, at, th, tw, xp)               # (a*a, P, O)
        del gy
        gb = dm[a + 1].sum(axis=0) if _wants(bias) else None
        gw = gx = None
        if _wants(weight):
            v = _winograd_input(_to_tiles(x.data, ph, pw, hp, wp, xp), bt, th, tw, xp).reshape(a * a, p, c)
            du = _gemm(v.transpose(0, 2, 1), dm)                       # (a*a, C, O)
            gw = _winograd_weight_adjoint(du, gm)
        if _wants(x):
            dv = _gemm(dm, u.transpose(0, 2, 1), out=_scratch(xp, "v", (a * a, p, c), g.dtype))
            dx = _winograd_input_adjoint(dv.reshape(a, a, th, tw, n, c), bt, hp, wp, xp)
            gx = dx[ph:ph + h, pw:pw + w].transpose(2, 3, 0, 1)
        return gx, gw, gb
    return _make(out, (x, weight, bias) if bias is not None else (x, weight), backward)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """Transposed convolution, the adjoint of conv2d, as torch.nn.functional.conv_transpose2d.

    weight has PyTorch's layout (in, out, kh, kw). Output size per axis:
    (H - 1) * stride - 2 * padding + kh + output_padding.
    """
    op = "conv_transpose2d"
    _check_nchw(x, op)
    _require(weight.ndim == 4, op, f"weight must be (in, out, kh, kw), got shape {weight.shape}")
    _require(x.shape[1] == weight.shape[0], op,
             f"input has {x.shape[1]} channels (shape {x.shape}) but weight expects "
             f"{weight.shape[0]} (weight shape {weight.shape}, layout (in, out, kh, kw))")
    xp = _xp(x, weight, bias)
    (sh, sw), (ph, pw) = _pair(stride, "stride", op, 1), _pair(padding, "padding", op, 0)
    oph, opw = _pair(output_padding, "output_padding", op, 0)
    _require(oph < sh and opw < sw, op, f"output_padding {output_padding} must be smaller than stride {stride}")
    n, cin, h, w = x.shape
    _, cout, kh, kw = weight.shape
    hf, wf = (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw  # before cropping the padding
    ho, wo = hf - 2 * ph, wf - 2 * pw
    _require(ho > 0 and wo > 0, op, f"padding {padding} leaves no output for input shape {x.shape}")
    if bias is not None:
        _require(bias.shape == (cout,), op, f"bias shape {bias.shape} does not match {cout} output channels")

    x2 = x.data.transpose(1, 0, 2, 3).reshape(cin, n * h * w)
    w2 = weight.data.reshape(cin, cout * kh * kw)
    cols = _gemm(w2.T, x2).reshape(cout, kh, kw, n, h, w)
    out = _col2im(cols, (n, cout, hf, wf), sh, sw, xp, x.dtype)[:, :, ph:ph + ho, pw:pw + wo]
    out = xp.ascontiguousarray(out)
    if bias is not None:
        out += bias.data.reshape(1, cout, 1, 1)

    def backward(g):
        gpad = xp.zeros((n, cout, hf, wf), dtype=g.dtype)
        gpad[:, :, ph:ph + ho, pw:pw + wo] = g
        gcols = _im2col(gpad, kh, kw, sh, sw, h, w, xp)  # (cout*kh*kw, n*h*w)
        gx = _gemm(w2, gcols).reshape(cin, n, h, w).transpose(1, 0, 2, 3) if _wants(x) else None
        gw = _gemm(x2, gcols.T).reshape(weight.shape) if _wants(weight) else None
        gb = g.sum(axis=(0, 2, 3)) if _wants(bias) else None
        return gx, gw, gb
    return _make(out, (x, weight, bias) if bias is not None else (x, weight), backward)


def upsample_nearest(x, scale_factor=2):
    """Nearest-neighbour upsampling of NCHW by an integer factor (nn.Upsample(mode='nearest')).

    Forward is a broadcast (no repeat loop); backward sums each s x s block.
    """
    op = "upsample_nearest"
    _check_nchw(x, op)
    _require(isinstance(scale_factor, int) and scale_factor >= 1, op,
             f"scale_factor must be a positive int, got {scale_factor!r}")
    xp, s = _xp(x), scale_factor
    n, c, h, w = x.shape
    out = xp.broadcast_to(x.data[:, :, :, None, :, None], (n, c, h, s, w, s)).reshape(n, c, h * s, w * s)
    return _make(out, (x,), lambda g: (g.reshape(n, c, h, s, w, s).sum(axis=(3, 5)),))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling as torch.nn.functional.avg_pool2d (count_include_pad=True)."""
    op = "avg_pool2d"
    _check_nchw(x, op)
    xp = _xp(x)
    kh, kw = _pair(kernel_size, "kernel_size", op, 1)
    sh, sw = _pair(stride if stride is not None else kernel_size, "stride", op, 1)
    ph, pw = _pair(padding, "padding", op, 0)
    _require(ph <= kh // 2 and pw <= kw // 2, op,  # PyTorch's rule: a window must hold an input pixel
             f"padding {padding!r} must be at most half the kernel size {kernel_size!r}")
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    _require(ho > 0 and wo > 0, op, f"kernel {kh}x{kw} is larger than the padded input (shape {x.shape})")
    # channels become batch entries so one window view (with C = 1) serves every channel
    xpad = _pad(x.data.reshape(n * c, 1, h, w), ph, pw, xp)
    out = _windows(xpad, kh, kw, sh, sw, ho, wo, xp).mean(axis=(2, 3)).reshape(n, c, ho, wo)

    def backward(g):
        share = (g / (kh * kw)).reshape(1, 1, 1, n * c, ho, wo)
        gpad = _col2im(xp.broadcast_to(share, (1, kh, kw, n * c, ho, wo)), xpad.shape, sh, sw, xp, g.dtype)
        return (gpad[:, :, ph:ph + h, pw:pw + w].reshape(n, c, h, w),)
    return _make(out, (x,), backward)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over N (and H, W), as torch.nn.functional.batch_norm.

    Training normalises with the batch's mean and biased variance and updates
    the running statistics in place (running_var with the unbiased variance);
    evaluation normalises with the running statistics.
    """
    op = "batch_norm"
    _as_tensor(x, op)
    _require(x.ndim in (2, 4), op, f"expected (N, C) or (N, C, H, W), got shape {x.shape}")
    xp = _xp(x, weight, bias, running_mean, running_var)  # also the buffers: in-place updates would mix silently
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None:
            _require(tuple(_data(t).shape) == (c,), op, f"{name} has shape {tuple(_data(t).shape)}, expected ({c},)")
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    bshape = (1, c) if x.ndim == 2 else (1, c, 1, 1)
    count = x.size // c
    if training:
        _require(count > 1, op, f"training needs more than one value per channel, got shape {x.shape}")
        mu = x.data.mean(axis=axes)
        var = x.data.var(axis=axes)
        if running_mean is not None:
            rm, rv = _data(running_mean), _data(running_var)
            rm *= 1 - momentum
            rm += momentum * mu
            rv *= 1 - momentum
            rv += momentum * var * (count / (count - 1))
    else:
        mu, var = _data(running_mean), _data(running_var)
    inv = 1 / xp.sqrt(var + eps)
    xhat = (x.data - mu.reshape(bshape)) * inv.reshape(bshape)
    wd = weight.data.reshape(bshape) if weight is not None else 1
    out = xhat * wd + (bias.data.reshape(bshape) if bias is not None else 0)

    def backward(g):
        gxhat = g * wd
        if training:  # the batch statistics depend on x too
            gx = inv.reshape(bshape) * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                                        - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
        else:
            gx = gxhat * inv.reshape(bshape)
        gw = (g * xhat).sum(axis=axes) if _wants(weight) else None
        gb = g.sum(axis=axes) if _wants(bias) else None
        return gx, gw, gb
    inputs = (x, weight if weight is not None else 0, bias if bias is not None else 0)
    return _make(out, inputs, backward)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    _require(0 <= p < 1, "dropout", f"p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    # the mask is drawn on x's device (backend.rand_like), not on the host and copied every forward
    keep = ((backend.rand_like(x.data) >= p) / (1 - p)).astype(x.dtype)
    return _make(x.data * keep, (x,), lambda g: (g * keep,))


def check_indices(labels, num_classes, what="labels"):
    """Raise IndexError unless every integer in ``labels`` lies in 0 .. num_classes - 1.

    Out-of-range labels do different wrong things per backend: NumPy's gather
    raises, CuPy's wraps silently, and a one-hot row of an unknown class is all
    zeros on both. Check them once where they come from, on the host (data
    loaders, before ``to_device``): that costs nothing on a GPU. Given a device
    array it works too, by one reduction and one explicit transfer, so call it
    there only at a logging point, never inside a training step. ``one_hot``
    and ``embedding`` call it on host inputs only, for the same reason.
    """
    _size(num_classes, "num_classes", what)
    lab = _data(labels)
    if backend.is_host(lab):
        lab = backend.to_host(lab)  # lists and scalars too
    if lab.size == 0:  # an empty list has dtype float64, and no label out of range
        return
    _require_integers(lab, what)
    if backend.is_host(lab):
        lo, hi = int(lab.min()), int(lab.max())
    else:  # one reduction and one transfer: the caller chose to pay a synchronisation here
        xp = backend.get_array_module(lab)
        lo, hi = (int(v) for v in backend.to_host(xp.stack([lab.min(), lab.max()]).astype("int64")))
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{what}: {bad} is out of range for {num_classes} classes (expected 0..{num_classes - 1}, "
                         f"got values {lo}..{hi}); CuPy would not raise here but wrap or zero silently")


def _require_integers(lab, what):
    if lab.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {lab.dtype}")


def one_hot(labels, num_classes, dtype=None):
    """(N,) integer labels -> (N, num_classes) float array (no gradient).

    Host labels are range-checked (:func:`check_indices`); device labels are not
    (that would synchronise the GPU every step): check them where they come from.
    """
    lab = _data(labels)
    _size(num_classes, "num_classes", "one_hot")
    _require_integers(lab, "one_hot: labels")
    if backend.is_host(lab):
        check_indices(lab, num_classes, "one_hot: labels")
    xp = backend.get_array_module(lab)
    return (lab.reshape(-1, 1) == xp.arange(num_classes).reshape(1, -1)).astype(dtype or backend.DEFAULT_DTYPE)


def embedding(indices, weight):
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices`` (any shape).

    The backward is a one-hot matrix product rather than a scatter-add, so
    repeated indices sum correctly on every backend.
    """
    idx = _data(indices)
    _xp(idx, weight)  # host labels with device weights: a BackendError here, not a silent copy
    _require_integers(idx, "embedding: indices")
    _require(weight.ndim == 2, "embedding", f"weight must be (num_embeddings, dim), got {weight.shape}")
    num, dim = weight.shape
    if backend.is_host(idx):  # device indices: see check_indices, where they come from
        check_indices(idx, num, "embedding: indices")
    out = weight.data[idx.reshape(-1)].reshape(tuple(idx.shape) + (dim,))

    def backward(g):
        onehot = one_hot(idx, num, dtype=g.dtype)
        return (onehot.T @ g.reshape(-1, dim),)
    return _make(out, (weight,), backward)


# ---- losses ----------------------------------------------------------------

def _reduce(loss, reduction, op):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_pair(input, target, op):
    _as_tensor(input, op)
    ts = tuple(_data(target).shape) if hasattr(_data(target), "shape") else ()
    _require(ts in ((), input.shape), op, f"input shape {input.shape} and target shape {ts} differ")


def l1_loss(input, target, reduction="mean"):
    """mean |input - target|."""
    _check_pair(input, target, "l1_loss")
    return _reduce(abs(sub(input, target)), reduction, "l1_loss")


def mse_loss(input, target, reduction="mean"):
    """mean (input - target)^2."""
    _check_pair(input, target, "mse_loss")
    d = sub(input, target)
    return _reduce(mul(d, d), reduction, "mse_loss")


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] = softplus(x) - t x, finite for any logit x."""
    op = "binary_cross_entropy_with_logits"
    _check_pair(input, target, op)
    xp = _xp(input, target)
    x, t = input.data, _data(target)
    loss = _softplus(xp, x) - t * x

    def backward(g):
        gx = g * (_sigmoid(xp, x) - t) if _wants(input) else None
        gt = -g * x if _wants(target) else None
        return gx, gt
    return _reduce(_make(loss, (input, target), backward), reduction, op)

