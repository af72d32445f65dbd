"""Data parallelism (tinygan.distributed): one process needs no MPI and behaves as before; two ranks
under ``mpiexec -n 2`` give the one-process result; faults and mismatched ranks end the run cleanly.

The multi-rank tests start ``mpiexec -n 2 python tests/distributed_run.py ...`` as a subprocess with a
time limit (a hang fails the test instead of stalling CI), and skip, saying why, where mpi4py or
mpiexec is missing. They run on the default pass only: each sets its own backend.
"""
import ast
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygan import backend, distributed, nn, optim
from tinygan.tensor import tensor

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed_run.py"
LIMIT_S = 240  # generous bound for a 20-step run on a busy 2-core machine; a hang ends here
LAUNCH_VARS = distributed.SIZE_VARIABLES + ("TINYGAN_DISTRIBUTED", "PMI_RANK", "PMI_FD", "PMI_PORT")


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OPENBLAS_NUM_THREADS="1", **extra)
    return env


# ---- one process: no MPI, nothing changes ----------------------------------------------------

def test_one_process_is_rank_0_of_1_and_collectives_give_their_input():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main(), distributed.enabled()) == (0, 1, True, False)
    a = backend.randn(6)
    assert distributed.all_reduce_mean(a) is a and distributed.broadcast(a) is a
    assert distributed.all_gather({"x": 1}) == [{"x": 1}]
    assert distributed.shard(a) is a
    np.testing.assert_array_equal(distributed.shard_indices(np.arange(8), parts=2), np.arange(8))
    distributed.check_divisible(15)  # anything divides over one process


def test_one_process_gradient_all_reduce_changes_nothing():
    net = nn.Linear(3, 2)
    opt = optim.Adam(net.parameters())
    loss = (net(tensor(backend.randn(4, 3))) ** 2).mean()
    loss.backward()
    grads = [backend.to_host(p.grad).copy() for p in net.parameters()]
    (value,) = distributed.all_reduce_gradients(opt, loss.data)
    assert value is loss.data
    for p, g in zip(net.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)


@pytest.mark.numpy_only
def test_a_single_process_never_imports_mpi4py():
    code = ("import sys, tinygan.distributed as d, tinygan.train, tinygan.tools.cli; d.init(); "
            "print('mpi4py' in sys.modules, d.world_size())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1"]


@pytest.mark.numpy_only
def test_the_launch_is_read_from_the_launchers_variables(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_size() == 1
    monkeypatch.setenv("PMI_SIZE", "4")
    assert distributed.launched_size() == 4
    monkeypatch.setenv("TINYGAN_DISTRIBUTED", "0")
    assert distributed.launched_size() == 1


def test_settings_differences_are_named():
    from tinygan.distributed.data import _first_difference
    a = {"config": {"batch_size": 16, "lr": 1e-4}, "code": "x"}
    assert _first_difference(a, {"config": {"batch_size": 16, "lr": 2e-4}, "code": "x"}, 1) == \
        "config.lr is 0.0001 on rank 0, 0.0002 on rank 1"
    assert "code" in _first_difference(a, dict(a, code="y"), 1)


# ---- the NCCL path: every name it calls exists in the real cupy.cuda.nccl ----------------------

def _nccl_names():
    """Attributes the NCCL module reads of ``nccl`` (the module) and of ``comm`` (its communicator)."""
    tree = ast.parse((ROOT / "tinygan" / "distributed" / "nccl.py").read_text())
    found = {"nccl": set(), "comm": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in found:
            found[node.value.id].add(node.attr)
    return found


def test_the_nccl_calls_exist_in_cupy():
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        pytest.skip(f"cupy is not installed, so the NCCL names cannot be compared ({e})")
    if not nccl.available:
        pytest.skip("cupy cannot load the NCCL library here (pip install nvidia-nccl-cu12 to check its names)")
    names = _nccl_names()
    assert {"NcclCommunicator", "get_unique_id", "NCCL_AVG"} <= names["nccl"]
    assert {"allReduce", "bcast"} <= names["comm"]
    for name in names["nccl"] - {"available"}:
        assert hasattr(nccl, name), f"cupy.cuda.nccl has no {name}"
    for name in names["comm"]:
        assert hasattr(nccl.NcclCommunicator, name), f"cupy.cuda.nccl.NcclCommunicator has no {name}"


# ---- two ranks under mpiexec -----------------------------------------------------------------

def _mpiexec():
    try:
        import mpi4py
    except ImportError as e:
        pytest.skip(f"mpi4py is not installed, so no run of two ranks can start ({e}); pip install '.[mpi]'")
    assert mpi4py.__version__
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec on PATH or beside this Python (pip install '.[mpi]' brings MPICH's)")
    return found


def _run(args, ranks=2, check=True):
    cmd = ([_mpiexec(), "-n", str(ranks)] if ranks else []) + [sys.executable, str(SCRIPT)] + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=LIMIT_S, cwd=ROOT)
    if check:
        assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def _parameters(run):
    with np.load(Path(run) / "checkpoint.npz") as f:
        return {k: f[k] for k in f.files if k.startswith(("trainer/G/", "trainer/D/"))}


def _log(run):
    with open(Path(run) / "log.csv") as f:
        return list(csv.DictReader(f))


def _agree(one, two):
    """Max over parameter tensors of |a - b| / |a| (norms), and the log's worst relative difference."""
    a, b = _parameters(one), _parameters(two)
    assert a.keys() == b.keys() and len(a) > 4
    params = max(float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(a[k])) for k in a)
    la, lb = _log(one), _log(two)
    assert [r["step"] for r in la] == [r["step"] for r in lb] and len(la) == 20
    keys = [k for k in la[0] if k not in ("step", "epoch", "step_time")]
    logs = max(abs(float(x[k]) - float(y[k])) / max(abs(float(x[k])), 1e-12) for x, y in zip(la, lb) for k in keys)
    return params, logs


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("model", ["began", "mlp"])
def test_two_ranks_train_as_one_process(tmp_path, model):
    _run([model, tmp_path / "one", "--lr", "2e-4"], ranks=0)
    _run([model, tmp_path / "two", "--lr", "2e-4"])
    params, logs = _agree(tmp_path / "one", tmp_path / "two")
    assert params < 1e-5, params   # float32 reduction order is the only difference
    assert logs < 5e-6, logs       # log.csv agrees to 5 significant digits (within rounding of the 6th)


@pytest.mark.backend_agnostic
def test_two_ranks_on_the_strict_backend_make_no_host_transfer_in_a_step(tmp_path):
    out = _run(["began", tmp_path / "s", "--backend", "strict", "--steps", "4", "--report"])
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0 transfers 0 steps 4", "rank 1 transfers 0 steps 4"], out.stdout + out.stderr


@pytest.mark.backend_agnostic
def test_a_run_resumes_with_another_number_of_processes(tmp_path):
    _run(["began", tmp_path / "straight"], ranks=0)
    _run(["began", tmp_path / "split", "--steps", "10"])                   # two ranks, 10 steps
    _run(["began", tmp_path / "split", "--steps", "20", "--resume"], ranks=0)  # one process goes on
    a, b = _parameters(tmp_path / "straight"), _parameters(tmp_path / "split")
    assert max(float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(a[k])) for k in a) < 1e-5


@pytest.mark.backend_agnostic
def test_a_batch_that_does_not_split_is_refused_in_one_line(tmp_path):
    out = _run(["began", tmp_path / "r", "--batch-size", "15"], check=False)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --batch-size 15 does not split evenly over 2 processes: give a multiple of 2, "
                      "or start another number of processes"], out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "r" / "checkpoint.npz").exists()


@pytest.mark.backend_agnostic
def test_ranks_started_with_other_settings_are_refused(tmp_path):
    run = [sys.executable, str(SCRIPT), "began", tmp_path / "x"]
    cmd = [_mpiexec(), "-n", "1", *run, "--lr", "1e-4", ":", "-n", "1", *run, "--lr", "2e-4"]
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=_clean_env(), timeout=LIMIT_S)
    assert out.returncode != 0
    assert "error: rank 1 was started with other settings than rank 0: " in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x" / "checkpoint.npz").exists()


@pytest.mark.backend_agnostic
def test_an_error_on_one_rank_ends_every_rank_and_rank_0_names_it(tmp_path):
    out = _run(["began", tmp_path / "f", "--fail-rank", "1"], check=False)
    assert out.returncode != 0
    assert "error: rank 1 of 2: ValueError: a deliberate failure on rank 1 at step 3" in out.stderr, out.stderr


@pytest.mark.backend_agnostic
def test_a_killed_rank_ends_every_rank(tmp_path):
    out = _run(["began", tmp_path / "k", "--kill-rank", "1"], check=False)  # the time limit catches a hang
    assert out.returncode != 0
