"""Generator averaging (optim.EMA): the update by hand, the swap, the trainers' samples, checkpoints."""
import numpy as np
import pytest

import tinygan as tg
from tinygan import _strict, backend, nn, optim
from tinygan.gan import GANTrainer, MLPDiscriminator, MLPGenerator
from test_began import images_in_range, tiny_trainer
from test_gan_training import flat_state, run, tiny_image_data


def _params():
    return [nn.Parameter(np.array([[1.0, -2.0], [0.5, 4.0]])), nn.Parameter(np.array([3.0, -1.0, 0.0]))]


def test_update_against_hand_values():
    """avg_t = d_t avg_{t-1} + (1 - d_t) p_t with d_t = min(decay, (1 + t) / (10 + t)), avg_0 = p_0."""
    ps = _params()
    ema = optim.EMA(optim.Adam(ps), decay=0.9)
    start = [backend.to_host(p.data).copy() for p in ps]
    expected = [s.copy() for s in start]
    for t, shift in enumerate([1.0, -3.0, 0.5], start=1):
        for p in ps:
            p.data[...] = p.data + shift            # a stand-in for an optimiser step
        d = min(0.9, (1 + t) / (10 + t))            # 2/11, 3/12, 4/13: the ramp below 0.9
        expected = [d * e + (1 - d) * backend.to_host(p.data) for e, p in zip(expected, ps)]
        ema.update()
    with ema.swapped():
        for p, e in zip(ps, expected):
            np.testing.assert_allclose(backend.to_host(p.data), e, rtol=1e-12)
    # by hand for the first element: 1 -> 2 (d 2/11) -> -1 (d 1/4) -> -0.5 (d 4/13)
    a1 = 2 / 11 * 1 + 9 / 11 * 2
    a2 = 0.25 * a1 + 0.75 * -1
    a3 = 4 / 13 * a2 + 9 / 13 * -0.5
    assert expected[0][0, 0] == pytest.approx(a3, rel=1e-12)
    np.testing.assert_allclose(backend.to_host(ps[0].data), start[0] + (1 - 3 + 0.5), rtol=1e-12)  # swapped back


def test_the_ramp_ends_at_the_decay():
    ps = _params()
    ema = optim.EMA(optim.Adam(ps), decay=0.5)
    for _ in range(3):
        ema.update()
    ps[0].data[...] = ps[0].data + 4
    ema.update()                                     # t = 4: min(0.5, 5/14) = 5/14
    with ema.swapped():
        assert backend.to_host(ps[0].data)[0, 0] == pytest.approx(1 + (1 - 5 / 14) * 4, rel=1e-12)


def test_decay_out_of_range_is_one_clear_error():
    with pytest.raises(ValueError, match=r"EMA: decay must be in \(0, 1\), got 1.0"):
        optim.EMA(optim.Adam(_params()), decay=1.0)


def test_swapped_restores_the_trained_values_after_an_error():
    ps = _params()
    ema = optim.EMA(optim.Adam(ps), decay=0.9)
    before = backend.to_host(ps[1].data).copy()
    ps[1].data[...] = ps[1].data * 0 + 7
    ema.update()
    with pytest.raises(RuntimeError):
        with ema.swapped():
            assert not np.allclose(backend.to_host(ps[1].data), 7)
            raise RuntimeError
    np.testing.assert_array_equal(backend.to_host(ps[1].data), np.full_like(before, 7))


def _gan(ema=0.9):
    backend.seed(0)
    return GANTrainer(MLPGenerator(8, (16,)), MLPDiscriminator(hidden=(16,)), num_fixed=4, ema=ema)


def _digits(n=8):
    return (tg.tensor(backend.to_device(np.random.default_rng(1).uniform(-1, 1, (n, 1, 28, 28)).astype(np.float32))),)


def test_samples_come_from_the_averaged_generator_unless_raw_is_asked():
    trainer = _gan()
    for _ in range(5):
        trainer.step(_digits())
    averaged = trainer.sample_fixed()
    trainer.raw_samples = True
    raw = trainer.sample_fixed()
    assert not np.allclose(averaged, raw)
    with trainer.ema.swapped():                      # the averaged G, by hand
        trainer.raw_samples = True
        np.testing.assert_array_equal(trainer.sample_fixed(), averaged)
    np.testing.assert_array_equal(trainer.sample_fixed(), raw)   # and G as trained is back


def test_a_step_with_averaging_makes_no_host_transfer():
    backend.use("strict")
    trainer = _gan()
    batch = _digits()
    trainer.step(batch)
    _strict.reset_transfers()
    _strict.reset_ops()
    trainer.step(batch)
    assert _strict.transfers == 0
    assert _strict.ops["kernel ema_update"] == 1      # one flat buffer: one kernel per step


def test_began_averages_its_generator_on_the_device():
    backend.use("strict")
    trainer = tiny_trainer(ema=0.99)
    x = (tg.tensor(backend.to_device(images_in_range(2))),)
    trainer.step(x)
    _strict.reset_transfers()
    trainer.step(x)
    assert _strict.transfers == 0
    assert trainer.ema.updates == 2
    trainer.raw_samples = True
    raw = trainer.sample_fixed()
    trainer.raw_samples = False
    assert not np.allclose(trainer.sample_fixed(), raw)


def make_mlp_ema():
    return GANTrainer(MLPGenerator(8, (16,)), MLPDiscriminator(hidden=(16,)), num_fixed=4, ema=0.95)


@pytest.mark.numpy_only  # bit-exact resume is a property of the host arithmetic, tested once
def test_the_average_goes_through_the_checkpoint_and_a_resume_is_exact(tmp_path):
    images, _ = tiny_image_data()
    total = 3 * (len(images) // 4)
    straight = run(make_mlp_ema, (images,), tmp_path / "straight")
    run(make_mlp_ema, (images,), tmp_path / "resumed", max_steps=total // 2 + 1)
    resumed = run(make_mlp_ema, (images,), tmp_path / "resumed", resume=True)
    a, b = flat_state(straight), flat_state(resumed)
    assert any(name.startswith("ema/average/") for name in a)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert straight.ema.updates == resumed.ema.updates == total
    np.testing.assert_array_equal(straight.sample_fixed(), resumed.sample_fixed())


def test_a_state_without_an_average_starts_it_from_the_loaded_generator():
    old = _gan(ema=None)
    for _ in range(2):
        old.step(_digits())
    state = old.state_dict()
    assert "ema" not in state
    new = _gan(ema=0.9)
    new.load_state_dict(state)
    assert new.ema.updates == 0
    np.testing.assert_array_equal(new.sample_fixed(), old.sample_fixed())  # avg_0 = the loaded G


def test_an_average_of_other_shapes_is_refused():
    trainer = _gan()
    state = trainer.ema.state_dict()
    state["average"] = {"0": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="EMA.load_state_dict: averages of shapes"):
        trainer.ema.load_state_dict(state)


# ---- the average's own batch-norm statistics (nn.utils.update_bn) --------------------------------
def test_update_bn_against_hand_values():
    """running_mean = the mean of the batches' means, running_var = the mean of their unbiased variances."""
    bn = nn.BatchNorm1d(3)
    net = nn.Sequential(nn.Linear(2, 3), bn)
    net.eval()
    rng = np.random.default_rng(0)
    xs = [rng.normal(i, 1 + i, (5 + i, 2)) for i in range(3)]          # batches of 5, 6 and 7
    assert nn.utils.update_bn([(tg.tensor(backend.to_device(x)),) for x in xs], net) == 3
    w, b = (backend.to_host(p.data) for p in (net[0].weight, net[0].bias))
    hs = [x @ w.T + b for x in xs]
    np.testing.assert_allclose(backend.to_host(bn.running_mean), np.mean([h.mean(0) for h in hs], 0), rtol=1e-5)
    np.testing.assert_allclose(backend.to_host(bn.running_var), np.mean([h.var(0, ddof=1) for h in hs], 0), rtol=1e-5)
    assert bn.momentum == 0.1 and not net.training                       # both put back
    assert nn.utils.update_bn([(tg.tensor(backend.to_device(xs[0])),)], nn.Linear(2, 3)) == 0   # nothing to do


def _bn_gan(conditional):
    from tinygan.gan import DCGANDiscriminator, DCGANGenerator
    backend.seed(0)
    if conditional:
        return GANTrainer(DCGANGenerator(8, filters=4, num_classes=10), DCGANDiscriminator(filters=4, num_classes=10),
                          conditional=True, num_fixed=10, ema=0.9)
    return GANTrainer(MLPGenerator(8, (16, 16), batch_norm=True), MLPDiscriminator(hidden=(16,)), num_fixed=4, ema=0.9)


def _step(trainer, n=8):
    x = _digits(n)
    trainer.step(x + ((backend.to_device(np.arange(n) % 10),) if trainer.conditional else ()))


def _stats(trainer):
    return [backend.to_host(m.running_mean).copy() for m in trainer._g_norms] + \
           [backend.to_host(m.running_var).copy() for m in trainer._g_norms]


@pytest.mark.parametrize("conditional", [False, True], ids=["mlp", "conditional-dcgan"])
def test_the_average_samples_with_batch_norm_statistics_of_its_own(conditional, monkeypatch):
    from tinygan.gan import trainer as trainer_module
    calls = []
    monkeypatch.setattr(trainer_module, "update_bn", lambda *a: calls.append(1) or nn.utils.update_bn(*a))
    trainer = _bn_gan(conditional)
    for _ in range(4):
        _step(trainer)
    trained_stats, weights = _stats(trainer), [backend.to_host(p.data).copy() for p in trainer.G.parameters()]
    rng_state = backend.rng().bit_generator.state
    averaged = trainer.sample_fixed()
    assert backend.rng().bit_generator.state == rng_state               # training's random stream untouched
    for a, b in zip(_stats(trainer), trained_stats):                     # G as trained is back, statistics too
        np.testing.assert_array_equal(a, b)
    for p, w in zip(trainer.G.parameters(), weights):
        np.testing.assert_array_equal(backend.to_host(p.data), w)

    # by hand: the average's weights, statistics from BN_CALIBRATION's noise, then evaluation mode
    batches, size = trainer_module.BN_CALIBRATION
    labels = backend.to_device(np.arange(size) % 10) if conditional else None
    trainer.raw_samples = True
    with trainer.ema.swapped():
        stale = trainer.sample_fixed()                                   # the average with G's statistics
        with backend.rng_fork(trainer_module.BN_CALIBRATION_SEED):
            nn.utils.update_bn([(tg.tensor(trainer.noise(size)), labels) for _ in range(batches)], trainer.G)
        by_hand = trainer.sample_fixed()
    np.testing.assert_allclose(averaged, by_hand, atol=1e-6)
    assert np.abs(averaged - stale).max() > 1e-3                         # the statistics matter

    # computed once per update of the average
    trainer.raw_samples = False
    calls.clear()
    trainer.sample_fixed(), trainer.generate(6, chunk=2)
    assert calls == []
    _step(trainer)
    trainer.sample_fixed(), trainer.sample_fixed()
    assert calls == [1]
