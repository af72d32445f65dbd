"""Command-line plumbing shared by the examples: the common flags, checked values, resume, errors.

Every example takes ``--backend --device --data --epochs --batch-size --lr
--seed --out --resume --overwrite`` with the same meaning, checks every flag
before any work starts (data loading, judge training, the first step), and
reports a user's mistake (a bad flag, a missing GPU, an unreachable download,
a corrupt file, a full disk) in one line and exit status 2, never a traceback.
Set ``TINYGAN_DEBUG=1`` to see the traceback behind such a line.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import sys
import warnings
from pathlib import Path

from .. import backend, distributed
from ..train.errors import RunFolderError, RunInterrupted, TrainingError
from ..train.rundir import check_new_run, check_resumable, read_config

#: Flags that say how long to train and how often to log, save and sample: on --resume the
#: command line's value wins when given, else the run's saved one.
HOW_LONG = ("epochs", "max_steps")
#: Never taken from a saved run: they say where and how this command runs, not what the run is.
NOT_SAVED = ("resume", "out", "overwrite", "example", "sample")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line (argparse prints the usage block too)."""

    def error(self, message):
        fail(f"{message} (see --help)")


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each flag's default (when it has one) and keeps the description's line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:  # not `in (None, False)`: 0 == False
            return action.help
        return super()._get_help_string(action)


def parser(description, epilog=None):
    return Parser(description=description, epilog=epilog, formatter_class=Formatter)


# --------------------------------------------------------------------------
# Checked values: argparse calls these, so a bad value is refused while parsing
# --------------------------------------------------------------------------

def checked(kind, ok, expected):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    convert.__name__ = expected
    return convert


positive_int = checked(int, lambda v: v > 0, "a positive integer")
count = checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
nonnegative_float = checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
unit_interval = checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
probability = checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
ema_decay = checked(float, lambda v: v == 0 or 0 < v < 1, "0 (off) or a decay in (0, 1), such as 0.999")
threads_count = checked(lambda t: t if t == "auto" else int(t), lambda v: v == "auto" or v > 0,
                        "auto or a positive integer")


def add_common_args(p, *, epochs, batch_size, lr, out, data_help, out_help=None, batch_size_help=None,
                    lr_help="Adam learning rate of both networks", ema=None, threads=None, epochs_help=None):
    """The flags every example shares. ``out_help``, ``batch_size_help`` and ``epochs_help`` describe a
    default that is computed (None here), instead of argparse's "(default: None)"."""
    g = p.add_argument_group("common to every example")
    g.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array backend: numpy (CPU) or cupy (NVIDIA GPU; pip install 'tinygan[cuda12]')")
    g.add_argument("--device", type=count, default=None, metavar="N",
                   help="with --backend cupy: the GPU to use, counted among those CUDA_VISIBLE_DEVICES shows (default 0)")
    g.add_argument("--data", metavar="PATH", default=None, help=data_help)
    g.add_argument("--epochs", type=positive_int, default=epochs,
                   help="passes over the training set" + (f" (default: {epochs_help})" if epochs_help else ""))
    g.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help="examples per step" + (f" (default: {batch_size_help})" if batch_size_help else ""))
    g.add_argument("--lr", type=positive_float, default=lr, help=lr_help)
    g.add_argument("--seed", type=count, default=0, help="seed of initialisation, noise and data order")
    if ema is not None:  # the GAN examples' default decay; the classifier has no generator
        g.add_argument("--ema", type=ema_decay, default=ema, metavar="DECAY",
                       help="decay of the moving average of G's parameters (generator averaging) that grids, "
                            "samples and metrics are drawn from; 0: off, draw from G as trained")
    g.add_argument("--out", metavar="DIR", default=out,
                   help="run folder for logs, grids, samples and checkpoint.npz" + ("" if out else f" (default: {out_help})"))
    g.add_argument("--resume", metavar="DIR", nargs="?", const=True, default=None,
                   help="continue the run in DIR (or in --out) from its checkpoint.npz, with its saved settings; "
                        "--epochs, --max-steps and the intervals may be given again")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in a folder that holds one: the old run is first moved aside to DIR.old-N")
    g.add_argument("--log-every", type=positive_int, default=50,
                   help="steps between copies of the metrics to the host (log.csv rows are per step)")
    g.add_argument("--checkpoint-every", type=positive_int, default=1000,
                   help="steps between checkpoints (also at every epoch's end and on Ctrl-C)")
    g.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many steps in total (for quick looks)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    if threads is not None:  # the GAN examples' default (see replicated)
        g.add_argument("--threads", type=threads_count, default=threads, metavar="N",
                       help="numpy backend: train data-parallel over N threads of this process, a replica of the "
                            "networks on each (with one BLAS thread) and 1/N of each batch, as mpiexec -n N would "
                            "without MPI; auto: one per core (the cores BLAS is given: OPENBLAS_NUM_THREADS or "
                            "OMP_NUM_THREADS, else all) when they split the batch, else 1; 1: one network, whose "
                            "matrix products use every core through BLAS")
    return g


def threads_for(args):
    """The number of data-parallel threads ``--threads`` asks for, resolved and checked (after the
    backend is chosen, before any data is loaded): one clear line when it cannot be."""
    asked = getattr(args, "threads", 1)
    if backend.current() != "numpy" or distributed.enabled():
        if asked not in ("auto", 1):
            fail(f"--threads {asked}: data parallelism over threads runs on the numpy backend in one process; "
                 + ("under mpiexec give each process one thread" if distributed.enabled() else
                    "one process drives one GPU (several GPUs: mpiexec)"))
        return 1
    if asked == "auto":  # BEGAN 64x64 on 2 cores: 1.9x (README, "Every core of one CPU"); MLPs gain nothing
        cores = backend.cpu_workers(backend.xp())
        return cores if cores > 1 and args.batch_size % cores == 0 else 1
    try:  # (a step of k minibatches splits each of them)
        distributed.threads.check_split(args.batch_size, asked)
    except distributed.DistributedError as e:
        fail(str(e))
    return asked


def replicated(make, threads):
    """``make()``, or with ``threads`` > 1 (from :func:`threads_for`) that many replicas of it trained
    data-parallel over the threads of this process (tinygan.distributed.Replicated)."""
    return make() if threads == 1 else distributed.Replicated(make, threads)


# --------------------------------------------------------------------------
# Parsing, resume, the run folder: all before any work
# --------------------------------------------------------------------------

_UNSET = object()


def parse_args(p, argv=None):
    """Parse ``argv``; returns ``(args, given)`` where ``given`` holds the flags the command line named.

    argparse fills in a default only for attributes its namespace lacks, so a
    second parse into a namespace pre-filled with a marker shows which flags
    were given, even when given with their default value.
    """
    warnings.formatwarning = _one_line_warning
    args = p.parse_args(argv)
    probe = argparse.Namespace(**{name: _UNSET for name in vars(args)})
    p.parse_args(argv, namespace=probe)
    return args, {name for name, value in vars(probe).items() if value is not _UNSET}


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


LR_DECAY_HELP = ("linear: both learning rates fall linearly to 0 over the run (--epochs long), which "
                 "sharpens the samples at the end; none: constant")
LINEAR_DECAY_REASON = "it sets the length of this run's linear lr decay (--lr-decay none runs can be extended)"


def add_lr_decay_arg(group, default):
    """--lr-decay {none, linear}: a run's own setting; with linear, prepare_run makes --epochs its own too."""
    group.add_argument("--lr-decay", choices=("none", "linear"), default=default, help=LR_DECAY_HELP)


def add_pack_arg(group, what="samples", default=1, default_help=None):
    """--pack M: PacGAN's packing (GANTrainer(pack=M)), a run's own setting. ``default_help`` describes
    a default the example computes (``default`` None)."""
    group.add_argument("--pack", type=positive_int, default=default,
                       help=f"PacGAN (Lin et al. 2018): D judges this many {what} at once, all real or all fake "
                            "(1: the plain GAN); the batch size must divide by it"
                            + (f" (default: {default_help})" if default_help else ""))


def add_r1_arg(group, what="samples", default=0.0, default_help=None):
    """--r1 GAMMA, --r1-every N: R1's gradient penalty on D (GANTrainer(r1=GAMMA, r1_every=N)), a run's own
    settings. ``default_help`` describes a default the example computes (``default`` None)."""
    group.add_argument("--r1", type=nonnegative_float, default=default, metavar="GAMMA",
                       help=f"R1 gradient penalty (Mescheder et al. 2018): D's loss gets GAMMA/2 times the mean squared "
                            f"norm of its gradient at the real {what}, which keeps D flat on the data (0: none; "
                            f"not with minibatch discrimination)" + (f" (default: {default_help})" if default_help else ""))
    group.add_argument("--r1-every", type=positive_int, default=4, metavar="N",
                       help="lazy R1 (StyleGAN2): the penalty, weighted by N, joins every N-th D update only, "
                            "at about 1/N of its cost")


def check_pack(args, what="samples"):
    """One line, before any work, when a batch does not hold whole packs."""
    if args.batch_size % args.pack:
        fail(f"--batch-size {args.batch_size} does not divide by --pack {args.pack}: D judges "
             f"{args.pack} {what} at once, so each batch must hold whole packs")


def per_choice_help(table, label):
    """'1e-3 for the ring, 5e-4 for the grid' from {choice: value}; ``label`` formats a choice."""
    return ", ".join(f"{v:g} for {label.format(k)}" for k, v in sorted(table.items()))


def fill_per_choice(args, tables, choice):
    """Each flag of ``tables`` ({flag: {choice: value}}) still None gets its value for ``choice``: defaults
    that depend on another flag (--mixture, --arch), filled in after prepare_run so a resumed run keeps its own."""
    for name, table in tables.items():
        if getattr(args, name) is None:
            setattr(args, name, table[choice])
    return args


def decay_steps(args, train_size, examples_per_step):
    """GANTrainer's lr_decay_steps for --lr-decay: the run's steps (--epochs of whole batches), or None."""
    if args.lr_decay != "linear":
        return None
    return args.epochs * (train_size // examples_per_step)


def prepare_run(args, given, *, example, run_own, default_out=None, reasons=None, introduced=None):
    """Settle the run folder and the settings before any work starts.

    A new run: ``--out`` (or ``default_out(args)``) must not hold a run unless
    ``--overwrite`` is given. ``--resume``: the folder must hold a run of this
    ``example`` with a checkpoint; flags in ``run_own`` (those that fix the
    architecture and the data) are the run's own, and giving one with another
    value is an error naming the flag, the saved value and the given one. Every
    other saved flag is restored unless the command line gives it again
    (``--epochs``/``--max-steps`` go together: naming either says how long).
    Prints the flags that change. ``reasons`` may say, per flag, why it is the
    run's own. When ``lr_decay`` is in ``run_own`` and the run decays linearly,
    ``epochs`` is its own too (the decay's length). ``introduced`` maps a flag
    added in a later version to the value that runs saved before it had (a
    resumed old run keeps training as it did).
    Returns ``args``.
    """
    reasons = reasons or {}
    args.example = example
    try:
        if args.resume is not None and args.overwrite:
            fail("--resume and --overwrite contradict each other: continue the run, or start it over")
        if args.resume is None:
            if args.batch_size is not None:  # (an example may compute its default later; fit checks again)
                distributed.check_divisible(args.batch_size)
            args.out = args.out or default_out(args)
            check_new_run(args.out, overwrite=args.overwrite)
            return args
        out = Path(args.out or default_out(args)) if args.resume is True else Path(args.resume)
        check_resumable(out)
        saved = read_config(out)["extra"]
        if saved.get("example", example) != example:
            fail(f"--resume: {out} holds a run of {saved['example']}, not of {example}; "
                 f"continue it with examples/{saved['example']}.py")
        saved = {**(introduced or {}), **saved}
        if "lr_decay" in run_own and saved.get("lr_decay") == "linear":
            run_own = tuple(run_own) + ("epochs",)  # --epochs is the length of the decay
            reasons = {"epochs": LINEAR_DECAY_REASON, **reasons}
        missing = [name for name in run_own if name not in saved]
        if missing:
            fail(f"--resume: {out / 'config.json'} lacks the setting {missing[0]!r} of this run; "
                 "it was not written by this example (or was edited)")
        for name in run_own:
            if name in given and not _same(name, getattr(args, name), saved[name]):
                why = reasons.get(name, "it fixes the model, its training or the data")
                fail(f"--resume: {_flag(name)} is {_show(saved[name])} in the run {out}, got {_show(getattr(args, name))}; "
                     f"{why}, so it cannot change on resume (start a new run with another --out)")
        length_given = bool(given & set(HOW_LONG))
        for name, value in saved.items():
            if name in NOT_SAVED or not hasattr(args, name):
                continue
            if name in given:
                if not _same(name, getattr(args, name), value):
                    print(f"resume: {_flag(name)} {_show(getattr(args, name))} (the run had {_show(value)})",
                          file=sys.stderr)
                continue
            # the command line says how long, so a saved --max-steps must not cut it short; but a linear
            # decay's --epochs is the run's own (the decay's length): it is restored, never defaulted
            if name in HOW_LONG and length_given and name not in run_own:
                continue
            setattr(args, name, value)
        args.out = str(out)
        if args.batch_size is not None:
            distributed.check_divisible(args.batch_size, resume=True)
        return args
    except (RunFolderError, distributed.DistributedError) as e:
        fail(str(e))


def _same(name, a, b):
    if name == "data" and a is not None and b is not None:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def _flag(name):
    return "--" + name.replace("_", "-")


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "unset" if value is None else str(value)


def saved_run(run, example):
    """For ``--sample RUN``: RUN's saved settings, checked to be a run of ``example``."""
    try:
        saved = read_config(run)["extra"]
    except RunFolderError as e:
        fail(f"--sample: {e}")
    if saved.get("example", example) != example:
        fail(f"--sample: {run} holds a run of {saved['example']}, not of {example}")
    return saved


SAMPLE_HELP = ("load RUN's last checkpoint (RUN/checkpoint.npz) and write samples.png (into --out if given, "
               "else into RUN); RUN/best.npz draws from the epoch the collapse watch scored best instead, and "
               "the word best from the best epoch of the default run folder ({default})")


def sample_source(spec, example, default_run):
    """--sample SPEC: (run folder, checkpoint file name, the run's saved settings).

    SPEC is a run folder (its last checkpoint, ``checkpoint.npz``), ``RUN/best.npz`` (the epoch
    the collapse watch scored best) or the word ``best``: ``default_run``'s best.npz (a folder
    named best, where one exists, is taken as a folder).
    """
    path = Path(spec)
    if spec == "best" and not path.is_dir():
        run, ckpt = Path(default_run), "best.npz"
    elif path.suffix == ".npz":
        run, ckpt = path.parent, path.name
    else:
        run, ckpt = path, "checkpoint.npz"
    saved = saved_run(run, example)
    if not (run / ckpt).is_file():
        why = " (the collapse watch writes it after the first epoch it scores)" if ckpt == "best.npz" else ""
        fail(f"--sample: {run} has no {ckpt}{why}")
    return run, ckpt, saved


def sampling_trainer(run, ckpt, args, build):
    """The trainer of ``run``'s checkpoint ``ckpt`` for --sample: ``build(args)`` with the run's
    average of G (if it kept one, ``args.ema`` is set to its decay), G's weights and the average
    loaded; ``args.raw`` samples G as trained. Returns (trainer, step, which G the samples are of)."""
    from ..train import load_checkpoint, unflatten_state
    arrays, meta = load_checkpoint(run / ckpt)
    state = unflatten_state(arrays, meta["trainer"], "trainer/")
    args.ema = state["ema"]["decay"] if "ema" in state else 0
    trainer = build(args)
    trainer.G.load_state_dict(state["G"])
    if trainer.ema is not None:
        trainer.ema.load_state_dict(state["ema"])
        trainer.raw_samples = args.raw
    which = "G as trained" if trainer.ema is None or args.raw else f"the averaged G (decay {trainer.ema.decay})"
    return trainer, meta["step"], which


def loop_config(args, **overrides):
    """The shared loop's LoopConfig from the common flags (the example's own flags go into ``extra``)."""
    from ..train import LoopConfig
    values = dict(out=args.out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                  log_every=args.log_every, checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
                  resume=args.resume is not None, overwrite=args.overwrite, progress=not args.no_progress,
                  extra=dict(vars(args)))
    values.update(overrides)
    return LoopConfig(**values)


def use_backend(name, device=None, cpu_command=None):
    """Switch the backend, or print one line saying what is missing and exit with status 2.

    ``cpu_command`` is the example's CPU-sized command, offered when no GPU answers (the GPU
    command's settings would take weeks on a CPU).
    """
    try:
        if distributed.enabled() and name == "cupy":
            if device is not None:
                fail(f"--device {device}: under mpiexec each rank takes GPU local rank % GPUs; leave --device "
                     "out (or give each rank its GPUs with CUDA_VISIBLE_DEVICES)")
            backend.use(name)
            device = distributed.gpu_for_rank(backend.xp().cuda.runtime.getDeviceCount())
        if device is None:
            backend.use(name)
        else:
            backend.use(name, device=device)
    except backend.BackendError as e:
        fail(str(e) + (f"; without a GPU, try a CPU-sized run: {cpu_command}" if cpu_command and name == "cupy" else ""))


def fail(message, status=2):
    """Print ``error: message`` and exit with ``status``; under mpiexec, end every rank (rank 0 prints
    the line, naming the rank it came from when another rank failed)."""
    distributed.stop(message, status)


def describe_os_error(e):
    """One line for a failed file operation that names the file and the cause."""
    reasons = {errno.ENOSPC: "no space left on the device (free some space, or choose another --out)",
               errno.EDQUOT: "disk quota exceeded (free some space, or choose another --out)",
               errno.EACCES: "permission denied (choose another --out, or TINYGAN_CACHE=DIR for the cache)",
               errno.EPERM: "operation not permitted (choose another --out, or TINYGAN_CACHE=DIR for the cache)",
               errno.EROFS: "read-only file system (choose another --out, or TINYGAN_CACHE=DIR for the cache)",
               errno.EEXIST: "it already exists",
               errno.ENOTDIR: "a part of the path is a file, not a folder",
               errno.EISDIR: "it is a folder, expected a file"}
    reason = reasons.get(e.errno, e.strerror or str(e))
    path = e.filename if e.filename is not None else ""
    if e.filename2:
        path = f"{path} -> {e.filename2}"
    return f"{path}: {reason}" if path else reason


@contextlib.contextmanager
def friendly_errors(*kinds):
    """Turn the library's user-facing errors into one line and a non-zero exit.

    Ctrl-C exits with status 130: after the loop has said where it saved
    (``RunInterrupted``) without another word, elsewhere with one line.
    """
    try:
        yield
    except RunInterrupted:
        distributed.end(130)  # rank 0 has saved: the other ranks end with it
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        distributed.end(130)
    except (RunFolderError, TrainingError, distributed.DistributedError, *kinds) as e:
        if os.environ.get("TINYGAN_DEBUG"):
            raise
        fail(describe_os_error(e) if isinstance(e, OSError) and e.errno is not None else str(e))
    except OSError as e:
        if os.environ.get("TINYGAN_DEBUG"):
            raise
        fail(describe_os_error(e))
