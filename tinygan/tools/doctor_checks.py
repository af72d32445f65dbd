"""The numerical checks of ``python -m tinygan.doctor``: every op family and one step of every model.

This module holds the checks that compare a backend with NumPy on small odd
shapes: the op families (elementwise and activations, reductions, shapes and
indexing, matmul and linear, conv2d by im2col and both Winograd tiles,
conv_transpose2d, upsample, pooling, batch norm, embedding and one_hot, the
losses), each run forward, backward and through one Adam step in float32
against float64 (:func:`check_ops`), and one training step of each model from
the same seed (:func:`check_models`); with them the helpers every doctor check
shares (:func:`on_backend`, :func:`rel_err`, :func:`worst`, ``_host``). The
report and the command are in :mod:`tinygan.tools.doctor`, the BEGAN step and
checkpoint checks in :mod:`tinygan.tools.doctor_runtime`.
"""
from __future__ import annotations

import contextlib

import numpy as np

import tinygan as tg
from tinygan import backend, nn, optim
from tinygan import functional as F
from tinygan.gan import losses as L

ADAM_LR = 1e-2
ADAM_EPS = 1e-2   # large, so that a gradient near 0 changes the update smoothly (see _run_family)
ADAM_TOL = 1e-3   # in units of ADAM_LR


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
