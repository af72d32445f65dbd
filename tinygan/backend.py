"""The one module that knows NumPy from CuPy.

Everything else in tinygan asks this module for an array module (``xp``) and
uses only functions that NumPy and CuPy both have, with the same meaning.

* ``use("numpy" | "cupy" | "strict")`` chooses where new arrays are created.
  ``"strict"`` is NumPy behind device-like arrays that refuse silent
  conversion to host memory, as CuPy's do; tests run whole training steps on it
  so a hidden device-to-host round trip fails on a CPU-only machine.
* ``get_array_module(*arrays)`` gives the module of existing arrays; ops take
  their module from their inputs, never from global state.
* ``to_host`` / ``to_device`` are the only doors between host and device.
* ``use("cupy", device=N)`` selects GPU N, an index into the GPUs the process
  sees (after ``CUDA_VISIBLE_DEVICES``); ``device()`` tells which.
* Random numbers come from one NumPy ``Generator`` on the host and are moved to
  the device. A seed then means the same numbers on every backend, and the
  generator's state can be checkpointed exactly. The arrays drawn this way per
  step are small (noise vectors). Large per-step draws (dropout masks, the
  size of an activation) are made on the array's own device instead by
  :func:`rand_like`, from a seed drawn on the host, so they stay reproducible
  from the host generator's state without a host-to-device copy.
* ``cache_key(xp)`` keys caches of device arrays (work buffers, constant
  matrices) by array module and device: one place that knows what a device is.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import _malloc, _strict
from . import _cpu

#: the host's threads (tinygan/_cpu.py): ops split over the cores, BLAS's thread count, a data-parallel thread's own
split_run, cpu_workers, blas_threads, set_blas_threads = _cpu.split_run, _cpu.cpu_workers, _cpu.blas_threads, _cpu.set_blas_threads
thread_state, _thread = _cpu.thread_state, _cpu.thread

BACKENDS = ("numpy", "cupy", "strict")
DEFAULT_DTYPE = np.float32

_CUPY_HINT = ("install the CUDA extra that matches your driver: "
              "pip install 'tinygan[cuda12]' (CUDA 12) or 'tinygan[cuda13]' (CUDA 13)")


class BackendError(RuntimeError):
    """A backend was asked for that cannot work here, or two backends were mixed."""


_name = "numpy"
_xp = np
_device = None  # the GPU index under "cupy"; None on the host backends
_rng = np.random.default_rng(0)  # the process's generator; a data-parallel thread has its own (below)
_malloc.tune()  # host memory: large freed blocks are kept for reuse (see _malloc)


def _cupy_package():
    """The cupy module if the package is installed, else None; touches no GPU (the strict
    emulation reads CuPy's API from it)."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _load_cupy(device=0):
    try:
        import cupy
    except ImportError as e:
        raise BackendError(f"backend 'cupy' needs the cupy package, which is not installed ({e}); "
                           f"{_CUPY_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError and friends have no common public base
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackendError(f"backend 'cupy' is installed but no usable NVIDIA GPU answers ({first}); "
                           f"check the driver and {_CUPY_HINT}") from None
    if not 0 <= device < count:
        raise BackendError(f"device {device} does not exist: this process sees {count} GPU"
                           f"{'' if count == 1 else 's'} (devices 0..{count - 1}; device N counts the GPUs "
                           "that CUDA_VISIBLE_DEVICES leaves visible)")
    try:
        cupy.cuda.Device(device).use()
        cupy.zeros(1)  # importing works without a GPU; creating an array does not
        cupy.cuda.Device(device).synchronize()
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackendError(f"backend 'cupy': GPU {device} does not answer ({first}); "
                           f"check the driver and {_CUPY_HINT}") from None
    return cupy


def use(name: str, device=None):
    """Choose the backend on which new arrays are created: 'numpy', 'cupy' or 'strict'.

    ``device`` (cupy only) is the GPU to use, an index into the GPUs this
    process sees: with ``CUDA_VISIBLE_DEVICES=2,3``, device 1 is physical GPU 3.
    None means device 0. The host backends have no devices and refuse one.
    """
    global _name, _xp, _device
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if device is not None:
        if name != "cupy":
            raise BackendError(f"backend {name!r} runs on the host and has no devices; device={device!r} "
                               "needs backend 'cupy'")
        if not isinstance(device, int) or isinstance(device, bool) or device < 0:
            raise BackendError(f"device must be a GPU index 0, 1, ..., got {device!r}")
    if name == "cupy":
        _xp, _device = _load_cupy(0 if device is None else device), (0 if device is None else device)
    else:
        _xp, _device = (np if name == "numpy" else _strict.module), None
    _name = name
    return _xp


def device():
    """Index of the GPU in use under the cupy backend; None on the host backends."""
    return _device


@contextlib.contextmanager
def using(name):
    """Within the block, new arrays are made on backend ``name``; the backend in use before comes back after."""
    global _name, _xp, _device
    saved = _name, _xp, _device
    use(name)
    try:
        yield _xp
    finally:
        _name, _xp, _device = saved
        if _device is not None:
            _xp.cuda.Device(_device).use()


def is_numpy(xp):
    """True for NumPy itself: the host backend (the strict emulation stands in for a device)."""
    return xp is np


def cache_key(xp):
    """Key of a cache of arrays made by ``xp``: its module and, for CuPy, the current GPU.

    An array cached for one GPU is no use on another (CuPy would refuse it, or
    copy it between devices every call), so caches of work buffers and
    constant matrices key by this, never by the module alone.
    """
    if xp is np or xp is _strict.module:
        return (id(xp), None)
    return (id(xp), xp.cuda.runtime.getDevice())


def current() -> str:
    """Name of the backend new arrays are created on."""
    return _name


def xp():
    """Array module of the current backend (numpy, cupy, or the strict emulation)."""
    return _xp


def _module_of(a):
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        return np
    if isinstance(a, _strict.StrictArray):
        return _strict.module
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return None


def get_array_module(*arrays):
    """Array module shared by ``arrays`` (Python scalars are ignored).

    Mixing arrays of two backends is an error: it would otherwise become a
    silent copy or a confusing TypeError deep inside an op.
    """
    found = None
    for a in arrays:
        m = _module_of(a)
        if m is None:
            continue
        if found is not None and m is not found:
            raise BackendError(f"arrays from two backends in one op: {_label(found)} and {_label(m)}; "
                               "move them with tinygan.backend.to_device() first")
        found = m
    return found if found is not None else _xp


class ElementwiseKernel:
    """A chain of elementwise arithmetic run as one kernel on a GPU: ``body`` is its CUDA C for
    ``cupy.ElementwiseKernel(in_params, out_params, body)``, where each array call of the same chain
    would be a kernel launch of its own; ``host(xp, *args)`` computes the same with array calls on
    the host backends, and the strict one counts it as the one operation it is on a device.

    Call it with the inputs, then the outputs (written in place; an output may also be read, as in
    an update ``m = b * m + ...``). Python numbers pass as scalar parameters. Every kernel is kept in
    ``ElementwiseKernel.defined``: tests compile each body with NVRTC for a GPU and, as C++ on the CPU,
    check it against its host form (tests/test_kernels.py).
    """
    defined = []  # every kernel made, in order

    def __init__(self, name, in_params, out_params, body, host):
        self.name, self.in_params, self.out_params, self.body, self.host = name, in_params, out_params, body, host
        self._compiled = None
        ElementwiseKernel.defined.append(self)

    def __call__(self, *args):
        xp = get_array_module(*(a for a in args if not isinstance(a, np.generic)))  # scalars may be NumPy's
        if xp is np:
            self.host(np, *args)
        elif xp is _strict.module:
            _strict.ops[f"kernel {self.name}"] += 1
            self.host(np, *(_strict.device_memory(a) for a in args))
        else:  # CuPy compiles it on first use and caches the binary per device itself
            if self._compiled is None:
                self._compiled = xp.ElementwiseKernel(self.in_params, self.out_params, self.body,
                                                      f"tinygan_{self.name}")
            self._compiled(*args)


def _label(m):
    return "strict" if m is _strict.module else m.__name__


def is_host(a) -> bool:
    """True for host data: NumPy arrays and scalars, Python numbers and lists."""
    return _module_of(a) in (None, np)


def to_host(a) -> np.ndarray:
    """Copy an array to host memory as a NumPy array: the explicit door out of the device."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np.asarray(a)
    if hasattr(a, "get"):  # cupy.ndarray and the strict emulation
        return a.get()
    return np.asarray(a)


def to_device(a, dtype=None):
    """Put host data (array, list, scalar) on the current backend, optionally casting."""
    if _module_of(a) is _xp and dtype is None:
        return a
    host = to_host(a) if _module_of(a) not in (None, np) else np.asarray(a)
    if dtype is not None:
        host = host.astype(dtype, copy=False)
    if _xp is np:
        return host
    return _xp.asarray(host)


# ---- random numbers -------------------------------------------------------

def _gen():  # this thread's generator in a data-parallel step (_cpu.thread_state), else the process's
    return _thread.rng if _thread.rng is not None else _rng


def _set_gen(gen):
    global _rng
    if _thread.rng is not None:
        _thread.rng = gen
    else:
        _rng = gen


def seed(s: int):
    """Reset the library's random generator (parameter init, noise, dropout)."""
    _set_gen(np.random.default_rng(s))


def rng() -> np.random.Generator:
    """The host generator behind all of tinygan's randomness (this thread's, in a data-parallel step)."""
    return _gen()


def rng_state() -> dict:
    """JSON-serialisable state of the generator, for checkpoints."""
    return _gen().bit_generator.state


def set_rng_state(state: dict):
    """Restore a state from :func:`rng_state`."""
    _gen().bit_generator.state = state


@contextlib.contextmanager
def rng_fork(seed=None):
    """Within the block, randomness comes from a side stream: the generator's state is put back after.

    With ``seed``, the block draws from that seed (an evaluation that must give
    the same noise every epoch); without, it draws what training would have
    drawn next, then training continues as if nothing had been drawn. Either
    way a hook or an evaluation between steps cannot shift training's random
    stream, so a resumed run stays identical to a straight one.
    """
    saved = _gen()
    state = saved.bit_generator.state
    if seed is not None:
        _set_gen(np.random.default_rng(seed))
    try:
        yield
    finally:
        _set_gen(saved)
        saved.bit_generator.state = state


def randn(*shape, dtype=None):
    """Standard normal samples on the current backend."""
    return to_device(_gen().standard_normal(shape, dtype=np.dtype(dtype or DEFAULT_DTYPE)))


def rand(*shape, dtype=None):
    """Uniform samples in [0, 1) on the current backend."""
    return to_device(_gen().random(shape, dtype=np.dtype(dtype or DEFAULT_DTYPE)))


def rand_like(a, dtype=None):
    """Uniform samples in [0, 1) of ``a``'s shape, made on ``a``'s own device.

    One integer is drawn from the host generator and seeds the device's
    generator, so the numbers follow from the checkpointed host state (resume
    stays exact) while the array itself never crosses from the host. The
    host backends draw with a NumPy generator of that seed; CuPy with its own
    generator (other numbers than NumPy's for the same seed).
    """
    dt = np.dtype(dtype or a.dtype)
    s = int(_gen().integers(2 ** 63))
    xp = get_array_module(a)
    if xp is np or xp is _strict.module:
        host = np.random.default_rng(s).random(tuple(a.shape), dtype=dt)
        return host if xp is np else xp.asarray(host)  # the emulation's "device" is the host
    gen = _device_generators.get(cache_key(xp))
    if gen is None:
        gen = _device_generators[cache_key(xp)] = xp.random.RandomState(s)
    else:
        gen.seed(s)
    return gen.random_sample(tuple(a.shape), dtype=dt)


_device_generators = {}  # cache_key -> cupy.random.RandomState, reseeded per draw


def uniform(low, high, shape, dtype=None):
    """Uniform samples in [low, high) on the current backend."""
    dt = np.dtype(dtype or DEFAULT_DTYPE)
    return to_device((low + (high - low) * _gen().random(shape, dtype=np.float64)).astype(dt))


# ---- device clock, memory and identity (for tinygan.doctor and tinygan.bench) ----------
# Added for issue 10 (doctor, benchmark); each is a no-op or None off CuPy, so callers need
# no backend test of their own.

def synchronize():
    """Wait until the current GPU has finished the work queued so far (nothing to wait for on numpy/strict)."""
    if _name == "cupy":
        _xp.cuda.Device().synchronize()


def memory_pool_reset():
    """Free the blocks CuPy's memory pool caches but nobody uses, so that
    :func:`memory_pool_held` afterwards reads the high-water mark of what follows."""
    if _name == "cupy":
        synchronize()
        _xp.get_default_memory_pool().free_all_blocks()


def memory_pool_held():
    """Bytes of GPU memory CuPy's default pool holds now, or None off CuPy.

    The pool never gives memory back by itself, so after :func:`memory_pool_reset`
    this is the peak of the memory in use since then, rounded up by the pool's
    block sizes (an upper bound, within a few percent at training sizes).
    """
    if _name != "cupy":
        return None
    return int(_xp.get_default_memory_pool().total_bytes())


def device_info():
    """{"name", "memory_bytes", "cuda_runtime", "cuda_driver", "device"} of the current GPU, or None off CuPy."""
    if _name != "cupy":
        return None
    rt = _xp.cuda.runtime
    dev = _xp.cuda.Device()
    props = rt.getDeviceProperties(dev.id)
    name = props["name"]
    return {"device": dev.id, "name": name.decode() if isinstance(name, bytes) else str(name),
            "memory_bytes": int(props["totalGlobalMem"]),
            "cuda_runtime": rt.runtimeGetVersion(), "cuda_driver": rt.driverGetVersion()}


def select_device(n: int):
    """Make GPU ``n`` (CuPy's numbering, i.e. within CUDA_VISIBLE_DEVICES) current; needs backend 'cupy'."""
    if _name != "cupy":
        raise BackendError(f"--device {n} needs the cupy backend, but the backend is {_name!r}")
    count = _xp.cuda.runtime.getDeviceCount()
    if not 0 <= n < count:
        raise BackendError(f"no GPU {n}: {count} visible (numbered 0..{count - 1} within CUDA_VISIBLE_DEVICES)")
    _xp.cuda.Device(n).use()


def nccl():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``), for tinygan.distributed's collectives between GPUs."""
    if _name != "cupy":
        raise BackendError(f"NCCL runs between GPUs: it needs the cupy backend, not {_name!r}")
    from cupy.cuda import nccl as module
    return module
