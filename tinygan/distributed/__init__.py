"""Data parallelism over MPI (mpi4py) between processes and machines, and NCCL (CuPy) between GPUs.

A program started by ``mpiexec -n N`` (N > 1) runs data-parallel: every rank
holds the whole model, takes 1/N of each global batch, and the gradients are
averaged over the ranks before each optimiser step, so that N ranks compute
what one process would on the whole batch. A single process never imports
mpi4py: every function here is then a no-op (``rank() == 0``,
``world_size() == 1``, the collectives return their input).

The three collectives:

* :func:`all_reduce_mean` of a flat array, in place: MPI's ``Allreduce`` on the
  NumPy backend, NCCL's ``allReduce`` (``ncclAvg``) on CuPy; on the strict
  backend, MPI on the emulated device buffers' own memory (the emulation's
  "device" is host memory: no counted transfer, one counted device operation,
  as NCCL's one call);
* :func:`broadcast` from rank 0 (host objects, NumPy arrays, device arrays);
* :func:`all_gather` of small host values (a list, one per rank).

:func:`all_reduce_gradients` is what trainers call between ``backward()`` and
``opt.step()``: one all-reduce per parameter group over the optimiser's flat
gradient buffer, with a few 0-d device values (the step's losses) riding at its
end, so their global means cost no extra call and no host sync.

The threads of one process can be ranks too (:mod:`.threads`, ``Replicated``):
each thread of a data-parallel step sees itself as rank r of a thread world
(:func:`thread_world`), and the collectives then run in shared memory.

Which launch counts as distributed is read from the launcher's environment
(``PMI_SIZE`` for MPICH and Intel MPI, ``OMPI_COMM_WORLD_SIZE`` for Open MPI,
``MV2_COMM_WORLD_SIZE`` for MVAPICH); ``TINYGAN_DISTRIBUTED=0`` forces a single
process, ``=1`` forces MPI for other launchers.

Faults: an error on any rank ends every rank (``MPI_Abort``); a rank other
than 0 first sends its message to rank 0, which prints it naming the rank.
Ranks waiting in a collective poll (a short sleep between tests) rather than
spin, so a rank waiting while rank 0 writes grids leaves the core to it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

import numpy as np

from .. import backend
from .. import _strict

__all__ = ["DistributedError", "init", "rank", "world_size", "local_rank", "is_main", "enabled",
           "all_reduce_mean", "broadcast", "all_gather", "all_reduce_gradients", "shard", "shard_indices",
           "check_divisible", "check_same", "code_fingerprint", "root_first", "stop", "end", "stats", "gpu_for_rank",
           "thread_world", "Replicated"]

#: Launcher variables holding the number of processes, in the order they are read.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_FAULT_TAG = 77
#: Seconds a failing rank other than 0 waits for rank 0 to print its message and end the run.
GRACE_S = 3.0
_MPI_HINT = "pip install 'tinygan[mpi]' (mpi4py and the mpich wheel), or use the mpi4py of your system MPI"


class DistributedError(RuntimeError):
    """Ranks that cannot work together: MPI missing, other settings or code, a batch that does not divide."""


class _World:
    def __init__(self, comm=None, mpi=None):
        self.mpi, self.comm = mpi, comm
        self.rank, self.size, self.local_rank = 0, 1, 0
        self.faults = self.nccl = None
        self.group = None  # a ThreadGroup: this world's ranks are the threads of one step (threads.py)
        if comm is not None:
            self.rank, self.size = comm.Get_rank(), comm.Get_size()
            self.faults = comm.Dup()  # fault messages never meet a collective's messages
            local = comm.Split_type(mpi.COMM_TYPE_SHARED)
            self.local_rank = local.Get_rank()
            local.Free()


_world = None
#: Time (s), calls and bytes of the gradient all-reduces so far (the benchmark reads them).
stats = {"all_reduce_s": 0.0, "all_reduce_calls": 0, "all_reduce_bytes": 0}


class _ThreadWorld(threading.local):
    world = None


_thread = _ThreadWorld()


@contextlib.contextmanager
def thread_world(group, rank):
    """Within the block, this thread is rank ``rank`` of the ``group.size`` threads of a data-parallel
    step (tinygan.distributed.threads): rank(), world_size(), shard() and the collectives answer so."""
    w = _World()
    w.rank, w.size, w.local_rank, w.group = rank, group.size, rank, group
    saved, _thread.world = _thread.world, w
    try:
        yield w
    finally:
        _thread.world = saved


def launched_size():
    """The number of processes the launcher says it started (1 when none says so)."""
    forced = os.environ.get("TINYGAN_DISTRIBUTED")
    if forced == "0":
        return 1
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 2 if forced == "1" else 1


def init():
    """Join the MPI world when launched by mpiexec with more than one process (idempotent); returns
    the world. A single process joins nothing and needs no MPI installed."""
    global _world
    if _thread.world is not None:
        return _thread.world
    if _world is not None:
        return _world
    if launched_size() <= 1:
        _world = _World()
        return _world
    try:
        from mpi4py import MPI
    except ImportError as e:
        _world = _World()
        raise DistributedError(f"this program was started by mpiexec with {launched_size()} processes, but "
                               f"mpi4py cannot be imported ({e}); {_MPI_HINT}") from None
    _world = _World(MPI.COMM_WORLD.Dup(), MPI)
    if _world.size > 1:
        sys.excepthook = _excepthook
    return _world


def rank():
    """This process's rank, 0 .. world_size() - 1 (0 for a single process)."""
    return init().rank


def world_size():
    """The number of processes training together (1 for a single process)."""
    return init().size


def local_rank():
    """This process's rank among the ranks on its own machine (for its GPU: ``local_rank % GPUs``)."""
    return init().local_rank


def is_main():
    """True on rank 0, the one rank that writes checkpoints, logs, grids and the progress bar."""
    return init().rank == 0


def enabled():
    """True when more than one process trains together."""
    return init().size > 1


def gpu_for_rank(count):
    """The GPU this rank takes among ``count`` visible ones: ``local_rank % count``."""
    return local_rank() % count


# ---- waiting without spinning, and faults ------------------------------------------------------

def _wait(request):
    """Complete an MPI request, testing it with short sleeps (and looking for fault messages)."""
    w = _world
    if request.Test():
        return
    delay = 0.0
    while not request.Test():
        _check_faults(w)
        time.sleep(delay)
        delay = min(delay + 5e-5, 1e-3)


def _check_faults(w):
    if w.rank != 0 or not w.faults.Iprobe(source=w.mpi.ANY_SOURCE, tag=_FAULT_TAG):
        return
    status = w.mpi.Status()
    who, message, code = w.faults.recv(source=w.mpi.ANY_SOURCE, tag=_FAULT_TAG, status=status)
    print(f"error: rank {who} of {w.size}: {message}", file=sys.stderr, flush=True)
    w.comm.Abort(code)


def stop(message, status=2):
    """End every rank after an error ``message`` (one line, without 'error: '), then exit ``status``.

    Rank 0 prints the line and aborts the run. Another rank sends the line to
    rank 0, which prints it naming the rank; should rank 0 not answer within
    :data:`GRACE_S` seconds (busy outside a collective), the rank prints it
    itself and aborts. A single process just prints the line and exits.
    """
    if launched_size() > 1:
        try:
            w = init()
        except DistributedError:
            w = _world
        if w.size > 1:
            if w.rank == 0:
                print(f"error: {message}", file=sys.stderr, flush=True)
                w.comm.Abort(status)
            w.faults.isend((w.rank, message, status), dest=0, tag=_FAULT_TAG)
            time.sleep(GRACE_S)  # rank 0 aborts everyone meanwhile, if it is polling
            print(f"error: rank {w.rank} of {w.size}: {message}", file=sys.stderr, flush=True)
            w.comm.Abort(status)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def end(status):
    """Exit with ``status`` after rank 0 has done what ends a run (Ctrl-C saved): every rank ends."""
    w = _world
    if w is not None and w.size > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        w.comm.Abort(status)
    sys.exit(status)


def _excepthook(kind, value, tb):
    import traceback
    traceback.print_exception(kind, value, tb)
    sys.stderr.flush()
    stop(f"{kind.__name__}: {value}".strip().splitlines()[0] if str(value) else kind.__name__, 1)


def root_first(work):
    """Run ``work()`` on rank 0 only and hand every rank its result; an exception there is raised on
    every rank (the same type and message), so all ranks take the same way out of a failed check."""
    w = init()
    if w.size == 1:
        return work()
    outcome = None
    if w.rank == 0:
        try:
            outcome = ("ok", work())
        except Exception as e:  # re-raised below, on every rank
            outcome = ("error", e)
    _wait(w.comm.Ibarrier())
    outcome = w.comm.bcast(outcome if w.rank == 0 else None, root=0)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


# ---- the collectives ------------------------------------------------------------------------

def _raw(a):
    """The host memory behind an array of the NumPy or strict backend (the emulation's device memory)."""
    return _strict.device_memory(a)


def all_reduce_mean(flat):
    """Replace the flat, contiguous array ``flat`` by its mean over the ranks, in place; returns it."""
    w = init()
    if w.size == 1:
        return flat
    start = time.perf_counter()
    if w.group is not None:  # threads of one process: their arrays are in shared memory
        w.group.all_reduce_mean(w.rank, flat)
    elif backend.device() is not None:  # on a GPU: NCCL, in device memory
        from . import nccl
        nccl.all_reduce_mean(w, flat)
    else:
        buf = _raw(flat)
        if not (isinstance(buf, np.ndarray) and buf.flags.c_contiguous):
            raise DistributedError(f"all_reduce_mean takes a contiguous array, got {type(flat).__name__}")
        _wait(w.comm.Iallreduce(w.mpi.IN_PLACE, buf, op=w.mpi.SUM))
        buf /= w.size
        if buf is not flat:
            _strict.ops["all-reduce (NCCL, mean)"] += 1
    stats["all_reduce_s"] += time.perf_counter() - start
    stats["all_reduce_calls"] += 1
    stats["all_reduce_bytes"] += flat.nbytes
    return flat


def broadcast(value, root=0):
    """``value`` as rank ``root`` has it, on every rank: arrays in place (NumPy, strict, or on the GPU
    through NCCL), any other picklable host value by MPI."""
    w = init()
    if w.size == 1:
        return value
    if w.group is not None:
        return w.group.broadcast(w.rank, value, root)
    if backend.device() is not None and not backend.is_host(value):
        from . import nccl
        return nccl.broadcast(w, value, root)
    buf = _raw(value)
    if isinstance(buf, np.ndarray):
        _wait(w.comm.Ibcast(buf, root=root))
        return value
    _wait(w.comm.Ibarrier())
    return w.comm.bcast(value, root=root)


def all_gather(value):
    """A list of every rank's ``value`` (small, picklable host values), in rank order."""
    w = init()
    if w.size == 1:
        return [value]
    if w.group is not None:
        return w.group.all_gather(w.rank, value)
    _wait(w.comm.Ibarrier())
    return w.comm.allgather(value)


from .data import all_reduce_gradients, check_divisible, check_same, code_fingerprint, shard, shard_indices  # noqa: E402
from .threads import Replicated  # noqa: E402
