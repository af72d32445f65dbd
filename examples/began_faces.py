"""BEGAN on face photos (Berthelot, Schumm, Metz 2017, arXiv 1703.10717).

On a GPU with the paper's settings (LFW, downloaded; 64x64, n = 128), into runs/began-lfw-64:
    python examples/began_faces.py --backend cupy

A CPU-sized run (32x32, n = 32: about 6 minutes an epoch on one core) on a folder
or .tgz of face photos, into runs/began-<folder>-32:
    python examples/began_faces.py --data ~/data/lfw-deepfunneled --size 32 --filters 32 --epochs 10

Continue a run (longer), or draw samples and latent walks from its checkpoint:
    python examples/began_faces.py --resume runs/began-lfw-deepfunneled-32 --epochs 20
    python examples/began_faces.py --sample runs/began-lfw-deepfunneled-32 --n 64 --interpolate

The run folder gets log.csv (one row per step: L(x), L(G(z)), L_D, L_G, k_t,
M_global, lr, step time), curves.png, grid_epoch{E:03d}.png (fixed noise,
kept per epoch), grid_step{S:07d}.png (every --sample-every steps),
reconstructions.png (real images beside D's reconstructions),
interpolation.png, swd.csv (sliced Wasserstein distance per epoch),
samples.npy and checkpoint.npz.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tinygan import backend, distributed  # noqa: E402
from tinygan.tools import cli  # noqa: E402
from tinygan.train.checkpoint import CheckpointError  # noqa: E402
from tinygan.data import DataError, hflip, load_faces  # noqa: E402
from tinygan.train.images import save_grid  # noqa: E402
from tinygan.eval.metrics import sliced_wasserstein  # noqa: E402
from tinygan.eval.diversity import (near_duplicate_threshold, near_duplicates,  # noqa: E402
                                    nearest_neighbour_distances, spread)
from tinygan.gan import BEGANDecoder, BEGANDiscriminator  # noqa: E402
from tinygan.train.runlog import read_csv_log, write_epoch_row  # noqa: E402
from tinygan.tensor import tensor  # noqa: E402
from tinygan.gan import BEGANTrainer  # noqa: E402
from tinygan.train import CollapseWatch, fit, grid_hook  # noqa: E402
from tqdm import tqdm  # noqa: E402

EXAMPLE = "began_faces"
CPU_COMMAND = "python examples/began_faces.py --data PATH --size 32 --filters 32 --epochs 10"
#: Flags that fix the model, its training rule or the data: a resumed run keeps them.
RUN_OWN = ("size", "filters", "hidden", "skip", "crop", "gamma", "lambda_k", "batch_size", "seed",
           "lr", "lr_min", "lr_window", "data", "flip", "ema")
#: Decay of generator averaging (--ema) by default: see docs/gan/RESULTS.md for the runs behind it.
EMA_DECAY = 0.999
#: Flags added after runs were saved without them, and the value those runs trained with.
INTRODUCED = {"flip": False, "ema": 0.0}


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:4]))
    cli.add_common_args(
        p, epochs=150, batch_size=16, ema=EMA_DECAY, lr=1e-4, out=None, threads="auto", out_help="runs/began-lfw-<size>, or runs/began-<folder>-<size>",
        data_help="a folder of face images, or a .tgz/.zip of one (e.g. ~/data/lfw-deepfunneled or lfw-deepfunneled.tgz); "
                  "default: download LFW deep-funneled (111 MB, md5-checked) into ~/.cache/tinygan")
    g = p.add_argument_group("BEGAN")
    g.add_argument("--size", type=int, choices=(32, 64, 128), default=64, help="image side in pixels")
    g.add_argument("--filters", type=cli.positive_int, default=128, help="n: filters of the first scale (n, 2n, 3n, ... in the encoder), 128 as in the paper; 32 suits a CPU")
    g.add_argument("--hidden", type=cli.positive_int, default=64, help="h: size of the code and of the noise z")
    g.add_argument("--gamma", type=cli.unit_interval, default=0.5, help="diversity ratio E[L(G(z))] / E[L(x)] in (0, 1]; lower is sharper, less diverse")
    g.add_argument("--lambda-k", type=cli.nonnegative_float, default=0.001, help="learning rate of the balance term k_t")
    g.add_argument("--lr-min", type=cli.nonnegative_float, default=2e-5, help="floor of the learning rate when it is halved on a stall of M (at most --lr)")
    g.add_argument("--lr-window", type=cli.positive_int, default=3000,
                   help="steps per window of the stall test: lr halves when a window's mean M is not 2%% below the best window's")
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=False,
                   help="the paper's skip connections (8x8 start of the decoder concatenated after each upsampling)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="mirror each face left to right with probability 1/2, a coin per image and epoch drawn "
                        "from (--seed, epoch), as face GANs train (--no-flip: the photos as they are)")
    g.add_argument("--crop", type=cli.positive_int, default=128, help="side of the centred square cut from each photo before resizing (LFW frames are 250 px)")
    g.add_argument("--sample-every", type=cli.count, default=500, help="steps between grid_step*.png sample grids (0: off)")
    g.add_argument("--num-samples", type=cli.count, default=1000, help="samples written to samples.npy at the end (0: none)")
    g.add_argument("--swd-samples", type=swd_count, default=1024, help="real and generated images compared by the per-epoch sliced Wasserstein distance (0: off, else at least 2)")
    s = p.add_argument_group("sampling from a trained run (no training)")
    s.add_argument("--sample", metavar="RUN", default=None,
                   help=cli.SAMPLE_HELP.format(default="runs/began-lfw-<size>, or runs/began-<folder>-<size> with "
                                               "--data") + "; best is the best sliced Wasserstein distance")
    s.add_argument("--n", type=cli.positive_int, default=64, help="with --sample: number of samples")
    s.add_argument("--interpolate", action="store_true", help="with --sample: also write a latent walk, samples_interpolation.png")
    s.add_argument("--raw", action="store_true", help="with --sample: draw from G as trained, not from its average (--ema)")
    return p


swd_count = cli.checked(int, lambda v: v == 0 or v >= 2, "0 (off) or an integer >= 2")


def default_out(args):
    """runs/began-lfw-<size> for the downloaded LFW, else runs/began-<the data folder's name>-<size>."""
    if args.data is None:
        return f"runs/began-lfw-{args.size}"
    name = Path(args.data).expanduser().resolve().name.lower()
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return f"runs/began-{name}-{args.size}"


def to_device(batch):
    """uint8 NCHW on the host -> float32 in [-1, 1] on the device (the cast happens on the device)."""
    (images,) = batch
    x = backend.to_device(images)
    return (tensor(x.astype(backend.DEFAULT_DTYPE) * (2 / 255) - 1),)


def build(args):
    G = BEGANDecoder(args.size, args.filters, args.hidden, skip=args.skip)
    D = BEGANDiscriminator(args.size, args.filters, args.hidden, skip=args.skip)
    return BEGANTrainer(G, D, gamma=args.gamma, lambda_k=args.lambda_k, lr=args.lr,
                        lr_window=args.lr_window, lr_min=args.lr_min, ema=args.ema or None)


def interpolation_strip(trainer, path, rows=8, steps=10, seed=1):
    """Walks in z between fixed pairs of codes: each row goes from one face to another."""
    rng = np.random.default_rng(seed)
    ends = rng.uniform(-1, 1, size=(2, rows, trainer.hidden)).astype(np.float32)
    t = np.linspace(0, 1, steps, dtype=np.float32)[None, :, None]
    z = ((1 - t) * ends[0][:, None] + t * ends[1][:, None]).reshape(rows * steps, -1)
    save_grid(path, trainer.sample(backend.to_device(z)), nrow=steps, scale=2 if trainer.G.size <= 32 else 1)


def epoch_hooks(trainer, images, args):
    scale = 2 if args.size <= 32 else 1
    rng = np.random.default_rng(args.seed + 7)
    shown = images[rng.choice(len(images), min(32, len(images)), replace=False)]
    swd_real = images[rng.choice(len(images), min(args.swd_samples, len(images)), replace=False)] if args.swd_samples else None
    # SWD runs where G does: the real set goes to the device once, the fakes never leave it
    swd_real = backend.to_device(swd_real.astype(np.float32) / 255) if args.swd_samples else None
    # the collapse watch: SWD (lower is better) and the spread of the samples, their median nearest-neighbour
    # distance over the real images' (1 for samples as diverse as the faces; a fall of 30% warns); the share
    # of samples with a near-duplicate among the others is printed beside it (tinygan.eval.diversity)
    real_nn = nearest_neighbour_distances(swd_real) if args.swd_samples else None
    tau = near_duplicate_threshold(real_nn) if args.swd_samples else None
    watch = CollapseWatch("sliced Wasserstein x1e3", "spread", drop=0.3, relative=True,
                          say=lambda line: tqdm.write(line, file=sys.stderr))

    def reconstructions(epoch, out):
        real = to_device((shown,))[0].data
        rec = trainer.reconstruct(real)
        pairs = np.stack([shown.astype(np.float32) / 255, rec], axis=1).reshape(-1, *rec.shape[1:])
        save_grid(Path(out) / "reconstructions.png", pairs, nrow=8, scale=scale)

    def interpolation(epoch, out):
        interpolation_strip(trainer, Path(out) / "interpolation.png")

    def swd(epoch, out):
        fake = trainer.generate(len(swd_real), to_host=False)["samples"]
        result = sliced_wasserstein(swd_real, fake, rng=epoch)
        log = read_csv_log(Path(out) / "log.csv")
        in_epoch = (log["epoch"] > epoch) & (log["epoch"] <= epoch + 1)
        m_mean = float(np.mean(log["M"][in_epoch])) if in_epoch.any() else float("nan")
        row = {"epoch": epoch + 1, "step": int(log["step"][-1]), "M_mean": m_mean, "swd_mean": result["mean"]}
        row.update((f"swd_{r}", float(v)) for r, v in zip(result["levels"], result["swd"]))
        write_epoch_row(Path(out) / "swd.csv", row)   # one row per epoch, even when a resume redoes it
        fake_nn = nearest_neighbour_distances(fake)
        dups, wide = near_duplicates(fake_nn, tau), spread(fake_nn, real_nn)
        tqdm.write(f"epoch {epoch + 1}: M {m_mean:.4f}, sliced Wasserstein x1e3 {result['mean']:.2f} "
                   f"(levels {result['levels']}: {', '.join(f'{v:.2f}' for v in result['swd'])}); spread {wide:.3f} "
                   f"of the real faces', near-duplicates {dups:.1%} (real: 1%)", file=sys.stderr)
        watch(epoch + 1, out, result["mean"], wide)

    hooks = [grid_hook(trainer, scale=scale), reconstructions, interpolation]
    return hooks + ([swd] if args.swd_samples else [])


def sample_from_run(args):
    """--sample RUN: samples (and a latent walk) from RUN's generator, written into --out or RUN."""
    run, ckpt, saved = cli.sample_source(args.sample, EXAMPLE, default_out(args))
    for name in ("size", "filters", "hidden", "skip"):
        setattr(args, name, saved[name])
    trainer, step, which = cli.sampling_trainer(run, ckpt, args, build)
    dest = Path(args.out) if args.out else run
    dest.mkdir(parents=True, exist_ok=True)
    backend.seed(args.seed)
    scale = 2 if args.size <= 32 else 1
    save_grid(dest / "samples.png", trainer.sample(trainer.noise(args.n)), scale=scale)
    print(f"wrote {dest / 'samples.png'} ({args.n} samples of {which}, from step {step:,} of {run / ckpt})")
    if args.interpolate:
        # not interpolation.png: that is the training run's own, redrawn after every epoch
        interpolation_strip(trainer, dest / "samples_interpolation.png", seed=args.seed + 1)
        print(f"wrote {dest / 'samples_interpolation.png'}")


def main(argv=None):
    p = build_parser()
    args, given = cli.parse_args(p, argv)
    with cli.friendly_errors(DataError, CheckpointError):
        if args.sample:
            cli.use_backend(args.backend, args.device)
            return sample_from_run(args)
        args = cli.prepare_run(args, given, example=EXAMPLE, run_own=RUN_OWN, default_out=default_out,
                               introduced=INTRODUCED)
        if args.lr_min > args.lr:
            cli.fail(f"--lr-min {args.lr_min} is above --lr {args.lr}; the floor must not exceed the learning rate")
        cli.use_backend(args.backend, args.device, cpu_command=CPU_COMMAND)
        threads = cli.threads_for(args)  # --threads: one replica per core on the CPU
        images, stats = load_faces(args.data, size=args.size, crop=args.crop, return_stats=True, warn=False,
                                   progress=not args.no_progress)
        for note in stats.notes:
            print(f"note: {note}", file=sys.stderr)
        if distributed.is_main():
            print(f"{len(images):,} images of {args.size}x{args.size} from {stats.source} ({stats.grayscale_excluded} "
                  f"grayscale, {stats.unreadable} unreadable and {stats.too_small} too small left out)", file=sys.stderr)
        backend.seed(args.seed)
        trainer = cli.replicated(lambda: build(args), threads)
        config = cli.loop_config(args, num_samples=args.num_samples)
        steps = [(args.sample_every, grid_hook(trainer, scale=2 if args.size <= 32 else 1, every_steps=True))]
        out = fit(trainer, (images,), config, to_device, epoch_hooks=epoch_hooks(trainer, images, args),
                  step_hooks=steps, augment=hflip(args.seed, len(images)) if args.flip else None)
    if distributed.is_main():  # under mpiexec, rank 0 alone speaks
        print(f"done: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
