"""The collectives between GPUs: NCCL through CuPy's ``cupy.cuda.nccl``, bootstrapped over MPI.

Rank 0 asks NCCL for a unique id, MPI broadcasts it, and every rank joins the
communicator on its current GPU (``local_rank % GPUs``, chosen when the
backend was switched on). Calls run on CuPy's current stream, so they queue
behind the backward pass that wrote the gradients and before the optimiser
step that reads them, with no host synchronisation.

The NCCL module comes from :func:`tinygan.backend.nccl` (only the backend
imports CuPy); every name used here is checked against the real
``cupy.cuda.nccl`` by ``tests/test_distributed.py``.
"""
from __future__ import annotations

from .. import backend
from . import DistributedError


def _module():
    nccl = backend.nccl()
    if not getattr(nccl, "available", True):
        raise DistributedError("NCCL cannot be loaded by CuPy: pip install nvidia-nccl-cu12 (or -cu13), "
                               "or run with --backend numpy")
    return nccl


def communicator(world):
    """The NCCL communicator of ``world`` (made on first use, on every rank at once)."""
    if world.nccl is None:
        nccl = _module()
        uid = nccl.get_unique_id() if world.rank == 0 else None
        uid = world.comm.bcast(uid, root=0)
        world.nccl = (nccl, nccl.NcclCommunicator(world.size, uid, world.rank))
    return world.nccl


def _dtype(nccl, a):
    table = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16,
             "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}
    try:
        return table[str(a.dtype)]
    except KeyError:
        raise DistributedError(f"NCCL collectives take {', '.join(table)} arrays, got {a.dtype}") from None


def _stream():
    return backend.xp().cuda.get_current_stream().ptr


def all_reduce_mean(world, flat):
    """``flat`` (contiguous, on this rank's GPU) becomes its mean over the ranks: one ncclAllReduce."""
    nccl, comm = communicator(world)
    if not flat.flags.c_contiguous:
        raise DistributedError("all_reduce_mean takes a contiguous array")
    comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, _dtype(nccl, flat), nccl.NCCL_AVG, _stream())
    return flat


def broadcast(world, a, root=0):
    """``a`` (contiguous, on this rank's GPU) becomes rank ``root``'s, in place: one ncclBcast."""
    nccl, comm = communicator(world)
    comm.bcast(a.data.ptr, a.size, _dtype(nccl, a), root, _stream())
    return a
