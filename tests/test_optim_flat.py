"""Optimisers keep a group's parameters and gradients in flat buffers: one update is a few array operations."""
import numpy as np
import pytest

import tinygan as tg
from tinygan import _strict, backend, nn, optim


def mlp(widths, seed=0):
    backend.seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ELU()]
    return nn.Sequential(*layers[:-1])


def train(opt_cls, flat, steps=3, **kw):
    net = mlp((5, 7, 3, 2))
    opt = opt_cls(net.parameters(), **kw)
    if not flat:
        opt._flat = [None] * len(opt.param_groups)   # the parameter-by-parameter path, as the reference
    x = tg.tensor(backend.to_device(np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)))
    for _ in range(steps):
        opt.zero_grad()
        (net(x) ** 2).mean().backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("opt_cls, kw", [(optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
                                         (optim.SGD, dict(lr=1e-2, momentum=0.9))], ids=["adam", "sgd"])
def test_the_flat_update_is_the_per_parameter_update_bit_for_bit(opt_cls, kw):
    flat, opt = train(opt_cls, True, **kw)
    ref, ref_opt = train(opt_cls, False, **kw)
    for p, q in zip(flat.parameters(), ref.parameters()):
        assert np.array_equal(backend.to_host(p.data), backend.to_host(q.data))
    for s, r in zip(opt.state_dict()["state"].values(), ref_opt.state_dict()["state"].values()):
        assert s.keys() == r.keys()
        for k in s:
            np.testing.assert_array_equal(backend.to_host(s[k]) if hasattr(s[k], "shape") else s[k],
                                          backend.to_host(r[k]) if hasattr(r[k], "shape") else r[k])


def test_parameters_and_gradients_are_views_of_one_buffer_each():
    net, opt = train(optim.Adam, True, steps=1)
    flat = opt._flat[0]
    xp = backend.get_array_module(flat.data)
    for p in net.parameters():
        assert xp.shares_memory(p.data, flat.data) and p.grad is p._grad_into
        assert xp.shares_memory(p.grad, flat.grad)
    assert flat.data.size == sum(p.size for p in net.parameters())


def test_a_parameter_without_a_gradient_is_left_alone_as_in_pytorch():
    net = mlp((3, 4, 2))
    unused = nn.Linear(2, 2)
    opt = optim.Adam(net.parameters() + unused.parameters(), lr=0.1)
    before = backend.to_host(unused.weight.data).copy()
    x = tg.tensor(backend.to_device(np.ones((2, 3), np.float32)))
    opt.zero_grad()
    net(x).sum().backward()
    opt.step()
    np.testing.assert_array_equal(backend.to_host(unused.weight.data), before)
    assert unused.weight.grad is None


def test_resume_through_state_dict_continues_the_flat_update_exactly():
    straight, _ = train(optim.Adam, True, steps=4, lr=1e-2)
    net, opt = train(optim.Adam, True, steps=2, lr=1e-2)
    saved_net = {k: backend.to_host(v).copy() for k, v in net.state_dict().items()}
    saved_opt = opt.state_dict()
    saved_opt = {"param_groups": saved_opt["param_groups"],
                 "state": {i: {k: backend.to_host(v).copy() if hasattr(v, "shape") else v for k, v in s.items()}
                           for i, s in saved_opt["state"].items()}}
    fresh = mlp((5, 7, 3, 2), seed=9)
    fresh.load_state_dict(saved_net)
    opt2 = optim.Adam(fresh.parameters(), lr=1e-2)
    opt2.load_state_dict(saved_opt)
    x = tg.tensor(backend.to_device(np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)))
    for _ in range(2):
        opt2.zero_grad()
        (fresh(x) ** 2).mean().backward()
        opt2.step()
    for p, q in zip(straight.parameters(), fresh.parameters()):
        assert np.array_equal(backend.to_host(p.data), backend.to_host(q.data))


def adam_step_ops(widths):
    """Device operations of the second Adam step (the first also makes the moment buffers), on strict."""
    with backend.using("strict"):
        net = mlp(widths)
        opt = optim.Adam(net.parameters(), lr=1e-3)
        x = tg.tensor(backend.to_device(np.ones((2, widths[0]), np.float32)))
        for _ in range(2):
            opt.zero_grad()
            net(x).sum().backward()
            _strict.reset_ops()
            opt.step()
        return sum(_strict.ops.values()), len(net.parameters())


@pytest.mark.backend_agnostic
def test_an_adam_step_is_a_constant_number_of_device_operations():
    few, n_few = adam_step_ops((4, 4))
    many, n_many = adam_step_ops((4,) + (8,) * 9 + (2,))
    assert (n_few, n_many) == (2, 20)
    assert few == many == 1, (few, many)   # one fused kernel (optim._ADAM_STEP) over the flat buffers
