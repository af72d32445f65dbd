"""nn: registration, state dicts, modes, PyTorch's initialisations, per-layer gradchecks; optim: Adam, SGD."""
import copy
import math

import numpy as np
import pytest

import tinygan as tg
from tinygan import backend, nn, optim
from tinygan import functional as F



def normal(shape, seed):  # on the backend under test: constants of an op must live where its tensors do
    return backend.to_device(np.random.default_rng(seed).standard_normal(shape))


def T(a, requires_grad=True):
    return tg.Tensor(backend.to_device(np.array(backend.to_host(a), dtype=np.float64)), requires_grad=requires_grad)


def to_float64(module):
    """Make a layer's parameters and buffers float64, for finite differences."""
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for m in module.modules():
        for name, buf in list(m._buffers.items()):
            m.register_buffer(name, buf.astype(np.float64))
    return module


# ---- registration and names --------------------------------------------------------

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
        self.scale = nn.Parameter(np.ones(2, dtype=np.float32))
        self.norm = nn.BatchNorm1d(2)
        self.plain = np.zeros(3)  # not a parameter, not a buffer

    def forward(self, x):
        return self.norm(self.body(x) * self.scale)


def test_sequential_parameter_names():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [p.shape for p in model.parameters()] == [(3, 2), (3,), (1, 3), (1,)]
    assert len(model) == 3 and isinstance(model[1], nn.Tanh) and isinstance(model[-1], nn.Linear)


def test_nested_registration():
    block = Block()
    names = [n for n, _ in block.named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "norm.weight", "norm.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in block.parameters())
    assert [n for n, _ in block.named_buffers()] == ["norm.running_mean", "norm.running_var"]
    assert list(block.state_dict()) == names + ["norm.running_mean", "norm.running_var"]
    assert [n for n, _ in block.named_modules()] == ["", "body", "body.0", "body.1", "body.2", "norm"]
    assert block.children() == [block.body, block.norm]


def test_reassigning_an_attribute_updates_registration():
    block = Block()
    block.scale = None  # no longer a parameter
    assert "scale" not in dict(block.named_parameters())
    block.body = nn.Linear(3, 2)
    names = [n for n, _ in block.named_parameters()]
    assert names == ["body.weight", "body.bias", "norm.weight", "norm.bias"]  # keeps its place, as in torch
    block.scale = nn.Parameter(np.ones(2, dtype=np.float32))
    assert [n for n, _ in block.named_parameters()][0] == "scale"


def test_rebinding_a_buffer_keeps_it_in_the_state_dict():
    bn = nn.BatchNorm1d(3)
    fresh = backend.to_device(np.full(3, 2.0, dtype=np.float32))
    bn.running_var = fresh
    assert bn.state_dict()["running_var"] is fresh and bn.running_var is fresh
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    out = bn.eval()(tg.tensor(np.zeros((2, 3), dtype=np.float32)) + 1.0).numpy()
    np.testing.assert_allclose(out, np.full((2, 3), 1 / np.sqrt(2.0 + 1e-5)), rtol=1e-6)


def test_assignment_before_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))
    with pytest.raises(AttributeError, match=r"must call super\(\).__init__\(\) before assigning 'w'"):
        Bad()


def test_zero_grad_clears_every_parameter():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    model(tg.tensor(np.ones((4, 2), dtype=np.float32))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---- state dicts ----------------------------------------------------------------------

def test_state_dict_round_trip():
    backend.seed(1)
    a = Block()
    a.norm(tg.tensor(normal((5, 2), 1).astype(np.float32)))  # move the running statistics off their init
    backend.seed(2)
    b = Block()
    x = tg.tensor(normal((5, 3), 2).astype(np.float32))
    a.eval(), b.eval()
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    params_before = b.parameters()
    saved = {k: backend.to_host(v).copy() for k, v in a.state_dict().items()}  # host copies, as a checkpoint
    b.load_state_dict(saved)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, saved[k])
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert all(p is q for p, q in zip(params_before, b.parameters()))  # loaded in place


def test_state_dict_shares_arrays_with_the_module():
    lin = nn.Linear(2, 2)
    assert lin.state_dict()["weight"] is lin.weight.data


def test_load_state_dict_missing_entry():
    b = Block()
    state = dict(b.state_dict())
    del state["body.0.bias"]
    with pytest.raises(KeyError, match=r"missing \['body.0.bias'\]"):
        b.load_state_dict(state)
    b.load_state_dict(state, strict=False)  # tolerated when asked


def test_load_state_dict_unexpected_entry():
    b = Block()
    state = dict(b.state_dict(), **{"body.5.weight": np.ones(2)})
    with pytest.raises(KeyError, match=r"unexpected \['body.5.weight'\]"):
        b.load_state_dict(state)


def test_load_state_dict_mis_shaped_entry():
    b = Block()
    state = dict(b.state_dict())
    state["body.0.weight"] = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"'body.0.weight' has shape \(3, 4\), the module expects \(4, 3\)"):
        b.load_state_dict(state)


# ---- modes ------------------------------------------------------------------------------------

def test_train_eval_propagate():
    block = Block()
    assert all(m.training for m in block.modules())
    assert block.eval() is block
    assert not any(m.training for m in block.modules())
    block.train()
    assert all(m.training for m in block.modules())


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm2d, (4, 3, 2, 3))], ids=["1d", "2d"])
def test_train_and_eval_change_batch_norm(cls, shape):
    bn = cls(3)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    data = (normal(shape, 3) * 2 + 5).astype(np.float32)
    out = bn(tg.tensor(data)).numpy()  # training: batch statistics
    np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=axes), 1, rtol=1e-3)
    count = data.size // 3
    np.testing.assert_allclose(bn.running_mean, 0.1 * data.mean(axis=axes), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * data.var(axis=axes) * count / (count - 1), rtol=1e-5)
    stats = bn.running_mean.copy(), bn.running_var.copy()
    bn.eval()
    out = bn(tg.tensor(data)).numpy()  # evaluation: running statistics, left unchanged
    bshape = (1, 3) + (1,) * (len(shape) - 2)
    expected = (data - stats[0].reshape(bshape)) / np.sqrt(stats[1].reshape(bshape) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.running_mean, stats[0])
    np.testing.assert_array_equal(bn.running_var, stats[1])


def test_unflatten_inverts_flatten_and_names_a_size_that_does_not_fit():
    x = T(normal((2, 3, 4, 5), 46))
    flat = nn.Flatten()(x)
    back = nn.Unflatten(1, (3, 4, 5))(flat)
    assert back.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(backend.to_host(back.data), backend.to_host(x.data))
    assert nn.Unflatten(-2, (2, 2))(x).shape == (2, 3, 2, 2, 5)
    with pytest.raises(ValueError, match=r"Unflatten: axis 1 has 60 elements, but the size \(7, 7\) holds 49"):
        nn.Unflatten(1, (7, 7))(flat)


def test_minibatch_discrimination_against_the_papers_sum_over_pairs():
    layer = to_float64(nn.MinibatchDiscrimination(3, 4, 2))
    x = normal((5, 3), 49)
    out = backend.to_host(layer(T(x)).data)
    w = backend.to_host(layer.weight.data)
    xh = backend.to_host(x)
    m = (xh @ w).reshape(5, 4, 2)
    expected = np.zeros((5, 4))
    for i in range(5):
        for j in range(5):
            if i != j:
                expected[i] += np.exp(-np.abs(m[i] - m[j]).sum(axis=1))
    np.testing.assert_allclose(out[:, :3], xh)
    np.testing.assert_allclose(out[:, 3:], expected, rtol=1e-12)
    assert out.shape == (5, 7)
    # one sample has no neighbours; identical samples are as close as can be (exp(0) = 1 per other sample)
    np.testing.assert_array_equal(backend.to_host(layer(T(x[:1])).data)[:, 3:], np.zeros((1, 4)))
    same = backend.to_host(layer(T(np.repeat(xh[:1], 3, axis=0))).data)[:, 3:]
    np.testing.assert_allclose(same, np.full((3, 4), 2.0))
    with pytest.raises(ValueError, match=r"MinibatchDiscrimination: expected features of shape \(N, 3\)"):
        layer(T(normal((2, 4), 50)))


def test_dropout_module_follows_the_mode():
    drop = nn.Dropout(0.5)
    x = tg.tensor(np.ones((10, 10), dtype=np.float32))
    assert (drop(x).numpy() == 0).any()
    drop.eval()
    assert drop(x) is x


# ---- PyTorch's default initialisations ---------------------------------------------------

def _uniform_init_check(weight, bias, fan_in):
    bound = 1 / math.sqrt(fan_in)
    for arr in (weight, bias):
        assert arr.dtype == np.float32
        assert np.abs(arr).max() <= bound
    assert np.abs(weight).max() > 0.98 * bound  # the whole range is used, not a narrower one
    assert weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert abs(weight.mean()) < 0.05 * bound


@pytest.mark.parametrize("make,fan_in,wshape", [
    (lambda: nn.Linear(300, 200), 300, (200, 300)),
    (lambda: nn.Conv2d(16, 32, 3), 16 * 9, (32, 16, 3, 3)),
    (lambda: nn.Conv2d(8, 64, (3, 5)), 8 * 15, (64, 8, 3, 5)),
    (lambda: nn.ConvTranspose2d(64, 32, 4), 32 * 16, (64, 32, 4, 4)),  # fan_in = out * kh * kw
    (lambda: nn.ConvTranspose2d(16, 48, 3), 48 * 9, (16, 48, 3, 3)),
], ids=["Linear", "Conv2d", "Conv2d-rect", "ConvTranspose2d", "ConvTranspose2d-b"])
def test_default_uniform_init(make, fan_in, wshape):
    layer = make()
    assert layer.weight.shape == wshape
    _uniform_init_check(layer.weight.numpy(), layer.bias.numpy(), fan_in)


def test_conv_transpose_layout_is_in_out_kh_kw():
    layer = nn.ConvTranspose2d(3, 5, 2, stride=2)
    assert layer.weight.shape == (3, 5, 2, 2) and layer.bias.shape == (5,)
    out = layer(tg.tensor(np.ones((1, 3, 2, 2), dtype=np.float32)))
    assert out.shape == (1, 5, 4, 4)


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_batch_norm_init(cls):
    bn = cls(7)
    np.testing.assert_array_equal(bn.weight.numpy(), np.ones(7))
    np.testing.assert_array_equal(bn.bias.numpy(), np.zeros(7))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(7))
    np.testing.assert_array_equal(bn.running_var, np.ones(7))
    assert {a.dtype for a in bn.state_dict().values()} == {np.dtype(np.float32)}
    plain = cls(7, affine=False)
    assert plain.weight is None and plain.parameters() == []


def test_embedding_init_is_standard_normal():
    w = nn.Embedding(2000, 16).weight.numpy()
    assert w.dtype == np.float32
    assert abs(w.mean()) < 0.02 and w.std() == pytest.approx(1.0, rel=0.02)


def test_dcgan_init():
    backend.seed(4)
    model = nn.Sequential(nn.Conv2d(16, 64, 4), nn.BatchNorm2d(64), nn.ConvTranspose2d(64, 32, 4),
                          nn.Linear(100, 500), nn.BatchNorm1d(500))
    assert nn.init.dcgan_(model) is model
    for i in (0, 2, 3):
        w = model[i].weight.numpy()
        assert abs(w.mean()) < 0.002 and w.std() == pytest.approx(0.02, rel=0.05)
        np.testing.assert_array_equal(model[i].bias.numpy(), 0)
    for i in (1, 4):
        w = model[i].weight.numpy()
        assert w.mean() == pytest.approx(1.0, abs=0.01) and w.std() == pytest.approx(0.02, rel=0.3)
        np.testing.assert_array_equal(model[i].bias.numpy(), 0)


def test_init_is_reproducible_with_the_seed():
    backend.seed(9)
    a = nn.Linear(4, 3).weight.numpy()
    backend.seed(9)
    b = nn.Linear(4, 3).weight.numpy()
    np.testing.assert_array_equal(a, b)


# ---- every layer passes the directional gradient check in float64 ----------------------------

def _image(shape, seed):
    return T(normal(shape, seed))


LAYERS = {
    "Linear": (lambda: nn.Linear(4, 3), lambda: T(normal((2, 4), 20))),
    "Linear-nobias": (lambda: nn.Linear(4, 3, bias=False), lambda: T(normal((3, 4), 21))),
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), lambda: _image((2, 2, 5, 7), 22)),
    "Conv2d-k4s3": (lambda: nn.Conv2d(2, 2, 4, stride=3, padding=2), lambda: _image((1, 2, 5, 7), 23)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1), lambda: _image((2, 2, 3, 3), 24)),
    "ConvTranspose2d-outpad": (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
                               lambda: _image((1, 2, 3, 2), 25)),
    "Upsample": (lambda: nn.Upsample(scale_factor=2), lambda: _image((1, 2, 2, 3), 26)),
    "BatchNorm1d-train": (lambda: nn.BatchNorm1d(3), lambda: T(normal((4, 3), 27) + 1)),
    "BatchNorm1d-eval": (lambda: _with_stats(nn.BatchNorm1d(3)).eval(), lambda: T(normal((4, 3), 28))),
    "BatchNorm2d-train": (lambda: nn.BatchNorm2d(2), lambda: _image((2, 2, 3, 3), 29)),
    "BatchNorm2d-eval": (lambda: _with_stats(nn.BatchNorm2d(2)).eval(), lambda: _image((2, 2, 3, 3), 30)),
    "BatchNorm2d-plain": (lambda: nn.BatchNorm2d(2, affine=False), lambda: _image((2, 2, 2, 3), 31)),
    "BatchNorm2d-no-stats": (lambda: nn.BatchNorm2d(2, track_running_stats=False).eval(),
                             lambda: _image((2, 2, 2, 3), 32)),
    "ReLU": (nn.ReLU, lambda: T(_away((3, 4), 33))),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), lambda: T(_away((3, 4), 34))),
    "ELU": (nn.ELU, lambda: T(_away((3, 4), 35))),
    "ELU-alpha": (lambda: nn.ELU(alpha=0.7), lambda: T(_away((3, 4), 36))),
    "Sigmoid": (nn.Sigmoid, lambda: T(normal((3, 4), 37) * 3)),
    "Tanh": (nn.Tanh, lambda: T(normal((3, 4), 38))),
    "Identity": (nn.Identity, lambda: T(normal((3, 4), 39))),
    "Flatten": (nn.Flatten, lambda: _image((2, 2, 2, 3), 40)),
    "Flatten-all": (lambda: nn.Flatten(0), lambda: _image((2, 2, 2, 3), 41)),
    "Unflatten": (lambda: nn.Unflatten(1, (2, 3)), lambda: T(normal((4, 6), 44))),
    "Unflatten-last": (lambda: nn.Unflatten(-1, (3, 1, 2)), lambda: _image((2, 2, 1, 6), 45)),
    "MinibatchDiscrimination": (lambda: nn.MinibatchDiscrimination(4, 3, 2), lambda: T(normal((5, 4), 47))),
    "MinibatchDiscrimination-odd": (lambda: nn.MinibatchDiscrimination(5, 2, 3), lambda: T(normal((3, 5), 48) * 3)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2), nn.Sigmoid()),
                   lambda: T(normal((3, 4), 42))),
    "Sequential-conv": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ELU(),
                                              nn.Flatten(), nn.Linear(2 * 4 * 5, 3)),
                        lambda: _image((2, 1, 4, 5), 43)),
}


def _away(shape, seed):
    r = np.random.default_rng(seed)
    return backend.to_device(r.uniform(0.1, 1.5, shape) * r.choice([-1.0, 1.0], size=shape))


def _with_stats(bn):
    n = bn.num_features
    bn.running_mean[...] = normal(n, 50)
    bn.running_var[...] = np.random.default_rng(51).uniform(0.5, 2.0, n)
    return bn


def _check_layer(layer, inputs, extra_tensors=()):
    out = layer(*inputs)
    r = normal(out.shape, 60)  # a random projection: sum(out) alone is blind to e.g. batch norm's input gradient
    tensors = [t for t in inputs if isinstance(t, tg.Tensor)] + list(extra_tensors) + layer.parameters()
    assert all(t.dtype == np.float64 for t in tensors)
    return tg.gradcheck_directional(lambda: (layer(*inputs) * r).sum(), tensors, n_directions=4)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_directional_gradcheck(name):
    make, make_input = LAYERS[name]
    backend.seed(5)
    layer = to_float64(make())
    assert _check_layer(layer, (make_input(),))


def test_embedding_directional_gradcheck():
    layer = to_float64(nn.Embedding(6, 3))
    assert _check_layer(layer, (backend.to_device(np.array([[0, 5, 0], [2, 2, 1]])),))


def test_dropout_directional_gradcheck():
    layer = nn.Dropout(0.3)
    x = T(_away((4, 5), 61))
    r = normal((4, 5), 62)

    def loss():
        backend.seed(3)  # one mask for every evaluation
        return (layer(x) * r).sum()
    assert tg.gradcheck_directional(loss, [x])


def test_conv_autoencoder_l1_reconstruction_gradcheck():
    """Conv2d stride 2 + ELU -> Linear to a bottleneck -> Linear back -> Upsample -> Conv2d; L1 loss."""
    backend.seed(6)
    n, c, s, h, bottleneck = 2, 1, 6, 3, 4
    enc = nn.Sequential(nn.Conv2d(c, h, 3, stride=2, padding=1), nn.ELU(), nn.Flatten(), nn.Linear(h * 3 * 3, bottleneck))
    dec_fc = nn.Linear(bottleneck, h * 3 * 3)
    dec = nn.Sequential(nn.Upsample(2), nn.Conv2d(h, c, 3, padding=1))
    model = nn.Sequential(enc, dec_fc, dec)
    to_float64(model)
    x = tg.Tensor(np.random.default_rng(7).uniform(0, 1, (n, c, s, s)))

    def loss():
        code = enc(x)
        recon = dec(dec_fc(code).reshape(n, h, 3, 3))
        assert recon.shape == x.shape
        return F.l1_loss(recon, x)
    params = model.parameters()
    assert len(params) == 8
    assert tg.gradcheck_directional(loss, params, n_directions=5)
    assert all(p.grad is not None and np.abs(backend.to_host(p.grad)).sum() > 0 for p in params)


# ---- Adam ---------------------------------------------------------------------------------------

def adam_reference(p, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """Kingma & Ba, Algorithm 1, with PyTorch's L2 weight decay added to the gradient."""
    b1, b2 = betas
    p = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    history = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append(p.copy())
    return history, m, v


@pytest.mark.parametrize("weight_decay", [0.0, 0.1], ids=["plain", "weight_decay"])
def test_adam_against_the_update_equations(weight_decay):
    p0 = normal((3, 4), 70)
    grads = [normal((3, 4), 71 + t) * 10 ** (t - 1) for t in range(3)]  # different scales per step
    lrs = [1e-3, 5e-3, 2e-3]
    p = nn.Parameter(p0.copy())
    opt = optim.Adam([p], weight_decay=weight_decay)
    assert opt.lr == 1e-3 and opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["eps"] == 1e-8
    expected, m, v = adam_reference(p0, grads, lrs, weight_decay=weight_decay)
    for t, g in enumerate(grads):
        if t == 1:
            opt.lr = lrs[1]
        if t == 2:
            opt.param_groups[0]["lr"] = lrs[2]
        assert opt.lr == lrs[t]
        p.grad = g.copy()
        opt.step()
        np.testing.assert_allclose(p.numpy(), expected[t], rtol=1e-12, atol=1e-15)
    state = opt.state_dict()["state"][0]
    assert state["step"] == 3
    np.testing.assert_allclose(state["exp_avg"], m, rtol=1e-12)
    np.testing.assert_allclose(state["exp_avg_sq"], v, rtol=1e-12)


def test_adam_first_step_moves_by_lr():
    """Bias correction makes the first step lr * sign(g) (up to eps), whatever the gradient's scale."""
    p = nn.Parameter(np.zeros(4))
    opt = optim.Adam([p], lr=0.01)
    g = np.array([1e-3, -5.0, 200.0, -0.1])
    p.grad = backend.to_device(g)  # gradients live where the parameter does (CuPy refuses a mix)
    opt.step()
    np.testing.assert_allclose(p.numpy(), -0.01 * np.sign(g), rtol=1e-4)


def test_adam_through_backward_and_zero_grad():
    backend.seed(8)
    lin = to_float64(nn.Linear(3, 2))
    opt = optim.Adam(lin.parameters(), lr=0.01)
    x = T(normal((4, 3), 80), requires_grad=False)
    w0 = lin.weight.numpy().copy()
    loss = (lin(x) ** 2).mean()
    loss.backward()
    g = lin.weight.grad.copy()
    opt.step()
    expected, _, _ = adam_reference(w0, [g], [0.01])
    np.testing.assert_allclose(lin.weight.numpy(), expected[0], rtol=1e-12)
    opt.zero_grad()
    assert all(q.grad is None for q in lin.parameters())


def test_optimizer_skips_parameters_without_gradient():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.Adam([a, b])
    a.grad = backend.to_device(np.ones(2))
    opt.step()
    np.testing.assert_array_equal(b.numpy(), np.ones(2))
    assert opt.state[1] == {} and 1 not in opt.state_dict()["state"]


def _two_params(seed):
    r = np.random.default_rng(seed)
    return [nn.Parameter(r.standard_normal((2, 3))), nn.Parameter(r.standard_normal(4))]


OPTIMIZERS = {
    "Adam": lambda ps, **kw: optim.Adam(ps, **{**dict(lr=0.01, betas=(0.5, 0.99), weight_decay=0.01), **kw}),
    "SGD": lambda ps, **kw: optim.SGD(ps, **{**dict(lr=0.1, momentum=0.9, weight_decay=0.01), **kw}),
}
GRADS = [[normal((2, 3), 90 + t), normal(4, 95 + t)] for t in range(5)]


def _steps(opt, grads):
    for g in grads:
        for p, gp in zip(opt.params, g):
            p.grad = backend.to_device(gp.copy())
        opt.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_dict_round_trip_continues_identically(name):
    make = OPTIMIZERS[name]
    opt_a = make(_two_params(1))
    _steps(opt_a, GRADS[:2])
    # a checkpoint: host copies of every array, lists where JSON would have them
    sd = opt_a.state_dict()
    saved = {"param_groups": [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
                              for g in sd["param_groups"]],
             "state": {str(i): {k: backend.to_host(v).copy() if hasattr(v, "shape") else v for k, v in st.items()}
                       for i, st in sd["state"].items()}}
    opt_b = make([nn.Parameter(p.numpy().copy()) for p in opt_a.params], lr=123.0)
    opt_b.load_state_dict(saved)
    assert {k: v for k, v in opt_b.param_groups[0].items() if k != "params"} == \
           {k: v for k, v in opt_a.param_groups[0].items() if k != "params"}
    frozen = copy.deepcopy(saved)
    _steps(opt_a, GRADS[2:])
    _steps(opt_b, GRADS[2:])
    for pa, pb in zip(opt_a.params, opt_b.params):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    for i, st in saved["state"].items():  # the loaded optimiser updated its own copies, not the checkpoint
        for k, v in st.items():
            np.testing.assert_array_equal(v, frozen["state"][i][k])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_loaded_from_a_live_state_dict_is_independent(name):
    """state_dict() shares the live arrays (as PyTorch); a loaded optimiser must not update them in place."""
    make = OPTIMIZERS[name]
    opt_a = make(_two_params(1))
    _steps(opt_a, GRADS[:2])
    opt_b = make([nn.Parameter(p.numpy().copy()) for p in opt_a.params])
    opt_b.load_state_dict(opt_a.state_dict())
    _steps(opt_b, GRADS[2:3])  # only b steps: a must not notice
    _steps(opt_a, GRADS[2:3])
    for pa, pb in zip(opt_a.params, opt_b.params):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    for sa, sb in zip(opt_a.state, opt_b.state):
        for k in sa:
            if hasattr(sa[k], "shape"):
                assert sa[k] is not sb[k]
                np.testing.assert_array_equal(sa[k], sb[k])


def test_optimizer_load_state_dict_errors():
    opt = optim.Adam(_two_params(3))
    for p in opt.params:
        p.grad = backend.to_device(np.ones(p.shape))
    opt.step()
    state = opt.state_dict()
    bad = {"param_groups": state["param_groups"], "state": {0: dict(state["state"][0], exp_avg=np.zeros((3, 2)))}}
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(3, 2\), the parameter has \(2, 3\)"):
        optim.Adam(_two_params(3)).load_state_dict(bad)
    with pytest.raises(ValueError, match="state for parameter 5"):
        optim.Adam(_two_params(3)).load_state_dict({"param_groups": state["param_groups"], "state": {5: {}}})
    with pytest.raises(ValueError, match="2 parameter groups, expected 1"):
        optim.Adam(_two_params(3)).load_state_dict({"param_groups": state["param_groups"] * 2, "state": {}})


@pytest.mark.parametrize("make,pattern,exc", [
    (lambda: optim.Adam([]), "empty parameter list", ValueError),
    (lambda: optim.Adam([nn.Parameter(np.ones(2))], lr=-1), "lr must be >= 0", ValueError),
    (lambda: optim.Adam([nn.Parameter(np.ones(2))], betas=(1.0, 0.9)), "betas must be in", ValueError),
    (lambda: optim.Adam([nn.Parameter(np.ones(2))], momentum=0.9), r"unexpected arguments \['momentum'\]", TypeError),
    (lambda: optim.SGD([tg.Tensor(np.ones(2))]), "parameter 0 is not a tensor that requires grad", TypeError),
], ids=["empty", "lr", "betas", "unknown", "no-grad"])
def test_optimizer_argument_errors(make, pattern, exc):
    with pytest.raises(exc, match=pattern):
        make()


# ---- SGD ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.05)], ids=str)
def test_sgd_against_hand_computed_values(momentum, weight_decay):
    """b_1 = g_1, b_t = momentum b_{t-1} + g_t, p_t = p_{t-1} - lr b_t (torch.optim.SGD, dampening 0)."""
    p0 = np.array([1.0, -2.0, 0.5])
    grads = [np.array([0.1, 0.2, -0.3]), np.array([-0.4, 0.0, 0.5]), np.array([0.3, -0.1, 0.2])]
    lr = 0.1
    p = nn.Parameter(p0.copy())
    opt = optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
    expected, buf = p0.copy(), None
    for g in grads:
        d = g + weight_decay * expected
        buf = d if buf is None or not momentum else momentum * buf + d
        expected = expected - lr * buf
        p.grad = g.copy()
        opt.step()
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-14, atol=1e-15)


def test_sgd_momentum_by_hand():
    """Spelled out: p = 1, g = 1 every step, lr 0.1, momentum 0.9: buffers 1, 1.9, 2.71."""
    p = nn.Parameter(np.array([1.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for expected in (0.9, 0.71, 0.439):
        p.grad = np.array([1.0])
        opt.step()
        assert p.numpy()[0] == pytest.approx(expected, abs=1e-12)
    assert opt.state[0]["momentum_buffer"][0] == pytest.approx(2.71)
