"""Check an install end to end: ``python -m tinygan.doctor``.

One command that proves tinygan works on this machine and prints a one-screen
report to paste into a bug report. Exit status 0 only if every check passed.

What it checks (each line: status, name, measured value against its limit):

* versions: tinygan, Python, NumPy, CuPy, the CUDA runtime and driver, the
  GPU's name and memory, the BLAS library and its thread setting;
* every op family (elementwise and activations, reductions, shapes and
  indexing, matmul and linear, conv2d on each of its algorithms: im2col and
  Winograd F(4x4, 3x3) and F(2x2, 3x3), conv_transpose2d, upsample, pooling,
  batch norm in training and evaluation, embedding and one_hot, the losses):
  forward, backward and one Adam step on small odd shapes in float32, against
  NumPy in float64. Errors are ``max |x - ref| / max |ref|`` per array (the
  worst array), the Adam step's in units of the learning rate;
* one training step of each model (BEGAN with and without skip connections,
  DCGAN, MLP GAN, and the conditional MLP and DCGAN GANs) from the same seed
  against the NumPy backend: losses, every gradient, and the share of
  parameters whose Adam update differs by more than a tenth of the learning
  rate (a tiny gradient may flip its sign between backends; a wrong update
  moves all of them);
* a BEGAN step at the main command's settings (64x64, n = 128, batch 16; a
  smaller one without a GPU, or with ``--quick``): seconds per step measured
  between device synchronisations, the memory peak (CuPy's memory pool on a
  GPU; NumPy's allocations through tracemalloc on the CPU), and the
  device-to-host synchronisations inside the step, which must be zero;
* a checkpoint written on the device backend and loaded on NumPy, and the
  reverse: every array of the trainer's state must come back bit for bit.

Without a GPU the checks run on the NumPy backend and on the strict emulation
of a device (``--backend strict``), and one line says that no GPU answered
and what to install.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc

import numpy as np

import tinygan as tg
from tinygan import _strict, backend, nn, optim
from tinygan import functional as F
from tinygan.gan import losses as L

ADAM_LR = 1e-2
ADAM_EPS = 1e-2   # large, so that a gradient near 0 changes the update smoothly (see _run_family)
ADAM_TOL = 1e-3   # in units of ADAM_LR
STEP_MAIN = dict(size=64, filters=128, hidden=64, batch=16)   # examples/began_faces.py defaults
STEP_SMALL = dict(size=32, filters=32, hidden=64, batch=16)    # CPU-only and --quick
INSTALL_HINT = "pip install 'tinygan[cuda12]' (CUDA 12) or 'tinygan[cuda13]' (CUDA 13)"


class Report:
    """Check lines, printed as they come, and whether all passed."""

    def __init__(self, out=sys.stdout):
        self.out, self.results = out, []

    def line(self, text=""):
        print(text, file=self.out, flush=True)

    def check(self, name, ok, detail):
        self.results.append((name, bool(ok)))
        self.line(f"{'PASS' if ok else 'FAIL'}  {name:<38} {detail}")

    def run(self, name, fn):
        """Run ``fn() -> (ok, detail)``; an exception is a FAIL with its message."""
        try:
            ok, detail = fn()
        except Exception as e:  # a crash is a failed check, and the report goes on
            msg = str(e).splitlines()[0] if str(e) else ""
            ok, detail = False, f"{type(e).__name__}: {msg}"[:160]
        self.check(name, ok, detail)
        return ok

    @property
    def failed(self):
        return [n for n, ok in self.results if not ok]


# ---- helpers ------------------------------------------------------------------------------

@contextlib.contextmanager
def on_backend(name):
    """Switch the backend for a block; the previous one comes back afterwards."""
    before = backend.current()
    backend.use(name)
    try:
        yield
    finally:
        backend.use(before)


def rel_err(a, ref):
    """max |a - ref| / max |ref| (absolute when ref is all zeros); inf for a shape mismatch or NaN."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    d = np.abs(a - ref).max()
    if not np.isfinite(d):
        return float("inf")
    scale = np.abs(ref).max()
    return float(d / scale) if scale > 0 else float(d)


def worst(pairs):
    return max((rel_err(a, r) for a, r in pairs), default=0.0)


def _host(x):
    """A host copy (on numpy, to_host gives the live array, which the next Adam step would change)."""
    return np.array(backend.to_host(x.data if isinstance(x, tg.Tensor) else x), copy=True)


# ---- op families --------------------------------------------------------------------------

def _elementwise(x, y):
    pos = F.abs(x) + 0.5
    parts = [x + y, x - y, x * y, x / (F.abs(y) + 0.5), F.pow(pos, 1.7), F.exp(x), F.log(pos), F.sqrt(pos),
             F.clip(x, -0.5, 0.7), F.neg(y), F.relu(x), F.leaky_relu(x, 0.2), F.elu(x), F.sigmoid(x), F.tanh(x),
             F.softplus(x), F.logsigmoid(x), 2.0 - x, 3.0 / pos]
    return F.stack(parts, axis=0)


def _reductions(x):
    return [F.sum(x), F.mean(x, axis=1), F.sum(x, axis=(0, 2), keepdims=True), F.max(x, axis=2),
            F.max(x), F.mean(x, axis=-1, keepdims=True), x.sum(axis=0)]


def _shapes(x, y):
    a = x.reshape(5, 3, 7).permute(2, 0, 1)
    b = F.transpose(x, 0, 2).flatten(1)
    c = F.concat([x, y], axis=1)
    d = F.stack([x, y * 2.0], axis=1)
    e = x[1:, ::2, 3]
    f = x[:, 1:4][..., None].reshape(3, -1)
    cmp = (x > y).data.astype(x.dtype)        # comparisons give no gradient: the forward only
    return [a, b, c, d, e, f, tg.tensor(cmp)]


def _matmul(x, w, b, m):
    return [F.matmul(x, m), F.linear(x.reshape(-1, 5), w, b), x @ m[0]]


def _conv_direct(x, w3, b3, w5):
    return [F.conv2d(x, w3, b3, stride=2, padding=1), F.conv2d(x, w5, None, stride=1, padding=2),
            F.conv2d(x, w3, b3, stride=(2, 1), padding=0)]


def _conv_winograd(x, w3, b3):
    return [F.conv2d(x, w3, b3, stride=1, padding=1), F.conv2d(x, w3, None, stride=1, padding=0)]


@contextlib.contextmanager
def winograd_tile(m):
    from ..functional import winograd
    saved = winograd.WINOGRAD_TILE
    winograd.WINOGRAD_TILE = m
    try:
        yield
    finally:
        winograd.WINOGRAD_TILE = saved


def _conv_winograd2(x, w3, b3):
    with winograd_tile(2):
        return _conv_winograd(x, w3, b3)


def _conv_transpose(x, w4, b4, w3):
    return [F.conv_transpose2d(x, w4, b4, stride=2, padding=1),
            F.conv_transpose2d(x, w3, None, stride=2, padding=1, output_padding=1)]


def _upsample(x):
    return [F.upsample_nearest(x, 2), F.upsample_nearest(x, 3)]


def _pooling(x):
    return [F.avg_pool2d(x, 2), F.avg_pool2d(x, 3, stride=2, padding=1)]


def _batch_norm(x4, x2, g, b):
    xp = backend.xp()
    outs = []
    for x in (x4, x2):
        rm = xp.zeros((x.shape[1],), dtype=x.dtype)
        rv = xp.ones((x.shape[1],), dtype=x.dtype)
        train = F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.3)
        evals = F.batch_norm(x, rm, rv, g, b, training=False)   # with the updated running statistics
        outs += [train, evals, tg.tensor(rm), tg.tensor(rv)]
    return outs


def _embedding(w, lin):
    labels = backend.to_device(np.array([3, 0, 5, 3, 1, 6, 3], dtype=np.int64))
    onehot = F.one_hot(labels, 7, dtype=w.dtype)
    return [F.embedding(labels, w), F.embedding(labels.reshape(7, 1), w), F.linear(tg.tensor(onehot), lin),
            tg.tensor(onehot)]


def _losses(x, t):
    xp = backend.xp()
    target01 = tg.tensor(backend.to_device(np.linspace(0, 1, t.size).reshape(t.shape).astype(x.dtype)))
    k = xp.asarray(0.3, dtype=x.dtype)
    lr_real, lr_fake = F.l1_loss(x, t), F.mse_loss(x, t)
    return [F.l1_loss(x, t), F.mse_loss(x, t, reduction="sum"), F.l1_loss(x, t, reduction="none"),
            F.binary_cross_entropy_with_logits(x, target01), L.discriminator_loss(x[0], t[1]),
            L.generator_loss_nonsaturating(x[1]), L.generator_loss_saturating(x[2]),
            L.reconstruction_loss(x, t),
            tg.tensor(L.began_k_update(k, lr_real.data, lr_fake.data, 0.5, 0.001)),
            tg.tensor(L.began_convergence(lr_real.data, lr_fake.data, 0.5))]


def _families():
    """(name, fn, input shapes, tolerance) of every op family."""
    return [
        ("elementwise + activations", _elementwise, [(3, 5, 7), (3, 5, 7)], 1e-5),
        ("reductions", _reductions, [(3, 5, 7)], 1e-5),
        ("shapes + indexing", _shapes, [(3, 5, 7), (3, 5, 7)], 1e-6),
        ("matmul + linear", _matmul, [(3, 7, 5), (6, 5), (6,), (3, 5, 4)], 1e-5),
        ("conv2d im2col (direct)", _conv_direct, [(2, 3, 9, 7), (5, 3, 3, 3), (5,), (4, 3, 5, 5)], 1e-5),
        ("conv2d winograd F(4x4,3x3)", _conv_winograd, [(2, 3, 11, 9), (5, 3, 3, 3), (5,)], F.WINOGRAD_RTOL),
        ("conv2d winograd F(2x2,3x3)", _conv_winograd2, [(2, 3, 11, 9), (5, 3, 3, 3), (5,)], F.WINOGRAD_RTOL),
        ("conv_transpose2d", _conv_transpose, [(2, 3, 5, 4), (3, 4, 4, 4), (4,), (3, 2, 3, 3)], 1e-5),
        ("upsample_nearest", _upsample, [(2, 3, 5, 3)], 1e-6),
        ("avg_pool2d", _pooling, [(2, 3, 7, 9)], 1e-6),
        ("batch_norm train + eval", _batch_norm, [(5, 3, 4, 3), (7, 3), (3,), (3,)], 1e-4),
        ("embedding + one_hot", _embedding, [(7, 5), (4, 7)], 1e-6),
        ("losses (F and tinygan.gan.losses)", _losses, [(3, 5), (3, 5)], 1e-5),
    ]


def _run_family(fn, arrays, dtype):
    """Forward, backward of sum(out * r) and one Adam step on the current backend; host results.

    Adam runs with eps = 1e-2 rather than 1e-8: with eps near 0 its first step is
    lr * sign(g), which flips between backends for a gradient within rounding of
    0; with a large eps the update is smooth in g, so a difference in the update
    means a difference in Adam's arithmetic, not a flipped sign.
    """
    params = [nn.Parameter(backend.to_device(a.astype(dtype))) for a in arrays]
    outs = fn(*params)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    rng = np.random.default_rng(123)
    loss = None
    for o in outs:
        r = tg.tensor(backend.to_device(rng.standard_normal(o.shape).astype(dtype)))
        term = (o * r).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    grads = [_host(p.grad) if p.grad is not None else np.zeros(p.shape) for p in params]
    before = [_host(p) for p in params]
    optim.Adam(params, lr=ADAM_LR, eps=ADAM_EPS).step()
    steps = [(_host(p) - b) / ADAM_LR for p, b in zip(params, before)]
    return [_host(o) for o in outs], grads, steps


def check_ops(report, name, families=None):
    """Every op family on backend ``name`` in float32 against NumPy in float64."""
    for fam, fn, shapes, tol in families or _families():
        rng = np.random.default_rng(sum(map(sum, shapes)))
        arrays = [rng.standard_normal(s) for s in shapes]

        def one(fn=fn, arrays=arrays, tol=tol):
            with on_backend("numpy"):
                ref = _run_family(fn, arrays, np.float64)
            with on_backend(name):
                got = _run_family(fn, arrays, np.float32)
            fwd, grad = worst(zip(got[0], ref[0])), worst(zip(got[1], ref[1]))
            adam = max((float(np.abs(a - r).max()) if a.size else 0.0 for a, r in zip(got[2], ref[2])), default=0.0)
            ok = fwd <= tol and grad <= tol and adam <= ADAM_TOL
            return ok, f"fwd {fwd:.1e} grad {grad:.1e} (tol {tol:.0e})  adam {adam:.1e} (tol {ADAM_TOL:.0e})"
        report.run(f"{name}: {fam}", one)


# ---- models -------------------------------------------------------------------------------

def _models():
    """(name, build() -> (trainer, host batch)) of every model, at small sizes."""
    from tinygan.gan import BEGANDecoder, BEGANDiscriminator, ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, ConditionalMLPDiscriminator, ConditionalMLPGenerator, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
    from tinygan.gan import BEGANTrainer, GANTrainer
    rng = np.random.default_rng(5)
    faces = rng.uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    digits = rng.uniform(-1, 1, (6, 1, 28, 28)).astype(np.float32)
    labels = np.array([0, 3, 9, 3, 1, 7], dtype=np.int64)

    def began(skip):
        return lambda: (BEGANTrainer(BEGANDecoder(32, 4, 8, skip=skip), BEGANDiscriminator(32, 4, 8, skip=skip),
                                     num_fixed=2), (faces,))

    return [
        ("BEGAN", began(False)),
        ("BEGAN skip connections", began(True)),
        ("DCGAN", lambda: (GANTrainer(DCGANGenerator(8, 4), DCGANDiscriminator(4), num_fixed=2), (digits,))),
        ("MLP GAN", lambda: (GANTrainer(MLPGenerator(8, (16, 32)), MLPDiscriminator(hidden=(32, 16)),
                                        num_fixed=2), (digits,))),
        ("conditional MLP GAN", lambda: (GANTrainer(ConditionalMLPGenerator(8, (16, 32)),
                                                    ConditionalMLPDiscriminator(hidden=(32, 16)), conditional=True,
                                                    num_fixed=10), (digits, labels))),
        ("conditional DCGAN", lambda: (GANTrainer(ConditionalDCGANGenerator(8, 4), ConditionalDCGANDiscriminator(4),
                                                  conditional=True, num_fixed=10), (digits, labels))),
    ]


def _params(trainer):
    return [p for net in (trainer.G, trainer.D) for p in net.parameters()]


def _train_one_step(build):
    backend.seed(0)
    trainer, batch = build()
    before = [_host(p) for p in _params(trainer)]
    metrics = trainer.step(tuple(backend.to_device(b) for b in batch))
    lr = trainer.opt_g.lr
    return ({k: np.asarray(_host(v) if hasattr(v, "shape") else v, np.float64) for k, v in metrics.items()},
            [_host(p.grad) if p.grad is not None else np.zeros(p.shape) for p in _params(trainer)],
            [(_host(p) - b) / lr for p, b in zip(_params(trainer), before)])


def check_models(report, name):
    for model, build in _models():
        def one(build=build):
            with on_backend("numpy"):
                ref = _train_one_step(build)
            with on_backend(name):
                got = _train_one_step(build)
            loss = worst((got[0][k], ref[0][k]) for k in ref[0])
            grad = worst(zip(got[1], ref[1]))
            diffs = np.concatenate([np.abs(a - r).ravel() for a, r in zip(got[2], ref[2])])
            off = float((diffs > 0.1).mean()) if diffs.size else 0.0
            ok = loss <= 1e-4 and grad <= 1e-3 and off <= 1e-3
            return ok, f"losses {loss:.1e} (tol 1e-04) grads {grad:.1e} (tol 1e-03) updates off {off:.1e} (tol 1e-03)"
        report.run(f"{name}: step {model}", one)


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


# ---- versions -----------------------------------------------------------------------------

def _blas():
    name = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        name = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: show_config prints and returns None
        pass
    env = [f"{v}={os.environ[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           if v in os.environ]
    threads = ", ".join(env) if env else f"not set (BLAS default, {os.cpu_count()} CPUs)"
    try:
        import threadpoolctl  # optional: reads the thread count BLAS actually uses
        info = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        if info:
            threads += f"; threadpoolctl: {info[0].get('num_threads')} threads"
    except Exception:
        pass
    return name, threads


def _cupy_version():
    for dist in importlib.metadata.distributions():
        n = (dist.metadata["Name"] or "").lower()
        if n == "cupy" or n.startswith("cupy-cuda"):
            return f"{dist.version} ({dist.metadata['Name']})"
    return "not installed"


def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


def versions(report, gpu):
    blas, threads = _blas()
    report.line(f"tinygan {tg.__version__} | Python {platform.python_version()} | NumPy {np.__version__} | "
                f"CuPy {_cupy_version()}")
    if gpu is not None:
        report.line(f"GPU {gpu['device']}: {gpu['name']}, {gpu['memory_bytes'] / 2 ** 30:.1f} GiB | "
                    f"CUDA runtime {_cuda_version(gpu['cuda_runtime'])} | driver {_cuda_version(gpu['cuda_driver'])}")
    report.line(f"CPU: {platform.machine()}, {os.cpu_count()} cores | BLAS {blas} | threads: {threads}")


# ---- the command --------------------------------------------------------------------------

def _gpu(device):
    """(device info or None, the reason no GPU answered or None)."""
    try:
        with on_backend("cupy"):
            if device is not None:
                backend.select_device(device)
            return backend.device_info(), None
    except backend.BackendError as e:
        return None, str(e).split(";")[0]


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m tinygan.doctor", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]),
        epilog="Exit status: 0 if every check passed, 1 if any failed, 2 for a usage error.")
    p.add_argument("--backend", choices=("auto", "cupy", "numpy", "strict"), default="auto",
                   help="backend to check against NumPy (default auto: cupy if a GPU answers, else numpy and strict)")
    p.add_argument("--device", type=int, default=None, metavar="N",
                   help="GPU number N, as CuPy counts them (within CUDA_VISIBLE_DEVICES); default: 0")
    p.add_argument("--quick", action="store_true",
                   help=f"time the BEGAN step at {_cfg_label(STEP_SMALL)} instead of the main command's "
                        f"{_cfg_label(STEP_MAIN)} on a GPU")
    p.add_argument("--steps", type=int, default=3, help="timed BEGAN steps (default 3)")
    return p


def main(argv=None, out=None):
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        build_parser().error("--steps must be >= 1")
    report = Report(out or sys.stdout)
    start = time.perf_counter()
    gpu, why = (None, None)
    if args.backend in ("auto", "cupy") or args.device is not None:
        gpu, why = _gpu(args.device)
    if args.backend == "cupy" and gpu is None:
        print(f"error: --backend cupy: {why}", file=sys.stderr)
        return 2
    if args.device is not None and gpu is None:
        print(f"error: --device {args.device}: {why}", file=sys.stderr)
        return 2
    backend.use("numpy")
    names = ["cupy"] if gpu is not None and args.backend in ("auto", "cupy") else \
        ["numpy", "strict"] if args.backend == "auto" else [args.backend]

    report.line(f"== tinygan doctor: backends {', '.join(names)}, each against NumPy ==")
    versions(report, gpu)
    if gpu is None and args.backend == "auto":
        report.line(f"no GPU answered: {why}")
        report.line(f"so the checks ran on numpy and strict; for a GPU: {INSTALL_HINT}")
    device = names[-1]   # the backend that stands for the device: cupy, or strict without a GPU
    try:
        with contextlib.ExitStack() as stack:
            if gpu is not None and args.device is not None:
                stack.enter_context(on_backend("cupy"))
                backend.select_device(args.device)
            report.line("-- op families: forward, backward, Adam step; float32 vs NumPy float64")
            for name in names:
                check_ops(report, name)
            report.line("-- one training step of each model vs the numpy backend, same seed")
            for name in names:
                if name != "numpy":
                    check_models(report, name)
            if names == ["numpy"]:
                report.line("(numpy is the reference itself: model steps need --backend strict or cupy)")
            cfg = STEP_MAIN if gpu is not None and not args.quick else STEP_SMALL
            note = "" if cfg is STEP_MAIN else (
                " (smaller than the main command's 64x64 n=128: " + ("--quick)" if gpu is not None else
                                                                     "no GPU, to stay under a minute)"))
            report.line(f"-- BEGAN step at {_cfg_label(cfg)}{note}")
            timed = "cupy" if "cupy" in names else "numpy" if "numpy" in names else names[0]
            check_step_speed(report, timed, cfg, args.steps)
            for name in names:
                if name != "numpy":
                    check_step_syncs(report, name, cfg if name == "cupy" else STEP_SMALL)
            if "strict" not in names:
                check_step_syncs(report, "strict", STEP_SMALL)
            report.line("-- checkpoints")
            if device != "numpy":
                check_checkpoint(report, device, "out")
                check_checkpoint(report, device, "in")
            else:
                report.line("(numpy only: nothing to cross)")
    finally:
        backend.use("numpy")
    n, bad = len(report.results), report.failed
    report.line(f"== {n - len(bad)} of {n} checks passed"
                + (f"; FAILED: {', '.join(bad)}" if bad else "") + f" ({time.perf_counter() - start:.0f} s) ==")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
