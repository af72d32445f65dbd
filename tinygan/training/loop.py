"""The one training loop every example shares: epochs, logging, checkpoints, resume.

A *trainer* (``GANTrainer``, ``BEGANTrainer``, or a user's own) owns the
networks and does the math of one step. This loop owns everything around it:

* the data order: each epoch is a permutation drawn from ``(seed, epoch)``, so
  a resumed run sees exactly the batches a straight run would;
* metrics: ``trainer.step(batch)`` returns 0-d *device* arrays. They are kept
  on the device and copied to the host in one transfer every ``log_every``
  steps (or when the trainer asks, ``trainer.needs_host(step)``), then written
  as one CSV row per step to ``log.csv``;
* a tqdm progress bar with the epoch, step and the trainer's headline metrics;
* ``checkpoint.npz``: every ``checkpoint_every`` steps, at each epoch's end, on
  Ctrl-C and at the end, written atomically; ``resume=True`` continues from it
  with identical results on the NumPy backend;
* a NaN or Inf in a logged metric stops the run with the step named; the last
  good checkpoint is left as it was;
* per-epoch hooks (sample grids, curves, metrics) and ``samples.npy`` at the end.

The trainer interface (duck-typed):

    name, headline (metric names for the progress bar), curve_panels (for curves.png)
    step(batch) -> dict of 0-d device arrays (and plain Python numbers)
    state_dict() -> nested dict of arrays and JSON values;  load_state_dict(state)
    generate(n) -> dict name -> host array (e.g. {"samples": ...})
    sample_fixed() -> host NCHW images in [0, 1] from the fixed noise (for grid_hook)
    needs_host(step) -> bool;  on_host_metrics(rows)  (optional)
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field, asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import backend
from ..checkpoint import load_checkpoint, save_checkpoint, atomic_write, CheckpointError
from ..images import save_grid
from ..runlog import CSVLog, plot_curves

CHECKPOINT = "checkpoint.npz"
LOG = "log.csv"
CURVES = "curves.png"


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN in a loss, a checkpoint that does not fit)."""


@dataclass
class LoopConfig:
    """Settings of the shared loop; the examples fill it from their command line."""
    out: str
    epochs: int = 1
    batch_size: int = 64
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    num_samples: int = 0
    max_steps: int | None = None   # stop (and checkpoint) after this global step: for tests and quick looks
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)  # the example's own flags, saved in config.json


def flatten_state(state, prefix=""):
    """Split a nested state dict into (name -> host array, JSON-able rest), for one .npz checkpoint."""
    arrays, meta = {}, {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            sub_arrays, sub_meta = flatten_state(value, name + "/")
            arrays.update(sub_arrays)
            meta[str(key)] = sub_meta
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            arrays[name] = backend.to_host(value)
        else:
            meta[str(key)] = value
    return arrays, meta


def unflatten_state(arrays, meta, prefix=""):
    """Inverse of :func:`flatten_state`."""
    state = {}
    for key, value in meta.items():
        state[key] = unflatten_state(arrays, value, f"{prefix}{key}/") if isinstance(value, dict) else value
    for name, value in arrays.items():
        if name.startswith(prefix) and "/" not in name[len(prefix):]:
            state[name[len(prefix):]] = value
    return state


def batch_order(seed, epoch, n):
    """The permutation of the data used in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class _Interrupt:
    """Turns the first Ctrl-C into a flag checked between steps, so a checkpoint is never half a step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def grid_hook(trainer, scale=1, nrow=None, every_steps=False):
    """A hook writing ``trainer.sample_fixed()`` (fixed noise, host NCHW in [0, 1]) as a PNG grid:
    ``grid_epoch{E:03d}.png`` after each epoch (E counts from 1), or ``grid_step{S:07d}.png``."""
    pattern = "grid_step{:07d}.png" if every_steps else "grid_epoch{:03d}.png"

    def hook(index, out):
        save_grid(Path(out) / pattern.format(index if every_steps else index + 1),
                  trainer.sample_fixed(), nrow=nrow, scale=scale)
    return hook


def fit(trainer, data, config: LoopConfig, to_device, epoch_hooks=(), step_hooks=()):
    """Train ``trainer`` on ``data`` (a tuple of equal-length host arrays) as ``config`` says.

    ``to_device(host_batch_tuple) -> batch`` turns a minibatch of host arrays
    into what ``trainer.step`` takes (e.g. uint8 -> float32 in [-1, 1] on the
    device). ``epoch_hooks`` are called as ``hook(epoch, run_dir)`` after each
    epoch (sample grids, metrics); ``step_hooks`` are ``(every, hook)`` pairs
    called as ``hook(step, run_dir)`` every ``every`` steps. Returns the run
    folder's Path.
    The last incomplete batch of an epoch is dropped, so every step sees
    ``batch_size`` examples.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(data[0])
    if any(len(d) != n for d in data):
        raise ValueError(f"data arrays differ in length: {[len(d) for d in data]}")
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {config.batch_size} is larger than the dataset ({n} examples)")

    step, epoch, position = 0, 0, 0
    ckpt_path = out / CHECKPOINT
    if config.resume:
        if not ckpt_path.exists():
            raise TrainingError(f"--resume: no {CHECKPOINT} in {out}; start without --resume to begin a new run")
        arrays, meta = load_checkpoint(ckpt_path)
        try:
            trainer.load_state_dict(unflatten_state(arrays, meta["trainer"], "trainer/"))
        except (KeyError, ValueError, CheckpointError) as e:
            raise TrainingError(f"--resume: {ckpt_path} does not fit this model: {e}") from None
        backend.set_rng_state(meta["rng"])
        step, epoch, position = meta["step"], meta["epoch"], meta["position"]
        _truncate_log(out / LOG, step)
    else:
        backend.seed(config.seed)
        if ckpt_path.exists():
            os.replace(ckpt_path, out / (CHECKPOINT + ".previous"))  # a new run never silently destroys an old one
        (out / LOG).unlink(missing_ok=True)
    with atomic_write(out / "config.json") as fh:
        fh.write(json.dumps(asdict(config), indent=2, default=str).encode())

    def save():
        arrays, meta = flatten_state({"trainer": trainer.state_dict()})
        meta.update(step=step, epoch=epoch, position=position, rng=backend.rng_state(),
                    config=asdict(config))
        save_checkpoint(ckpt_path, arrays, meta)

    log = CSVLog(out / LOG)
    pending = []

    def flush():
        """Copy the pending metrics to the host in one transfer and write one row per step."""
        nonlocal pending, interval_start
        if not pending:
            return None
        seconds = (time.perf_counter() - interval_start) / len(pending)
        for p in pending:
            p["step_time"] = seconds
        rows = _to_host_rows(pending)  # waits for the device: the step times above are real
        pending = []
        interval_start = time.perf_counter()
        for row in rows:
            bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                log.close()
                raise TrainingError(f"{', '.join(bad)} became {row[bad[0]]} at step {row['step']}; "
                                    f"stopped. The last good checkpoint is {ckpt_path} "
                                    f"(lower --lr, or resume from it)")
        hook = getattr(trainer, "on_host_metrics", None)
        if hook is not None:
            hook(rows)
        for row in rows:
            log.log(row)
        return rows[-1]

    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    bar = tqdm(total=total, initial=min(step, total), disable=not config.progress, unit="step",
               dynamic_ncols=True, desc=trainer.name)
    interval_start = time.perf_counter()
    headline = getattr(trainer, "headline", ())
    try:
        with _Interrupt() as interrupt:
            while epoch < config.epochs and step < total:
                order = batch_order(config.seed, epoch, n)
                while position < steps_per_epoch and step < total:
                    idx = order[position * config.batch_size:(position + 1) * config.batch_size]
                    metrics = trainer.step(to_device(tuple(d[idx] for d in data)))
                    step, position = step + 1, position + 1
                    pending.append(dict(metrics, step=step, epoch=epoch + position / steps_per_epoch))
                    bar.update(1)
                    needs_host = getattr(trainer, "needs_host", lambda s: False)(step)
                    if step % config.log_every == 0 or needs_host:
                        last = flush()
                        bar.set_postfix({"epoch": epoch + 1, **{k: f"{last[k]:.4g}" for k in headline if k in last}})
                    for every, hook in step_hooks:
                        if every and step % every == 0:
                            flush()
                            _without_touching_rng(hook, step, out)
                            interval_start = time.perf_counter()  # hooks' time is not step time
                    if step % config.checkpoint_every == 0:
                        flush()
                        save()
                        interval_start = time.perf_counter()
                    if interrupt.requested:
                        flush()
                        save()
                        bar.write(f"interrupted at step {step}: saved {ckpt_path}; continue with --resume")
                        raise KeyboardInterrupt
                if position == steps_per_epoch:
                    flush()
                    finished = epoch
                    epoch, position = epoch + 1, 0
                    save()
                    if (out / LOG).exists():
                        plot_curves(out / LOG, out / CURVES, trainer.curve_panels, smooth=20)
                    for hook in epoch_hooks:
                        _without_touching_rng(hook, finished, out)
                    interval_start = time.perf_counter()
            flush()
            save()
    finally:
        bar.close()
        log.close()

    if (out / LOG).exists():
        plot_curves(out / LOG, out / CURVES, trainer.curve_panels, smooth=20)
    if config.num_samples:
        for name, array in trainer.generate(config.num_samples).items():
            with atomic_write(out / f"{name}.npy") as fh:
                np.save(fh, array, allow_pickle=False)
    return out


def _without_touching_rng(hook, index, out):
    """Run a hook (sample grids, metrics) without shifting training's random stream.

    Hooks run after a checkpoint may have been saved; one that drew noise from
    the library's generator would otherwise make a resumed run differ from a
    straight one.
    """
    state = backend.rng_state()
    try:
        hook(index, out)
    finally:
        backend.set_rng_state(state)


def _to_host_rows(pending):
    """One device-to-host transfer for a whole logging interval of metrics.

    Rows come out ordered step, epoch, the trainer's metrics in its order, step_time.
    """
    keys = list(pending[0])
    device_keys = [k for k in keys if hasattr(pending[0][k], "shape")]
    host = None
    if device_keys:
        xp = backend.get_array_module(pending[0][device_keys[0]])
        stacked = xp.stack([xp.stack([p[k].reshape(()).astype("float64") for k in device_keys]) for p in pending])
        host = backend.to_host(stacked)
    order = ["step", "epoch"] + [k for k in keys if k not in ("step", "epoch", "step_time")] + ["step_time"]
    rows = []
    for i, p in enumerate(pending):
        values = dict(p)
        if host is not None:
            values.update(zip(device_keys, host[i].tolist()))
        rows.append({k: (float(values[k]) if k != "step" else int(values[k])) for k in order if k in values})
    return rows


def _truncate_log(path, step):
    """Drop rows logged after ``step`` (written before an interruption), so a resumed log has no duplicates."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        return
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and _row_step(ln) <= step]
    with atomic_write(path) as fh:
        fh.write("".join(kept).encode("utf-8"))


def _row_step(line):
    try:
        return int(float(line.split(",", 1)[0]))
    except ValueError:
        return math.inf
