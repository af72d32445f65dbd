"""The GAN and cGAN models, GANTrainer (Algorithm 1) and their use by the shared loop and the examples."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygan import _strict, backend, nn, no_grad, tensor
from tinygan.gan import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, ConditionalMLPDiscriminator, ConditionalMLPGenerator, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, ToyDiscriminator, ToyGenerator
from tinygan.train.runlog import read_csv_log
from tinygan.gan import GANTrainer
from tinygan.tensor import is_grad_enabled
from tinygan.train import LoopConfig, TrainingError, fit, grid_hook

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(REPO / "examples"))



def labels_of(n, classes=10):
    return backend.to_device(np.arange(n) % classes)


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make_g, make_d, conditional", [
    (lambda: MLPGenerator(16, (32, 64)), lambda: MLPDiscriminator(hidden=(32, 16)), False),
    (lambda: ConditionalMLPGenerator(16, (32, 64)), lambda: ConditionalMLPDiscriminator(hidden=(32, 16)), True),
    (lambda: DCGANGenerator(16, filters=4), lambda: DCGANDiscriminator(filters=4), False),
    (lambda: ConditionalDCGANGenerator(16, filters=4), lambda: ConditionalDCGANDiscriminator(filters=4), True),
    (lambda: MLPGenerator(16, (32, 64)), lambda: MLPDiscriminator(hidden=(32, 16), minibatch_kernels=3), False),
    (lambda: DCGANGenerator(16, filters=4), lambda: DCGANDiscriminator(filters=4, minibatch_kernels=3), False),
], ids=["mlp", "cmlp", "dcgan", "cdcgan", "mlp-minibatch", "dcgan-minibatch"])
def test_image_models_shapes_and_ranges(make_g, make_d, conditional):
    G, D = make_g(), make_d()
    y = labels_of(5) if conditional else None
    images = G(tensor(backend.randn(5, 16)), y)
    assert images.shape == (5, 1, 28, 28)
    assert np.abs(images.numpy()).max() <= 1.0  # tanh output
    logits = D(images, y)
    assert logits.shape == (5,)
    assert np.isfinite(logits.numpy()).all()


def test_toy_models_shapes_and_scale():
    G, D = ToyGenerator(latent_dim=3, width=8, depth=2, scale=4.0), ToyDiscriminator(width=8, depth=2, scale=4.0)
    z = tensor(backend.randn(7, 3))
    points = G(z)
    assert points.shape == (7, 2) and D(points).shape == (7,)
    # scale is a constant factor on the output, not a parameter
    G1 = ToyGenerator(latent_dim=3, width=8, depth=2, scale=1.0)
    G1.load_state_dict(G.state_dict())
    np.testing.assert_allclose(points.numpy(), 4.0 * G1(z).numpy(), rtol=1e-6)


def test_dcgan_init_is_dcgan():
    G = DCGANGenerator(100, filters=32)
    w = G.net[0].weight.numpy()
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002
    assert abs(G.net[1].weight.numpy().mean() - 1.0) < 0.01   # batch-norm scales ~ N(1, 0.02)


@pytest.mark.parametrize("make", [  # built in the test, on the backend under test (not at collection)
    lambda: (ConditionalMLPGenerator(8, (16,)), ConditionalMLPDiscriminator(hidden=(16,))),
    lambda: (ConditionalDCGANGenerator(8, filters=2), ConditionalDCGANDiscriminator(filters=2)),
], ids=["mlp", "dcgan"])
def test_the_label_reaches_g_and_d(make):
    G, D = make()
    z = tensor(backend.randn(1, 8).repeat(10, axis=0))   # the same z for every digit
    images = G(z, labels_of(10)).numpy()
    assert np.abs(images - images[:1]).reshape(10, -1).max(axis=1)[1:].min() > 1e-4
    same = tensor(np.repeat(images[:1], 10, axis=0))      # the same image with every label
    logits = D(same, labels_of(10)).numpy()
    assert np.ptp(logits) > 1e-5


def test_label_errors_name_the_model():
    with pytest.raises(ValueError, match="MLPGenerator is unconditional but got labels"):
        MLPGenerator(8, (16,))(tensor(backend.randn(2, 8)), labels_of(2))
    with pytest.raises(ValueError, match=r"ConditionalMLPDiscriminator is conditional \(num_classes=10\) and needs labels"):
        ConditionalMLPDiscriminator(hidden=(16,))(tensor(backend.randn(2, 1, 28, 28)))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        ConditionalMLPGenerator(8, (16,))(tensor(backend.randn(2, 8)), labels_of(3))
    with pytest.raises(ValueError, match="labels must be integers"):
        ConditionalMLPGenerator(8, (16,))(tensor(backend.randn(2, 8)), backend.randn(2))
    with pytest.raises(ValueError, match=r"expected noise of shape \(N, 8\)"):
        MLPGenerator(8, (16,))(tensor(backend.randn(2, 9)))
    with pytest.raises(ValueError, match=r"DCGANDiscriminator: expected images of shape \(N, 1, 28, 28\)"):
        DCGANDiscriminator(filters=2)(tensor(backend.randn(2, 1, 32, 32)))


# ---------------------------------------------------------------------------
# GANTrainer
# ---------------------------------------------------------------------------

def toy_trainer(k=1, lr=1e-3, **kwargs):
    return GANTrainer(ToyGenerator(2, 16, 2), ToyDiscriminator(16, 2), k=k, lr=lr, image_range=None,
                      num_fixed=16, **kwargs)


def test_trainer_checks_its_arguments():
    with pytest.raises(ValueError, match="unknown generator loss 'hinge'"):
        toy_trainer(loss="hinge")
    with pytest.raises(ValueError, match="k .* must be an int >= 1, got 0"):
        toy_trainer(k=0)
    with pytest.raises(ValueError, match="needs a conditional generator with the same num_classes"):
        GANTrainer(MLPGenerator(8, (16,)), ConditionalMLPDiscriminator(hidden=(16,)), conditional=True)
    trainer = toy_trainer(k=3)
    with pytest.raises(ValueError, match="needs a batch of k \\* m examples; got 8, not a multiple of 3"):
        trainer.step((tensor(backend.randn(8, 2)),))


@pytest.mark.parametrize("conditional, reuse", [(False, False), (True, False), (False, True)],
                         ids=["gan", "cgan", "gan-reuse-fakes"])
def test_step_stays_on_the_device(conditional, reuse):
    """On the strict backend a hidden device-to-host copy raises; none may happen in a step."""
    backend.use("strict")
    backend.seed(0)
    if conditional:
        trainer = GANTrainer(ConditionalMLPGenerator(8, (16,)), ConditionalMLPDiscriminator(hidden=(16,)),
                             conditional=True, k=2)
        batch = (tensor(backend.randn(8, 1, 28, 28)), labels_of(8))
    else:
        trainer = GANTrainer(DCGANGenerator(8, filters=2), DCGANDiscriminator(filters=2), k=2, reuse_fakes=reuse)
        batch = (tensor(backend.randn(8, 1, 28, 28)),)
    _strict.reset_transfers()
    metrics = trainer.step(batch)
    assert _strict.transfers == 0
    assert set(metrics) == {"loss_d", "loss_g", "d_real", "d_fake"}
    for name, value in metrics.items():
        assert isinstance(value, _strict.StrictArray) and value.shape == (), name
    host = {k: float(backend.to_host(v)) for k, v in metrics.items()}
    assert 0 < host["d_real"] < 1 and 0 < host["d_fake"] < 1 and host["loss_d"] > 0


def test_k_discriminator_steps_per_generator_step():
    trainer = toy_trainer(k=3)
    trainer.step((tensor(backend.randn(12, 2)),))
    assert trainer.opt_d.state[0]["step"] == 3
    assert trainer.opt_g.state[0]["step"] == 1


class Recorder(nn.Module):
    """Wraps a network and keeps a copy of every input and output, with the grad mode it ran in."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, labels=None):
        out = self.inner(x, labels)
        self.calls.append((backend.to_host(x.data).copy(), backend.to_host(out.data).copy(), is_grad_enabled()))
        return out


@pytest.mark.parametrize("k", [1, 2])
def test_reuse_fakes_trains_g_on_the_last_d_updates_fakes_with_one_g_forward(k):
    """Algorithm 1 runs G k + 1 times a step (k times without a graph, once for G's update on fresh
    noise); with reuse_fakes the last D update's forward keeps its graph and G's update reuses its fakes."""
    for reuse in (False, True):
        backend.seed(0)
        trainer = toy_trainer(k=k, reuse_fakes=reuse)
        trainer.G, trainer.D = Recorder(trainer.G), Recorder(trainer.D)
        trainer.step((tensor(backend.randn(4 * k, 2)),))
        g_calls, d_calls = trainer.G.calls, trainer.D.calls
        assert [grad for _, _, grad in g_calls] == [False] * (k - 1) + [reuse] + ([] if reuse else [True])
        last_d_update_fakes = g_calls[k - 1][1]
        g_update_input = d_calls[-1][0]           # what D judged in G's update
        assert np.array_equal(g_update_input, last_d_update_fakes) == reuse
        assert len(g_calls) == k + (0 if reuse else 1)
    # G's gradient is its loss's on those fakes, judged by D after its update: recompute it apart
    from tinygan.gan import losses
    backend.seed(3)
    trainer = toy_trainer(k=k, reuse_fakes=True)
    g_before = {name: v.copy() for name, v in trainer.G.state_dict().items()}
    trainer.G = Recorder(trainer.G)
    trainer.step((tensor(backend.randn(4 * k, 2)),))
    z = trainer.G.calls[-1][0]
    G, D = ToyGenerator(2, 16, 2), ToyDiscriminator(16, 2)
    G.load_state_dict(g_before)
    D.load_state_dict(trainer.D.state_dict())             # D after its k updates (G's update leaves it)
    losses.generator_loss(D(G(tensor(backend.to_device(z))))).backward()
    for (name, p), q in zip(G.named_parameters(), trainer.G.inner.parameters()):
        np.testing.assert_allclose(backend.to_host(q.grad), backend.to_host(p.grad), rtol=1e-5, atol=1e-7, err_msg=name)


def test_minimax_and_nonsaturating_generator_losses_are_logged():
    ns, mm = toy_trainer(), toy_trainer(loss="minimax")
    batch = (tensor(backend.randn(8, 2)),)
    backend.seed(1)
    a = {k: float(backend.to_host(v)) for k, v in ns.step(batch).items()}
    backend.seed(1)
    b = {k: float(backend.to_host(v)) for k, v in mm.step(batch).items()}
    assert a["loss_g"] > 0 > b["loss_g"]   # -E log D(G(z)) > 0;  E log(1 - D(G(z))) < 0


def test_cgan_fixed_grid_has_one_row_per_digit_and_generate_returns_labels():
    trainer = GANTrainer(ConditionalMLPGenerator(8, (16,)), ConditionalMLPDiscriminator(hidden=(16,)),
                         conditional=True, num_fixed=100)
    assert trainer.fixed_nrow == 10
    np.testing.assert_array_equal(backend.to_host(trainer.fixed_labels), np.repeat(np.arange(10), 10))
    noise = backend.to_host(trainer.fixed_noise).reshape(10, 10, 8)
    np.testing.assert_array_equal(noise, np.broadcast_to(noise[:1], noise.shape))  # the same z in each column
    grid = trainer.sample_fixed()
    assert grid.shape == (100, 1, 28, 28) and grid.dtype == np.float32
    assert grid.min() >= 0 and grid.max() <= 1

    state = backend.rng_state()
    out = trainer.generate(23, chunk=10, seed=5)
    assert backend.rng_state() == state            # evaluation does not move the training's noise
    np.testing.assert_array_equal(out["labels"], np.arange(23) % 10)
    assert out["samples"].shape == (23, 1, 28, 28) and out["samples"].dtype == np.float32
    # the same noise and labels whatever the chunk; BLAS picks its kernel by the number of rows, so
    # a batch of 10 and one of 23 may round differently in the last bit
    np.testing.assert_allclose(out["samples"], trainer.generate(23, seed=5)["samples"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# with the shared loop: resume, architecture mismatch, NaN stop
# ---------------------------------------------------------------------------

def tiny_image_data(n=24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n)


def image_to_device(batch):
    x = backend.to_device(batch[0]).astype(np.float32).reshape(-1, 1, 28, 28) * (2 / 255) - 1
    return (tensor(x),) + tuple(backend.to_device(b.astype(np.int64)) for b in batch[1:])


def make_cdcgan():
    # batch norm (buffers), k = 2 (split batches), labels (extra random draws): the hard case
    return GANTrainer(ConditionalDCGANGenerator(8, filters=4), ConditionalDCGANDiscriminator(filters=4),
                      conditional=True, k=2, num_fixed=20)


def make_mlp(hidden=(16,)):
    return GANTrainer(MLPGenerator(8, hidden), MLPDiscriminator(hidden=(16,)), num_fixed=4)


def make_mlp_lazy_r1():
    # lazy R1 every 3rd D update: a resume must pick the schedule up where it stopped
    return GANTrainer(MLPGenerator(8, (16,)), MLPDiscriminator(hidden=(16,)), num_fixed=4, r1=1.0, r1_every=3)


def run(make, data, out, max_steps=None, resume=False, epochs=3, batch_size=4, **kwargs):
    if not resume:
        backend.seed(0)
    trainer = make()
    config = LoopConfig(out=str(out), epochs=epochs, batch_size=batch_size, seed=0, log_every=1,
                        max_steps=max_steps, resume=resume, progress=False, **kwargs)
    fit(trainer, data, config, image_to_device, epoch_hooks=[grid_hook(trainer, nrow=trainer.fixed_nrow)])
    return trainer


def flat_state(trainer):
    from tinygan.train import flatten_state
    return flatten_state(trainer.state_dict())[0]


@pytest.mark.parametrize("make, conditional", [(make_mlp, False), (make_cdcgan, True), (make_mlp_lazy_r1, False)],
                         ids=["mlp", "cdcgan", "mlp-lazy-r1"])
def test_resume_gives_identical_parameters(tmp_path, make, conditional):
    images, labels = tiny_image_data()
    data = (images, labels) if conditional else (images,)
    batch = 8 if conditional else 4            # k * m
    steps_per_epoch = len(images) // batch     # 3 or 6
    total = 3 * steps_per_epoch
    half = total // 2 + 1                       # mid-epoch, so the position inside the epoch matters too

    straight = run(make, data, tmp_path / "straight", batch_size=batch)
    run(make, data, tmp_path / "resumed", max_steps=half, batch_size=batch)
    resumed = run(make, data, tmp_path / "resumed", resume=True, batch_size=batch)

    a, b = flat_state(straight), flat_state(resumed)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    log_a, log_b = read_csv_log(tmp_path / "straight" / "log.csv"), read_csv_log(tmp_path / "resumed" / "log.csv")
    np.testing.assert_array_equal(log_a["step"], np.arange(1, total + 1))
    for column in ("step", "loss_d", "loss_g", "d_real", "d_fake"):
        np.testing.assert_array_equal(log_a[column], log_b[column], err_msg=column)
    assert (tmp_path / "resumed" / "grid_epoch003.png").exists()


def test_resume_with_another_architecture_names_the_first_mismatched_parameter(tmp_path):
    images, _ = tiny_image_data(8)
    run(make_mlp, (images,), tmp_path, epochs=1)
    with pytest.raises(TrainingError, match=r"does not match the generator: parameter 'fc_in.weight' has shape "
                                            r"\(16, 8\) in the checkpoint, expected \(32, 8\)"):
        run(lambda: make_mlp(hidden=(32,)), (images,), tmp_path, resume=True, epochs=2)
    with pytest.raises(TrainingError, match=r"generator: parameter 'net.0.weight' .* missing"):
        run(lambda: GANTrainer(DCGANGenerator(8, filters=2), DCGANDiscriminator(filters=2)), (images,), tmp_path,
            resume=True, epochs=2)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_nan_in_a_loss_stops_training_naming_the_step(tmp_path):
    data = (np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32),)
    backend.seed(0)
    trainer = toy_trainer(lr=1e30)   # sabotage: the first update throws the weights to 1e30
    config = LoopConfig(out=str(tmp_path), epochs=5, batch_size=8, log_every=1, progress=False)
    with pytest.raises(TrainingError, match=r"became (nan|inf|-inf) at step (\d+); stopped") as info:
        fit(trainer, data, config, lambda b: (tensor(backend.to_device(b[0])),))
    step = int(info.value.args[0].split("at step ")[1].split(";")[0])
    assert step <= 3
    log = read_csv_log(tmp_path / "log.csv") if (tmp_path / "log.csv").exists() else {"step": np.array([])}
    assert len(log["step"]) == step - 1   # the bad row is not logged


# ---------------------------------------------------------------------------
# the examples, end to end on tiny settings
# ---------------------------------------------------------------------------

def test_toy_example_writes_the_common_files(tmp_path, capsys):
    import gan_toy2d
    out = tmp_path / "toy"
    gan_toy2d.main(["--mixture", "ring", "--epochs", "2", "--train-size", "512",
                    "--width", "16", "--depth", "2", "--num-samples", "300", "--out", str(out), "--no-progress"])
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["batch_size"] == gan_toy2d.BATCH_SIZE == 128   # the default batch
    assert config["extra"]["lr"] == gan_toy2d.LR["ring"] == 1e-3
    for name in ("log.csv", "curves.png", "grid_epoch001.png", "grid_epoch002.png", "scatter_epoch002.png",
                 "metrics.csv", "metrics.json", "checkpoint.npz"):
        assert (out / name).exists(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (300, 2) and samples.dtype == np.float32
    printed = capsys.readouterr().out
    assert "of 8 modes captured" in printed and "high-quality samples" in printed
    np.testing.assert_array_equal(read_csv_log(out / "metrics.csv")["epoch"], [1, 2])
    # resuming a finished run adds nothing and keeps the log
    rows = len(read_csv_log(out / "log.csv")["step"])
    gan_toy2d.main(["--resume", str(out), "--epochs", "2", "--no-progress", "--num-samples", "300"])
    assert len(read_csv_log(out / "log.csv")["step"]) == rows == 8


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST is not in {SHARED_MNIST}")
@pytest.mark.parametrize("module, conditional, arch", [
    ("gan_mnist", False, ["--g-hidden", "16", "--d-hidden", "16", "--loss", "minimax"]),
    ("gan_mnist", False, ["--arch", "dcgan", "--filters", "2", "--k", "2"]),
    ("cgan_mnist", True, ["--g-hidden", "16", "--d-hidden", "16"]),
    ("cgan_mnist", True, ["--arch", "dcgan", "--filters", "2"]),
], ids=["gan-mlp", "gan-dcgan", "cgan-mlp", "cgan-dcgan"])
def test_mnist_examples_write_the_common_files(tmp_path, module, conditional, arch):
    example = __import__(module)
    out = tmp_path / module
    example.main(["--data", str(SHARED_MNIST), "--max-steps", "3", "--batch-size", "16", "--num-samples", "30",
                  "--no-judge", "--out", str(out), "--no-progress"] + arch)
    for name in ("log.csv", "curves.png", "checkpoint.npz", "config.json"):
        assert (out / name).exists(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (30, 1, 28, 28) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    if conditional:
        np.testing.assert_array_equal(np.load(out / "labels.npy"), np.arange(30) % 10)
    else:
        assert not (out / "labels.npy").exists()


@pytest.mark.parametrize("module", ["gan_mnist", "cgan_mnist"])
def test_mnist_examples_score_their_samples_with_the_judge(tmp_path, monkeypatch, module):
    """The judge's per-epoch metrics.csv and final metrics.json, with tiny data and an untrained judge."""
    from tinygan.eval import mnist_judge
    from tinygan.tools import mnist_gan
    example = __import__(module)
    images, labels = tiny_image_data(64)
    monkeypatch.setattr(mnist_gan, "load_mnist", lambda data, split, progress=True: (images, labels))
    monkeypatch.setattr(mnist_judge, "get_judge", lambda data, progress=True:
                        mnist_judge.MNISTJudge(mnist_judge.JudgeNet(), 0.99).set_reference(images))
    out = tmp_path / module
    example.main(["--epochs", "2", "--batch-size", "16", "--g-hidden", "16", "--d-hidden", "16",
                  "--eval-samples", "20", "--num-samples", "30", "--out", str(out), "--no-progress"])
    rows = read_csv_log(out / "metrics.csv")
    np.testing.assert_array_equal(rows["epoch"], [1, 2])
    assert np.isfinite(rows["fd"]).all() and (rows["entropy"] <= math.log(10) + 1e-9).all()
    assert np.isfinite(rows["accuracy"]).all() == (module == "cgan_mnist")
    summary = __import__("json").loads((out / "metrics.json").read_text())
    assert summary["num_samples"] == 30 and sum(summary["histogram"]) == pytest.approx(1.0)
    assert ("accuracy" in summary) == (module == "cgan_mnist")
    assert (out / "grid_epoch002.png").exists()


@pytest.mark.parametrize("module", ["gan_mnist", "cgan_mnist"])
def test_mnist_examples_sample_from_the_last_and_the_best_checkpoint(tmp_path, monkeypatch, capsys, module):
    """--sample RUN, --sample RUN/best.npz and --sample best (the default run folder) write samples.png."""
    from PIL import Image
    from tinygan.eval import mnist_judge
    from tinygan.tools import mnist_gan
    example = __import__(module)
    images, labels = tiny_image_data(64)
    monkeypatch.setattr(mnist_gan, "load_mnist", lambda data, split, progress=True: (images, labels))
    monkeypatch.setattr(mnist_judge, "get_judge", lambda data, progress=True:
                        mnist_judge.MNISTJudge(mnist_judge.JudgeNet(), 0.99).set_reference(images))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / module  # the default --out
    example.main(["--epochs", "1", "--batch-size", "16", "--g-hidden", "16", "--d-hidden", "16", "--pack", "2"][
                 :-2 if module == "cgan_mnist" else None] + ["--eval-samples", "20", "--num-samples", "10", "--no-progress"])
    assert (out / "best.npz").is_file()
    capsys.readouterr()
    example.main(["--sample", str(out), "--n", "20"])
    assert f"wrote {out / 'samples.png'} (20 samples of the averaged G (decay 0.999), from step 4" in capsys.readouterr().out
    with Image.open(out / "samples.png") as im:
        width, height = im.size
    # 20 samples: 10 rows of 2 (one row per digit) for the cGAN, 5 rows of 4 for the GAN
    assert (width, height) == ((2 * 30 + 2) * 2, (10 * 30 + 2) * 2) if module == "cgan_mnist" else ((4 * 30 + 2) * 2, (5 * 30 + 2) * 2)
    example.main(["--sample", "best", "--out", str(tmp_path / "best"), "--raw"])
    assert "samples of G as trained" in capsys.readouterr().out and (tmp_path / "best" / "samples.png").is_file()
    with pytest.raises(SystemExit):
        example.main(["--sample", str(tmp_path / "best")])
    assert "--sample: " in capsys.readouterr().err


def test_mnist_example_offline_points_to_data(tmp_path, monkeypatch, capsys):
    import socket
    import gan_mnist
    from tinygan.data import mnist

    with socket.socket() as s:            # a port nobody listens on: "connection refused", no network used
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [f"http://127.0.0.1:{closed}/"])
    with pytest.raises(SystemExit) as info:
        gan_mnist.main(["--out", str(tmp_path / "run"), "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--data" in err[0], err
    assert err[0].count("--data") == 1 and "shared" not in err[0]      # said once, and no path of ours


@pytest.mark.parametrize("module", ["gan_toy2d", "gan_mnist", "cgan_mnist", "mnist_classifier"])
def test_examples_help_explains_the_common_flags(module, capsys):
    example = __import__(module)
    with pytest.raises(SystemExit) as info:
        example.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--backend", "--epochs", "--batch-size", "--lr", "--seed", "--out", "--resume"):
        assert flag in text, flag
    assert math.isfinite(len(text))


def test_a_conditional_discriminator_drops_the_images_features_but_never_the_labels():
    """Dropout after D's first layer acts on x's features only: the label's are joined after it."""
    backend.seed(0)
    D = MLPDiscriminator(hidden=(16,), num_classes=10, dropout=0.9)      # body: the join, then one linear
    x = tensor(backend.to_device(np.random.default_rng(0).normal(size=(6, 1, 28, 28)).astype(np.float32)))
    y = backend.to_device(np.arange(6) % 10)
    with no_grad():
        D.eval()
        reference = backend.to_host(D(x, y).data)
        D.train()
        D.fc_in.weight.data[...] = 0                                     # x's features are 0: only the label speaks
        D.fc_in.bias.data[...] = 0
        label_only = backend.to_host(D(x, y).data)
        D.eval()
        np.testing.assert_allclose(label_only, backend.to_host(D(x, y).data), rtol=1e-6)   # nothing of it dropped
        D.train()
        D.fc_in.bias.data[...] = 1                                       # x's features now 1 each: dropped at 0.9
        trained = [backend.to_host(D(x, y).data) for _ in range(3)]
    assert not np.allclose(trained[0], trained[1]) and not np.allclose(reference, trained[2])
    assert isinstance(MLPDiscriminator(hidden=(16,), dropout=0.5).body[0], nn.Dropout)   # unconditional: as before


def test_minibatch_discrimination_sees_real_and_fake_batches_apart():
    """Its features compare a sample with the rest of its batch: real digits must not be compared with fakes."""
    backend.seed(3)
    D = MLPDiscriminator((1, 4, 4), hidden=(8, 6), minibatch_kernels=5)
    trainer = GANTrainer(MLPGenerator(4, (8,), (1, 4, 4)), D, num_fixed=2)
    x = tensor(backend.to_device(np.random.default_rng(0).uniform(-1, 1, (6, 1, 4, 4)).astype(np.float32)))
    with no_grad():
        alone = float((1 / (1 + np.exp(-backend.to_host(D(x).data)))).mean())
    metrics = trainer.step((x,))   # D(real) is computed before D's update: the same weights
    assert float(backend.to_host(metrics["d_real"])) == pytest.approx(alone, rel=1e-5)
    assert trainer._d_mixes_batch and not GANTrainer(MLPGenerator(4, (8,), (1, 4, 4)),
                                                     MLPDiscriminator((1, 4, 4), hidden=(8, 6)))._d_mixes_batch
