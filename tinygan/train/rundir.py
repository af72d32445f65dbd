"""Run folders: what one holds, and the rules that keep a run from ever being lost.

A run folder (``--out``) holds one run: ``config.json``, ``log.csv``,
``checkpoint.npz`` and the pictures and tables the hooks write. The rules:

* a folder that already holds a run is never reused silently: starting a new
  run there is refused with one line that says how to continue it
  (``--resume``) or start over (``--overwrite``);
* ``--overwrite`` keeps the old run whole: the folder is renamed to
  ``<name>.old-<N>`` with an ``N`` never used before, and only then is a fresh
  folder made;
* leftovers of writes that were cut short (``.<name>.<random>.tmp``, see
  :func:`tinygan.files.atomic_write`) are removed when a run starts or
  resumes.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per run folder is then the user's care
    fcntl = None

from ..files import atomic_write
from .checkpoint import CheckpointError, load_checkpoint
from .errors import RunFolderError

CHECKPOINT = "checkpoint.npz"
LOG = "log.csv"
CONFIG = "config.json"
#: Files whose presence means a folder holds (the start of) a run.
RUN_FILES = (CHECKPOINT, LOG, CONFIG)
#: The number of epochs whose hooks have all run, written after they have.
HOOKS_DONE = "epoch_hooks.json"
_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # atomic_write's temporary names
_OLD = re.compile(r"\.old-(\d+)$")


@dataclass
class RunInfo:
    """What a run folder holds: ``step`` is None when it has no readable checkpoint."""
    path: Path
    step: int | None
    files: tuple

    def describe(self):
        if self.step is not None:
            return f"a run at step {self.step:,}"
        return f"the start of a run ({', '.join(self.files)}; no checkpoint yet)"


def run_info(out):
    """The run held in ``out``, or None when ``out`` is missing, empty of run files, or not a folder."""
    out = Path(out)
    if not out.is_dir():
        return None
    files = tuple(name for name in RUN_FILES if (out / name).exists())
    if not files:
        return None
    step = None
    if CHECKPOINT in files:
        try:
            step = int(load_checkpoint(out / CHECKPOINT)[1]["step"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            step = None
    return RunInfo(out, step, files)


def check_out_folder(out):
    """Refuse an ``out`` that exists but is not a folder (a file, a broken link)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; expected a folder for the run (or a path that does not exist yet)")


def check_new_run(out, overwrite=False):
    """Before any work: may a new run start in ``out``? Raises RunFolderError naming what is there."""
    check_out_folder(out)
    info = run_info(out)
    if info is not None and not overwrite:
        how = ("continue it with --resume, or pass --overwrite to start over"
               if info.step is not None else
               "pass --overwrite to start over (the old files are kept aside)")
        raise RunFolderError(f"{out} already holds {info.describe()}; {how}")
    return info


def check_resumable(out):
    """Before any work: does ``out`` hold a run that --resume can continue? Returns its RunInfo."""
    check_out_folder(out)
    info = run_info(out)
    if info is None:
        raise RunFolderError(f"--resume: {out} holds no run (no {CONFIG} or {CHECKPOINT}); "
                             "start without --resume to begin one")
    if CHECKPOINT not in info.files:
        raise RunFolderError(f"--resume: {out} has no {CHECKPOINT} yet (the run stopped before its first "
                             "checkpoint); pass --overwrite instead of --resume to start over")
    if info.step is None:
        raise RunFolderError(f"--resume: {out / CHECKPOINT} cannot be read: "
                             f"{_checkpoint_problem(out / CHECKPOINT)}")
    return info


def _checkpoint_problem(path):
    try:
        load_checkpoint(path)[1]["step"]
    except CheckpointError as e:
        return str(e)
    except (KeyError, TypeError, ValueError):
        return "it has no step number (was it written by tinygan's training loop?)"
    return "unknown problem"


def move_aside(out):
    """Rename the folder ``out`` to ``out.old-N`` (N one above any used before) and return the new path."""
    out = Path(out)
    used = [int(m.group(1)) for p in out.parent.glob(f"{out.name}.old-*") if (m := _OLD.search(p.name))]
    target = out.with_name(f"{out.name}.old-{max(used, default=0) + 1}")
    os.rename(out, target)  # never replaces: target does not exist
    return target


def remove_stale_temp_files(out):
    """Delete temporary files left by writes that were cut short (a kill during a checkpoint, say)."""
    removed = []
    for p in Path(out).iterdir():
        if p.is_file() and _TEMP.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def read_config(out):
    """The ``config.json`` of a run folder, or RunFolderError with one line saying what is wrong."""
    path = Path(out) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{out} has no {CONFIG}; is it a run folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} is not readable JSON ({e}); the run's settings are lost, "
                             f"but its {CHECKPOINT} is untouched") from None
    if not isinstance(config, dict) or not isinstance(config.get("extra"), dict):
        raise RunFolderError(f"{path} has no 'extra' settings object; was it written by a tinygan example?")
    return config


class RunLock:
    """One training process per run folder: an exclusive ``flock`` on ``<out>/.lock`` while it trains."""

    def __init__(self, out):
        self.out, self.fd = Path(out), None

    def claim(self):
        """Check the folder and lock it if it exists (a new run locks it once it is made: acquire())."""
        check_out_folder(self.out)
        if self.out.is_dir():
            self.acquire()
        return self

    def __enter__(self):
        return self.claim()

    def acquire(self):
        if fcntl is None or self.fd is not None:
            return
        self.fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise RunFolderError(f"{self.out} is in use by another training process right now; "
                                 "wait for it to finish, or choose another --out") from None

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __exit__(self, *exc):
        self.release()


def read_hooks_done(out, default):
    try:
        return int(json.loads((out / HOOKS_DONE).read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return default  # a run from before this file existed: its hooks ran


def write_hooks_done(out, epochs):
    with atomic_write(out / HOOKS_DONE) as fh:
        fh.write(json.dumps({"epochs": epochs}).encode())
