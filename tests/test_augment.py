"""Horizontal-flip augmentation: drawn from (seed, epoch), looked up by example index, exact on resume."""
import numpy as np
import pytest

from tinygan.data import flip_mask, hflip
from tinygan.train import LoopConfig, fit

from test_began import tiny_trainer, to_device
from tinygan import backend


def test_the_flips_are_a_function_of_seed_and_epoch():
    a = flip_mask(3, 0, 1000)
    np.testing.assert_array_equal(a, flip_mask(3, 0, 1000))
    assert not np.array_equal(a, flip_mask(3, 1, 1000))          # another epoch, other coins
    assert not np.array_equal(a, flip_mask(4, 0, 1000))          # another seed too
    assert 0.45 < a.mean() < 0.55


def test_hflip_mirrors_exactly_the_examples_that_drew_a_flip():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (10, 3, 4, 5), dtype=np.uint8)
    idx = np.array([7, 2, 9, 0])
    augment = hflip(seed=1, n=10)
    (out,) = augment(2, idx, (data[idx],))
    mask = flip_mask(1, 2, 10)
    for row, i in enumerate(idx):
        want = data[i, :, :, ::-1] if mask[i] else data[i]
        np.testing.assert_array_equal(out[row], want)
    assert mask[idx].any() and not mask[idx].all()               # the case tests both branches
    np.testing.assert_array_equal(data, np.random.default_rng(0).integers(0, 256, (10, 3, 4, 5), dtype=np.uint8))


def _run(tmp, steps, resume=False, seen=None, flips=True):
    tr = tiny_trainer(seed=5)
    data = (np.random.default_rng(0).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8),)
    flip = hflip(5, 12)

    def augment(epoch, idx, batch):
        if seen is not None:
            seen.append((epoch, idx.copy()))
        return flip(epoch, idx, batch)
    cfg = LoopConfig(out=str(tmp), epochs=3, batch_size=4, seed=5, log_every=2, checkpoint_every=100,
                     max_steps=steps, resume=resume, progress=False)
    fit(tr, data, cfg, to_device, augment=augment if flips else None)
    return tr


def test_fit_hands_each_batch_its_epoch_and_indices_and_a_resume_flips_the_same(tmp_path):
    seen = []
    straight = _run(tmp_path / "a", 7, seen=seen)
    assert [e for e, _ in seen] == [0, 0, 0, 1, 1, 1, 2]
    assert sorted(np.concatenate([i for e, i in seen if e == 0]).tolist()) == list(range(12))
    _run(tmp_path / "b", 4)
    resumed = _run(tmp_path / "b", 7, resume=True)
    def params(tr):
        return [backend.to_host(p.data) for p in tr.G.parameters() + tr.D.parameters()]
    for a, b in zip(params(straight), params(resumed)):
        np.testing.assert_array_equal(a, b)
    unflipped = params(_run(tmp_path / "c", 7, flips=False))  # the flips reach the training
    assert any(not np.array_equal(a, b) for a, b in zip(params(straight), unflipped))


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-flip"], False)])
def test_began_faces_flips_by_default(flag, expected):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("began_faces", Path(__file__).resolve().parents[1] / "examples" / "began_faces.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = mod.build_parser().parse_args(flag)
    assert args.flip is expected
    assert "flip" in mod.RUN_OWN and mod.INTRODUCED["flip"] is False
