"""R1's gradient penalty (Mescheder et al. 2018): D's input gradient built as a graph of its weights.

For a network of linear maps, convolutions and LeakyReLUs, d logit / d x = W_1^T diag(s_1) ... W_L^T
with s_l the slopes (1 or the negative slope) at x, and a convolution's W^T its transposed
convolution. ``nn.input_gradient`` builds that product from the weights, so R1's penalty
E ||d logit / d x||^2 is a loss whose gradient in the weights the ordinary backward gives.
"""
import json

import numpy as np
import pytest

from tinygan import backend, gradcheck_directional, nn, tensor
from tinygan import _strict
from tinygan.gan import (DCGANDiscriminator, GANTrainer, MLPDiscriminator, ToyDiscriminator, ToyGenerator,
                         ConditionalMLPDiscriminator, losses)
from tinygan.tensor import Tensor


def double(module):
    """The module in float64 (parameters and batch-norm statistics), for finite differences."""
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for mod in module.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean = mod.running_mean.astype(np.float64)
            mod.running_var = mod.running_var.astype(np.float64)
    return module


def points(shape, seed=0):
    return Tensor(backend.to_device(np.random.default_rng(seed).standard_normal(shape)), requires_grad=True)


def evaluating_with_batch_statistics(D, x):
    """D in evaluation mode with every batch norm's running statistics set to the batch's own at x:
    the function whose plain input gradient is what ``input_gradient`` gives in training mode."""
    D.eval()
    a = x.data
    for mod in D.net:  # the DCGAN D's layers in turn; each batch norm then normalises by the batch's statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean, mod.running_var = a.mean(axis=(0, 2, 3)), a.var(axis=(0, 2, 3))
        a = mod(Tensor(a)).data
    return D


CASES = [  # (discriminator, input shape): odd widths, several depths, packing, a scale, image inputs, convolutions
    (lambda: ToyDiscriminator(width=7, depth=1), (5, 2)),
    (lambda: ToyDiscriminator(width=9, depth=3, scale=4.0, pack=2), (3, 4)),
    (lambda: MLPDiscriminator((1, 3, 5), (6, 5, 3)), (4, 1, 3, 5)),
    (lambda: DCGANDiscriminator(3, batch_norm=False), (3, 1, 28, 28)),
    (lambda: DCGANDiscriminator(2, channels=2, hidden=5).eval(), (2, 2, 28, 28)),  # batch norm, running statistics
]

STACKS = [  # (layers, input shape): odd sizes, strides and paddings whose transposed conv needs output_padding
    (lambda: [nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(3 * 4 * 5, 1)],
     (3, 2, 7, 9)),
    (lambda: [nn.Conv2d(1, 4, (3, 2), stride=(1, 2), padding=(0, 1)), nn.BatchNorm2d(4), nn.ReLU(),
              nn.Conv2d(4, 2, 2, stride=2), nn.LeakyReLU(0.3), nn.Flatten(), nn.Linear(2 * 2 * 3, 3),
              nn.BatchNorm1d(3), nn.LeakyReLU(0.2), nn.Identity(), nn.Linear(3, 1)], (5, 1, 6, 10)),
    (lambda: [nn.Linear(4, 1)], (3, 4)),  # no slope at all: the same weight row for every sample
]


@pytest.mark.parametrize("case", range(len(STACKS)))
def test_nn_input_gradient_of_layer_stacks_is_the_backward_of_their_output(case):
    make, shape = STACKS[case]
    net = double(nn.Sequential(*make()))
    rng = np.random.default_rng(case)
    for mod in net.modules():  # batch norm with statistics and an affine map that are not the identity
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = mod.num_features
            dev = backend.to_device
            mod.running_mean, mod.running_var = dev(rng.standard_normal(c)), dev(rng.uniform(0.5, 2.0, c))
            mod.weight.data, mod.bias.data = dev(rng.uniform(0.5, 1.5, c)), dev(rng.standard_normal(c))
    net.eval()
    x = points(shape, seed=case)
    net(x).sum().backward()
    g = nn.input_gradient(list(net), x)
    assert g.shape == x.shape
    np.testing.assert_allclose(backend.to_host(g.data), backend.to_host(x.grad), rtol=1e-10, atol=1e-14)
    assert np.abs(backend.to_host(x.grad)).max() > 1e-3


def test_input_gradient_holds_training_batch_norms_statistics_fixed_and_leaves_them_alone():
    D = double(DCGANDiscriminator(2, hidden=5))
    x = points((4, 1, 28, 28), seed=3)
    before = [D.net[3].running_mean.copy(), D.net[3].running_var.copy()]
    g = backend.to_host(D.input_gradient(x).data)        # training mode: the batch's statistics
    np.testing.assert_array_equal(D.net[3].running_mean, before[0])   # no update of the running ones
    np.testing.assert_array_equal(D.net[3].running_var, before[1])
    evaluating_with_batch_statistics(D, x)(x).sum().backward()
    np.testing.assert_allclose(g, backend.to_host(x.grad), rtol=1e-10, atol=1e-16)
    assert np.abs(g).max() > 0


def test_nn_input_gradient_names_what_it_cannot_take():
    with pytest.raises(ValueError, match="owner: no rule for MinibatchDiscrimination"):
        nn.input_gradient([nn.Linear(3, 4), nn.MinibatchDiscrimination(4, 2), nn.Linear(6, 1)], points((2, 3)),
                          owner="owner")
    with pytest.raises(ValueError, match="must end in a Linear layer with one output"):
        nn.input_gradient([nn.Linear(3, 2)], points((2, 3)))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_input_gradient_is_the_backward_of_the_logit(case):
    make, shape = CASES[case]
    D = double(make())
    x = points(shape, seed=case)
    D(x).sum().backward()            # the engine's d logit_i / d x_i (samples are independent)
    g = D.input_gradient(x)
    assert g.shape == x.shape
    np.testing.assert_allclose(backend.to_host(g.data), backend.to_host(x.grad), rtol=1e-12, atol=1e-14)


def test_input_gradient_by_hand_for_one_hidden_layer():
    D = double(MLPDiscriminator((2,), (3,), negative_slope=0.2))
    w1 = np.array([[1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]])
    b1 = np.array([0.0, -1.0, 0.0])
    w2 = np.array([[2.0, -1.0, 3.0]])
    for p, v in zip((D.fc_in.weight, D.fc_in.bias, D.body[0].weight), (w1, b1, w2)):
        p.data = backend.to_device(v)
    x = Tensor(backend.to_device(np.array([[1.0, 0.25]])))
    # pre-activations: [0.5, -0.375, -1]; slopes [1, 0.2, 0.2]
    # gradient = w1^T (s * w2) = w1^T [2, -0.2, 0.6] = [2 - 0.1 - 0.6, -4 - 0.1 + 0] = [1.3, -4.1]
    g = backend.to_host(D.input_gradient(x).data)
    np.testing.assert_allclose(g, [[1.3, -4.1]], rtol=1e-12)
    assert backend.to_host(losses.r1_penalty(D, x).data) == pytest.approx(1.3 ** 2 + 4.1 ** 2, rel=1e-12)


def test_input_gradient_with_dropout_uses_the_forwards_masks_for_the_same_seed():
    D = double(MLPDiscriminator((6,), (8, 5), dropout=0.4))
    x = points((7, 6))
    backend.seed(11)
    D(x).sum().backward()
    backend.seed(11)                 # the same draws: the masks of that forward
    g = D.input_gradient(x)
    np.testing.assert_allclose(backend.to_host(g.data), backend.to_host(x.grad), rtol=1e-12, atol=1e-14)
    D.eval()                          # no dropout: the gradient of the deterministic D
    x.grad = None
    D(x).sum().backward()
    np.testing.assert_allclose(backend.to_host(D.input_gradient(x).data), backend.to_host(x.grad), rtol=1e-12)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_r1_penalty_against_finite_differences_in_the_weights(case):
    make, shape = CASES[case]
    D = double(make())
    x = points(shape, seed=10 + case)
    assert gradcheck_directional(lambda: losses.r1_penalty(D, x), D.parameters(), n_directions=4)


def test_penalty_needs_a_piecewise_linear_d():
    for D in (ConditionalMLPDiscriminator((4,), (6,)), MLPDiscriminator((4,), (6,), minibatch_kernels=2)):
        with pytest.raises(ValueError, match="unconditional D without minibatch discrimination"):
            D.input_gradient(points((3, 4)))
    with pytest.raises(ValueError, match="expected inputs of shape"):
        MLPDiscriminator((4,), (6,)).input_gradient(points((3, 5)))
    for D in (DCGANDiscriminator(2, num_classes=3), DCGANDiscriminator(2, minibatch_kernels=2)):
        with pytest.raises(ValueError, match="unconditional D without minibatch discrimination"):
            D.input_gradient(points((3, 1, 28, 28)))
    G = ToyGenerator(2, 4, 1)
    with pytest.raises(ValueError, match="has no input_gradient"):
        GANTrainer(G, nn.Sequential(nn.Linear(2, 1)), r1=1.0)
    with pytest.raises(ValueError, match="must be a number >= 0"):
        GANTrainer(G, ToyDiscriminator(4, 1), r1=True)
    with pytest.raises(ValueError, match="must be a number >= 0"):
        GANTrainer(G, ToyDiscriminator(4, 1), r1=-1.0)


def _toy_trainer(r1, seed=0, every=1, k=1):
    backend.seed(seed)
    return GANTrainer(ToyGenerator(2, 8, 2), ToyDiscriminator(8, 2, scale=2.0, pack=2), pack=2, r1=r1,
                      r1_every=every, k=k, num_fixed=4, lr=1e-3)


@pytest.mark.parametrize("k, every, expected", [(1, 1, 7), (1, 3, 3), (2, 3, 5)])
def test_lazy_r1_penalises_every_nth_d_update(monkeypatch, k, every, expected):
    """Over 7 steps of k D updates, the penalty joins the updates 0, every, 2 every, ... (lazy R1)."""
    calls = []
    real_penalty = losses.r1_penalty
    monkeypatch.setattr(losses, "r1_penalty", lambda D, x: calls.append(1) or real_penalty(D, x))
    trainer = _toy_trainer(1.0, every=every, k=k)
    x = tensor(backend.to_device(np.random.default_rng(3).standard_normal((4 * k, 2)).astype(np.float32)))
    for _ in range(7):
        trainer.step((x,))
    assert len(calls) == expected
    with pytest.raises(ValueError, match="r1_every"):
        _toy_trainer(1.0, every=0)


@pytest.mark.parametrize("every", [1, 3])
def test_trainer_adds_half_gamma_times_the_penalty_to_ds_loss(every):
    """D's gradient with R1 = its gradient without + gamma/2 (times r1_every, lazy R1) times the
    penalty's, on the real (packed) batch."""
    x = tensor(backend.to_device(np.random.default_rng(1).standard_normal((8, 2))))
    grads = []
    for r1 in (4.0, 0.0):
        trainer = _toy_trainer(r1, every=every)
        double(trainer.D), double(trainer.G)
        backend.seed(7)  # the same fakes in both updates (float32 noise: float32 rounding apart)
        trainer._discriminator_step(x, None, 8, r1=bool(r1))
        grads.append([backend.to_host(p.grad) for p in trainer.D.parameters()])
    D = double(_toy_trainer(0.0).D)  # the weights both updates started from
    losses.r1_penalty(D, x.reshape(4, 4)).backward()
    # the biases move the masks only, which are constant almost everywhere: no gradient from the penalty
    penalty_grads = [np.zeros(p.shape) if p.grad is None else backend.to_host(p.grad) for p in D.parameters()]
    assert [p.grad is None for p in D.parameters()] == ["bias" in name for name, _ in D.named_parameters()]
    for with_r1, plain, pg in zip(*grads, penalty_grads):
        np.testing.assert_allclose(with_r1, plain + 2.0 * every * pg, rtol=1e-5, atol=1e-8)
    assert max(np.abs(pg).max() for pg in penalty_grads) > 1e-3


@pytest.mark.backend_agnostic  # compares a strict run with a NumPy one, switching backends itself
def test_steps_with_r1_make_no_host_transfer_and_match_numpy():
    x = np.random.default_rng(2).standard_normal((8, 2)).astype(np.float32)
    ref = _toy_trainer(r1=2.0, seed=5)
    ref_metrics = [ref.step((tensor(x),)) for _ in range(3)]
    backend.use("strict")
    try:
        tr = _toy_trainer(r1=2.0, seed=5)
        batch = (tensor(backend.to_device(x)),)
        _strict.reset_transfers()
        metrics = [tr.step(batch) for _ in range(3)]
        assert _strict.transfers == 0, "a step with R1 copied something to the host"
        for m, r in zip(metrics, ref_metrics):
            assert backend.to_host(m["loss_d"]) == pytest.approx(float(r["loss_d"]), rel=1e-5)
        for p, q in zip(tr.D.parameters(), ref.D.parameters()):
            np.testing.assert_allclose(backend.to_host(p.data), q.data, rtol=1e-5, atol=1e-6)
    finally:
        backend.use("numpy")


@pytest.mark.backend_agnostic  # switches to the strict backend itself
@pytest.mark.parametrize("batch_norm", [True, False])
def test_dcgan_steps_with_r1_make_no_host_transfer(batch_norm):
    from tinygan.gan import DCGANGenerator
    backend.use("strict")
    try:
        backend.seed(4)
        trainer = GANTrainer(DCGANGenerator(8, 2, hidden=6), DCGANDiscriminator(2, hidden=5, batch_norm=batch_norm),
                             r1=1.0, r1_every=2, num_fixed=4)
        x = np.random.default_rng(0).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32)
        batch = (tensor(backend.to_device(x)),)
        before = [backend.to_host(p.data).copy() for p in trainer.D.parameters()]
        _strict.reset_transfers()
        for _ in range(2):      # one step with the penalty, one without
            trainer.step(batch)
        assert _strict.transfers == 0, "a DCGAN step with R1 copied something to the host"
        assert any(not np.array_equal(b, backend.to_host(p.data)) for b, p in zip(before, trainer.D.parameters()))
    finally:
        backend.use("numpy")


def test_the_examples_take_r1_and_refuse_it_where_d_cannot_give_its_input_gradient(tmp_path, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import gan_toy2d
    from tinygan.tools import mnist_gan
    out = tmp_path / "toy"
    gan_toy2d.main(["--mixture", "ring", "--epochs", "1", "--train-size", "512", "--batch-size", "64", "--r1", "10",
                    "--r1-every", "4", "--width", "8", "--depth", "1", "--num-samples", "50", "--out", str(out),
                    "--no-progress"])
    extra = json.loads((out / "config.json").read_text())["extra"]
    assert (extra["r1"], extra["r1_every"]) == (10.0, 4)
    args = mnist_gan.build_parser().parse_args(["--r1", "2", "--r1-every", "3", "--g-hidden", "8", "--d-hidden", "8"])
    trainer = mnist_gan.build(args)
    assert (trainer.r1, trainer.r1_every) == (2.0, 3)
    args = mnist_gan.build_parser().parse_args(["--arch", "dcgan", "--filters", "2", "--r1", "1", "--no-d-batch-norm"])
    trainer = mnist_gan.build(args)
    assert trainer.r1 == 1.0 and not any(isinstance(m, nn.BatchNorm2d) for m in trainer.D.modules())
    with pytest.raises(SystemExit):
        mnist_gan.main(["--arch", "dcgan", "--r1", "1", "--minibatch-kernels", "4", "--out", str(tmp_path / "dcgan"),
                        "--no-progress"])
    assert "--r1 1 does not go with --minibatch-kernels 4" in capsys.readouterr().err
    assert "--r1" not in mnist_gan.build_parser(conditional=True).format_help()


def test_mnist_gan_defaults_depend_on_the_arch_and_a_resumed_run_keeps_its_own(tmp_path, monkeypatch, capsys):
    """--r1, --lr and --epochs default per --arch (R1 for the DCGAN only); the help says both values,
    the config holds the number used, a resume restores it, and minibatch discrimination names the default."""
    from tinygan.tools import mnist_gan
    parse = mnist_gan.build_parser().parse_args
    for arch in ("mlp", "dcgan"):
        args = mnist_gan.settle_defaults(parse(["--arch", arch]))
        assert all(getattr(args, name) == table[arch] for name, table in mnist_gan.PER_ARCH.items())
    assert mnist_gan.PER_ARCH["r1"]["mlp"] == 0 < mnist_gan.PER_ARCH["r1"]["dcgan"]
    args = mnist_gan.settle_defaults(parse(["--arch", "dcgan", "--r1", "0", "--epochs", "2"]))
    assert (args.r1, args.epochs) == (0.0, 2)  # given values are kept
    help_text = " ".join(mnist_gan.build_parser().format_help().split())
    for name in ("r1", "epochs", "lr", "beta1"):
        table = mnist_gan.PER_ARCH[name]
        assert f"(default: {table['dcgan']:g} for --arch dcgan, {table['mlp']:g} for --arch mlp)" in help_text
    cgan = mnist_gan.settle_defaults(mnist_gan.build_parser(conditional=True).parse_args(["--arch", "dcgan"]), True)
    assert (cgan.epochs, cgan.lr, cgan.beta1) == (mnist_gan.CGAN_EPOCHS, 2e-4, 0.5) and not hasattr(cgan, "r1")

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64)
    monkeypatch.setattr(mnist_gan, "load_mnist", lambda data, split, progress=True: (images, labels))
    out = tmp_path / "run"
    common = ["--arch", "dcgan", "--filters", "2", "--batch-size", "32", "--no-judge", "--num-samples", "4",
              "--no-progress", "--out", str(out)]
    mnist_gan.main(common + ["--max-steps", "2"])
    extra = json.loads((out / "config.json").read_text())["extra"]
    assert all(extra[name] == table["dcgan"] for name, table in mnist_gan.PER_ARCH.items())
    monkeypatch.setitem(mnist_gan.PER_ARCH["r1"], "dcgan", 99.0)  # a later default must not change a saved run
    mnist_gan.main(["--resume", str(out), "--max-steps", "3", "--no-progress", "--no-judge"])
    assert json.loads((out / "config.json").read_text())["extra"]["r1"] == extra["r1"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        mnist_gan.main(["--arch", "dcgan", "--minibatch-kernels", "4", "--out", str(tmp_path / "mbd"), "--no-progress"])
    err = capsys.readouterr().err
    assert "does not go with --minibatch-kernels 4" in err and "--r1 0 turns it off" in err
