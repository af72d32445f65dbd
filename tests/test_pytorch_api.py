"""What a PyTorch user reaches for: ModuleList, ModuleDict, clip_grad_norm_, parameter groups, a scheduler,
frozen/evaluating contexts and a forked random stream."""
import math

import numpy as np
import pytest

import tinygan as tg
from tinygan import backend, nn, optim


def host(a):
    return backend.to_host(a)


def test_module_list_and_dict_register_their_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(3, 4), nn.Linear(4, 2)])
            self.heads = nn.ModuleDict({"real": nn.Linear(2, 1), "fake": nn.Linear(2, 1)})
    net = Net()
    assert len(net.parameters()) == 8
    keys = list(net.state_dict())
    assert keys[:2] == ["blocks.0.weight", "blocks.0.bias"] and "heads.fake.weight" in keys
    assert isinstance(net.blocks[1], nn.Linear) and len(net.blocks) == 2 and [*net.heads] == ["real", "fake"]
    net.blocks.append(nn.ReLU())
    assert len(net.blocks) == 3
    with pytest.raises(TypeError, match="ModuleList: expected an nn.Module, got function"):
        net.blocks.append(lambda x: x)
    with pytest.raises(KeyError, match="without '.'"):
        net.heads["a.b"] = nn.ReLU()


def test_clip_grad_norm_scales_to_the_bound_and_returns_the_norm():
    a = tg.tensor(np.zeros(3, np.float32), requires_grad=True)
    b = tg.tensor(np.zeros(1, np.float32), requires_grad=True)
    a.grad = backend.to_device(np.array([3.0, 0.0, 0.0], np.float32))
    b.grad = backend.to_device(np.array([4.0], np.float32))
    norm = nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert float(host(norm)) == pytest.approx(5.0)
    total = math.sqrt(float((host(a.grad) ** 2).sum() + (host(b.grad) ** 2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)
    nn.utils.clip_grad_norm_([a, b], max_norm=10.0)   # below the bound: unchanged
    assert float(host(b.grad)[0]) == pytest.approx(0.8, rel=1e-5)
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
        nn.utils.clip_grad_norm_([a], max_norm=0)


def test_parameter_groups_each_use_their_own_settings():
    w1 = tg.tensor(np.ones(2, np.float32), requires_grad=True)
    w2 = tg.tensor(np.ones(2, np.float32), requires_grad=True)
    opt = optim.SGD([{"params": [w1]}, {"params": [w2], "lr": 0.5}], lr=0.1)
    for w in (w1, w2):
        w.grad = backend.to_device(np.ones(2, np.float32))
    opt.step()
    np.testing.assert_allclose(host(w1.data), [0.9, 0.9])
    np.testing.assert_allclose(host(w2.data), [0.5, 0.5])
    assert [g["lr"] for g in opt.state_dict()["param_groups"]] == [0.1, 0.5]
    with pytest.raises(TypeError, match="parameter group 0 has unexpected settings \\['betas'\\]"):
        optim.SGD([{"params": [w1], "betas": (0.5, 0.9)}])
    with pytest.raises(ValueError, match="appears more than once"):
        optim.SGD([{"params": [w1]}, {"params": [w1]}])


def test_reduce_lr_on_stall_sets_the_optimisers_rate_and_survives_a_state_dict():
    w = tg.tensor(np.ones(1, np.float32), requires_grad=True)
    opt = optim.Adam([w], lr=1e-3)
    sched = optim.ReduceLROnStall(opt, window=2, min_lr=4e-4)
    for step, m in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 1):
        sched.observe(step, m)
    assert opt.lr == pytest.approx(4e-4)        # halved once (5e-4), then floored
    again = optim.ReduceLROnStall(optim.Adam([w], lr=1e-3), window=2)
    again.load_state_dict(sched.state_dict())
    assert again.optimizers[0].lr == pytest.approx(4e-4)


def test_frozen_and_evaluating_restore_what_they_change():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.parameters()[1].requires_grad = False   # one already frozen: stays frozen after
    with nn.frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, False, True, True]
    with nn.evaluating(net):
        assert not net.training and not net[1].training
    assert net.training and net[1].training


def test_rng_fork_draws_on_a_side_stream():
    backend.seed(3)
    straight = host(backend.randn(4))
    backend.seed(3)
    with backend.rng_fork():
        host(backend.randn(10))                  # drawn, then forgotten
    with backend.rng_fork(seed=11):
        a = host(backend.randn(2))
    with backend.rng_fork(seed=11):
        b = host(backend.randn(2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(host(backend.randn(4)), straight)
