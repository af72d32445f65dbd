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
import signal
import sys
from dataclasses import dataclass, field, asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import backend, distributed
from ..files import atomic_write
from .checkpoint import CheckpointError, flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from .images import save_grid, save_timeline
from .curves import plot_curves
from .runlog import truncate_log
from .errors import RunInterrupted, TrainingError
from .rundir import (CHECKPOINT, CONFIG, LOG, RunLock, check_new_run, check_resumable, move_aside, read_hooks_done,
                     remove_stale_temp_files, write_hooks_done)
from .steplog import MetricBuffer

CURVES = "curves.png"


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
    overwrite: bool = False        # a folder holding a run is moved aside to <out>.old-N, then a new run starts
    progress: bool = True
    extra: dict = field(default_factory=dict)  # the example's own flags, saved in config.json


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


TIMELINE = "timeline.gif"


def grid_hook(trainer, scale=1, nrow=None, every_steps=False):
    """A hook writing ``trainer.sample_fixed()`` (fixed noise, host NCHW in [0, 1]) as a PNG grid:
    ``grid_epoch{E:03d}.png`` after each epoch (E counts from 1), or ``grid_step{S:07d}.png``.
    After each epoch's grid, the epochs' grids so far become ``timeline.gif``: the same faces or
    digits, from the same noise, as training shapes them."""
    pattern = "grid_step{:07d}.png" if every_steps else "grid_epoch{:03d}.png"

    def hook(index, out):
        path = Path(out) / pattern.format(index if every_steps else index + 1)
        save_grid(path, trainer.sample_fixed(), nrow=nrow, scale=scale)
        if not every_steps:
            grids = sorted(Path(out).glob("grid_epoch[0-9][0-9][0-9].png"))
            save_timeline(Path(out) / TIMELINE, [g for g in grids if g.name <= path.name])
    return hook


def fit(trainer, data, config: LoopConfig, to_device, epoch_hooks=(), step_hooks=(), say=None, augment=None):
    """Train ``trainer`` on ``data`` (a tuple of equal-length host arrays) as ``config`` says.

    ``augment(epoch, idx, host_batch_tuple) -> host_batch_tuple``, when given, changes each
    minibatch on the host first (``tinygan.data.hflip``); ``idx`` are the examples' indices.
    ``to_device(host_batch_tuple) -> batch`` turns a minibatch of host arrays
    into what ``trainer.step`` takes (e.g. uint8 -> float32 in [-1, 1] on the
    device). ``epoch_hooks`` are called as ``hook(epoch, run_dir)`` after each
    epoch (sample grids, metrics); ``step_hooks`` are ``(every, hook)`` pairs
    called as ``hook(step, run_dir)`` every ``every`` steps. ``say(line)``
    prints the loop's notes (default: above the progress bar, on stderr).
    Returns the run folder's Path.

    The last incomplete batch of an epoch is dropped, so every step sees
    ``batch_size`` examples. A folder that holds a run is refused unless
    ``config.resume`` (continue it) or ``config.overwrite`` (move it aside to
    ``<out>.old-N`` and start over). The checkpoint records what the data was
    (count, shapes, fingerprint), and a resume on other data is refused.
    """
    main = distributed.is_main()  # many processes (mpiexec): rank 0 alone writes, prints and shows the bar
    say = (say or (lambda line: tqdm.write(line, file=sys.stderr))) if main else (lambda line: None)
    distributed.check_divisible(config.batch_size, getattr(trainer, "batch_parts", 1), resume=config.resume)
    if isinstance(trainer, distributed.Replicated):  # over threads: the same rule
        trainer.check_batch(config.batch_size, resume=config.resume)
    n, steps_per_epoch = _check_data(data, config.batch_size)
    out = Path(config.out)
    identity = _data_identity(data)
    distributed.check_same({"config": asdict(config), "data": identity, "trainer": type(trainer).__name__})
    lock = RunLock(out)

    def settle_folder():  # rank 0 only; its errors are raised on every rank
        lock.claim()
        if config.resume:
            return _read_resume(out, identity)
        info = check_new_run(out, overwrite=config.overwrite)
        if info is not None:
            lock.release()
            say(f"moved the previous run ({info.describe()}) to {move_aside(out)}")
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        write_hooks_done(out, 0)
        return None
    try:
        saved = distributed.root_first(settle_folder)
        if config.resume:
            pos = _resume(trainer, out, saved, steps_per_epoch)
        else:
            backend.seed(config.seed)
            pos = _Position()
        if main:
            with atomic_write(out / CONFIG) as fh:
                fh.write(json.dumps(asdict(config), indent=2, default=str).encode())
        return _train(trainer, data, config, to_device, epoch_hooks, step_hooks, say, out, pos, identity, augment,
                      n, steps_per_epoch)
    finally:
        lock.release()


@dataclass
class _Position:
    """Where a run stands: global step, completed epochs, steps into the current epoch, and the
    number of epochs whose hooks have all run (a kill during the hooks leaves it one behind)."""
    step: int = 0
    epoch: int = 0
    position: int = 0
    hooks_done: int = 0
    checkpoint_step: int | None = None


def _check_data(data, batch_size):
    n = len(data[0])
    if any(len(d) != n for d in data):
        raise ValueError(f"data arrays differ in length: {[len(d) for d in data]}")
    if n < batch_size:
        raise TrainingError(f"the data has {n:,} examples, fewer than one batch of {batch_size:,}; "
                            "lower --batch-size or use more data")
    return n, n // batch_size


def _data_identity(data):
    """What the data was, recorded in every checkpoint so a resume on other data is refused."""
    from ..data import fingerprint
    return {"count": len(data[0]), "shapes": [list(d.shape[1:]) for d in data],
            "dtypes": [str(d.dtype) for d in data], "fingerprint": fingerprint(*data)}


def _data_change(saved, now):
    """One clause saying how the data differs from the run's, or None when it is the same."""
    if saved is None or saved == now:
        return None
    if saved["count"] != now["count"]:
        return f"the run was trained on {saved['count']:,} examples, now there are {now['count']:,}"
    if saved["shapes"] != now["shapes"] or saved["dtypes"] != now["dtypes"]:
        return (f"the run's examples were {saved['dtypes']} of shapes {saved['shapes']}, "
                f"now {now['dtypes']} of shapes {now['shapes']}")
    return (f"the same number ({now['count']:,}) and shape of examples, but other contents "
            f"(fingerprint {saved['fingerprint']} then, {now['fingerprint']} now)")


def _read_resume(out, identity):
    """Rank 0: the checkpoint to resume from, checked against the data; handed to every rank."""
    info = check_resumable(out)
    ckpt_path = out / CHECKPOINT
    arrays, meta = load_checkpoint(ckpt_path)
    change = _data_change(meta.get("data"), identity)
    if change:
        raise TrainingError(f"--resume: the data changed since {ckpt_path} was written: {change}; resume with "
                            "the data the run was started with, or start a new run (--overwrite or another --out)")
    return arrays, meta, info.step, read_hooks_done(out, default=meta.get("epoch", 0))


def _resume(trainer, out, saved, steps_per_epoch):
    arrays, meta, checkpoint_step, hooks_done = saved
    ckpt_path = out / CHECKPOINT
    try:
        trainer.load_state_dict(unflatten_state(arrays, meta["trainer"], "trainer/"))
        pos = _Position(meta["step"], meta["epoch"], meta["position"], checkpoint_step=checkpoint_step)
        backend.set_rng_state(meta["rng"])
    except (KeyError, ValueError, TypeError, CheckpointError) as e:
        raise TrainingError(f"--resume: {ckpt_path} does not fit this model: {e}") from None
    if pos.position > steps_per_epoch:
        raise TrainingError(f"--resume: {ckpt_path} is {pos.position} steps into an epoch of only "
                            f"{steps_per_epoch} steps: the data or --batch-size changed")
    pos.hooks_done = hooks_done
    if distributed.is_main():
        remove_stale_temp_files(out)
        truncate_log(out / LOG, pos.step)
    return pos


def _train(trainer, data, config, to_device, epoch_hooks, step_hooks, say, out, pos, identity, augment, n,
           steps_per_epoch):
    ckpt_path = out / CHECKPOINT
    main = distributed.is_main()
    parts = getattr(trainer, "batch_parts", 1)

    def save():
        pos.checkpoint_step = pos.step
        if not main:
            return
        arrays, meta = flatten_state({"trainer": trainer.state_dict()})
        meta.update(step=pos.step, epoch=pos.epoch, position=pos.position, rng=backend.rng_state(),
                    config=asdict(config), data=identity)
        save_checkpoint(ckpt_path, arrays, meta)

    def curves():
        if main and (out / LOG).exists():
            plot_curves(out / LOG, out / CURVES, trainer.curve_panels, smooth=20)

    def run_epoch_hooks(finished):
        for hook in epoch_hooks if main else ():
            _run_hook(hook, finished, out)
        pos.hooks_done = finished + 1
        if main:
            write_hooks_done(out, pos.hooks_done)

    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    if config.resume:
        say(f"resuming {out} at step {pos.step:,} of {total:,} (epoch {min(pos.epoch + 1, config.epochs)} "
            f"of {config.epochs}, {steps_per_epoch:,} steps each)")
        if pos.step >= total:
            say(f"{out} is already at step {pos.step:,} of {total:,}: nothing to train "
                "(give a larger --epochs or --max-steps to go on)")
        if pos.hooks_done < pos.epoch and pos.position == 0:
            say(f"finishing epoch {pos.epoch}'s grids and metrics, cut short when the run stopped")
            run_epoch_hooks(pos.epoch - 1)

    metrics = MetricBuffer(out / LOG if main else None, trainer, lambda: (
        f"The last good checkpoint is {ckpt_path} (step {pos.checkpoint_step:,}; lower --lr, or resume from it)"
        if pos.checkpoint_step is not None and ckpt_path.exists() else
        "No checkpoint had been written yet (lower --lr and start again)"))
    bar = tqdm(total=total, initial=min(pos.step, total), disable=not (config.progress and main), unit="step",
               dynamic_ncols=True, desc=trainer.name)
    headline = getattr(trainer, "headline", ())
    needs_host = getattr(trainer, "needs_host", lambda s: False)

    def show(last):
        if last is not None:
            bar.set_postfix({"epoch": min(pos.epoch + 1, config.epochs),
                             **{k: f"{last[k]:.4g}" for k in headline if k in last}})
    try:
        with _Interrupt() as interrupt:
            while pos.step < total:
                # Each pass either finishes an epoch or reaches `total`: the loop cannot spin in place.
                order = batch_order(config.seed, pos.epoch, n)
                while pos.position < steps_per_epoch and pos.step < total:
                    idx = order[pos.position * config.batch_size:(pos.position + 1) * config.batch_size]
                    idx = distributed.shard_indices(idx, parts)  # this rank's share of the global batch
                    batch = tuple(d[idx] for d in data)
                    if augment is not None:
                        batch = augment(pos.epoch, idx, batch)
                    step_metrics = trainer.step(to_device(batch))
                    pos.step, pos.position = pos.step + 1, pos.position + 1
                    metrics.add(dict(step_metrics, step=pos.step, epoch=pos.epoch + pos.position / steps_per_epoch))
                    bar.update(1)
                    if pos.step % config.log_every == 0 or needs_host(pos.step):
                        show(metrics.flush())
                    for every, hook in step_hooks:
                        if every and pos.step % every == 0 and main:
                            metrics.flush()
                            _run_hook(hook, pos.step, out)
                            metrics.restart_clock()  # hooks' time is not step time
                    if pos.step % config.checkpoint_every == 0:
                        metrics.flush()
                        save()
                        metrics.restart_clock()
                    if interrupt.requested and main:  # rank 0 saves, then ends every rank
                        metrics.flush()
                        save()
                        curves()
                        say(f"interrupted at step {pos.step:,}: saved {ckpt_path}; continue with --resume")
                        raise RunInterrupted
                if pos.position >= steps_per_epoch:
                    show(metrics.flush())  # the bar shows the epoch's last metrics, however long the log interval
                    finished = pos.epoch
                    pos.epoch, pos.position = pos.epoch + 1, 0
                    save()
                    curves()
                    run_epoch_hooks(finished)
                    metrics.restart_clock()
            metrics.flush()
            save()
    except TrainingError:
        curves()
        raise
    finally:
        bar.close()
        metrics.close()

    curves()
    if config.num_samples and main:
        for name, array in trainer.generate(config.num_samples).items():
            with atomic_write(out / f"{name}.npy") as fh:
                np.save(fh, array, allow_pickle=False)
    return out


def _run_hook(hook, index, out):
    """Run a hook (sample grids, metrics) on a side stream of randomness: one that drew noise from
    the library's generator would otherwise make a resumed run differ from a straight one."""
    with backend.rng_fork():
        hook(index, out)
