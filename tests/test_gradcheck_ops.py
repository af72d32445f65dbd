"""Every differentiable op of tinygan.functional: float64 finite differences and plain-NumPy forwards.

Each op is checked twice: its backward against central differences
(``tinygan.gradcheck``), and its forward against an independent reference
written here in plain NumPy (loops over output positions for the convolutions
and pooling). Inputs are kept away from kinks (|x| >= 0.1 for abs, relu and
friends; no ties for max; clip bounds far from every value) so central
differences are valid.
"""
import contextlib
import math
import warnings

import numpy as np
import pytest

import tinygan as tg
from tinygan import backend
from tinygan import functional as F

# eps: central-difference step; atol/rtol: tolerance of |analytic - numeric| per element.
# In float64 the truncation error is O(eps^2) and the rounding error about 1e-16 |f| / eps,
# both far below these bounds for the tiny shapes used here.
TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)



# ---- helpers -----------------------------------------------------------------

def rng(seed=0):
    return np.random.default_rng(seed)


def normal(shape, seed=0, scale=1.0):  # on the backend under test, where an op's constants must live
    return backend.to_device(scale * rng(seed).standard_normal(shape))


def positive(shape, seed=0, low=0.3, high=2.0):
    return backend.to_device(rng(seed).uniform(low, high, shape))


def away(shape, seed=0, margin=0.1, high=1.5):
    """Values with |v| in [margin, high], both signs: no kink of abs/relu/elu within eps."""
    r = rng(seed)
    return backend.to_device(r.uniform(margin, high, shape) * r.choice([-1.0, 1.0], size=shape))


def T(a, requires_grad=True):
    return tg.Tensor(backend.to_device(np.array(backend.to_host(a), dtype=np.float64)), requires_grad=requires_grad)


def check(fn, *inputs, **tol):
    assert tg.gradcheck(fn, inputs, **{**TOL, **tol}) is True


def value(t):
    return t.numpy()


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---- arithmetic, with broadcasting --------------------------------------------

BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
}
BROADCAST_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 1, 4), (5, 4)),            # both sides broadcast
    ((2, 3, 4, 5), (1, 3, 1, 1)),   # bias-like
    ((1, 3, 1, 1), (2, 3, 2, 2)),   # the broadcast input first
    ((4,), ()),                     # 0-d tensor
    ((), (2, 3)),
]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_op(name, shapes):
    op, ref = BINARY[name]
    sa, sb = shapes
    a = T(normal(sa, 1))
    b = T(away(sb, 2, margin=0.5) if name == "div" else normal(sb, 2))
    out = op(a, b)
    np.testing.assert_allclose(value(out), ref(a.numpy(), b.numpy()), rtol=1e-12)
    assert out.shape == np.broadcast_shapes(sa, sb)
    check(op, a, b)


@pytest.mark.parametrize("case", [
    ("x + 2.5", lambda x: x + 2.5, lambda v: v + 2.5),
    ("2.5 + x", lambda x: 2.5 + x, lambda v: 2.5 + v),
    ("2.5 - x", lambda x: 2.5 - x, lambda v: 2.5 - v),
    ("x * -3", lambda x: x * -3, lambda v: v * -3),
    ("3 / x", lambda x: 3.0 / x, lambda v: 3.0 / v),
    ("x / 4", lambda x: x / 4, lambda v: v / 4),
    # the constant array lives on the backend under test, as an op's constants must
    ("x * const array", lambda x: x * backend.to_device(np.arange(1.0, 5.0)), lambda v: v * np.arange(1.0, 5.0)),
    ("const array - x", lambda x: backend.to_device(np.arange(4.0)) - x, lambda v: np.arange(4.0) - v),
    ("-x", lambda x: -x, lambda v: -v),
    ("neg", F.neg, np.negative),
], ids=lambda c: c[0])
def test_arithmetic_with_constants(case):
    _, fn, ref = case
    x = T(away((3, 4), 3, margin=0.5))
    out = fn(x)
    assert isinstance(out, tg.Tensor)
    np.testing.assert_allclose(value(out), ref(x.numpy()), rtol=1e-12)
    check(fn, x)


@pytest.mark.parametrize("case", [
    ("x**3", lambda x: x ** 3, lambda v: v ** 3, "any"),
    ("x**2 (int)", lambda x: F.pow(x, 2), lambda v: v ** 2, "any"),
    ("x**0.5", lambda x: x ** 0.5, np.sqrt, "pos"),
    ("x**-1.5", lambda x: x ** -1.5, lambda v: v ** -1.5, "pos"),
    ("2.5**x", lambda x: 2.5 ** x, lambda v: 2.5 ** v, "any"),
    ("x**const array", lambda x: x ** backend.to_device(np.linspace(0.5, 2.5, 4)),
     lambda v: v ** np.linspace(0.5, 2.5, 4), "pos"),
], ids=lambda c: c[0])
def test_pow_one_tensor(case):
    _, fn, ref, domain = case
    x = T(positive((3, 4), 4) if domain == "pos" else normal((3, 4), 4))
    np.testing.assert_allclose(value(fn(x)), ref(x.numpy()), rtol=1e-12)
    check(fn, x)


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 1, 4), (5, 4)), ((2, 3), ())], ids=str)
def test_pow_tensor_tensor_positive_base(shapes):
    a = T(positive(shapes[0], 5, 0.5, 2.0))
    b = T(normal(shapes[1], 6))
    np.testing.assert_allclose(value(a ** b), a.numpy() ** b.numpy(), rtol=1e-12)
    check(F.pow, a, b)


# ---- matmul ----------------------------------------------------------------------

@pytest.mark.parametrize("shapes", [
    ((3, 4), (4, 2)),
    ((4,), (4, 3)),           # vector @ matrix
    ((3, 4), (4,)),           # matrix @ vector
    ((4,), (4,)),             # vector @ vector: a 0-d result, as NumPy
    ((2, 3, 4), (4, 5)),      # batched @ shared
    ((3, 4), (2, 4, 5)),      # shared @ batched
    ((2, 1, 3, 4), (5, 4, 2)),  # batch axes broadcast against each other
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
], ids=str)
def test_matmul(shapes):
    a, b = T(normal(shapes[0], 7)), T(normal(shapes[1], 8))
    out = F.matmul(a, b)
    expected = np.matmul(a.numpy(), b.numpy())
    assert out.shape == expected.shape
    np.testing.assert_allclose(value(out), expected, rtol=1e-12)
    check(F.matmul, a, b)
    check(lambda u, v: u @ v, a, b)


# ---- shapes ------------------------------------------------------------------------

@pytest.mark.parametrize("index", [
    (slice(1, 3), 2),
    (Ellipsis, None, slice(None, None, -2)),
    (-1,),
    1,
    (slice(None), None, slice(4, 0, -1), 3),
    (slice(None, None, -1), slice(1, None, 2), -2),
    (None, Ellipsis, slice(-3, None)),
    (slice(3, 0, -2), Ellipsis, 0),
], ids=repr)
def test_getitem(index):
    x = T(normal((4, 5, 6), 9))
    out = x[index]
    np.testing.assert_array_equal(value(out), x.numpy()[index])
    check(lambda t: F.getitem(t, index), x)


@pytest.mark.parametrize("shape", [(4, -1), (24,), (2, 12), (1, 2, 3, 4, 1), (-1, 2, 2)], ids=str)
def test_reshape(shape):
    x = T(normal((2, 3, 4), 10))
    np.testing.assert_array_equal(value(x.reshape(shape)), x.numpy().reshape(shape))
    check(lambda t: F.reshape(t, shape), x)


@pytest.mark.parametrize("axes", [(2, 0, 1), (1, 2, 0), (-1, 0, 1), (0, 1, 2)], ids=str)
def test_permute(axes):
    x = T(normal((2, 3, 4), 11))
    np.testing.assert_array_equal(value(x.permute(axes)), x.numpy().transpose(axes))
    check(lambda t: F.permute(t, axes), x)


@pytest.mark.parametrize("dims", [(0, 2), (1, -1), (0, 1)], ids=str)
def test_transpose(dims):
    x = T(normal((2, 3, 4), 12))
    np.testing.assert_array_equal(value(x.transpose(*dims)), np.swapaxes(x.numpy(), *dims))
    check(lambda t: F.transpose(t, *dims), x)


def test_T_property_reverses_axes():
    x = T(normal((2, 3, 4), 13))
    np.testing.assert_array_equal(value(x.T), x.numpy().T)
    check(lambda t: t.T, x)


@pytest.mark.parametrize("dims", [(0, -1), (1, -1), (1, 2), (0, 1), (2, 3)], ids=str)
def test_flatten(dims):
    x = T(normal((2, 3, 4, 2), 14))
    s, e = dims[0] % 4, dims[1] % 4
    expected = x.numpy().reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])
    np.testing.assert_array_equal(value(F.flatten(x, *dims)), expected)
    check(lambda t: F.flatten(t, *dims), x)


@pytest.mark.parametrize("shapes,axis", [
    (((2, 3), (4, 3)), 0),
    (((2, 3), (2, 1), (2, 2)), 1),
    (((2, 3, 1), (2, 3, 2)), -1),
    (((1, 2, 2, 2),), 0),
], ids=str)
def test_concat(shapes, axis):
    xs = [T(normal(s, 15 + i)) for i, s in enumerate(shapes)]
    np.testing.assert_array_equal(value(F.concat(xs, axis)), np.concatenate([x.numpy() for x in xs], axis))
    check(lambda *ts: F.concat(ts, axis), *xs)
    assert tg.cat is F.concat


@pytest.mark.parametrize("axis", [0, 1, 2, -1], ids=str)
def test_stack(axis):
    xs = [T(normal((2, 3), 20 + i)) for i in range(3)]
    np.testing.assert_array_equal(value(F.stack(xs, axis)), np.stack([x.numpy() for x in xs], axis))
    check(lambda *ts: F.stack(ts, axis), *xs)


# ---- reductions ---------------------------------------------------------------------

AXES = [None, 0, 1, -1, (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True], ids=["drop", "keepdims"])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reduction(name, axis, keepdims):
    if name == "max":  # distinct values 0.1 apart: no ties, no kink within eps
        data = (rng(30).permutation(24).reshape(2, 3, 4) * 0.1 + rng(31).uniform(0, 0.01, (2, 3, 4)))
    else:
        data = normal((2, 3, 4), 32)
    x = T(data)
    op = getattr(F, name)
    expected = getattr(np, name)(data, axis=axis, keepdims=keepdims)
    out = op(x, axis, keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(value(out), expected, rtol=1e-12)
    np.testing.assert_allclose(value(getattr(x, name)(axis=axis, keepdims=keepdims)), expected, rtol=1e-12)
    check(lambda t: op(t, axis, keepdims), x)


def test_max_gradient_goes_to_the_argmax():
    data = np.array([[0.1, 0.9, 0.3], [0.7, 0.2, 0.5]])
    x = T(data)
    F.max(x, axis=1).backward(np.array([2.0, 3.0]))
    np.testing.assert_array_equal(x.grad, [[0, 2.0, 0], [3.0, 0, 0]])


# ---- elementwise and activations ------------------------------------------------------

def _np_sigmoid(v):
    return 1 / (1 + np.exp(-v))


ELEMENTWISE = [
    ("exp", F.exp, np.exp, "any"),
    ("log", F.log, np.log, "pos"),
    ("abs", F.abs, np.abs, "away"),
    ("sqrt", F.sqrt, np.sqrt, "pos"),
    ("clip(-0.5,0.5)", lambda x: F.clip(x, -0.5, 0.5), lambda v: np.clip(v, -0.5, 0.5), "clip"),
    ("clip(min=-0.5)", lambda x: F.clip(x, min=-0.5), lambda v: np.maximum(v, -0.5), "clip"),
    ("clip(max=0.5)", lambda x: F.clip(x, max=0.5), lambda v: np.minimum(v, 0.5), "clip"),
    ("Tensor.clamp", lambda x: x.clamp(-0.5, 0.5), lambda v: np.clip(v, -0.5, 0.5), "clip"),
    ("relu", F.relu, lambda v: np.maximum(v, 0), "away"),
    ("leaky_relu", F.leaky_relu, lambda v: np.where(v > 0, v, 0.01 * v), "away"),
    ("leaky_relu(0.2)", lambda x: F.leaky_relu(x, 0.2), lambda v: np.where(v > 0, v, 0.2 * v), "away"),
    # max(x, slope * x) is the forward for slopes up to 1, negative ones included; above 1 it is where()
    ("leaky_relu(1.5)", lambda x: F.leaky_relu(x, 1.5), lambda v: np.where(v > 0, v, 1.5 * v), "away"),
    ("leaky_relu(-0.5)", lambda x: F.leaky_relu(x, -0.5), lambda v: np.where(v > 0, v, -0.5 * v), "away"),
    ("elu", F.elu, lambda v: np.where(v > 0, v, np.exp(v) - 1), "away"),
    ("elu(alpha=0.5)", lambda x: F.elu(x, 0.5), lambda v: np.where(v > 0, v, 0.5 * (np.exp(v) - 1)), "away"),
    # alpha > 1: the branches do not meet in a maximum, so the forward takes where() (not the fused kernel)
    ("elu(alpha=1.5)", lambda x: F.elu(x, 1.5), lambda v: np.where(v > 0, v, 1.5 * (np.exp(v) - 1)), "away"),
    # alpha <= 0 (allowed, as in PyTorch) takes the branch that keeps the input's sign for the backward
    ("elu(alpha=-0.5)", lambda x: F.elu(x, -0.5), lambda v: np.where(v > 0, v, -0.5 * (np.exp(v) - 1)), "away"),
    ("sigmoid", F.sigmoid, _np_sigmoid, "wide"),
    ("tanh", F.tanh, np.tanh, "any"),
    ("softplus", F.softplus, lambda v: np.log1p(np.exp(v)), "wide"),
    ("logsigmoid", F.logsigmoid, lambda v: np.log(_np_sigmoid(v)), "wide"),
]


def _domain(kind, shape, seed):
    if kind == "pos":
        return positive(shape, seed)
    if kind == "away":
        return away(shape, seed)
    if kind == "clip":  # values at least 0.1 from -0.5 and 0.5
        r = rng(seed)
        magnitude = np.where(r.random(shape) < 0.5, r.uniform(0, 0.4, shape), r.uniform(0.6, 1.5, shape))
        return r.choice([-1.0, 1.0], size=shape) * magnitude
    if kind == "wide":
        return normal(shape, seed, scale=4.0)
    return normal(shape, seed)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4), ()], ids=str)
@pytest.mark.parametrize("case", ELEMENTWISE, ids=lambda c: c[0])
def test_elementwise(case, shape):
    _, fn, ref, kind = case
    x = T(_domain(kind, shape, 40))
    out = fn(x)
    assert out.shape == shape
    np.testing.assert_allclose(value(out), ref(x.numpy()), rtol=1e-12, atol=1e-15)
    check(fn, x)


def test_clip_passes_gradient_inside_only():
    x = T([-2.0, -0.3, 0.2, 3.0])
    F.clip(x, -1.0, 1.0).backward(np.ones(4))
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 0])


def _math_sigmoid(u):
    """Scalar reference in Python's math, which underflows to 0.0 quietly."""
    return 1 / (1 + math.exp(-u)) if u >= 0 else math.exp(u) / (1 + math.exp(u))


def _math_softplus(u):
    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


HUGE = [-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4]
STABLE_REF = {  # name: (value, derivative), per element of HUGE
    "sigmoid": ([_math_sigmoid(u) for u in HUGE], [_math_sigmoid(u) * _math_sigmoid(-u) for u in HUGE]),
    "softplus": ([_math_softplus(u) for u in HUGE], [_math_sigmoid(u) for u in HUGE]),
    "logsigmoid": ([-_math_softplus(-u) for u in HUGE], [_math_sigmoid(-u) for u in HUGE]),
}


def _strict_fp():
    """Overflow, division by zero and invalid operations raise; warnings are errors.

    Underflow (exp(-1e4) -> 0) is the intended, exact-to-rounding behaviour, so it alone is allowed.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("error")
    stack.enter_context(np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"))
    return stack


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(STABLE_REF))
def test_stable_at_huge_logits(name, dtype):
    """|x| = 1e4: finite and correct values and gradients, in the input's dtype."""
    v = np.array(HUGE, dtype=dtype)
    x = tg.Tensor(v.copy(), requires_grad=True)
    with _strict_fp():
        out = getattr(F, name)(x)
        out.backward(np.ones_like(v))
    assert out.dtype == dtype and x.grad.dtype == dtype
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(backend.to_host(x.grad)))
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    value_ref, grad_ref = STABLE_REF[name]
    np.testing.assert_allclose(out.numpy(), value_ref, rtol=rtol, atol=0)
    # sigmoid' = s (1 - s) loses its last 1e-22 to cancellation at x = 50 (as in PyTorch):
    # absolute accuracy to the dtype's epsilon, on derivatives of scale 1
    np.testing.assert_allclose(x.grad, grad_ref, rtol=rtol, atol=np.finfo(dtype).eps)


@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_bce_with_logits_stable_at_huge_logits(dtype, target):
    v = np.array(HUGE, dtype=dtype)
    x = tg.Tensor(v.copy(), requires_grad=True)
    t = backend.to_device(np.full_like(v, target))
    with _strict_fp():
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        loss.backward(np.ones_like(v))
    assert loss.dtype == dtype and x.grad.dtype == dtype
    # -[t log s(x) + (1 - t) log(1 - s(x))] = softplus(x) - t x; d/dx = s(x) - t
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss.numpy(), [_math_softplus(u) - target * u for u in HUGE], rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(x.grad, [_math_sigmoid(u) - target for u in HUGE], rtol=rtol, atol=1e-7)
    confidently_wrong = 0 if target == 1.0 else -1 if target == 0.0 else None
    if confidently_wrong is not None:
        assert loss.numpy()[confidently_wrong] == pytest.approx(1e4)


# ---- linear ------------------------------------------------------------------------------

@pytest.mark.parametrize("xshape", [(3, 4), (1, 4), (4,), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear(xshape, bias):
    x, w = T(normal(xshape, 50)), T(normal((5, 4), 51))
    b = T(normal((5,), 52)) if bias else None
    expected = x.numpy() @ w.numpy().T + (b.numpy() if bias else 0)
    out = F.linear(x, w, b)
    assert out.shape == expected.shape
    np.testing.assert_allclose(value(out), expected, rtol=1e-12)
    if bias:
        check(F.linear, x, w, b)
    else:
        check(F.linear, x, w)


@pytest.mark.parametrize("wants", ["all", "weights only", "input only"])
@pytest.mark.parametrize("xshape, out_features, bias", [((7, 3), 5, True), ((1, 4), 2, False), ((64, 33), 17, True)],
                         ids=str)
def test_linear_as_one_node_gives_the_composite_bits(xshape, out_features, bias, wants):
    """A 2-D input takes linear's own node; it must give the very bits of matmul(x, W.T) + b, forward
    and backward, in float32 as training runs, whichever inputs want a gradient (D's first layer: not x)."""
    r = rng(60)
    arrays = [r.standard_normal(xshape), r.standard_normal((out_features, xshape[1]))]
    arrays += [r.standard_normal(out_features)] if bias else []
    g = backend.to_device(r.standard_normal((xshape[0], out_features)).astype(np.float32))
    grad = {"all": (True,) * 3, "weights only": (False, True, True), "input only": (True, False, False)}[wants]
    results = []
    for fused in (True, False):
        ts = [tg.Tensor(backend.to_device(a.astype(np.float32)), requires_grad=q) for a, q in zip(arrays, grad)]
        x, w, b = ts + [None] * (3 - len(ts))
        if fused:
            out = F.linear(x, w, b)
        else:
            out = F.matmul(x, F.transpose(w, 0, 1))
            out = out if b is None else out + b
        one_node = len(out._parents) == len(ts) and all(p is t for p, t in zip(out._parents, ts))
        assert one_node == fused        # its parents are x, W (and b) themselves, not W.T
        out.backward(g)
        results.append([out.numpy()] + [None if t.grad is None else backend.to_host(t.grad) for t in ts])
    for a, b in zip(*results):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, b)


# ---- convolutions: plain-loop references -----------------------------------------------

def ref_conv2d(x, w, b, stride, padding):
    """out[n, o, i, j] = b[o] + sum_{c,k,l} w[o, c, k, l] xpad[n, c, i*sh + k, j*sw + l]."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xpad = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xpad[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_conv_transpose2d(x, w, b, stride, padding, output_padding):
    """Scatter each input pixel times the (in, out, kh, kw) kernel, then crop the padding."""
    (sh, sw), (ph, pw), (oph, opw) = pair(stride), pair(padding), pair(output_padding)
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    full = np.zeros((n, cout, (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.einsum("nc,cokl->nokl", x[:, :, i, j], w)
    ho, wo = torch_conv_transpose_size(h, sh, ph, kh, oph), torch_conv_transpose_size(wd, sw, pw, kw, opw)
    out = full[:, :, ph:ph + ho, pw:pw + wo]
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def torch_conv_transpose_size(size, stride, padding, kernel, output_padding):
    """PyTorch's documented H_out of ConvTranspose2d (dilation 1)."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


# (n, c, h, w, out_channels, kernel, stride, padding)
CONV_CASES = [
    (1, 1, 5, 7, 1, 3, 1, 0),
    (2, 2, 5, 7, 3, 3, 1, 1),
    (1, 2, 5, 7, 2, 4, 2, 1),
    (2, 3, 5, 5, 2, 1, 1, 0),
    (1, 2, 7, 5, 2, 3, 3, 2),
    (1, 2, 6, 6, 2, 4, 2, 2),
    (2, 1, 5, 7, 2, (3, 2), (2, 1), (1, 0)),
    (1, 2, 4, 4, 3, 4, 1, 0),     # kernel covers the whole image: 1x1 output
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d(case, bias):
    n, c, h, wd, o, k, s, p = case
    kh, kw = pair(k)
    x, w = T(normal((n, c, h, wd), 60)), T(normal((o, c, kh, kw), 61, 0.5))
    b = T(normal((o,), 62)) if bias else None
    expected = ref_conv2d(x.numpy(), w.numpy(), b.numpy() if bias else None, s, p)
    out = F.conv2d(x, w, b, stride=s, padding=p)
    (sh, sw), (ph, pw) = pair(s), pair(p)
    assert out.shape == (n, o, (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1)  # PyTorch's formula
    np.testing.assert_allclose(value(out), expected, rtol=1e-10, atol=1e-12)
    if bias:
        check(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p), x, w, b)
    else:
        check(lambda x, w: F.conv2d(x, w, stride=s, padding=p), x, w)


@pytest.mark.parametrize("padding", [0, 1], ids=["pad0", "pad1"])
def test_conv2d_on_non_contiguous_views(padding):
    """A reversed, transposed view (negative and permuted strides) feeds im2col's as_strided."""
    base = normal((2, 7, 5, 3), 63)
    view = base.transpose(0, 3, 2, 1)[:, :, ::-1, :]  # (2, 3, 5, 7), not contiguous
    assert not view.flags["C_CONTIGUOUS"]
    w = normal((2, 3, 3, 3), 64)
    x = tg.Tensor(view, requires_grad=True)
    out = F.conv2d(x, tg.Tensor(w), stride=2, padding=padding)
    np.testing.assert_allclose(value(out), ref_conv2d(backend.to_host(view), backend.to_host(w), None, 2, padding),
                               rtol=1e-10, atol=1e-12)
    before = view.copy()
    check(lambda x: F.conv2d(x, tg.Tensor(w), stride=2, padding=padding), x)
    assert x.data is view  # gradcheck perturbs a copy and gives the tensor its own array back
    np.testing.assert_array_equal(view, before)


# (n, in, h, w, out, kernel, stride, padding, output_padding)
CONVT_CASES = [
    (1, 2, 3, 4, 3, 3, 1, 0, 0),
    (2, 2, 3, 3, 2, 4, 2, 1, 0),
    (1, 1, 4, 3, 2, 3, 2, 1, 1),
    (1, 2, 2, 3, 2, 3, 3, 2, 2),
    (2, 3, 3, 3, 2, 1, 1, 0, 0),
    (1, 2, 3, 2, 1, (4, 3), (2, 3), (1, 0), (1, 2)),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CONVT_CASES, ids=str)
def test_conv_transpose2d(case, bias):
    n, cin, h, wd, cout, k, s, p, op = case
    kh, kw = pair(k)
    x, w = T(normal((n, cin, h, wd), 70)), T(normal((cin, cout, kh, kw), 71, 0.5))
    b = T(normal((cout,), 72)) if bias else None
    out = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
    (sh, sw), (ph, pw), (oph, opw) = pair(s), pair(p), pair(op)
    assert out.shape == (n, cout, torch_conv_transpose_size(h, sh, ph, kh, oph),
                         torch_conv_transpose_size(wd, sw, pw, kw, opw))
    expected = ref_conv_transpose2d(x.numpy(), w.numpy(), b.numpy() if bias else None, s, p, op)
    np.testing.assert_allclose(value(out), expected, rtol=1e-10, atol=1e-12)
    kw_ = dict(stride=s, padding=p, output_padding=op)
    if bias:
        check(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw_), x, w, b)
    else:
        check(lambda x, w: F.conv_transpose2d(x, w, **kw_), x, w)


@pytest.mark.parametrize("case", CONVT_CASES, ids=str)
def test_conv_transpose2d_is_the_adjoint_of_conv2d(case):
    """<conv2d(z, W), x> == <z, conv_transpose2d(x, W)> with one weight array W of shape (in, out, kh, kw)."""
    n, cin, h, wd, cout, k, s, p, op = case
    kh, kw = pair(k)
    w = normal((cin, cout, kh, kw), 73)
    x = normal((n, cin, h, wd), 74)
    y = F.conv_transpose2d(tg.Tensor(x), tg.Tensor(w), stride=s, padding=p, output_padding=op).numpy()
    z = normal(y.shape, 75)
    # for conv2d, W read as (out=cin, in=cout, kh, kw) maps z's shape back to x's shape
    cz = F.conv2d(tg.Tensor(z), tg.Tensor(w), stride=s, padding=p).numpy()
    assert cz.shape == x.shape
    assert np.vdot(cz, backend.to_host(x)) == pytest.approx(np.vdot(backend.to_host(z), y), rel=1e-12)


# ---- upsampling and pooling -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (2, 3, 3, 2)], ids=str)
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_upsample_nearest(shape, scale):
    x = T(normal(shape, 80))
    expected = np.repeat(np.repeat(x.numpy(), scale, axis=2), scale, axis=3)
    np.testing.assert_array_equal(value(F.upsample_nearest(x, scale)), expected)
    check(lambda t: F.upsample_nearest(t, scale), x)


def ref_avg_pool2d(x, k, s, p):
    (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(s if s is not None else k), pair(p)
    n, c, h, w = x.shape
    xpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xpad[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].sum(axis=(2, 3)) / (kh * kw)
    return out


@pytest.mark.parametrize("kernel,stride,padding", [
    (2, None, 0), (3, 2, 1), (2, 1, 0), (3, 3, 0), ((2, 3), (1, 2), (1, 1)), (1, 2, 0),
], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (2, 2, 5, 7)], ids=str)
def test_avg_pool2d(shape, kernel, stride, padding):
    x = T(normal(shape, 90))
    out = F.avg_pool2d(x, kernel, stride, padding)
    np.testing.assert_allclose(value(out), ref_avg_pool2d(x.numpy(), kernel, stride, padding), rtol=1e-12)
    check(lambda t: F.avg_pool2d(t, kernel, stride, padding), x)


# ---- batch norm ---------------------------------------------------------------------------

def ref_batch_norm(x, mean, var, w, b, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if w is not None:
        out = out * w.reshape(shape) + b.reshape(shape)
    return out


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 2), (1, 2, 3, 3)], ids=str)
def test_batch_norm(shape, training, affine):
    c = shape[1]
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    x = T(normal(shape, 100, 2.0) + 1.0)
    w = T(positive((c,), 101)) if affine else None
    b = T(normal((c,), 102)) if affine else None
    rm0, rv0 = normal((c,), 103), positive((c,), 104)
    rm, rv = rm0.copy(), rv0.copy()
    out = F.batch_norm(x, rm, rv, w, b, training=training)
    data = x.numpy()
    if training:
        stats = data.mean(axis=axes), data.var(axis=axes)  # biased variance for normalising
    else:
        stats = rm0, rv0
    expected = ref_batch_norm(data, *stats, w.numpy() if affine else None, b.numpy() if affine else None)
    np.testing.assert_allclose(value(out), expected, rtol=1e-10, atol=1e-12)

    def fn(x, *wb):
        return F.batch_norm(x, rm0.copy(), rv0.copy(), *wb, training=training)
    if affine:
        check(fn, x, w, b)
    else:
        check(fn, x)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)], ids=str)
def test_batch_norm_running_stats_like_pytorch(shape):
    """running = (1 - momentum) running + momentum * batch stat, the variance unbiased (n - 1)."""
    c = shape[1]
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    data = normal(shape, 110, 3.0) + 2.0
    count = data.size // c
    rm, rv = normal((c,), 111), positive((c,), 112)
    exp_m, exp_v = rm.copy(), rv.copy()
    for momentum in (0.1, 0.1, 0.3):
        F.batch_norm(T(data), rm, rv, training=True, momentum=momentum)
        exp_m = (1 - momentum) * exp_m + momentum * data.mean(axis=axes)
        exp_v = (1 - momentum) * exp_v + momentum * data.var(axis=axes) * count / (count - 1)
        np.testing.assert_allclose(rm, exp_m, rtol=1e-12)
        np.testing.assert_allclose(rv, exp_v, rtol=1e-12)
    before = (rm.copy(), rv.copy())
    F.batch_norm(T(data), rm, rv, training=False)
    np.testing.assert_array_equal(rm, before[0])  # evaluation leaves the statistics alone
    np.testing.assert_array_equal(rv, before[1])


# ---- dropout, embedding ---------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.2, 0.5], ids=str)
def test_dropout_gradcheck_with_fixed_seed(p):
    x = T(away((3, 4, 5), 120))

    def fn(t):
        backend.seed(7)  # the same mask on every call of the finite differences
        return F.dropout(t, p)
    check(fn, x)


@pytest.mark.parametrize("p", [0.25, 0.5], ids=str)
def test_dropout_mask_is_shared_by_forward_and_backward(p):
    data = away((40, 50), 121)
    x = T(data)
    backend.seed(5)
    out = F.dropout(x, p)
    kept = out.numpy() != 0
    np.testing.assert_allclose(out.numpy(), np.where(kept, data / (1 - p), 0.0), rtol=1e-12)
    g = normal(data.shape, 122)
    out.backward(g)
    np.testing.assert_allclose(x.grad, np.where(kept, g / (1 - p), 0.0), rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.05
    backend.seed(5)  # the same seed gives the same mask
    np.testing.assert_array_equal(F.dropout(T(data), p).numpy() != 0, kept)


def test_dropout_off_is_identity():
    x = T(normal((3, 4), 123))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


@pytest.mark.parametrize("indices", [
    np.array([1, 3, 1, 1]),
    np.array([[1, 3, 1], [0, 1, 3]]),
    np.array([[[2]]]),
], ids=lambda a: f"shape{a.shape}")
def test_embedding_with_repeated_indices(indices):
    w = T(normal((5, 3), 130))
    on_backend = backend.to_device(indices)  # the indices live where the weight does
    out = F.embedding(on_backend, w)
    np.testing.assert_array_equal(value(out), w.numpy()[indices])
    check(lambda w: F.embedding(on_backend, w), w)
    g = normal(out.shape, 131)
    w.grad = None
    F.embedding(on_backend, w).backward(g)
    expected = np.zeros((5, 3))
    for idx, row in zip(indices.reshape(-1), backend.to_host(g).reshape(-1, 3)):
        expected[idx] += row  # repeated indices add up
    np.testing.assert_allclose(w.grad, expected, rtol=1e-12)


# ---- losses ------------------------------------------------------------------------------------

def _reduce(v, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](v)


LOSSES = {
    "l1_loss": (F.l1_loss, lambda x, t: np.abs(x - t)),
    "mse_loss": (F.mse_loss, lambda x, t: (x - t) ** 2),
    "binary_cross_entropy_with_logits": (
        F.binary_cross_entropy_with_logits,
        lambda x, t: -(t * np.log(_np_sigmoid(x)) + (1 - t) * np.log(1 - _np_sigmoid(x)))),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("shape", [(4,), (2, 3, 2)], ids=str)
def test_loss(name, reduction, shape):
    op, ref = LOSSES[name]
    target = rng(140).uniform(0, 1, shape)
    x = T(target + away(shape, 141, margin=0.1))  # input - target never near l1's kink
    t = T(target)
    out = op(x, t, reduction=reduction)
    np.testing.assert_allclose(value(out), _reduce(ref(x.numpy(), target), reduction), rtol=1e-10)
    check(lambda a, b: op(a, b, reduction=reduction), x, t)  # gradient with respect to the target too
    on_backend = backend.to_device(target)
    check(lambda a: op(a, on_backend, reduction=reduction), x)   # a constant array target


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_with_scalar_target(name):
    op, ref = LOSSES[name]
    x = T(away((3, 2), 142, margin=0.2))
    np.testing.assert_allclose(value(op(x, 0.0)), np.mean(ref(x.numpy(), 0.0)), rtol=1e-10)
    check(lambda a: op(a, 0.0), x)
