"""python -m tinygan.doctor: the whole report on this machine, and that a wrong op or a sync fails it."""
import io
import os
import subprocess
import sys

import pytest

from tinygan import _strict, backend
from tinygan.tools import doctor, doctor_checks
from tinygan.gan import BEGANTrainer

FAMILIES = [name for name, *_ in doctor_checks._families()]
MODELS = [name for name, _ in doctor_checks._models()]


def _gpu_answers():
    try:
        backend.use("cupy")
        return True
    except backend.BackendError:
        return False
    finally:
        backend.use("numpy")


def test_the_whole_doctor_runs_and_lists_every_check():
    r = subprocess.run([sys.executable, "-m", "tinygan.doctor"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "FAIL" not in out
    names = ["cupy"] if _gpu_answers() else ["numpy", "strict"]
    for name in names:
        for family in FAMILIES:
            assert f"PASS  {name}: {family}" in out, (name, family)
    device = names[-1]
    for model in MODELS:
        assert f"PASS  {device}: step {model} " in out, model
    assert "BEGAN step syncs" in out and "0 syncs" in out
    assert f"PASS  checkpoint {device} -> numpy" in out and f"PASS  checkpoint numpy -> {device}" in out
    for word in ("tinygan", "Python", "NumPy", "CuPy", "BLAS", "threads"):
        assert word in out, word
    if device == "strict":
        assert "no GPU answered" in out and "tinygan[cuda12]" in out and "under a minute" in out
    assert out.strip().splitlines()[-1].startswith("== ") and "checks passed" in out


def test_a_wrong_op_on_the_backend_fails_its_family_and_the_exit_status(monkeypatch):
    # the strict module stands for CuPy: an exp that is 1% off on the device only
    exp = _strict.module.exp
    monkeypatch.setattr(_strict.module, "exp", lambda x, *a, **k: exp(x, *a, **k) * 1.01, raising=False)
    out = io.StringIO()
    rc = doctor.main(["--backend", "strict"], out=out)
    text = out.getvalue()
    assert rc == 1
    assert "FAIL  strict: elementwise + activations" in text
    assert "PASS  strict: matmul + linear" in text          # the other families are unaffected
    assert text.strip().splitlines()[-1].startswith("== ") and "FAILED: strict: elementwise" in text


def test_a_crashing_check_is_a_fail_line_not_a_traceback(monkeypatch):
    import tinygan.train.checkpoint as ckpt

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ckpt, "save_checkpoint", broken)
    report = doctor.Report(io.StringIO())
    doctor.check_checkpoint(report, "strict", "out")
    assert report.failed == ["checkpoint strict -> numpy"]
    assert "FAIL  checkpoint strict -> numpy" in report.out.getvalue() and "OSError: disk full" in report.out.getvalue()


def test_a_transfer_inside_the_step_is_counted(monkeypatch):
    step = BEGANTrainer.step

    def leaky(self, batch):
        metrics = step(self, batch)
        backend.to_host(metrics["M"])        # a logging call that slipped into the step
        return metrics
    monkeypatch.setattr(BEGANTrainer, "step", leaky)
    monkeypatch.setattr(doctor, "STEP_SMALL", dict(size=32, filters=4, hidden=8, batch=2))
    report = doctor.Report(io.StringIO())
    doctor.check_step_syncs(report, "strict", doctor.STEP_SMALL)
    text = report.out.getvalue()
    assert report.failed and "2 syncs (to_host calls 1, StrictArray.get 1" in text


def test_an_implicit_conversion_inside_the_step_fails(monkeypatch):
    step = BEGANTrainer.step

    def implicit(self, batch):
        metrics = step(self, batch)
        float(metrics["M"])
        return metrics
    monkeypatch.setattr(BEGANTrainer, "step", implicit)
    report = doctor.Report(io.StringIO())
    doctor.check_step_syncs(report, "strict", dict(size=32, filters=4, hidden=8, batch=2))
    assert report.failed and "HostTransferError" in report.out.getvalue()


def test_help_and_usage_errors():
    r = subprocess.run([sys.executable, "-m", "tinygan.doctor", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--backend" in r.stdout and "--device" in r.stdout and "Exit status" in r.stdout
    if _gpu_answers():
        pytest.skip("a GPU answers here: --backend cupy would run")
    out = io.StringIO()
    assert doctor.main(["--backend", "cupy"], out=out) == 2
