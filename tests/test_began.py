"""BEGAN: the balance term, the convergence measure, the step on every backend, resume, the example."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygan as tg
from tinygan import _strict, backend
from tinygan.gan import losses
from tinygan.train.checkpoint import load_checkpoint
from tinygan.gan import BEGANDecoder, BEGANDiscriminator, BEGANEncoder
from tinygan.gan import BEGANTrainer
from tinygan.optim import Adam, ReduceLROnStall
from tinygan.train import LoopConfig, TrainingError, fit

ROOT = Path(__file__).resolve().parents[1]



def tiny_trainer(seed=0, size=32, **kw):
    backend.seed(seed)
    G = BEGANDecoder(size, filters=4, hidden=8)
    D = BEGANDiscriminator(size, filters=4, hidden=8)
    return BEGANTrainer(G, D, num_fixed=4, **kw)


def host(v):
    """A device scalar (a metric, k) as a Python float, through the one door to the host."""
    return float(backend.to_host(v))


def images_in_range(n, size=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


# ---- the paper's equations, against hand-computed values --------------------

@pytest.mark.parametrize("k, lx, lg, expected", [
    (0.5, 0.2, 0.05, 0.5 + 0.001 * (0.5 * 0.2 - 0.05)),   # inside [0, 1]
    (0.0, 0.1, 0.3, 0.0),                                   # would go negative: clipped to 0
    (0.99995, 0.4, 0.0, 1.0),                               # would pass 1: clipped to 1
])
def test_k_update_and_clipping(k, lx, lg, expected):
    xp = backend.xp()
    new = losses.began_k_update(xp.asarray(k, dtype=np.float32), xp.asarray(lx, dtype=np.float32),
                                xp.asarray(lg, dtype=np.float32), gamma=0.5, lambda_k=0.001)
    assert new.shape == ()
    assert host(new) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("lx, lg, gamma, expected", [(0.2, 0.3, 0.5, 0.4), (0.2, 0.05, 0.5, 0.25), (0.1, 0.07, 0.7, 0.1)])
def test_convergence_measure(lx, lg, gamma, expected):
    xp = backend.xp()
    m = losses.began_convergence(xp.asarray(lx, dtype=np.float32), xp.asarray(lg, dtype=np.float32), gamma)
    assert host(m) == pytest.approx(expected, abs=1e-7)


def test_step_metrics_follow_the_equations():
    tr = tiny_trainer()
    x = tg.tensor(images_in_range(4))
    with tg.no_grad():  # L(x) with D before its update: the step must report exactly this
        expected_lx = float(np.abs(tr.D(x).numpy() - x.numpy()).mean())
    m = tr.step((x,))
    lx, lg, k1 = host(m["loss_real"]), host(m["loss_fake"]), host(tr.k)
    assert host(m["k"]) == 0.0                                  # k_0 = 0 was used in L_D
    assert lx == pytest.approx(expected_lx, rel=1e-5)
    assert host(m["loss_d"]) == pytest.approx(lx, rel=1e-6)     # L_D = L(x) - 0 * L(G(z_D))
    assert k1 == pytest.approx(min(max(0.001 * (0.5 * lx - lg), 0), 1), abs=1e-9)
    assert host(m["M"]) == pytest.approx(lx + abs(0.5 * lx - lg), rel=1e-6)
    m2 = tr.step((x,))
    assert host(m2["k"]) == pytest.approx(k1)                   # the next step uses k_1


def test_step_changes_both_networks_and_keeps_float32():
    tr = tiny_trainer()
    g0 = [p.data.copy() for p in tr.G.parameters()]
    d0 = [p.data.copy() for p in tr.D.parameters()]
    tr.step((tg.tensor(images_in_range(4)),))
    assert all(not np.array_equal(a, p.data) for a, p in zip(g0, tr.G.parameters()))
    assert all(not np.array_equal(a, p.data) for a, p in zip(d0, tr.D.parameters()))
    for p in tr.G.parameters() + tr.D.parameters():
        assert p.data.dtype == np.float32 and p.requires_grad
    for opt in (tr.opt_g, tr.opt_d):
        for s in opt.state:
            assert s["exp_avg"].dtype == np.float32


@pytest.mark.backend_agnostic  # compares a strict run with a NumPy one, switching backends itself
def test_step_on_strict_backend_makes_no_host_transfer_and_matches_numpy():
    x = images_in_range(4)
    ref = tiny_trainer(seed=3)
    ref_metrics = [ref.step((tg.tensor(x),)) for _ in range(2)]

    backend.use("strict")
    tr = tiny_trainer(seed=3)
    batch = (tg.tensor(backend.to_device(x)),)
    _strict.reset_transfers()
    metrics = [tr.step(batch) for _ in range(2)]
    assert _strict.transfers == 0, "a BEGAN step copied something to the host"
    assert isinstance(metrics[-1]["M"], _strict.StrictArray)
    for m, r in zip(metrics, ref_metrics):
        for key in ("loss_real", "loss_fake", "k", "M"):
            assert backend.to_host(m[key]) == pytest.approx(float(r[key]), rel=1e-5, abs=1e-7)
    for p, q in zip(tr.G.parameters(), ref.G.parameters()):
        np.testing.assert_allclose(backend.to_host(p.data), q.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size, scales", [(32, 3), (64, 4), (128, 5)])
@pytest.mark.parametrize("skip", [False, True])
def test_architecture_shapes(size, scales, skip):
    backend.seed(0)
    G = BEGANDecoder(size, filters=2, hidden=3, skip=skip)
    E = BEGANEncoder(size, filters=2, hidden=3)
    z = tg.tensor(np.zeros((1, 3), np.float32))
    img = G(z)
    assert img.shape == (1, 3, size, size)
    assert E(img).shape == (1, 3)
    assert G.scales == scales
    # filters grow linearly at each downsampling: n, 2n, ..., scales * n at 8x8
    assert E.fc.in_features == 8 * 8 * 2 * scales
    first_conv_after_upsampling = G.blocks[1][0]
    assert first_conv_after_upsampling.in_channels == (4 if skip else 2)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="32, 64, 128"):
        BEGANDecoder(48)
    E = BEGANEncoder(32, filters=2, hidden=3)
    with pytest.raises(ValueError, match=r"BEGANEncoder.*\(N, C, 32, 32\)"):
        E(tg.tensor(np.zeros((1, 3, 64, 64), np.float32)))


# ---- learning-rate schedule ----------------------------------------------------

def test_lr_halves_on_stall_with_floor():
    opt = Adam([tg.tensor(np.zeros(1, np.float32), requires_grad=True)], lr=1e-4)
    s = ReduceLROnStall(opt, window=2, tolerance=0.02, min_lr=3e-5)
    changes = [s.observe(step, m) for step, m in enumerate([1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.49, 0.5, 0.6, 0.6], 1)]
    # windows: 1.0 (first: best), 0.5 (improved), 0.5 (stall: halve), 0.495 (<2%: halve to floor), 0.6 (floor)
    assert changes == [False, False, False, False, False, True, False, True, False, False]
    assert s.lr == opt.lr == pytest.approx(3e-5)


def test_lr_schedule_reaches_the_optimisers():
    tr = tiny_trainer(lr=1e-4, lr_window=2)
    rows = [{"step": i, "M": 1.0} for i in range(1, 5)]  # M flat: second window stalls
    tr.on_host_metrics(rows)
    assert tr.opt_g.lr == tr.opt_d.lr == pytest.approx(5e-5)
    assert tr.needs_host(4) and not tr.needs_host(3)


# ---- the loop: resume, NaN, Ctrl-C ----------------------------------------------

def to_device(batch):
    return (tg.tensor(backend.to_device(batch[0]).astype(np.float32) * (2 / 255) - 1),)


def run(tmp, steps, resume=False, trainer=None, **kw):
    tr = trainer or tiny_trainer(seed=5)
    data = (np.random.default_rng(0).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8),)
    cfg = LoopConfig(out=str(tmp), epochs=3, batch_size=4, seed=5, log_every=2, checkpoint_every=100,
                     max_steps=steps, resume=resume, progress=False, **kw)
    fit(tr, data, cfg, to_device)
    return tr


def test_resume_gives_identical_parameters(tmp_path):
    straight = run(tmp_path / "a", 7)
    run(tmp_path / "b", 4)                           # stops mid-epoch 2 (3 steps per epoch)
    resumed = run(tmp_path / "b", 7, resume=True)
    for (name, p), q in zip(straight.G.named_parameters(), resumed.G.parameters()):
        assert np.array_equal(p.data, q.data), name
    for p, q in zip(straight.D.parameters(), resumed.D.parameters()):
        assert np.array_equal(p.data, q.data)
    assert host(straight.k) == host(resumed.k) > 0
    log_a = (tmp_path / "a" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(log_a) == len(log_b) == 8                 # header + 7 steps, no duplicate rows
    assert [r.split(",")[:6] for r in log_a] == [r.split(",")[:6] for r in log_b]


def test_resume_at_an_epoch_boundary_is_exact_even_when_hooks_draw_noise(tmp_path):
    class Crash(Exception):
        pass

    def run_with_hook(out, steps, resume=False, crash=False):
        tr = tiny_trainer(seed=5)
        data = (np.random.default_rng(0).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8),)
        cfg = LoopConfig(out=str(out), epochs=3, batch_size=4, seed=5, log_every=2, checkpoint_every=100,
                         max_steps=steps, resume=resume, progress=False)

        def hook(epoch, run):
            tr.generate(3)  # draws noise from the library's generator
            if crash:
                raise Crash  # the process dies after the epoch's checkpoint, during its hooks
        fit(tr, data, cfg, to_device, epoch_hooks=[hook])
        return tr
    straight = run_with_hook(tmp_path / "a", 6)
    with pytest.raises(Crash):
        run_with_hook(tmp_path / "b", 6, crash=True)
    resumed = run_with_hook(tmp_path / "b", 6, resume=True)
    for p, q in zip(straight.G.parameters(), resumed.G.parameters()):
        assert np.array_equal(p.data, q.data)


def test_resume_refuses_another_architecture(tmp_path):
    run(tmp_path, 2)
    backend.seed(0)
    other = BEGANTrainer(BEGANDecoder(32, filters=6, hidden=8), BEGANDiscriminator(32, filters=6, hidden=8))
    with pytest.raises(TrainingError, match="fc.weight.*shape"):
        run(tmp_path, 4, resume=True, trainer=other)


class _Sabotaged(BEGANTrainer):
    def __init__(self, *a, bad_step=3, interrupt=False, **kw):
        super().__init__(*a, **kw)
        self.calls, self.bad_step, self.interrupt = 0, bad_step, interrupt

    def step(self, batch):
        self.calls += 1
        m = super().step(batch)
        if self.calls == self.bad_step:
            if self.interrupt:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                m["loss_real"] = m["loss_real"] * np.float32("nan")
        return m


def sabotaged(**kw):
    backend.seed(0)
    return _Sabotaged(BEGANDecoder(32, 4, 8), BEGANDiscriminator(32, 4, 8), num_fixed=4, **kw)


def test_nan_stops_with_the_step_named_and_keeps_the_last_checkpoint(tmp_path):
    # 3 steps per epoch: a checkpoint at step 3; the NaN at step 5 is seen at the flush of step 6
    with pytest.raises(TrainingError, match="loss_real became nan at step 5"):
        run(tmp_path, 9, trainer=sabotaged(bad_step=5))
    arrays, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 3
    assert all(np.isfinite(a).all() for a in arrays.values())
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # the rows before the bad one were written; nothing after it


def test_ctrl_c_saves_a_checkpoint_between_steps(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, 6, trainer=sabotaged(bad_step=2, interrupt=True))
    _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 2 and meta["position"] == 2


# ---- the example ----------------------------------------------------------------

def test_example_cupy_without_gpu_is_one_clear_line():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "began_faces.py"), "--backend", "cupy"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backend 'cupy'"), r.stderr
    assert "tinygan[cuda12]" in lines[0]


def test_example_end_to_end_on_a_tiny_folder(tmp_path, monkeypatch):
    from PIL import Image
    sys.path.insert(0, str(ROOT / "examples"))
    import began_faces

    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(np.full((40, 40), 128, np.uint8)).convert("RGB").save(folder / "gray.png")
    out = tmp_path / "run"
    began_faces.main(["--data", str(folder), "--size", "32", "--filters", "4", "--hidden", "8", "--crop", "32",
                      "--batch-size", "4", "--epochs", "2", "--swd-samples", "8", "--num-samples", "5",
                      "--sample-every", "2", "--out", str(out), "--no-progress"])
    for name in ("log.csv", "curves.png", "grid_epoch001.png", "grid_epoch002.png", "grid_step0000002.png",
                 "reconstructions.png", "interpolation.png", "swd.csv", "checkpoint.npz", "config.json"):
        assert (out / name).exists(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (5, 3, 32, 32) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    swd = (out / "swd.csv").read_text().splitlines()
    assert len(swd) == 3 and swd[0].startswith("epoch,step,M_mean,swd_mean")
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["step", "epoch"] and {"loss_real", "loss_fake", "k", "M", "lr", "step_time"} <= set(header)
    assert len((out / "log.csv").read_text().splitlines()) == 1 + 2 * 2   # 10 colour images // 4 = 2 steps/epoch

    watch = (out / "watch.csv").read_text().splitlines()    # the collapse watch: a row per epoch
    assert len(watch) == 3 and watch[0] == "epoch,quality,diversity,best,collapse_warning"
    assert (out / "best.npz").exists()                        # epoch 1 is the best so far, at least
    from PIL import Image as _Image
    with _Image.open(out / "timeline.gif") as gif:            # the epochs' grids, animated
        assert gif.n_frames == 2 and gif.size == _Image.open(out / "grid_epoch002.png").size

    began_faces.main(["--sample", str(out), "--n", "4", "--interpolate"])
    assert (out / "samples.png").exists() and (out / "interpolation.png").exists()
    began_faces.main(["--sample", str(out / "best.npz"), "--n", "4", "--out", str(tmp_path / "best")])
    assert (tmp_path / "best" / "samples.png").exists()
