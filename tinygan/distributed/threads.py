"""Data parallelism over the threads of one process: every CPU core trains its own replica.

On a CPU, splitting each array op over the cores leaves most of a step on one core: the small
ops do not pay for a thread, and a multi-threaded BLAS idles its threads by spinning, so they
take the core the split needs (measured on 2 cores, BEGAN 64x64 n=64: 2 BLAS threads 1.13x
faster than 1). Replicas need no split at all. ``Replicated(make, threads)`` builds ``threads``
copies of a trainer from the same random state (identical parameters); each step gives replica
r the r-th slice of the batch, on thread r, which is rank r of a world of ``threads`` ranks for
tinygan.distributed: the trainer's own calls (``shard`` of the noise, ``all_reduce_gradients``,
the global means of the losses) do what they do between the processes of ``mpiexec``, the
all-reduce being a sum over the replicas' flat gradient buffers in shared memory. NumPy
releases the GIL inside each array op, so the replicas' ops run at the same time; each
replica's BLAS runs on its own thread (``backend.set_blas_threads(1)``).

Same result as one process up to float32 summation order (as with mpiexec), and the same for
every replica bit for bit: the all-reduce sums in rank order and hands every replica the same
bits. Each replica draws from its own copy of tinygan's random generator, the same global
noise as one process, so after a step the process's generator is where one process's would be
and checkpoints do not depend on the number of threads.
"""
from __future__ import annotations

import copy
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from .. import backend
from ..tensor import Tensor

__all__ = ["Replicated", "ThreadGroup", "check_split"]


def check_split(batch_size, threads, resume=False):
    """Raise DistributedError unless a minibatch of ``batch_size`` examples splits evenly over
    ``threads`` replicas (the one rule, for the examples' flags and for the training loop)."""
    if batch_size % threads == 0:
        return
    from . import DistributedError
    where = "the run's --batch-size" if resume else "--batch-size"
    raise DistributedError(f"{where} {batch_size} does not split evenly over --threads {threads}: give a "
                           f"multiple of {threads}, or another --threads")


class ThreadGroup:
    """The collectives between the ``size`` threads of one data-parallel step (rank = thread)."""

    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size

    def all_reduce_mean(self, rank, flat):
        """Every rank's flat array replaced by the mean over the ranks, in place; rank r sums the
        r-th slice of every rank's array (in rank order) and writes it into all of them."""
        self.slots[rank] = flat.reshape(-1)
        self.barrier.wait()
        n, size = flat.size, self.size
        lo, hi = n * rank // size, n * (rank + 1) // size
        if hi > lo:
            part = self.slots[0][lo:hi].copy()
            for other in self.slots[1:]:
                part += other[lo:hi]
            part /= size
            for other in self.slots:
                other[lo:hi] = part
        self.barrier.wait()  # nobody changes its array before every slice is written
        return flat

    def broadcast(self, rank, value, root=0):
        """``value`` as rank ``root`` has it: arrays copied in place, anything else handed over."""
        self.slots[rank] = value
        self.barrier.wait()
        theirs = self.slots[root]
        if rank != root and hasattr(value, "shape") and hasattr(value, "dtype"):
            value[...] = theirs
            theirs = value
        self.barrier.wait()
        return theirs

    def all_gather(self, rank, value):
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class Replicated:
    """A trainer replicated over ``threads`` threads of this process, trained data-parallel.

    ``make()`` builds one trainer (its modules, optimisers, average of G); it is called
    ``threads`` times from the same random state. ``step(batch)`` splits the global batch
    (each of its minibatches must divide by ``threads``) and returns replica 0's metrics, which are
    global means. Everything else (sampling, ``state_dict``, the networks) is replica 0's;
    ``load_state_dict`` loads into every replica. NumPy backend only: on a GPU one process
    drives one device, and several GPUs take ``mpiexec``.
    """

    def __init__(self, make, threads):
        from . import enabled
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
        if threads > 1 and backend.current() != "numpy":
            raise ValueError(f"data parallelism over threads runs on the numpy backend, not {backend.current()!r} "
                             "(on GPUs, start one process per GPU with mpiexec)")
        if threads > 1 and enabled():
            raise ValueError("this process is one of several started by mpiexec: train over processes or over "
                             "threads, not both (give 1 thread per process)")
        state = backend.rng_state()
        self.replicas = []
        for _ in range(threads):
            backend.set_rng_state(state)
            self.replicas.append(make())
        self.threads = threads
        self._pool = None
        if threads > 1:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tinygan-replica")
            if backend.blas_threads() is None and not _one_blas_thread_asked():
                print("note: the BLAS is not OpenBLAS and cannot be set to one thread from here; set "
                      "OMP_NUM_THREADS=1 (or MKL_NUM_THREADS=1) so the replicas do not share BLAS threads",
                      file=sys.stderr)

    def __getattr__(self, name):  # everything not defined here is replica 0's
        if name == "replicas":
            raise AttributeError(name)
        return getattr(self.replicas[0], name)

    def load_state_dict(self, state, *args, **kwargs):
        for replica in self.replicas:
            replica.load_state_dict(state, *args, **kwargs)

    def check_batch(self, batch_size, resume=False):
        """Raise DistributedError unless a global batch of ``batch_size`` examples splits evenly over the
        threads: each of its ``batch_parts`` minibatches (k of them in a GAN step of k > 1)."""
        parts = getattr(self.replicas[0], "batch_parts", 1)
        check_split(batch_size // parts if batch_size % parts == 0 else batch_size, self.threads, resume)

    def _slice(self, x, r):
        """Replica r's share of a batch array or tensor: its slice of each of the step's minibatches."""
        parts, n = getattr(self.replicas[0], "batch_parts", 1), self.threads
        m = x.shape[0] // (parts * n)
        if parts == 1:
            return x[r * m:(r + 1) * m]
        data = x.data if isinstance(x, Tensor) else x
        mine = backend.get_array_module(data).concatenate([data[(p * n + r) * m:(p * n + r + 1) * m]
                                                           for p in range(parts)])
        return Tensor(mine) if isinstance(x, Tensor) else mine

    def step(self, batch):
        """One training step of every replica on its share of ``batch`` (a tensor, or a tuple of them);
        returns replica 0's metrics (global means)."""
        if self.threads == 1:
            return self.replicas[0].step(batch)
        from . import thread_world
        items = batch if isinstance(batch, (tuple, list)) else (batch,)
        self.check_batch(items[0].shape[0])
        group = ThreadGroup(self.threads)
        generators = [copy.deepcopy(backend.rng()) for _ in range(self.threads)]

        def run(r):
            mine = tuple(self._slice(x, r) if hasattr(x, "shape") else x for x in items)
            with backend.thread_state(generators[r]), thread_world(group, r):
                try:
                    return self.replicas[r].step(type(batch)(mine) if isinstance(batch, (tuple, list)) else mine[0])
                except BaseException:
                    group.barrier.abort()  # the others, waiting in a collective, stop too
                    raise

        blas = backend.set_blas_threads(1)  # each replica's products on its own thread; put back after
        try:
            futures = [self._pool.submit(run, r) for r in range(self.threads)]
            errors = []
            for f in futures:
                try:
                    f.result()
                except threading.BrokenBarrierError as e:
                    errors.append((1, e))
                except BaseException as e:
                    errors.append((0, e))
        finally:
            if blas is not None:
                backend.set_blas_threads(blas)
        if errors:  # the replica that failed first, not the ones its abort woke
            raise min(errors, key=lambda pair: pair[0])[1]
        backend.set_rng_state(generators[0].bit_generator.state)
        return futures[0].result()


def _one_blas_thread_asked():
    return any(os.environ.get(v) == "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
