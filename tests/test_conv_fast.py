"""The fast convolution: Winograd F(m x m, 3 x 3) for 3x3 stride-1 convs (functional.winograd._conv2d_winograd).

* float64 central-difference gradchecks of conv2d, run with the direct (im2col) path
  patched to raise, so they check the Winograd path and nothing else; odd and even
  sizes (output tiles padded and cropped), batch 1 and 3, 1/2/5 channels, padding
  0/1/2, with and without bias; both tile sizes the module knows (F(2x2) and F(4x4));
* float64 agreement with the direct conv to rounding, and the dispatch itself (3x3
  stride 1 -> Winograd, everything else -> im2col);
* float32 agreement with the float64 direct conv on realistic activations (ELU outputs,
  PyTorch's default init) at BEGAN-like sizes within functional.WINOGRAD_RTOL, measured
  relative to the largest value (forward, input and weight gradients): F(4x4)'s larger
  transform coefficients round worse than im2col (measured up to 1.4e-5 against 7e-7);
* mutations: one wrong entry in a transform matrix used by the backward makes the
  gradcheck fail; a matrix broken consistently in forward and backward (which a
  gradcheck cannot see: the backward is still the exact adjoint of the wrong forward)
  makes the forward disagree with the direct conv;
* the work buffers reused between calls never leak into results.
"""
import numpy as np
import pytest

import tinygan as tg
from tinygan import _strict, backend
from tinygan import functional as F
from tinygan.functional import conv, winograd
from tinygan.gradcheck import GradcheckError

TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)
_DIRECT = conv._conv2d_direct  # the reference, kept before any test patches it away



@pytest.fixture
def winograd_only(monkeypatch):
    """conv2d may not fall back to im2col while this is active."""
    def refuse(*args, **kwargs):
        raise AssertionError("conv2d took the direct im2col path for a 3x3 stride-1 conv")
    monkeypatch.setattr(conv, "_conv2d_direct", refuse)


@pytest.fixture(params=[2, 4], ids=["F2x2", "F4x4"])
def tile(request, monkeypatch):
    monkeypatch.setattr(winograd, "WINOGRAD_TILE", request.param)
    return request.param


def T(a, requires_grad=True):
    return tg.Tensor(backend.to_device(np.array(backend.to_host(a), dtype=np.float64)), requires_grad=requires_grad)


def normal(shape, seed, scale=1.0):  # on the backend under test, where an op's constants must live
    return backend.to_device(scale * np.random.default_rng(seed).standard_normal(shape))


def direct(x, w, b=None, padding=0):
    """The reference path, im2col and one GEMM."""
    return _DIRECT(x, w, b, 1, 1, *((padding, padding) if isinstance(padding, int) else padding))


# (n, c_in, h, w, c_out, padding): odd and even sizes, batch 1 and 3, 1/2/5 channels, padding 0/1/2
GRAD_CASES = [
    (1, 1, 5, 7, 1, 1),
    (3, 2, 5, 7, 5, 0),
    (1, 5, 8, 8, 2, 1),
    (3, 1, 8, 8, 2, 2),
    (1, 2, 6, 9, 5, 2),
    (3, 5, 6, 9, 1, 0),
    (1, 2, 3, 3, 2, 0),          # one output pixel: a single tile, mostly padding
    (1, 1, 5, 7, 2, (0, 2)),     # different padding per axis
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_winograd_gradcheck(case, bias, tile, winograd_only):
    n, c, h, w, o, p = case
    x, wt = T(normal((n, c, h, w), 1)), T(normal((o, c, 3, 3), 2, 0.5))
    ph, pw = (p, p) if isinstance(p, int) else p
    out = F.conv2d(x, wt, T(normal((o,), 3)) if bias else None, padding=p)
    assert out.shape == (n, o, h + 2 * ph - 2, w + 2 * pw - 2)
    if bias:
        b = T(normal((o,), 3))
        assert tg.gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=p), (x, wt, b), **TOL)
    else:
        assert tg.gradcheck(lambda x, w: F.conv2d(x, w, padding=p), (x, wt), **TOL)


def test_winograd_gradcheck_through_two_layers(tile, winograd_only):
    """conv -> ELU -> conv: the second conv reads the first one's (H, W, N, C) memory layout,
    and both backward passes share the reused work buffers."""
    x = T(normal((2, 2, 6, 7), 4))
    w1, w2 = T(normal((3, 2, 3, 3), 5, 0.5)), T(normal((2, 3, 3, 3), 6, 0.5))
    b1, b2 = T(normal((3,), 7)), T(normal((2,), 8))

    def net(x, w1, b1, w2, b2):
        return F.conv2d(F.elu(F.conv2d(x, w1, b1, padding=1)), w2, b2, padding=1)
    assert tg.gradcheck(net, (x, w1, b1, w2, b2), **TOL)


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_winograd_matches_the_direct_conv_in_float64(case, tile):
    n, c, h, w, o, p = case
    x, wt, b = T(normal((n, c, h, w), 9)), T(normal((o, c, 3, 3), 10)), T(normal((o,), 11))
    g = normal((n, o, h + 2 * (p if isinstance(p, int) else p[0]) - 2,
                w + 2 * (p if isinstance(p, int) else p[1]) - 2), 12)
    results = []
    for fn in (F.conv2d, direct):
        for t in (x, wt, b):
            t.grad = None
        y = fn(x, wt, b, padding=p)
        y.backward(g)
        results.append([y.numpy(), x.grad.copy(), wt.grad.copy(), b.grad.copy()])
    for fast, ref in zip(*results):
        np.testing.assert_allclose(fast, ref, rtol=1e-11, atol=1e-11)


def test_3x3_stride_1_takes_the_winograd_path(monkeypatch):
    calls = []
    original = conv._conv2d_winograd
    monkeypatch.setattr(conv, "_conv2d_winograd", lambda *a, **k: calls.append(1) or original(*a, **k))
    for p in (0, 1, 2, (1, 0)):
        F.conv2d(T(normal((1, 2, 5, 6), 13)), T(normal((3, 2, 3, 3), 14)), padding=p)
    assert len(calls) == 4


@pytest.mark.parametrize("kernel, stride", [(3, 2), (4, 1), (1, 1), ((3, 1), 1), (3, (1, 2))])
def test_other_convs_take_the_direct_path(monkeypatch, kernel, stride):
    def refuse(*args, **kwargs):
        raise AssertionError("Winograd path taken")
    monkeypatch.setattr(conv, "_conv2d_winograd", refuse)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    F.conv2d(T(normal((1, 2, 7, 7), 15)), T(normal((2, 2, kh, kw), 16)), stride=stride, padding=1)


def test_winograd_on_non_contiguous_views(winograd_only):
    base = normal((2, 9, 6, 3), 17)
    view = base.transpose(0, 3, 2, 1)[:, :, ::-1, :]  # (2, 3, 6, 9), negative and permuted strides
    w = normal((2, 3, 3, 3), 18)
    x = tg.Tensor(view, requires_grad=True)
    ref = direct(tg.Tensor(view.copy()), tg.Tensor(w), padding=1).numpy()  # copy(): a C-contiguous one
    np.testing.assert_allclose(F.conv2d(x, tg.Tensor(w), padding=1).numpy(), ref, rtol=1e-11, atol=1e-12)
    assert tg.gradcheck(lambda x: F.conv2d(x, tg.Tensor(w), padding=1), (x,), **TOL)


# ---- float32 accuracy ------------------------------------------------------------------------

def realistic(n, c, o, h, seed):
    """ELU activations, PyTorch's default conv init (uniform +-1/sqrt(fan_in)), a unit-scale upstream gradient."""
    r = np.random.default_rng(seed)
    v = r.standard_normal((n, c, h, h))
    x = np.where(v > 0, v, np.expm1(np.minimum(v, 0)))
    bound = 1 / np.sqrt(9 * c)
    return x, r.uniform(-bound, bound, (o, c, 3, 3)), r.uniform(-bound, bound, o), r.standard_normal((n, o, h, h))


def run(fn, arrays, dtype):
    x, w, b, g = arrays
    ts = [tg.Tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b)]
    y = fn(*ts)
    y.backward(g.astype(dtype))
    return [y.numpy().astype(np.float64)] + [backend.to_host(t.grad).astype(np.float64) for t in ts]


def relative_errors(fast, ref):
    return [float(np.abs(f - r).max() / np.abs(r).max()) for f, r in zip(fast, ref)]


@pytest.mark.parametrize("shape", [(2, 16, 16, 16), (2, 32, 32, 8), (1, 3, 16, 16), (1, 16, 3, 16)], ids=str)
def test_float32_agrees_with_the_direct_conv_within_the_documented_tolerance(shape, tile):
    n, c, o, h = shape
    arrays = realistic(n, c, o, h, seed=19)
    ref = run(lambda x, w, b: direct(x, w, b, padding=1), arrays, np.float64)
    fast = run(lambda x, w, b: F.conv2d(x, w, b, padding=1), arrays, np.float32)
    errors = relative_errors(fast, ref)
    assert max(errors) < F.WINOGRAD_RTOL, dict(zip(["y", "gx", "gw", "gb"], errors))
    # and it is float32 that limits it: im2col in float32 on the same data, for scale
    im2col = relative_errors(run(lambda x, w, b: direct(x, w, b, padding=1), arrays, np.float32), ref)
    assert max(im2col) < 2e-6


def test_float32_output_keeps_dtype_and_layout():
    x = tg.Tensor(np.ones((2, 3, 8, 8), np.float32))
    y = F.conv2d(x, tg.Tensor(np.ones((4, 3, 3, 3), np.float32)), padding=1)
    assert y.dtype == np.float32 and y.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(y.numpy()[:, :, 1:-1, 1:-1], 27.0, rtol=1e-6)


# ---- mutations: the checks have teeth -----------------------------------------------------------

def _broken(mat, i, j, delta=0.25):
    mat = mat.copy()
    mat[i, j] += delta
    return mat


def _gradcheck_case():
    x, w, b = T(normal((2, 2, 6, 7), 20)), T(normal((3, 2, 3, 3), 21, 0.5)), T(normal((3,), 22))
    return (x, w, b), (lambda x, w, b: F.conv2d(x, w, b, padding=1))


@pytest.mark.parametrize("where", ["B^T in the input gradient", "A^T in the output adjoint",
                                   "G in the weight gradient"])
def test_gradcheck_catches_a_wrong_matrix_in_the_backward(monkeypatch, tile, where):
    """Each backward transform receives its matrix as an argument: hand it one with a wrong entry."""
    name, index = {"B^T in the input gradient": ("_winograd_input_adjoint", 1),
                   "A^T in the output adjoint": ("_winograd_output_adjoint", 1),
                   "G in the weight gradient": ("_winograd_weight_adjoint", 1)}[where]
    original = getattr(winograd, name)

    def mutated(*args, **kwargs):
        args = list(args)
        args[index] = _broken(args[index], 1, 1)
        return original(*args, **kwargs)
    inputs, fn = _gradcheck_case()
    assert tg.gradcheck(fn, inputs, **TOL)  # intact first
    monkeypatch.setattr(winograd, name, mutated)
    with pytest.raises(GradcheckError):
        tg.gradcheck(fn, inputs, **TOL)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["B^T", "G", "A^T"])
def test_a_consistently_wrong_matrix_is_caught_by_the_forward_check(monkeypatch, tile, which):
    """Broken in forward and backward alike, the backward is still the exact adjoint of what the forward
    computes, so only the comparison with the direct conv can see it; it does."""
    mats = [np.array(mat, dtype=np.float64) for mat in winograd._WINOGRAD[tile]]
    mats[which] = _broken(mats[which], 1, 1)
    monkeypatch.setitem(winograd._WINOGRAD, tile, tuple(mat.tolist() for mat in mats))
    monkeypatch.setattr(winograd, "_WINOGRAD_ARRAYS", {})  # the matrices are made once per backend: again
    inputs, fn = _gradcheck_case()
    assert tg.gradcheck(fn, inputs, **TOL)  # consistent: passes
    x, w, b = inputs
    fast, ref = fn(x, w, b).numpy(), direct(x, w, b, padding=1).numpy()
    assert np.abs(fast - ref).max() > 1e-3


# ---- work buffers and backends ------------------------------------------------------------------

def test_the_tile_buffers_border_is_zero_whatever_came_before():
    """The tile buffer's zero border is filled again only when its layout changes: a conv without
    padding (which writes the whole buffer) between two padded ones must not leave data there."""
    w = T(normal((3, 2, 3, 3), 27))
    padded, whole = T(normal((1, 2, 8, 8), 28)), T(normal((1, 2, 10, 10), 29))   # both tile to 10x10
    first = F.conv2d(padded, w, padding=1).numpy()
    F.conv2d(whole, w)                     # the same buffer and shape, data all the way to the edges
    again = F.conv2d(padded, w, padding=1).numpy()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(again, direct(padded, w, None, padding=1).numpy(), rtol=0, atol=1e-4)


def test_reused_work_buffers_never_leak_into_results():
    w, b = T(normal((3, 2, 3, 3), 23)), T(normal((3,), 24))
    x1, x2 = T(normal((2, 2, 8, 8), 25)), T(normal((2, 2, 8, 8), 26))
    y1 = F.conv2d(x1, w, b, padding=1)
    first = y1.numpy().copy()
    y2 = F.conv2d(x2, w, b, padding=1)          # same shapes: the same work buffers
    np.testing.assert_array_equal(y1.numpy(), first)
    g = normal(y1.shape, 27)
    y1.backward(g)
    gx1 = x1.grad.copy()
    y2.backward(g)
    np.testing.assert_array_equal(x1.grad, gx1)
    winograd.release_work_buffers()
    y3 = F.conv2d(x1, w, b, padding=1)
    np.testing.assert_allclose(y3.numpy(), first, rtol=0, atol=0)


def test_strict_backend_runs_the_winograd_path_on_device(winograd_only):
    host = [normal((2, 3, 6, 7), 28), normal((4, 3, 3, 3), 29), normal((4,), 30), normal((2, 4, 6, 7), 31)]
    expected = run(lambda x, w, b: F.conv2d(x, w, b, padding=1), host, np.float64)
    backend.use("strict")
    _strict.reset_transfers()
    ts = [tg.Tensor(backend.to_device(a), requires_grad=True) for a in host[:3]]
    y = F.conv2d(*ts, padding=1)
    y.backward(backend.to_device(host[3]))
    assert _strict.transfers == 0
    got = [y.numpy()] + [backend.to_host(t.grad) for t in ts]
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("limit", [0, 1 << 40], ids=["recomputed", "kept"])
def test_the_weight_gradient_is_the_same_with_v_kept_or_recomputed(monkeypatch, limit):
    """The forward keeps V (the transformed tiles) for the weight gradient up to KEEP_V_BYTES and
    the backward recomputes a larger one; both give the same bits, and a conv run in between (which
    overwrites every work buffer) changes neither. The input transform runs once (kept) or twice."""
    calls = []
    transform = winograd._winograd_input
    monkeypatch.setattr(winograd, "_winograd_input", lambda *a, **k: calls.append(1) or transform(*a, **k))
    host = [normal((2, 3, 9, 7), 32), normal((4, 3, 3, 3), 33), normal((2, 4, 9, 7), 34)]

    def grads(keep_limit):
        monkeypatch.setattr(winograd, "KEEP_V_BYTES", keep_limit)
        x, w = (tg.Tensor(a, requires_grad=True) for a in host[:2])
        y = F.conv2d(x, w, padding=1)
        F.conv2d(T(normal((2, 3, 9, 7), 35)), T(normal((4, 3, 3, 3), 36)), padding=1)  # reuses the buffers
        y.backward(host[2])
        return x.grad, w.grad

    calls.clear()
    got = grads(limit)
    assert len(calls) == (3 if limit == 0 else 2)   # 2 forwards, and the backward's recompute when not kept
    x, w = (tg.Tensor(a, requires_grad=True) for a in host[:2])
    direct(x, w, padding=1).backward(host[2])                  # the reference path, im2col
    for a, e in zip(got, (x.grad, w.grad)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)
    other = grads(1 << 40 if limit == 0 else 0)
    for a, b in zip(got, other):
        np.testing.assert_array_equal(a, b)
