"""PacGAN's packing (Lin et al. 2018): D judges ``pack`` samples at once, in the trainer and the toy example."""
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygan import backend, nn, tensor
from tinygan.gan import ConditionalMLPDiscriminator, ConditionalMLPGenerator, GANTrainer, ToyDiscriminator, ToyGenerator
from tinygan.train.runlog import read_csv_log

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


class Spy(nn.Module):
    """Wraps a D and records the shapes it is shown."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x, labels=None):
        self.seen.append(x.shape)
        return self.inner(x, labels)


def test_packing_puts_consecutive_samples_side_by_side():
    trainer = GANTrainer(ToyGenerator(2, 8, 1), ToyDiscriminator(8, 1, pack=3), pack=3, num_fixed=4)
    x = tensor(backend.to_device(np.arange(12, dtype=np.float32).reshape(6, 2)))
    packed = backend.to_host(trainer._packed(x).data)
    np.testing.assert_array_equal(packed, [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])


def test_d_judges_packs_of_real_and_of_fake_samples():
    backend.seed(0)
    spy = Spy(ToyDiscriminator(8, 1, pack=4))
    trainer = GANTrainer(ToyGenerator(2, 8, 1), spy, pack=4, num_fixed=4)
    metrics = trainer.step((tensor(backend.randn(16, 2)),))
    # D's update sees 4 real packs and 4 fake packs in one batch; G's update 4 fake packs
    assert spy.seen == [(8, 8), (4, 8)]
    for name in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert np.isfinite(float(backend.to_host(metrics[name]))), name


def test_packing_errors_are_one_clear_line():
    with pytest.raises(ValueError, match="pack .* must be an int >= 1, got 0"):
        GANTrainer(ToyGenerator(2, 8, 1), ToyDiscriminator(8, 1), pack=0)
    with pytest.raises(ValueError, match="for an unconditional GAN"):
        GANTrainer(ConditionalMLPGenerator(8, (16,)), ConditionalMLPDiscriminator(hidden=(16,)), conditional=True, pack=2)
    trainer = GANTrainer(ToyGenerator(2, 8, 1), ToyDiscriminator(8, 1, pack=4), pack=4)
    with pytest.raises(ValueError, match="with pack=4 .* each minibatch must be a multiple of 4; got 6"):
        trainer.step((tensor(backend.randn(6, 2)),))


def test_toy_example_with_packing(tmp_path, capsys):
    import gan_toy2d
    out = tmp_path / "toy"
    gan_toy2d.main(["--mixture", "ring", "--epochs", "1", "--train-size", "512", "--batch-size", "64", "--pack", "4",
                    "--width", "16", "--depth", "2", "--num-samples", "300", "--out", str(out), "--no-progress"])
    assert read_csv_log(out / "metrics.csv")["epoch"].tolist() == [1]
    assert __import__("json").loads((out / "config.json").read_text())["extra"]["pack"] == 4
    with pytest.raises(SystemExit):
        gan_toy2d.main(["--mixture", "ring", "--batch-size", "30", "--pack", "4", "--out", str(tmp_path / "bad"),
                        "--no-progress"])
    assert "--batch-size 30 does not divide by --pack 4" in capsys.readouterr().err


def test_toy_defaults_per_mixture_and_a_resumed_decay_keeps_its_length(tmp_path):
    """The grid trains 15 epochs by default, the ring 20; both with R1 (gamma 10, every 4th D update) and
    a ReLU G, neither packs. A linearly decayed run resumed with only --max-steps keeps its
    own --epochs (the decay's length), not the default."""
    import gan_toy2d
    tiny = ["--train-size", "512", "--batch-size", "64", "--width", "8", "--depth", "1", "--num-samples", "50",
            "--no-progress"]
    saved = {}
    for mixture in ("grid", "ring"):
        out = tmp_path / mixture
        gan_toy2d.main(["--mixture", mixture, "--max-steps", "2", "--out", str(out)] + tiny)
        config = __import__("json").loads((out / "config.json").read_text())
        extra = config["extra"]
        saved[mixture] = (extra["pack"], config["epochs"], extra["r1"], extra["r1_every"], extra["g_slope"])
    assert saved == {"grid": (1, 15, 10.0, 4, 0.0), "ring": (1, 20, 10.0, 4, 0.0)}
    out = tmp_path / "short"
    gan_toy2d.main(["--mixture", "grid", "--epochs", "3", "--max-steps", "2", "--out", str(out)] + tiny)
    gan_toy2d.main(["--resume", str(out), "--max-steps", "4", "--no-progress", "--num-samples", "50"])
    config = __import__("json").loads((out / "config.json").read_text())
    assert (config["epochs"], config["extra"]["epochs"]) == (3, 3)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_mnist_gan_packs_digits_as_the_channels_of_one_input(arch):
    from tinygan.tools import mnist_gan
    args = mnist_gan.build_parser().parse_args(["--arch", arch, "--pack", "2", "--filters", "4",  # R1 off: D is spied on
                                                "--g-hidden", "8,8", "--d-hidden", "8", "--r1", "0"])
    backend.seed(0)
    trainer = mnist_gan.build(args)
    spy = trainer.D = Spy(trainer.D)
    metrics = trainer.step((tensor(backend.to_device(np.zeros((4, 1, 28, 28), np.float32))),))
    # two real packs of 2 digits, two fake ones; with batch norm in D (dcgan) they go through apart
    assert spy.seen == ([(2, 2, 28, 28)] * 3 if arch == "dcgan" else [(4, 2, 28, 28), (2, 2, 28, 28)])
    assert np.isfinite(float(backend.to_host(metrics["loss_d"])))
    assert "--pack" not in mnist_gan.build_parser(conditional=True).format_help()
