"""The MNIST GAN application behind examples/gan_mnist.py and examples/cgan_mnist.py (Algorithm 1 with Adam).

Both examples are this one program: the minimax GAN (Goodfellow et al. 2014)
and, with ``conditional=True``, the conditional GAN (Mirza & Osindero 2014),
with the shared loop, run folders, resume, per-epoch grids and the MNIST
judge's metrics. The examples hold their own --help text.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import backend, distributed
from . import cli
from ..eval import mnist_judge
from ..train.checkpoint import CheckpointError
from ..files import atomic_write
from ..data import DataError, load_mnist
from ..gan import DCGANDiscriminator, DCGANGenerator, GANTrainer, MLPDiscriminator, MLPGenerator
from ..train.runlog import write_epoch_row
from ..tensor import tensor
from ..train import CollapseWatch, fit, grid_hook
from ..train.images import save_grid

#: Flags that fix the model, its training rule or the data: a resumed run keeps them.
RUN_OWN = ("arch", "latent_dim", "g_hidden", "d_hidden", "filters", "dropout", "minibatch_kernels", "batch_norm",
           "d_batch_norm", "k", "batch_size", "seed", "data", "loss", "lr", "beta1", "ema", "lr_decay", "pack",
           "reuse_fakes", "r1", "r1_every")
#: Decay of generator averaging (--ema) by default: see docs/gan/RESULTS.md for the runs behind it.
EMA_DECAY = 0.999
#: Flags added after runs were saved without them, and the value those runs trained with.
INTRODUCED = {"ema": 0.0, "lr_decay": "none", "pack": 1, "minibatch_kernels": 0, "reuse_fakes": False, "r1": 0.0,
              "r1_every": 1, "d_batch_norm": True}
NUM_CLASSES = 10


def widths(text):
    """'256,512,1024' -> (256, 512, 1024), for --g-hidden and --d-hidden."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated layer widths such as 256,512,1024, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"layer widths must be positive, got {text!r}")
    return values


#: D's dropout by default (the MLP arch), unconditional / conditional: measured in docs/gan/RESULTS.md
#: ("Dropout in D"): the MLP GAN's Frechet distance 13.98 -> 10.31 (seed 0) and 16.09 -> 10.43 (seed 1)
DROPOUT = {False: 0.3, True: 0.0}
#: The cGAN's epochs by default: its Frechet distance kept falling after 20 epochs (10,000 samples,
#: seed 0: 13.24 after 20, 9.46 after 30, 7.06 after 40, 6.30 after 50; seed 1: 9.01 after 40, 7.98
#: after 50; label accuracy 99.4-99.6%; docs/gan/RESULTS.md, "The cGAN's length").
CGAN_EPOCHS = 50
#: The unconditional example's defaults that depend on --arch (None on the command line until
#: settle_defaults fills them in). The MLP GAN: 40 epochs (14 CPU minutes), lr 2e-4, no R1 (it did
#: not help): with one BLAS thread, Frechet distance 4.33, 3.93 and 3.75 on seeds 0-2, every digit
#: within 8.1-11.8% of the 10,000 samples, where 20 epochs drew sevens at 12.7% (seed 0) and 30 eights
#: at 7.9% (seed 1); narrowly (BLAS on two cores, another trajectory: eights 7.8%); docs/gan/RESULTS.md,
#: "The MLP GAN's length". The DCGAN: R1 with gamma
#: 3 on D's every 4th update and lr 4e-4 for 14 epochs (25 CPU minutes): Frechet distance 3.74, class
#: entropy 2.297 on 10,000 samples (seed 0), where 20 epochs without R1 at 2e-4 (35 minutes) scored
#: 8.61 and 2.292; docs/gan/RESULTS.md, "R1 for the DCGAN".
#: Since stop 32 the DCGAN's Adam has beta1 = 0 (R1's paper and StyleGAN2 train with it): FD 4.16,
#: 3.65 and 4.47 on 10,000 samples (seeds 0-2; means over eight draws 4.58, 4.10, 4.61) where beta1
#: 0.5 drew 5.09 and 5.66 (seeds 0, 2) on the same machine; docs/gan/RESULTS.md, "Adam's beta1 = 0".
PER_ARCH = {"epochs": {"mlp": 40, "dcgan": 14}, "lr": {"mlp": 2e-4, "dcgan": 4e-4}, "r1": {"mlp": 0.0, "dcgan": 3.0},
            "beta1": {"mlp": 0.5, "dcgan": 0.0}}


def per_arch_help(table):
    return cli.per_choice_help(table, "--arch {}")


def settle_defaults(args, conditional=False):
    """Fill in the defaults that depend on --arch (a new run's; a resumed one restores its own)."""
    return cli.fill_per_choice(args, {} if conditional else PER_ARCH, args.arch)


def build_parser(conditional=False, doc=__doc__):
    name = "cgan_mnist" if conditional else "gan_mnist"
    p = cli.parser(doc.split("\n\n")[0] + "\n\n" + "\n\n".join(doc.split("\n\n")[1:]))
    cli.add_common_args(
        p, epochs=CGAN_EPOCHS if conditional else None, epochs_help=None if conditional else per_arch_help(PER_ARCH["epochs"]),
        batch_size=64, ema=EMA_DECAY, lr=2e-4 if conditional else None, out=f"runs/{name}", threads=1,
        lr_help="Adam learning rate of both networks" + ("" if conditional else f" (default: {per_arch_help(PER_ARCH['lr'])})"),
        data_help="a folder with the four MNIST IDX files, gzipped or not (e.g. ~/data/mnist); "
                  "default: download them (md5-checked) into ~/.cache/tinygan/mnist")
    g = p.add_argument_group("GAN")
    g.add_argument("--loss", choices=("nonsaturating", "minimax"), default="nonsaturating",
                   help="generator loss: nonsaturating -E log D(G(z)) (the paper's practical choice) or "
                        "minimax E log(1 - D(G(z))) (the game as written; its gradient vanishes while D wins)")
    g.add_argument("--arch", choices=("mlp", "dcgan"), default="mlp",
                   help="mlp: fully connected G and D (fast on a CPU); dcgan: transposed convs and batch norm")
    g.add_argument("--k", type=cli.positive_int, default=1, help="discriminator updates per generator update (Algorithm 1's k)")
    g.add_argument("--beta1", type=cli.probability, default=0.5 if conditional else None,
                   help="Adam's beta1 in [0, 1); beta2 is 0.999" + (
                       "" if conditional else f" (default: {per_arch_help(PER_ARCH['beta1'])})"))
    g.add_argument("--latent-dim", type=cli.positive_int, default=100, help="size of the noise z")
    g.add_argument("--g-hidden", type=widths, default=(256, 512, 1024), help="mlp: G's hidden layer widths")
    g.add_argument("--d-hidden", type=widths, default=(512, 256), help="mlp: D's hidden layer widths")
    g.add_argument("--dropout", type=cli.probability, default=DROPOUT[conditional],
                   help="mlp: dropout after D's hidden layers, in [0, 1) (0: none)")
    g.add_argument("--minibatch-kernels", type=cli.count, default=0, metavar="N",
                   help="minibatch discrimination (Salimans et al. 2016) before D's output layer, with N "
                        "kernels: D sees how alike the digits of a batch are (0: none; measured in "
                        "docs/gan/RESULTS.md: the DCGAN led early with 50 but scored worse at the end)")
    g.add_argument("--filters", type=cli.positive_int, default=32, help="dcgan: filters of the widest layer pair (f, 2f)")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="mlp: batch norm after G's hidden layers (but the first); " + (
                       "without it the conditional G collapsed onto one image for all labels early in training"
                       if conditional else "without it the Frechet distance after 20 epochs was 28, not 14 "
                       "(docs/gan/RESULTS.md)"))
    g.add_argument("--d-batch-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="dcgan: batch norm after D's second convolution (DCGAN's; R1's paper has none in D)")
    cli.add_lr_decay_arg(g, default="none")
    g.add_argument("--reuse-fakes", action="store_true",
                   help="G's update reuses the fakes of D's last update, as PyTorch's DCGAN example does, "
                        "instead of fresh noise (Algorithm 1): one forward of G fewer, 10%% less time a step "
                        "(measured in docs/gan/RESULTS.md: ahead early, but the digit shares even out later)")
    if not conditional:  # a conditional D judges each sample against its own label
        cli.add_pack_arg(g, what="digits")
        cli.add_r1_arg(g, what="digits", default=None, default_help=per_arch_help(PER_ARCH["r1"]))
    g.add_argument("--num-samples", type=cli.positive_int, default=10000, help="samples written to samples.npy at the end")
    g.add_argument("--eval-samples", type=eval_count, default=2000,
                   help="samples the MNIST judge scores after each epoch, into metrics.csv (0: off, else at least 2)")
    g.add_argument("--no-judge", action="store_true", help="skip the MNIST judge's metrics")
    s = p.add_argument_group("sampling from a trained run (no training)")
    s.add_argument("--sample", metavar="RUN", default=None,
                   help=cli.SAMPLE_HELP.format(default=f"runs/{name}") + "; best is the best Frechet distance")
    s.add_argument("--n", type=cli.positive_int, default=100 if conditional else 64,
                   help="with --sample: number of samples" + (" (one row per digit, n // 10 columns)" if conditional else ""))
    s.add_argument("--raw", action="store_true", help="with --sample: draw from G as trained, not from its average (--ema)")
    return p


eval_count = cli.checked(int, lambda v: v == 0 or v >= 2, "0 (off) or an integer >= 2")


def to_device(batch):
    """uint8 (N, 28, 28) [and labels] on the host -> float32 (N, 1, 28, 28) in [-1, 1] [and int64 labels] on the device."""
    x = backend.to_device(batch[0])
    x = tensor(x.astype(backend.DEFAULT_DTYPE).reshape(x.shape[0], 1, 28, 28) * (2 / 255) - 1)
    if len(batch) == 1:
        return (x,)
    return x, backend.to_device(batch[1].astype(np.int64))


def build(args, conditional=False, train_size=60000, num_fixed=None):
    """The GANTrainer of the flags; ``num_fixed``: the grid's fixed noise (default 64, the cGAN 100)."""
    settle_defaults(args, conditional)
    classes = NUM_CLASSES if conditional else None
    pack = getattr(args, "pack", 1)  # PacGAN: D sees `pack` digits as the channels of one input
    if args.arch == "mlp":
        G = MLPGenerator(args.latent_dim, args.g_hidden, (1, 28, 28), num_classes=classes,
                         batch_norm=args.batch_norm)
        D = MLPDiscriminator((pack, 28, 28), args.d_hidden, num_classes=classes, dropout=args.dropout,
                             minibatch_kernels=args.minibatch_kernels)
    else:
        G = DCGANGenerator(args.latent_dim, args.filters, num_classes=classes)
        D = DCGANDiscriminator(args.filters, channels=pack, num_classes=classes, minibatch_kernels=args.minibatch_kernels,
                               batch_norm=getattr(args, "d_batch_norm", True))
    return GANTrainer(G, D, loss=args.loss, k=args.k, lr=args.lr, betas=(args.beta1, 0.999),
                      conditional=conditional, num_classes=NUM_CLASSES, image_range=(-1.0, 1.0),
                      num_fixed=num_fixed or (100 if conditional else 64), ema=args.ema or None, pack=pack,
                      lr_decay_steps=cli.decay_steps(args, train_size, args.k * args.batch_size),
                      reuse_fakes=args.reuse_fakes, r1=getattr(args, "r1", 0.0),
                      r1_every=getattr(args, "r1_every", 1))


def sample_from_run(args, conditional, given=()):
    """--sample RUN: a grid of samples from RUN's generator (its average, unless --raw), samples.png in
    --out or RUN; the grid is laid out as the training's (the cGAN: one row per digit, one z per column)."""
    example = "cgan_mnist" if conditional else "gan_mnist"
    run, ckpt, saved = cli.sample_source(args.sample, example, f"runs/{example}")
    restored = {**INTRODUCED, **saved}
    for name in RUN_OWN + ("epochs",):
        if name in restored:
            setattr(args, name, restored[name])
    backend.seed(args.seed)  # the grid's noise: drawn when the trainer is built
    trainer, step, which = cli.sampling_trainer(run, ckpt, args, lambda a: build(a, conditional, num_fixed=a.n))
    images = trainer.sample_fixed()
    dest = Path(args.out) if "out" in given else run
    dest.mkdir(parents=True, exist_ok=True)
    save_grid(dest / "samples.png", images, nrow=trainer.fixed_nrow, scale=2)
    print(f"wrote {dest / 'samples.png'} ({len(images)} samples of {which}, from step {step:,} of {run / ckpt})")


def describe(scores):
    """One line for a person: the judge's scores."""
    hist = " ".join(f"{d}:{p:.1%}" for d, p in enumerate(scores["histogram"]))
    line = (f"class entropy {scores['entropy']:.3f} nats (uniform: {np.log(NUM_CLASSES):.3f}), "
            f"Frechet distance {scores['fd']:.2f}; histogram {hist}")
    if "accuracy" in scores:
        line = f"label accuracy {scores['accuracy']:.1%}; " + line
    return line


def judge_hook(trainer, judge, n, seed):
    """After each epoch: score n samples (from a fixed seed) and append a row to metrics.csv; the
    collapse watch follows the Frechet distance and the class entropy (a fall of 0.1 nats warns)."""
    watch = CollapseWatch("Frechet distance", "class entropy", drop=0.1, say=lambda line: tqdm.write(line, file=sys.stderr))

    def hook(epoch, out):
        fake = trainer.generate(n, seed=seed)
        scores = judge.evaluate(fake["samples"], fake.get("labels"))
        row = {"epoch": epoch + 1, "entropy": scores["entropy"], "fd": scores["fd"],
               "accuracy": scores.get("accuracy")}
        row.update((f"p{d}", p) for d, p in enumerate(scores["histogram"]))
        write_epoch_row(Path(out) / "metrics.csv", row)   # one row per epoch, even when a resume redoes it
        tqdm.write(f"epoch {epoch + 1} ({n} samples): {describe(scores)}", file=sys.stderr)
        watch(epoch + 1, out, scores["fd"], scores["entropy"])
    return hook


def main(argv=None, conditional=False, doc=__doc__):
    p = build_parser(conditional, doc)
    args, given = cli.parse_args(p, argv)
    started = time.perf_counter()

    with cli.friendly_errors(DataError, CheckpointError):
        if args.sample:
            cli.use_backend(args.backend, args.device)
            return sample_from_run(args, conditional, given)
        args = cli.prepare_run(args, given, example="cgan_mnist" if conditional else "gan_mnist", run_own=RUN_OWN,
                               introduced=INTRODUCED)
        settle_defaults(args, conditional)
        if not conditional:
            cli.check_pack(args, what="digits")
            if args.r1 and args.minibatch_kernels:
                cli.fail(f"--r1 {args.r1:g} does not go with --minibatch-kernels {args.minibatch_kernels}: R1's "
                         "penalty builds D's input gradient, and minibatch discrimination is not piecewise linear"
                         + ("" if "r1" in given else f" (R1 is on by default for --arch {args.arch}: --r1 0 turns it off)"))
        cli.use_backend(args.backend, args.device)
        threads = cli.threads_for(args)
        images, labels = load_mnist(args.data, "train", progress=not args.no_progress)
        judge = None if args.no_judge else mnist_judge.get_judge(args.data, progress=not args.no_progress)
        backend.seed(args.seed)
        trainer = cli.replicated(lambda: build(args, conditional, train_size=len(images)), threads)
        config = cli.loop_config(args, batch_size=args.k * args.batch_size, num_samples=args.num_samples,
                                 extra=dict(vars(args), conditional=conditional))
        hooks = [grid_hook(trainer, scale=2, nrow=trainer.fixed_nrow)]
        if judge is not None and args.eval_samples:
            hooks.append(judge_hook(trainer, judge, args.eval_samples, seed=args.seed + 1000))
        data = (images, labels) if conditional else (images,)
        out = fit(trainer, data, config, to_device, epoch_hooks=hooks)
        minutes = (time.perf_counter() - started) / 60

        if not distributed.is_main():
            return  # under mpiexec, what follows training is rank 0's
        if judge is not None:
            samples = np.load(out / "samples.npy")
            sample_labels = np.load(out / "labels.npy") if conditional else None
            scores = judge.evaluate(samples, sample_labels)
            print(f"{len(samples)} samples: {describe(scores)}")
            if conditional:
                print("label accuracy per digit: "
                      + ", ".join(f"{d}: {a:.1%}" for d, a in enumerate(scores["per_class_accuracy"])))
            summary = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in scores.items()}
            summary.update(num_samples=len(samples), judge_test_accuracy=judge.test_accuracy,
                           judge_version=mnist_judge.JUDGE_VERSION, minutes=minutes)
            with atomic_write(out / "metrics.json") as fh:
                fh.write(json.dumps(summary, indent=2).encode())
    print(f"done in {minutes:.1f} min: {out}", file=sys.stderr)

