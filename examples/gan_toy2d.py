"""The minimax GAN on the 2-D mixtures of Gaussians that measure mode collapse (VEEGAN, PacGAN).

    python examples/gan_toy2d.py --mixture grid      # 25 Gaussians at (i, j), i, j in {-4, -2, 0, 2, 4}, sigma 0.05
    python examples/gan_toy2d.py --mixture ring      # 8 Gaussians on the unit circle, sigma 0.01
    python examples/gan_toy2d.py --mixture grid --loss minimax --seed 1

G and D are small MLPs; training is Algorithm 1 of the GAN paper with Adam on a
fixed training set drawn from the mixture. By default D's loss carries R1's
gradient penalty (--r1 10, Mescheder et al. 2018), which kept every mode, and G's
hidden units are ReLUs (--g-slope 0), which left few samples between the modes;
--pack M makes D judge M points at once (PacGAN). The score is the papers': of
--num-samples (2500) samples, the fraction within 3 sigma of their nearest
mean ("high quality"), and the number of modes with at least one such sample
("captured"). It is printed after every epoch and at the end.

The run folder (--out, default runs/gan_toy2d-<mixture>) gets log.csv (per step:
loss_d, loss_g, mean D(x), mean D(G(z)), step time), curves.png,
grid_epoch{E:03d}.png (after each epoch: a density image of G's samples from
fixed noise, log-scaled, on the square [-L, L]^2 around the data),
scatter_epoch{E:03d}.png (after each epoch: fresh samples with the mixture's
means marked), metrics.csv (per epoch: modes captured, high-quality fraction,
reverse KL of the mode histogram), samples.npy (float32 (N, 2)), metrics.json
and checkpoint.npz.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tinygan import backend, distributed  # noqa: E402
from tinygan.tools import cli  # noqa: E402
from tinygan.train.checkpoint import CheckpointError  # noqa: E402
from tinygan.files import atomic_write  # noqa: E402
from tinygan.data import DataError, MIXTURES, sample_mixture  # noqa: E402
from tinygan.train.images import save_grid  # noqa: E402
from tinygan.eval.metrics import mode_metrics  # noqa: E402
from tinygan.train import CollapseWatch  # noqa: E402
from tinygan.gan import ToyDiscriminator, ToyGenerator  # noqa: E402
from tinygan.train.runlog import write_epoch_row  # noqa: E402
from tinygan.tensor import tensor  # noqa: E402
from tinygan.gan import GANTrainer  # noqa: E402
from tinygan.train import fit  # noqa: E402
from tqdm import tqdm  # noqa: E402

EXAMPLE = "gan_toy2d"
#: Flags that fix the model, its training rule or the data: a resumed run keeps them. With the
#: linear lr decay, --epochs sets the length of the decay, so it is the run's own too (cli.prepare_run).
RUN_OWN = ("mixture", "latent_dim", "width", "depth", "k", "batch_size", "seed", "train_size", "loss",
           "lr", "beta1", "lr_decay", "ema", "pack", "r1", "r1_every", "g_slope")
#: Decay of generator averaging (--ema) by default: see docs/gan/RESULTS.md for the runs behind it.
EMA_DECAY = 0.999
#: Half-width of the plotted square, per mixture (the data's extent plus a margin).
EXTENT = {"ring": 1.5, "grid": 5.5}
#: The networks work in units where the data spans about [-1, 1] (see ToyGenerator).
SCALE = {"ring": 1.0, "grid": 4.0}
#: Default batch size. Measured over seeds 0-2 (docs/gan/RESULTS.md): on the grid of the plain GAN,
#: 128 traded modes for sharpness (17 of 25 modes on seed 1) where 256 kept 20-22; with R1 keeping
#: every mode, 128 (twice the steps of 256 at about the same cost) sharpens. On the ring, 256 lost a
#: mode on seed 2 and 128, with twice the steps, kept all 8.
BATCH_SIZE = 128
#: Default Adam learning rate per mixture. On the ring, 1e-3 (decayed linearly to 0) kept all 8
#: modes with 96.1%, 97.2% and 95.5% high-quality samples on seeds 0-2, where 5e-4 gave 7, 8 and 8
#: modes with 95.0%, 94.8% and 94.6% (docs/gan/RESULTS.md, "The ring's learning rate").
LR = {"ring": 1e-3, "grid": 5e-4}
#: Default length per mixture. On the grid, PacGAN2 (--pack 2) for 30 epochs of batch 256, the defaults
#: of stop 26, captured 24, 23 and 23 of the 25 modes with 87.7%, 84.7% and 90.1% high-quality samples
#: on seeds 0-2; with R1 and a ReLU G (below) every seed captures all 25 in 15 epochs.
EPOCHS = {"ring": 20, "grid": 15}
#: Default gamma of R1's penalty (--r1), on D's every 4th update. It took the grid's modes captured to
#: 25 of 25 on every seed with their counts evened out (reverse KL 0.003-0.005 against 0.23-0.41 for
#: PacGAN2), and kept the ring's 8 of 8 on every seed (reverse KL 0.001-0.002 against up to 0.16).
R1_GAMMA = 10.0
#: Default negative slope of G's LeakyReLUs (--g-slope; 0: ReLU). On the grid a ReLU G drew 96.7%
#: high-quality samples where the LeakyReLU(0.2) G drew 89.6% (seed 0, the same run otherwise): units
#: that switch off entirely leave fewer points on the lines between modes. On the ring, 98.3-98.6%.
G_SLOPE = 0.0
#: The flags whose default depends on the mixture (None on the command line until main fills it in).
PER_MIXTURE = {"lr": LR, "epochs": EPOCHS}


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]))
    per_mixture = lambda table: cli.per_choice_help(table, "the {}")  # noqa: E731
    cli.add_common_args(p, epochs=None, batch_size=BATCH_SIZE, ema=EMA_DECAY, lr=None, out=None, out_help="runs/gan_toy2d-<mixture>",
                        data_help="not used: the toy data is drawn from the mixture (--mixture, --train-size)",
                        epochs_help=per_mixture(EPOCHS),
                        lr_help=f"Adam learning rate of both networks (default: {per_mixture(LR)})")
    g = p.add_argument_group("toy GAN")
    g.add_argument("--mixture", choices=sorted(MIXTURES), default="grid", help="which mixture of Gaussians")
    g.add_argument("--loss", choices=("nonsaturating", "minimax"), default="nonsaturating",
                   help="generator loss: nonsaturating -E log D(G(z)) or minimax E log(1 - D(G(z)))")
    g.add_argument("--k", type=cli.positive_int, default=1, help="discriminator updates per generator update (Algorithm 1's k)")
    g.add_argument("--beta1", type=cli.probability, default=0.5, help="Adam's beta1 in [0, 1) (beta2 is 0.999)")
    g.add_argument("--latent-dim", type=cli.positive_int, default=2, help="size of the noise z")
    g.add_argument("--width", type=cli.positive_int, default=128, help="units per hidden layer of G and D")
    g.add_argument("--depth", type=cli.positive_int, default=3, help="hidden layers of G and D")
    g.add_argument("--g-slope", type=cli.nonnegative_float, default=G_SLOPE, metavar="SLOPE",
                   help="negative slope of G's LeakyReLUs, 0 for ReLUs; D's stay at 0.2")
    cli.add_pack_arg(g, what="points")
    g.add_argument("--train-size", type=cli.positive_int, default=400_000, help="points drawn from the mixture for training (at least one batch)")
    cli.add_lr_decay_arg(g, default="linear")
    cli.add_r1_arg(g, what="points", default=R1_GAMMA)
    g.add_argument("--num-samples", type=cli.positive_int, default=2500, help="samples scored at the end and saved to samples.npy")
    return p


def default_out(args):
    return f"runs/gan_toy2d-{args.mixture}"


def to_device(batch):
    return (tensor(backend.to_device(batch[0])),)


def build(args):
    scale = SCALE[args.mixture]
    G = ToyGenerator(args.latent_dim, args.width, args.depth, scale=scale, negative_slope=args.g_slope)
    D = ToyDiscriminator(args.width, args.depth, scale=scale, pack=args.pack)
    # 2500 fixed noise vectors: the density image needs many points, not a grid of 64
    decay = cli.decay_steps(args, args.train_size, args.k * args.batch_size)
    return GANTrainer(G, D, loss=args.loss, k=args.k, lr=args.lr, betas=(args.beta1, 0.999), image_range=None,
                      num_fixed=2500, lr_decay_steps=decay, ema=args.ema or None, pack=args.pack,
                      r1=args.r1, r1_every=args.r1_every)


def score(samples, mixture):
    m = MIXTURES[mixture]
    return mode_metrics(samples, m.means, m.sigma)


def density_image(points, extent, bins=120):
    """A (1, 1, bins, bins) image in [0, 1]: log-scaled 2-D histogram, ink where samples are (y up)."""
    finite = points[np.isfinite(points).all(axis=1)]
    hist, _, _ = np.histogram2d(finite[:, 1], finite[:, 0], bins=bins, range=[[-extent, extent]] * 2)
    ink = np.log1p(hist)
    ink = ink / ink.max() if ink.max() > 0 else ink
    return (1.0 - ink[::-1])[None, None].astype(np.float32)  # row 0 is the top: flip y


def scatter_plot(path, samples, mixture, title):
    """Samples as dots over the mixture's means as rings, with matplotlib's Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m, extent = MIXTURES[mixture], EXTENT[mixture]
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # hollow rings under the dots: a cross drawn on top hid the very samples that capture a mode
    ax.scatter(m.means[:, 0], m.means[:, 1], s=90, marker="o", facecolors="none", edgecolors="tab:red",
               linewidths=1.0, zorder=1, label="mixture means")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color="tab:blue", zorder=2, label="G(z)")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize="small")
    ax.legend(loc="upper right", fontsize="small")
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)


def describe(result, mixture):
    return (f"{result['modes_captured']} of {MIXTURES[mixture].n_modes} modes captured, "
            f"{result['high_quality_fraction']:.1%} high-quality samples, reverse KL {result['reverse_kl']:.3f}")


def epoch_hooks(trainer, args):
    extent = EXTENT[args.mixture]
    # the collapse watch: high-quality share (higher is better) and modes captured (a loss of 2 modes warns)
    watch = CollapseWatch("high-quality share", "modes captured", drop=1.5, lower_is_better=False,
                          say=lambda line: tqdm.write(line, file=sys.stderr))

    def density(epoch, out):
        save_grid(Path(out) / f"grid_epoch{epoch + 1:03d}.png", density_image(trainer.sample_fixed(), extent),
                  scale=3)

    def scatter_and_score(epoch, out):
        samples = trainer.generate(args.num_samples, seed=args.seed + 1000)["samples"]
        result = score(samples, args.mixture)
        scatter_plot(Path(out) / f"scatter_epoch{epoch + 1:03d}.png", samples, args.mixture,
                     f"{args.mixture}, epoch {epoch + 1}\n{describe(result, args.mixture)}")
        write_epoch_row(Path(out) / "metrics.csv", {   # one row per epoch, even when a resume redoes it
            "epoch": epoch + 1, "modes_captured": result["modes_captured"],
            "high_quality_fraction": result["high_quality_fraction"], "reverse_kl": result["reverse_kl"]})
        tqdm.write(f"epoch {epoch + 1}: {describe(result, args.mixture)}", file=sys.stderr)
        watch(epoch + 1, out, result["high_quality_fraction"], result["modes_captured"])

    return [density, scatter_and_score]


def main(argv=None):
    p = build_parser()
    args, given = cli.parse_args(p, argv)
    if args.data is not None:
        cli.fail("--data: the toy example draws its data from the mixture (--mixture, --train-size); "
                 "it reads no files")
    started = time.perf_counter()

    with cli.friendly_errors(DataError, CheckpointError):
        args = cli.prepare_run(args, given, example=EXAMPLE, default_out=default_out, run_own=RUN_OWN,
                               introduced={"ema": 0.0, "pack": 1, "r1": 0.0, "r1_every": 1, "g_slope": 0.2})
        cli.fill_per_choice(args, PER_MIXTURE, args.mixture)  # a new run's defaults; a resumed run has its own
        cli.check_pack(args, what="points")
        if args.train_size < args.k * args.batch_size:
            cli.fail(f"--train-size {args.train_size:,} is smaller than one step's batch "
                     f"(--k {args.k} x --batch-size {args.batch_size} = {args.k * args.batch_size:,})")
        cli.use_backend(args.backend, args.device)
        # The training set depends on the seed only, so a resumed run sees the same points.
        data = sample_mixture(args.mixture, args.train_size, np.random.default_rng([args.seed, 2]))
        backend.seed(args.seed)
        trainer = build(args)
        config = cli.loop_config(args, batch_size=args.k * args.batch_size, num_samples=args.num_samples)
        out = fit(trainer, (data,), config, to_device, epoch_hooks=epoch_hooks(trainer, args))
        if not distributed.is_main():
            return  # under mpiexec, what follows training is rank 0's
        seconds = time.perf_counter() - started
        samples = np.load(out / "samples.npy")
        result = score(samples, args.mixture)
        summary = {"mixture": args.mixture, "seed": args.seed, "num_samples": len(samples),
                   "modes_captured": result["modes_captured"], "n_modes": MIXTURES[args.mixture].n_modes,
                   "high_quality_fraction": result["high_quality_fraction"], "reverse_kl": result["reverse_kl"],
                   "counts": result["counts"].tolist(), "seconds": seconds}
        with atomic_write(out / "metrics.json") as fh:
            fh.write(json.dumps(summary, indent=2).encode())
    print(f"{args.mixture}, seed {args.seed}, {len(samples)} samples: {describe(result, args.mixture)} "
          f"({seconds:.0f} s)")
    print(f"done: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
