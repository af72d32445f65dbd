"""The runtime checks of ``python -m tinygan.doctor``: the BEGAN step and checkpoints across backends.

This module holds the checks of a trainer as the main command runs it: the
seconds per BEGAN step between device synchronisations and its memory peak
(:func:`check_step_speed`), the device-to-host synchronisations inside one
step, which must be zero, counted through ``backend.to_host``, the strict
emulation's transfer counter and, on CuPy, an event probe
(:func:`check_step_syncs`), and a checkpoint written on one backend and loaded
on the other, bit for bit (:func:`check_checkpoint`). The report and the
command are in :mod:`tinygan.tools.doctor`, the op and model checks in
:mod:`tinygan.tools.doctor_checks`.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
import tracemalloc

import numpy as np

import tinygan as tg
from tinygan import _strict, backend

from .doctor_checks import _models, on_backend


# ---- the BEGAN step at the main command's settings -----------------------------------------

def _began(cfg):
    from tinygan.gan import BEGANDecoder, BEGANDiscriminator
    from tinygan.gan import BEGANTrainer
    backend.seed(0)
    trainer = BEGANTrainer(BEGANDecoder(cfg["size"], cfg["filters"], cfg["hidden"]),
                           BEGANDiscriminator(cfg["size"], cfg["filters"], cfg["hidden"]), num_fixed=1)
    x = np.random.default_rng(0).uniform(-1, 1, (cfg["batch"], 3, cfg["size"], cfg["size"])).astype(np.float32)
    return trainer, (tg.tensor(backend.to_device(x)),)


@contextlib.contextmanager
def count_to_host():
    """Count the calls of tinygan.backend.to_host (the explicit door off the device) inside the block."""
    calls = [0]
    original = backend.to_host

    def counted(a):
        calls[0] += 1
        return original(a)
    backend.to_host = counted
    try:
        yield calls
    finally:
        backend.to_host = original


def _cfg_label(cfg):
    return f"{cfg['size']}x{cfg['size']} n={cfg['filters']} h={cfg['hidden']} batch {cfg['batch']}"


def check_step_speed(report, name, cfg, steps):
    """Seconds per BEGAN step between synchronisations, and the memory peak."""
    def one():
        with on_backend(name):
            trainer, batch = _began(cfg)
            for _ in range(2):          # first steps allocate the work buffers and warm up the libraries
                trainer.step(batch)
            backend.synchronize()
            backend.memory_pool_reset()
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                trainer.step(batch)
                backend.synchronize()
                times.append(time.perf_counter() - t)
            held = backend.memory_pool_held()
            if held is not None:
                mem = f"GPU pool peak {held / 2 ** 20:.0f} MiB"
            else:
                tracemalloc.start()
                trainer.step(batch)
                mem = f"host peak {tracemalloc.get_traced_memory()[1] / 2 ** 20:.0f} MiB (tracemalloc)"
                tracemalloc.stop()
        return True, f"{statistics.median(times):.3f} s/step (median of {steps}, synchronised)  {mem}"
    report.run(f"{name}: BEGAN step {_cfg_label(cfg)}", one)


def check_step_syncs(report, name, cfg):
    """Device-to-host synchronisations inside one BEGAN step: must be zero.

    Counted: calls of backend.to_host on every backend; on strict also every
    StrictArray.get (tinygan._strict.transfers), and any implicit conversion
    (float(), bool(), np.asarray() of a device array) fails the step outright.
    On CuPy, where implicit conversions cannot be intercepted from Python, a
    probe queues ~0.3 s of GEMMs before the step and checks, without waiting,
    that they are still running when the step returns: a step that waited for
    the device anywhere would have waited for them too.
    """
    def one():
        with on_backend(name):
            trainer, batch = _began(cfg)
            trainer.step(batch)
            backend.synchronize()
            _strict.reset_transfers()
            with count_to_host() as calls:
                waited = _probe_step(trainer, batch) if name == "cupy" else None
                if waited is None:
                    trainer.step(batch)
            backend.synchronize()
            strict = _strict.transfers if name == "strict" else 0
        total = calls[0] + strict + bool(waited)
        what = f"to_host calls {calls[0]}"
        if name == "strict":
            what += f", StrictArray.get {strict}, implicit conversions refused"
        if name == "cupy":
            what += (", waited for the device: " + ("yes (a sync, or a full CUDA launch queue)" if waited else "no")
                     + " (event probe)")
        return total == 0, f"{total} syncs ({what})"
    report.run(f"{name}: BEGAN step syncs", one)


def _probe_step(trainer, batch):
    """CuPy only: True if the step's host side waited for work queued before it."""
    xp = backend.xp()
    a = xp.ones((4096, 4096), dtype=xp.float32)
    a @ a
    backend.synchronize()
    t = time.perf_counter()
    a @ a
    backend.synchronize()
    gemm = max(time.perf_counter() - t, 1e-4)
    t = time.perf_counter()
    trainer.step(batch)          # the host time of one step, to size the queued work
    host = time.perf_counter() - t
    backend.synchronize()
    n = int(min(2000, max(4, (3 * host + 0.3) / gemm)))
    for _ in range(n):
        a @ a
    queued = xp.cuda.Event()
    queued.record()
    trainer.step(batch)
    return bool(queued.done)


# ---- checkpoints --------------------------------------------------------------------------

def _state_arrays(trainer):
    from tinygan.train import flatten_state
    arrays, meta = flatten_state(trainer.state_dict())
    return {k: np.array(v, copy=True) for k, v in arrays.items()}, meta


def check_checkpoint(report, device, direction):
    """Save a trained state on one backend, load it on the other: every array bit for bit."""
    from tinygan.train.checkpoint import load_checkpoint, save_checkpoint
    from tinygan.train import unflatten_state
    src, dst = (device, "numpy") if direction == "out" else ("numpy", device)
    build = _models()[0][1]

    def one():
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "ckpt.npz")
            with on_backend(src):
                backend.seed(0)
                trainer, batch = build()
                trainer.step(tuple(backend.to_device(b) for b in batch))
                arrays, meta = _state_arrays(trainer)
                save_checkpoint(path, arrays, meta)
            with on_backend(dst):
                backend.seed(1)
                other, batch = build()
                loaded, meta2 = load_checkpoint(path)
                other.load_state_dict(unflatten_state(loaded, meta2))
                back, _ = _state_arrays(other)
                other.step(tuple(backend.to_device(b) for b in batch))   # and it trains on
        bad = [k for k in arrays if k not in back or back[k].dtype != arrays[k].dtype
               or not np.array_equal(back[k], arrays[k])]
        same_meta = json.loads(json.dumps(meta)) == meta2   # tuples come back as lists, as documented
        bad += [] if same_meta else ["the JSON metadata"]
        return not bad, (f"{len(arrays)} arrays identical, then one more step"
                                           if not bad else f"{len(bad)} arrays differ, first {bad[0]}")
    report.run(f"checkpoint {src} -> {dst}", one)
