"""Data parallelism over threads (tinygan.distributed.threads): N replicas train as one process.

The replicas run on the NumPy backend only (numpy_only): the strict backend stands in for a GPU,
where one process drives one device.
"""
import argparse
import csv
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tinygan as tg
from tinygan import backend, distributed
from tinygan.distributed.threads import Replicated, ThreadGroup
from tinygan.gan import BEGANDecoder, BEGANDiscriminator, BEGANTrainer, GANTrainer, MLPDiscriminator, MLPGenerator

pytestmark = pytest.mark.numpy_only

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_run_safety import TINY, face_folder, run_main  # noqa: E402
sys.path.insert(0, str(REPO / "examples"))
import began_faces  # noqa: E402


def make_began():
    return BEGANTrainer(BEGANDecoder(32, 4, 8), BEGANDiscriminator(32, 4, 8), num_fixed=2)


def make_mlp_k2():  # k = 2: each step's batch holds two minibatches, and each is split over the replicas
    return GANTrainer(MLPGenerator(8, (16,), (1, 4, 4)), MLPDiscriminator((1, 4, 4), (16,)), k=2, num_fixed=2)


def _params(trainer):
    return [p.data for net in (trainer.G, trainer.D) for p in net.parameters()]


@pytest.mark.parametrize("make, shape", [(make_began, (8, 3, 32, 32)), (make_mlp_k2, (8, 1, 4, 4))],
                         ids=["began", "mlp_gan_k2"])
@pytest.mark.parametrize("threads", [2, 4])
def test_replicas_train_as_one_process(make, shape, threads):
    rng = np.random.default_rng(1)
    batches = [tg.tensor(rng.uniform(-1, 1, shape).astype(np.float32)) for _ in range(4)]
    backend.seed(0)
    one = make()
    for x in batches:
        want = one.step((x,))
    state_one = backend.rng_state()
    backend.seed(0)
    rep = Replicated(make, threads)
    for x in batches:
        got = rep.step((x,))
    # the process's generator is where one process leaves it: checkpoints do not depend on the threads
    assert backend.rng_state() == state_one
    ref = _params(one)
    for replica in rep.replicas:  # every replica holds the same bits
        assert all(np.array_equal(a, b) for a, b in zip(_params(rep.replicas[0]), _params(replica)))
    # float32 sums in another order only (as mpiexec: README, "Many processes"). Over the whole network
    # within 1e-6; per tensor within 1e-3: Adam's first steps turn the rounding of a near-zero gradient
    # into a step of size lr (BEGAN's to_rgb bias, 3 values: 1.5e-4 after 4 steps)
    mine = _params(rep.replicas[0])
    flat = np.concatenate([a.ravel() for a in ref]), np.concatenate([b.ravel() for b in mine])
    assert np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[0]) < 1e-6
    assert max(float(np.linalg.norm(a - b) / np.linalg.norm(a)) for a, b in zip(ref, mine)) < 1e-3
    for key, value in want.items():
        assert float(got[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-7), key  # (that bias shows)
    assert rep.G is rep.replicas[0].G and rep.state_dict().keys() == one.state_dict().keys()


def test_load_state_dict_reaches_every_replica():
    backend.seed(0)
    rep = Replicated(make_began, 2)
    backend.seed(5)
    other = make_began()
    rep.load_state_dict(other.state_dict())
    for replica in rep.replicas:
        assert all(np.array_equal(a, b) for a, b in zip(_params(other), _params(replica)))


def test_the_all_reduce_is_the_mean_in_rank_order_and_the_same_bits_everywhere():
    group = ThreadGroup(3)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(10).astype(np.float32) for _ in range(3)]
    want = ((arrays[0] + arrays[1]) + arrays[2]) / 3
    threads = [threading.Thread(target=group.all_reduce_mean, args=(r, arrays[r])) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in arrays:
        assert np.array_equal(a, want)


def test_broadcast_and_all_gather_between_threads():
    group, out = ThreadGroup(3), [None] * 3
    arrays = [np.full(4, r, np.float32) for r in range(3)]

    def work(r):
        got = group.broadcast(r, arrays[r], root=1)
        out[r] = (got is arrays[r], group.broadcast(r, f"from {r}", root=2), group.all_gather(r, r * 10))
    threads = [threading.Thread(target=work, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, np.full(4, 1, np.float32)) for a in arrays)  # in place, rank 1's values
    assert out == [(True, "from 2", [0, 10, 20])] * 3


class _FailsOnRank1:
    """A trainer whose rank 1 fails while rank 0 waits in the gradient all-reduce."""
    def step(self, batch):
        if distributed.rank() == 1:
            raise RuntimeError("rank 1 failed")
        distributed.all_reduce_mean(np.zeros(4, np.float32))


def test_an_error_in_one_replica_is_raised_not_a_hang():
    rep = Replicated(_FailsOnRank1, 2)
    with pytest.raises(RuntimeError, match="rank 1 failed"):
        rep.step((np.zeros((4, 2), np.float32),))


def test_a_batch_that_does_not_split_is_one_clear_error():
    rep = Replicated(make_mlp_k2, 2)
    with pytest.raises(distributed.DistributedError, match=r"--batch-size 3 does not split evenly over --threads 2"):
        rep.check_batch(6)   # two minibatches of 3: each must split
    rep.check_batch(8)
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        Replicated(make_began, 0)


def test_grad_mode_is_per_thread():
    inside, done, seen = threading.Event(), threading.Event(), {}

    def off():
        with tg.no_grad():
            inside.set()
            done.wait(5)

    t = threading.Thread(target=off)
    t.start()
    inside.wait(5)
    x = tg.tensor(np.ones(3, np.float32), requires_grad=True)
    seen["requires_grad"] = (x * 2).requires_grad  # this thread still records while the other is in no_grad
    done.set()
    t.join()
    assert seen["requires_grad"] and tg.is_grad_enabled()


def test_thread_state_gives_a_thread_its_generator_and_no_split():
    gen = np.random.default_rng(3)
    before = backend.rng()
    with backend.thread_state(gen, workers=1):
        assert backend.rng() is gen and backend.cpu_workers(np) == 1
        backend.randn(2)
    assert backend.rng() is before


def test_threads_on_another_backend_or_an_odd_batch_is_refused_in_one_line(capsys):
    from tinygan.tools import cli
    with pytest.raises(SystemExit):
        cli.threads_for(argparse.Namespace(threads=3, batch_size=16))
    assert "--batch-size 16 does not split evenly over --threads 3" in capsys.readouterr().err
    assert cli.threads_for(argparse.Namespace(threads=2, batch_size=16)) == 2
    assert isinstance(cli.replicated(make_began, 2), Replicated)
    backend.use("strict")
    try:
        with pytest.raises(SystemExit):
            cli.threads_for(argparse.Namespace(threads=2, batch_size=16))
        assert "runs on the numpy backend" in capsys.readouterr().err
        assert cli.threads_for(argparse.Namespace(threads="auto", batch_size=16)) == 1
        assert isinstance(cli.replicated(make_began, 1), BEGANTrainer)
    finally:
        backend.use("numpy")


def _log(run):
    with open(run / "log.csv") as f:
        return [{k: v for k, v in row.items() if k != "step_time"} for row in csv.DictReader(f)]


def test_began_example_over_two_threads_resumes_bit_exact_and_agrees_with_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))
    faces = face_folder(tmp_path / "faces")
    base = TINY + ["--data", str(faces), "--epochs", "2"]
    straight, split, one = tmp_path / "straight", tmp_path / "split", tmp_path / "one"
    assert run_main(began_faces.main, base + ["--threads", "2", "--max-steps", "6", "--out", str(straight)], capsys)[0] == 0
    assert run_main(began_faces.main, base + ["--threads", "2", "--max-steps", "3", "--out", str(split)], capsys)[0] == 0
    assert run_main(began_faces.main, ["--resume", str(split), "--max-steps", "6", "--no-progress"], capsys)[0] == 0
    assert run_main(began_faces.main, base + ["--threads", "1", "--max-steps", "6", "--out", str(one)], capsys)[0] == 0
    assert _log(split) == _log(straight) and len(_log(straight)) == 6
    for a, b in zip(_log(straight), _log(one)):
        for key in ("loss_d", "loss_g", "M"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5)
    code, _, err = run_main(began_faces.main, base + ["--threads", "3", "--out", str(tmp_path / "odd")], capsys)
    assert code == 2 and err[-1].startswith("error: --batch-size 4 does not split evenly over --threads 3")
