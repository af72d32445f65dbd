"""The host's threads, for the backend: BLAS's thread count, and what a thread of a data-parallel
step has of its own.

Data parallelism over threads (tinygan.distributed.threads) runs one replica of the trainer per
core, each on its slice of the batch. Each replica's BLAS calls must then stay on its own thread:
a multi-threaded BLAS would start a thread per core for every product of every replica, and its
idle threads spin for a while after each product, taking the core another replica needs (measured
on 2 cores: a plain copy split over two threads ran 1.0x faster beside two spinning OpenBLAS
threads, 2.0x beside one). :func:`set_blas_threads` sets the count of the OpenBLAS that NumPy
loaded, found among the process's loaded libraries; another BLAS is left as it is (then set
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS or OMP_NUM_THREADS to 1 before starting).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_", "openblas_get_num_threads")
_openblas = None  # (set, get) functions, False when none was found


def _loaded_openblas():
    """Paths of the OpenBLAS libraries this process has loaded (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        paths = set()
    if not paths:  # elsewhere: the library NumPy's wheel ships beside it
        import glob
        import numpy
        base = os.path.dirname(numpy.__file__)
        for pattern in (base + ".libs/*openblas*", os.path.join(base, ".dylibs", "*openblas*")):
            paths.update(glob.glob(pattern))
    return sorted(paths)


def _functions():
    global _openblas
    if _openblas is None:
        _openblas = False
        for path in _loaded_openblas():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            found = [next((getattr(lib, n) for n in names if hasattr(lib, n)), None) for names in (_SETTERS, _GETTERS)]
            if all(found):
                found[1].restype = ctypes.c_int
                _openblas = tuple(found)
                break
    return _openblas


def blas_threads():
    """The thread count of NumPy's OpenBLAS, or None when it is another BLAS (or none was found)."""
    fns = _functions()
    return int(fns[1]()) if fns else None


def set_blas_threads(n):
    """Give NumPy's OpenBLAS ``n`` threads; returns the previous count, or None when there is no
    OpenBLAS to set (another BLAS: its own environment variable decides)."""
    fns = _functions()
    if not fns:
        return None
    previous = int(fns[1]())
    if previous != n:
        fns[0](int(n))
    return previous


class _ThreadState(threading.local):
    """What a thread of a data-parallel step has of its own: its random generator (a copy of the
    process's, so each replica draws what one process would) and the number of threads its array
    ops are split over (1: the replicas already fill the cores). None: the process's."""
    rng = None
    workers = None


thread = _ThreadState()


@contextlib.contextmanager
def thread_state(rng, workers=1):
    """Within the block, this thread draws from ``rng`` and splits array ops over ``workers``
    threads: the setting of one replica's thread in a data-parallel step."""
    saved = thread.rng, thread.workers
    thread.rng, thread.workers = rng, workers
    try:
        yield
    finally:
        thread.rng, thread.workers = saved


# ---- CPU threads for the work BLAS does not take ---------------------------------------------
# A GEMM uses every core through BLAS, but NumPy runs each elementwise op, copy and small batched
# product (the Winograd transforms) on one thread. Those release the GIL, so splitting one such op
# into independent slices run on a few Python threads puts every core to work (BEGAN 64x64, 2
# cores: the ELU 1.9x, a transform's batched product 1.5x faster). Devices run each op as one
# kernel, so there the split is never made (and the operation count stays as it is).
_pool, _pool_size = None, 0


def cpu_workers(xp) -> int:
    """How many threads split an array op on ``xp``: the BLAS thread count on NumPy, 1 on a device.

    The count is the one BLAS was given (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS),
    else the cores this process may use, so ``OPENBLAS_NUM_THREADS=1`` (``bench --threads 1``) keeps
    the whole step on one core. A replica of a data-parallel step is given 1 (``thread_state``).
    """
    if xp is not np:  # CuPy, or the strict emulation of a device
        return 1
    if thread.workers is not None:
        return thread.workers
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return max(1, int(os.environ[var]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: below this many elements (16 MB of float32) an op is not split. Measured on 2 cores, 2 BLAS
#: threads, the settings interleaved in one process: from 1 << 18 to 1 << 22 took the BEGAN 32x32
#: n=32 step from 0.395 to 0.370 s (median; best 0.318 -> 0.268) and 64x64 n=64 from 3.31 to
#: 3.15 s; never splitting gave 0.367 and 3.33 s. Smaller ops run at memory speed either way,
#: and a second thread on them only contends for the cache with the BLAS threads.
SPLIT_MIN_SIZE = 1 << 22


def split_run(xp, fn, length, size):
    """Call ``fn(part)`` for slices ``part`` that cover ``range(length)``, in parallel on the CPU.

    ``fn`` must write disjoint results for disjoint slices (an op split along an axis it does not
    reduce over), so the result is bit for bit the one of ``fn(slice(0, length))``, which is what
    runs on a device, with one worker, or for an op of fewer than SPLIT_MIN_SIZE elements (``size``).
    """
    workers = min(cpu_workers(xp), length)
    if workers <= 1 or size < SPLIT_MIN_SIZE:
        fn(slice(0, length))
        return
    global _pool, _pool_size
    if _pool_size < workers:
        from concurrent.futures import ThreadPoolExecutor
        _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="tinygan-split"), workers
    bounds = [length * k // workers for k in range(workers + 1)]
    for f in [_pool.submit(fn, slice(lo, hi)) for lo, hi in zip(bounds, bounds[1:])]:
        f.result()
