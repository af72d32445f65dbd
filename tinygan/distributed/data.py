"""What data parallelism does to a training step: the rank's slice of the global batch and noise, the
gradient all-reduce over the optimisers' flat buffers, and the checks that ranks can work together.

Same result as one process: every rank draws the same global batch order from
(seed, epoch) and the same global noise from the same generator, and takes its
slice, so the random state is the same on every rank and a checkpoint does not
depend on the number of ranks. Each rank's losses are means over its slice, so
the mean of the ranks' gradients is the gradient of the global batch's loss.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .. import backend
from . import DistributedError, all_gather, all_reduce_mean, init

PACKAGE = Path(__file__).resolve().parents[1]


def shard(a):
    """This rank's contiguous slice of ``a`` along its first axis (``a`` itself for one process)."""
    w = init()
    if w.size == 1:
        return a
    n = a.shape[0] // w.size
    return a[w.rank * n:(w.rank + 1) * n]


def shard_indices(idx, parts=1):
    """This rank's share of one global batch's indices. ``parts`` > 1 (a GAN step with k discriminator
    updates, each on its own minibatch) takes the rank's slice of each of the k minibatches, so that
    the k updates see the same global minibatches as one process."""
    w = init()
    if w.size == 1:
        return idx
    return idx.reshape(parts, w.size, -1)[:, w.rank].reshape(-1)


def check_divisible(batch_size, parts=1, resume=False):
    """Raise DistributedError unless a global batch of ``batch_size`` examples (``parts`` minibatches)
    splits evenly over the ranks; ``resume``: the batch is a saved run's own and cannot change."""
    w = init()
    if batch_size % (parts * w.size) == 0:
        return
    if resume:
        counts = [k for k in range(1, batch_size // parts + 1) if (batch_size // parts) % k == 0]
        raise DistributedError(f"--resume: the run's global batch of {batch_size} examples per step does not "
                               f"split evenly over {w.size} processes; resume it with "
                               f"{', '.join(map(str, counts))} processes")
    per = f" per minibatch ({parts} minibatches a step)" if parts > 1 else ""
    raise DistributedError(f"--batch-size {batch_size // parts if parts > 1 else batch_size}{per} does not split "
                           f"evenly over {w.size} processes: give a multiple of {w.size}, or start another "
                           "number of processes")


def code_fingerprint():
    """A digest of tinygan's source and of the program that runs it: ranks must run the same code."""
    h = hashlib.sha256()
    main = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    files = sorted(PACKAGE.rglob("*.py")) + ([main] if main is not None and main.is_file() else [])
    for path in files:
        h.update(str(path.name).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def check_same(settings):
    """All-gather a fingerprint of ``settings`` (a JSON-able dict) and of the code, and raise
    DistributedError naming the first difference between rank 0 and another rank."""
    w = init()
    if w.size == 1:
        return
    mine = json.loads(json.dumps(dict(settings, code=code_fingerprint(), backend=backend.current()),
                                 default=str, sort_keys=True))
    digests = all_gather(hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest())
    if len(set(digests)) == 1:
        return
    everyone = all_gather(mine)
    other = next(r for r, d in enumerate(digests) if d != digests[0])
    raise DistributedError(f"rank {other} was started with other settings than rank 0: "
                           f"{_first_difference(everyone[0], everyone[other], other)}; start every rank "
                           "with the same command, code and data")


def _first_difference(a, b, other, path=""):
    for key in sorted(set(a) | set(b)):
        where = f"{path}{key}"
        if key not in a or key not in b:
            return f"{where} is set on {'rank 0' if key in a else f'rank {other}'} only"
        if isinstance(a[key], dict) and isinstance(b[key], dict):
            found = _first_difference(a[key], b[key], other, where + ".")
            if found:
                return found
        elif a[key] != b[key]:
            what = "the code (tinygan and the program) differs" if key == "code" else None
            return what or f"{where} is {a[key]!r} on rank 0, {b[key]!r} on rank {other}"
    return None


# ---- the gradient all-reduce ------------------------------------------------------------------

def all_reduce_gradients(optimizer, *values):
    """Average ``optimizer``'s gradients over the ranks (call it between ``backward()`` and
    ``step()``); returns the global means of the 0-d device ``values`` (a list).

    One all-reduce per parameter group, over its flat gradient buffer, with the
    values riding in slots after the gradients; one process returns them untouched.
    A parameter without a gradient this step (frozen, unused) is left without one.
    """
    w = init()
    if w.size == 1:
        return list(values)
    flats = [f for f in optimizer._flat if f is not None]  # the optimiser's flat groups (tinygan.optim)
    groups_flat = len(flats) == len(optimizer.param_groups)
    if not groups_flat:  # a group without flat buffers: one call per gradient (slow, but correct)
        for p in optimizer.params:
            if p.grad is not None:
                p.grad[...] = all_reduce_mean(p.grad.reshape(-1).copy()).reshape(p.grad.shape)
    tail = None
    for i, flat in enumerate(flats):
        last = i == len(flats) - 1
        if not any(p.grad is not None for p in flat.params) and not (last and values):
            continue
        buffer = flat.grad_and_spare(len(values)) if last else flat.grad
        for p, into in zip(flat.params, _views(flat)):
            if p.grad is not None and p.grad is not into:  # accumulated outside the buffer
                into[...] = p.grad
                p.grad = into
        if last and values:
            xp = backend.get_array_module(buffer)
            tail = buffer[flat.grad.size:]
            tail[...] = xp.stack([v.reshape(()) for v in values])
        all_reduce_mean(buffer)
    if values and tail is None:  # no flat group at all
        xp = backend.get_array_module(*values)
        tail = all_reduce_mean(xp.stack([v.reshape(()) for v in values]))
    if not values:
        return []
    out = tail.copy()  # the buffer is overwritten next step; metrics wait on the device until logged
    return [out[i] for i in range(len(values))]


def _views(flat):
    return [p._grad_into for p in flat.params]
