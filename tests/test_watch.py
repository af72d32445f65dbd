"""The collapse watch (train.CollapseWatch), its image diversity score (eval.diversity), timeline.gif."""
import numpy as np
import pytest
from PIL import Image

from tinygan import backend
from tinygan.eval.diversity import near_duplicate_threshold, near_duplicates, nearest_neighbour_distances, spread
from tinygan.train import BEST, CollapseWatch
from tinygan.train.images import save_grid, save_timeline
from tinygan.train.runlog import read_csv_log


def faces(n, seed):
    """Stand-ins for real images: every one its own, as photos of different people are."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 3, 8, 8)).astype(np.float32)


def collapsed(n, seed, modes=2):
    """A generator that collapsed onto ``modes`` images: copies with a trace of noise."""
    rng = np.random.default_rng(seed)
    base = faces(modes, seed + 100)
    return (base[rng.integers(0, modes, n)] + rng.normal(0, 1e-3, (n, 3, 8, 8))).astype(np.float32)


def nn(x):
    """Nearest-neighbour distances of host samples ``x``, computed on the backend under test."""
    return nearest_neighbour_distances(backend.to_device(x))


def test_nearest_neighbour_distances_by_hand():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]], dtype=np.float32)
    np.testing.assert_allclose(backend.to_host(nearest_neighbour_distances(backend.to_device(x))), [5.0, 1.0, 1.0],
                               rtol=1e-6)


def test_near_duplicates_tell_a_collapsed_generator_from_a_healthy_one():
    tau = near_duplicate_threshold(nn(faces(400, 0)))
    healthy = near_duplicates(nn(faces(400, 1)), tau)     # samples as diverse as the data
    broken = near_duplicates(nn(collapsed(400, 2)), tau)
    assert healthy <= 0.05
    assert broken == 1.0


def test_near_duplicates_errors():
    with pytest.raises(ValueError, match="at least 2 samples"):
        nearest_neighbour_distances(backend.to_device(faces(1, 0)))
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\)"):
        near_duplicate_threshold(nn(faces(4, 0)), quantile=1.0)


def _epoch(watch, out, epoch, quality, diversity, checkpoint):
    (out / "checkpoint.npz").write_bytes(checkpoint)  # what the loop has just saved for this epoch
    return watch(epoch, out, quality, diversity)


@pytest.mark.numpy_only  # files and host numbers only
def test_the_watch_warns_on_a_collapse_and_keeps_the_best_checkpoint(tmp_path):
    said = []
    watch = CollapseWatch("SWD", "distinct share", drop=0.1, say=said.append)
    tau = near_duplicate_threshold(nn(faces(200, 0)))
    healthy = 1 - near_duplicates(nn(faces(200, 1)), tau)
    broken = 1 - near_duplicates(nn(collapsed(200, 2)), tau)
    _epoch(watch, tmp_path, 1, 9.0, healthy, b"epoch 1")
    _epoch(watch, tmp_path, 2, 6.0, healthy, b"epoch 2")          # the best quality so far
    row = _epoch(watch, tmp_path, 3, 7.5, broken, b"epoch 3")     # collapsed
    assert row["collapse_warning"] == 1 and row["best"] == 0
    assert len(said) == 1 and said[0].startswith("warning: epoch 3: diversity (distinct share) fell to 0 from ")
    assert "at epoch 1" in said[0] and str(tmp_path / BEST) in said[0] and "SWD 6" in said[0]
    assert (tmp_path / BEST).read_bytes() == b"epoch 2"            # not overwritten by the collapsed epoch
    log = read_csv_log(tmp_path / "watch.csv")
    np.testing.assert_array_equal(log["epoch"], [1, 2, 3])
    np.testing.assert_array_equal(log["best"], [1, 1, 0])
    np.testing.assert_array_equal(log["collapse_warning"], [0, 0, 1])


@pytest.mark.numpy_only
def test_the_watch_stays_quiet_on_a_healthy_run(tmp_path):
    said = []
    watch = CollapseWatch("SWD", "distinct share", drop=0.1, say=said.append)
    tau = near_duplicate_threshold(nn(faces(200, 0)))
    for epoch, quality in enumerate([9.0, 7.0, 7.5, 6.5, 6.8], start=1):  # quality wobbles, diversity holds
        _epoch(watch, tmp_path, epoch, quality, 1 - near_duplicates(nn(faces(200, epoch)), tau), f"e{epoch}".encode())
    assert said == []
    assert (tmp_path / BEST).read_bytes() == b"e4"
    assert read_csv_log(tmp_path / "watch.csv")["collapse_warning"].sum() == 0


@pytest.mark.numpy_only
def test_a_resumed_run_compares_with_the_epochs_before_it(tmp_path):
    """The watch's memory is watch.csv: a new watch (a resumed process) still knows the best epoch,
    and an epoch run again replaces its row."""
    CollapseWatch("FD", "entropy", drop=0.1, say=print)(1, tmp_path, 20.0, 2.29)
    said = []
    again = CollapseWatch("FD", "entropy", drop=0.1, say=said.append)
    _epoch(again, tmp_path, 2, 25.0, 2.25, b"e2")
    row = _epoch(again, tmp_path, 2, 30.0, 1.5, b"e2 again")      # epoch 2 redone after a resume
    assert row["collapse_warning"] == 1 and "at epoch 1" in said[-1]
    np.testing.assert_array_equal(read_csv_log(tmp_path / "watch.csv")["epoch"], [1, 2])
    assert not (tmp_path / BEST).exists()   # epoch 1 had no checkpoint to keep; epoch 2 was never better


def test_higher_is_better_quality_and_bad_drop(tmp_path):
    watch = CollapseWatch("high-quality share", "modes", drop=1.5, lower_is_better=False, say=print)
    assert _epoch(watch, tmp_path, 1, 0.5, 25, b"a")["best"] == 1
    assert _epoch(watch, tmp_path, 2, 0.8, 24, b"b")["best"] == 1     # one mode fewer: within drop
    assert _epoch(watch, tmp_path, 3, 0.7, 23, b"c")["collapse_warning"] == 1
    with pytest.raises(ValueError, match="drop must be > 0"):
        CollapseWatch("q", "d", drop=0)


def test_timeline_gif_holds_the_grids_in_order(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"grid_epoch{i + 1:03d}.png")
        save_grid(paths[-1], np.full((4, 3, 8, 8), i / 4, np.float32), nrow=2)
    save_timeline(tmp_path / "timeline.gif", paths, max_frames=3)
    with Image.open(tmp_path / "timeline.gif") as gif:
        assert gif.n_frames == 3 and gif.info["loop"] == 0
        shades = []
        for k in range(3):
            gif.seek(k)
            shades.append(np.asarray(gif.convert("L"))[4, 4])      # inside the first tile
    assert shades == sorted(shades) and shades[0] < 10 and shades[-1] > 245   # first and last grids kept
    with pytest.raises(ValueError, match="must end in '.gif'"):
        save_timeline(tmp_path / "t.png", paths)


def test_a_generator_made_to_collapse_is_caught(tmp_path):
    """A real BEGAN generator whose code layer is zeroed draws one face for every z: the watch warns
    after an epoch whose samples were as diverse as the data, and best.npz keeps that epoch."""
    from test_began import tiny_trainer
    trainer = tiny_trainer(size=32)
    real = backend.to_device(faces(64, 0).repeat(4, axis=2).repeat(4, axis=3))   # 32x32 stand-ins
    tau = near_duplicate_threshold(nearest_neighbour_distances(real))
    said = []
    watch = CollapseWatch("SWD", "distinct share", drop=0.1, say=said.append)
    _epoch(watch, tmp_path, 1, 5.0, 1 - near_duplicates(nn(faces(64, 9).repeat(4, 2).repeat(4, 3)), tau),
           b"healthy epoch")
    for p in trainer.G.parameters():
        p.data[...] = 0 * p.data                      # every z now gives the same image
    fake = trainer.generate(64, to_host=False)["samples"]
    distinct = 1 - near_duplicates(nearest_neighbour_distances(fake), tau)
    assert distinct == 0.0
    row = _epoch(watch, tmp_path, 2, 9.0, distinct, b"collapsed epoch")
    assert row["collapse_warning"] == 1 and len(said) == 1 and "may be collapsing" in said[0]
    assert (tmp_path / BEST).read_bytes() == b"healthy epoch"


def test_spread_is_about_one_for_data_like_samples_and_zero_for_a_collapse():
    real = nn(faces(300, 0))
    assert 0.9 < spread(nn(faces(300, 1)), real) < 1.1
    assert spread(nn(collapsed(300, 2)), real) < 0.01


@pytest.mark.numpy_only
def test_a_relative_drop(tmp_path):
    said = []
    watch = CollapseWatch("SWD", "spread", drop=0.3, relative=True, say=said.append)
    for epoch, value in enumerate([0.2, 0.5, 0.4, 0.34], start=1):   # 0.34 is 32% below the best 0.5
        _epoch(watch, tmp_path, epoch, 10.0 - epoch, value, b"x")
    assert read_csv_log(tmp_path / "watch.csv")["collapse_warning"].tolist() == [0, 0, 0, 1]
    assert len(said) == 1 and "by more than 30% of it" in said[0]
    with pytest.raises(ValueError, match="< 1 when relative"):
        CollapseWatch("q", "d", drop=1.5, relative=True)


@pytest.mark.numpy_only
def test_an_unscored_epoch_is_no_reference(tmp_path):
    (tmp_path / "watch.csv").write_text("epoch,quality,diversity,best,collapse_warning\n1,9.0,,1,0\n")
    said = []
    row = _epoch(CollapseWatch("SWD", "spread", drop=0.3, relative=True, say=said.append), tmp_path, 2, 8.0, 0.2, b"e2")
    assert row == {"epoch": 2, "quality": 8.0, "diversity": 0.2, "best": 1, "collapse_warning": 0} and said == []
