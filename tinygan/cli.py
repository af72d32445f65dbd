"""Command-line plumbing shared by the examples: the common flags, the backend switch, errors.

Every example takes ``--backend --data --epochs --batch-size --lr --seed
--out --resume`` with the same meaning, and reports a user's mistake (a
missing GPU, an unreachable download, a corrupt file) in one line and a
non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from . import backend


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each flag's default (when it has one) and keeps the description's line breaks."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parser(description, epilog=None):
    return argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=Formatter)


def add_common_args(p, *, epochs, batch_size, lr, out, data_help, out_help=None):
    g = p.add_argument_group("common to every example")
    g.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array backend: numpy (CPU) or cupy (NVIDIA GPU; pip install 'tinygan[cuda12]')")
    g.add_argument("--data", metavar="PATH", default=None, help=data_help)
    g.add_argument("--epochs", type=int, default=epochs, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=batch_size, help="examples per step")
    g.add_argument("--lr", type=float, default=lr, help="Adam learning rate of both networks")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, noise and data order")
    g.add_argument("--out", metavar="DIR", default=out,
                   help="run folder for logs, grids, samples and checkpoint.npz" + ("" if out else f" (default: {out_help})"))
    g.add_argument("--resume", metavar="DIR", nargs="?", const=True, default=None,
                   help="continue the run in DIR (or in --out) from its checkpoint.npz, with its saved settings")
    g.add_argument("--log-every", type=int, default=50, help="steps between copies of the metrics to the host (log.csv rows are per step)")
    g.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (also at every epoch's end and on Ctrl-C)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total (for quick looks)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return g


def positive(p, args, *names):
    for name in names:
        value = getattr(args, name.replace("-", "_"))
        if value is not None and value <= 0:
            p.error(f"--{name} must be positive, got {value}")


def resolve_resume(parser, args, fixed):
    """For --resume: find the run folder and take the run's saved settings from its config.json.

    Flags in ``fixed`` (those that define the model and the data) always come
    from the saved run; every other flag comes from the saved run unless it
    was given on this command line (a value different from its default), so
    ``--resume DIR --epochs 30`` extends a run and ``--resume DIR`` alone
    continues it exactly as it was started.
    """
    if args.resume is None:
        return args
    out = Path(args.out if args.resume is True else args.resume)
    config = out / "config.json"
    if not config.exists():
        fail(f"--resume: {out} has no config.json; is it a run folder?")
    saved = json.loads(config.read_text())["extra"]
    for name, value in saved.items():
        if name in ("resume", "out") or not hasattr(args, name):
            continue
        if name in fixed or getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)
    args.out = str(out)
    return args


def use_backend(name):
    """Switch the backend, or print one line saying what is missing and exit with status 2."""
    try:
        backend.use(name)
    except backend.BackendError as e:
        fail(str(e))


def fail(message, status=2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


@contextlib.contextmanager
def friendly_errors(*kinds):
    """Turn the library's user-facing errors into one line and a non-zero exit."""
    try:
        yield
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except kinds as e:
        fail(str(e))
