"""The gradient checks can fail: broken backwards (monkeypatched) must be caught.

Each broken variant is paired with the intact op on the same inputs, which
must pass, so a failure is the patch's doing and not a loose test.
"""
import importlib
import re

import numpy as np
import pytest

import tinygan as tg
from tinygan import backend, nn
from tinygan import functional as F
from tinygan.functional import conv as conv_ops
from tinygan.gradcheck import GradcheckError

tensor_module = importlib.import_module("tinygan.tensor")  # tinygan.tensor the name is the factory function

TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)



def T(a, requires_grad=True):
    return tg.Tensor(backend.to_device(np.array(backend.to_host(a), dtype=np.float64)), requires_grad=requires_grad)


def normal(shape, seed):  # on the backend under test: constants of an op must live where its tensors do
    return backend.to_device(np.random.default_rng(seed).standard_normal(shape))


# ---- the broken variants ---------------------------------------------------------

def scale_backward(op, which, factor=1.01):
    """``op`` whose backward multiplies the gradient of input number ``which`` by ``factor``."""
    def broken(*args, **kwargs):
        out = op(*args, **kwargs)
        inner = out._backward

        def backward(g):
            grads = list(inner(g))
            grads[which] = None if grads[which] is None else factor * grads[which]
            return grads
        out._backward = backward
        return out
    return broken


def col2im_dropping_last_kernel_position(original):
    def broken(cols, shape, sh, sw, xp):
        cols = cols.copy()                  # (Ho, Wo, N, kh, kw, C)
        cols[:, :, :, -1, -1] = 0           # as if the loop stopped one kernel position early
        return original(cols, shape, sh, sw, xp)
    return broken


_intact_elu = F.elu


def elu_with_swapped_derivative(x, alpha=1.0):
    """ELU whose negative side uses alpha (e^x - 1), the function, instead of alpha e^x."""
    out = _intact_elu(x, alpha)
    out._backward = lambda g: (g * np.where(x.data > 0, 1.0, out.data),)
    return out


# ---- inputs -------------------------------------------------------------------------

def conv_inputs():
    return T(normal((2, 2, 5, 7), 1)), T(normal((3, 2, 3, 3), 2)), T(normal((3,), 3))


def conv(x, w, b):
    return F.conv2d(x, w, b, stride=2, padding=1)  # F.conv2d looked up at call time: the patch applies


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["x", "weight", "bias"])
def test_gradcheck_catches_a_scaled_conv2d_gradient(monkeypatch, which, broken):
    if broken:
        monkeypatch.setattr(F, "conv2d", scale_backward(F.conv2d, which))
        with pytest.raises(GradcheckError, match=rf"input {which} \(shape"):
            tg.gradcheck(conv, conv_inputs(), **TOL)
    else:
        assert tg.gradcheck(conv, conv_inputs(), **TOL)


def test_gradcheck_error_reports_both_values(monkeypatch):
    monkeypatch.setattr(F, "conv2d", scale_backward(F.conv2d, 1, factor=2.0))
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(conv, conv_inputs(), **TOL)
    message = str(info.value)
    assert "gradcheck(conv)" in message and "input 1" in message
    assert "analytic" in message and "numeric" in message
    assert re.search(r"mismatch at \(\d+, \d+, \d+, \d+\)", message), message  # plain ints, not np.int64(..)


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d", "avg_pool2d"])
def test_gradcheck_catches_col2im_missing_a_kernel_position(monkeypatch, op, broken):
    """conv2d and avg_pool2d use col2im in their backward, conv_transpose2d in its forward.

    conv2d at stride 2: 3x3 stride-1 convs take the Winograd path, which has no col2im
    (its own mutation checks are in test_conv_fast.py)."""
    if broken:
        monkeypatch.setattr(conv_ops, "_col2im", col2im_dropping_last_kernel_position(conv_ops._col2im))
    x = T(normal((1, 2, 4, 5), 4))
    if op == "conv2d":
        fn, inputs = (lambda x, w: F.conv2d(x, w, stride=2, padding=1)), (x, T(normal((2, 2, 3, 3), 5)))
    elif op == "conv_transpose2d":
        fn, inputs = (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1)), (x, T(normal((2, 3, 3, 3), 6)))
    else:
        fn, inputs = (lambda x: F.avg_pool2d(x, 3, 1, 1)), (x,)
    if broken:
        with pytest.raises(GradcheckError, match=r"input 0 \(shape \(1, 2, 4, 5\)\)"):
            tg.gradcheck(fn, inputs, **TOL)
    else:
        assert tg.gradcheck(fn, inputs, **TOL)


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
def test_gradcheck_catches_a_swapped_elu_derivative(monkeypatch, broken):
    if broken:
        monkeypatch.setattr(F, "elu", elu_with_swapped_derivative)
    x = T(-np.linspace(0.2, 2.0, 6) * np.array([1, -1, 1, 1, -1, 1]))  # mostly negative: the broken side
    fn = lambda x: F.elu(x)  # noqa: E731
    if broken:
        with pytest.raises(GradcheckError, match="input 0"):
            tg.gradcheck(fn, (x,), **TOL)
    else:
        assert tg.gradcheck(fn, (x,), **TOL)


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
def test_gradcheck_names_the_second_input_of_a_broadcast_op(monkeypatch, broken):
    """A wrong reduction of broadcast gradients (the engine's unbroadcast) is caught too."""
    if broken:
        intact = tensor_module.unbroadcast

        def wrong_unbroadcast(grad, shape):  # averages over the broadcast copies instead of summing
            return intact(grad, shape) * (np.prod(shape) / grad.size)
        monkeypatch.setattr(tensor_module, "unbroadcast", wrong_unbroadcast)
    a, b = T(normal((2, 3, 4), 7)), T(normal((2, 3, 1), 8))  # only b is broadcast
    if broken:
        with pytest.raises(GradcheckError, match=r"input 1 \(shape \(2, 3, 1\)\)"):
            tg.gradcheck(F.mul, (a, b), **TOL)
    else:
        assert tg.gradcheck(F.mul, (a, b), **TOL)


# ---- the directional variant ----------------------------------------------------------

def small_model():
    """conv -> elu -> linear, calling F.elu at run time (nn.ELU binds F.elu when the class is made)."""
    backend.seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Linear(3 * 3 * 4, 2))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = T(normal((2, 2, 5, 7), 9))
    r = normal((2, 2), 10)

    def loss():
        h = F.elu(model[0](x))
        return (model[1](F.flatten(h, 1)) * r).sum()
    return model, x, loss


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["x", "weight", "bias"])
def test_directional_catches_a_scaled_conv2d_gradient(monkeypatch, which, broken):
    if broken:
        monkeypatch.setattr(F, "conv2d", scale_backward(F.conv2d, which, factor=1.01))
    model, x, loss = small_model()
    tensors = [x] + model.parameters()  # x, conv weight, conv bias, linear weight, linear bias
    if broken:
        shape = tensors[which].shape
        with pytest.raises(GradcheckError, match=rf"directional derivative mismatch.*worst: tensor {which} "
                                                 rf"\(shape {re.escape(str(shape))}\)"):
            tg.gradcheck_directional(loss, tensors)
    else:
        assert tg.gradcheck_directional(loss, tensors)


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
def test_directional_catches_col2im_missing_a_kernel_position(monkeypatch, broken):
    if broken:
        monkeypatch.setattr(conv_ops, "_col2im", col2im_dropping_last_kernel_position(conv_ops._col2im))
    model, x, loss = small_model()
    if broken:  # only the input's gradient goes through col2im
        with pytest.raises(GradcheckError, match=r"worst: tensor 0 \(shape \(2, 2, 5, 7\)\)"):
            tg.gradcheck_directional(loss, [x] + model.parameters())
    else:
        assert tg.gradcheck_directional(loss, [x])


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "broken"])
def test_directional_catches_a_swapped_elu_derivative(monkeypatch, broken):
    if broken:
        monkeypatch.setattr(F, "elu", elu_with_swapped_derivative)
    model, x, loss = small_model()
    if broken:  # elu sits between the conv and the linear layer: the conv's tensors and x see it
        with pytest.raises(GradcheckError, match=r"worst: tensor [012] "):
            tg.gradcheck_directional(loss, [x] + model.parameters())
    else:
        assert tg.gradcheck_directional(loss, [x] + model.parameters())


# ---- float32 is refused -------------------------------------------------------------------

def test_gradcheck_refuses_float32():
    x32 = tg.Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match=r"input 0 is float32.*float64"):
        tg.gradcheck(F.exp, (x32,))


def test_gradcheck_refuses_float32_in_any_position():
    x64 = T(normal((2, 3), 11))
    w32 = tg.Tensor(np.ones((4, 3), dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match=r"gradcheck\(linear\): input 1 is float32"):
        tg.gradcheck(F.linear, (x64, w32))


def test_gradcheck_accepts_float32_constants():
    """Only inputs that require grad are perturbed, so only they must be float64."""
    x64 = T(normal((2, 3), 12))
    c32 = tg.Tensor(np.ones((2, 3), dtype=np.float32))
    assert tg.gradcheck(F.mul, (x64, c32), **TOL)


def test_gradcheck_directional_refuses_float32():
    p = tg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float32.*float64"):
        tg.gradcheck_directional(lambda: (p * p).sum(), [p])


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        tg.gradcheck(F.exp, (T(np.ones(2), requires_grad=False),))
