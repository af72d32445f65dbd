"""Tests of tinygan.train.images (grid layout, PNG output) and tinygan.train.runlog (CSV logs, plots)."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tinygan.train.images import make_grid, save_grid
from tinygan.train.curves import _moving_average, plot_curves
from tinygan.train.runlog import CSVLog, read_csv_log


# --------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------

def test_make_grid_layout_exact():
    # Three 2x2 gray images of values 0, 0.5, 1 in a 2-column grid, padding 1 of 0.25.
    x = np.zeros((3, 1, 2, 2))
    x[1] = 0.5
    x[2] = 1.0
    grid = make_grid(x, nrow=2, padding=1, pad_value=0.25)
    p, a, b, c = 64, 0, 128, 255   # 0.25 -> 63.75 -> 64; 0.5 -> 127.5 -> 128 (round half up)
    expected = np.array([
        [p, p, p, p, p, p, p],
        [p, a, a, p, b, b, p],
        [p, a, a, p, b, b, p],
        [p, p, p, p, p, p, p],
        [p, c, c, p, p, p, p],
        [p, c, c, p, p, p, p],
        [p, p, p, p, p, p, p],
    ], dtype=np.uint8)
    assert grid.dtype == np.uint8 and grid.shape == (7, 7, 1)
    np.testing.assert_array_equal(grid[:, :, 0], expected)


def test_make_grid_rgb_positions_and_channels():
    n, h, w = 5, 3, 4
    x = np.zeros((n, 3, h, w))
    for i in range(n):
        x[i, 0] = i / 10          # red encodes the index
        x[i, 1, 0, 0] = 1.0       # green marks the top-left pixel
        x[i, 2] = 0.2
    grid = make_grid(x, padding=2)           # default nrow = ceil(sqrt(5)) = 3
    assert grid.shape == (2 * (h + 2) + 2, 3 * (w + 2) + 2, 3)
    for i in range(n):
        r, col = divmod(i, 3)
        top, left = 2 + r * (h + 2), 2 + col * (w + 2)
        tile = grid[top:top + h, left:left + w]
        assert (tile[:, :, 0] == round(255 * i / 10 + 1e-9)).all()
        assert tile[0, 0, 1] == 255 and tile[1, 1, 1] == 0
        assert (tile[:, :, 2] == 51).all()
    # The unused sixth cell and all padding are white.
    assert (grid[2 + h + 2:, 2 + 2 * (w + 2):] == 255).all()
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()


def test_make_grid_value_range_clips_and_rounds():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0]).reshape(6, 1, 1, 1)
    grid = make_grid(x, nrow=6, padding=0, value_range=(-1, 1))
    np.testing.assert_array_equal(grid[0, :, 0], [0, 0, 128, 191, 255, 255])


@pytest.mark.parametrize("images, message", [
    (np.zeros((4, 28, 28)), r"4-d NCHW.*images\[:, None\]"),
    (np.zeros((4, 28, 28, 3)), "looks like NHWC"),
    (np.zeros((4, 2, 8, 8)), "C = 2"),
    (np.zeros((0, 1, 8, 8)), "at least one"),
    (np.full((2, 1, 4, 4), np.nan), "non-finite.*image 0"),
])
def test_make_grid_rejects_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        make_grid(images)


def test_make_grid_rejects_bad_options():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match="nrow"):
        make_grid(x, nrow=0)
    with pytest.raises(ValueError, match="padding"):
        make_grid(x, padding=-1)
    with pytest.raises(ValueError, match="low < high"):
        make_grid(x, value_range=(1, 0))


def test_save_grid_png_scaled_gray_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.random((5, 1, 6, 6))
    path = tmp_path / "gray.png"
    save_grid(path, gray, nrow=3, padding=1, scale=3)
    with Image.open(path) as img:
        assert img.mode == "L"
        pixels = np.asarray(img)
    small = make_grid(gray, nrow=3, padding=1)[:, :, 0]
    np.testing.assert_array_equal(pixels, np.repeat(np.repeat(small, 3, 0), 3, 1))

    rgb = rng.uniform(-1, 1, (4, 3, 5, 5))
    save_grid(tmp_path / "rgb.png", rgb, value_range=(-1, 1))
    with Image.open(tmp_path / "rgb.png") as img:
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), make_grid(rgb, value_range=(-1, 1)))
    assert sorted(os.listdir(tmp_path)) == ["gray.png", "rgb.png"]   # no temp files left


def test_save_grid_checks_path_and_scale(tmp_path):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"must end in '\.png'"):
        save_grid(tmp_path / "grid.jpg", x)
    with pytest.raises(ValueError, match="scale"):
        save_grid(tmp_path / "grid.png", x, scale=1.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_grid(tmp_path / "missing_dir" / "grid.png", x)


# --------------------------------------------------------------------------
# runlog: CSV
# --------------------------------------------------------------------------

def test_csvlog_writes_header_flushes_and_resumes(tmp_path):
    path = tmp_path / "log.csv"
    log = CSVLog(path)
    log.log(step=0, loss_d=np.float32(0.5), loss_g=1.25)
    # Readable while the log is still open: every row is flushed.
    assert path.read_text() == "step,loss_d,loss_g\n0,0.5,1.25\n"
    log.log({"step": 1, "loss_d": np.array(0.25)}, loss_g=None)   # None -> empty cell
    log.close()

    resumed = CSVLog(path)                  # columns taken from the existing header
    assert resumed.fieldnames == ["step", "loss_d", "loss_g"]
    resumed.log(step=2, loss_d=float("nan"), loss_g=3)
    resumed.close()
    assert path.read_text().count("step") == 1   # header not repeated

    columns = read_csv_log(path)
    assert columns["step"].dtype == np.int64
    np.testing.assert_array_equal(columns["step"], [0, 1, 2])
    np.testing.assert_array_equal(columns["loss_d"], [0.5, 0.25, np.nan])
    np.testing.assert_array_equal(columns["loss_g"], [1.25, np.nan, 3.0])


def test_csvlog_refuses_other_header_and_unknown_columns(tmp_path):
    path = tmp_path / "log.csv"
    with CSVLog(path, fieldnames=["step", "loss"]) as log:
        log.log(step=0, loss=1.0)
        with pytest.raises(ValueError, match=r"column 'lr' is not in this log.*\['step', 'loss'\]"):
            log.log(step=1, lr=0.1)
        with pytest.raises(ValueError, match="column 'loss' must be a number"):
            log.log(step=1, loss="high")
    with pytest.raises(ValueError, match=r"already exists with the columns \['step', 'loss'\]"):
        CSVLog(path, fieldnames=["step", "loss_d"])
    assert read_csv_log(path)["step"].tolist() == [0]


def test_csvlog_removes_torn_last_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n0,0.5\n1,0.2")   # crash in the middle of row 1
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        log = CSVLog(path)
    log.log(step=1, loss=0.25)
    log.close()
    assert path.read_text() == "step,loss\n0,0.5\n1,0.25\n"


def test_read_csv_log_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_csv_log(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n0,abc\n")
    with pytest.raises(ValueError, match=r"column 'loss': 'abc' is not a number"):
        read_csv_log(bad)
    bad.write_text("step,loss\n0\n")
    with pytest.raises(ValueError, match="line 2: 1 cells, expected 2"):
        read_csv_log(bad)


# --------------------------------------------------------------------------
# runlog: plots
# --------------------------------------------------------------------------

def test_moving_average_is_trailing_mean():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(_moving_average(y, 3), [1.0, 1.5, 2.0, 3.0, 4.0])


def test_plot_curves_writes_png_without_pyplot(tmp_path):
    path = tmp_path / "log.csv"
    rng = np.random.default_rng(0)
    with CSVLog(path) as log:
        for step in range(60):
            log.log(step=step, loss_d=1 + rng.random(), loss_g=2 + rng.random(),
                    d_real=0.7, d_fake=0.3, swd=(10.0 - step / 10 if step % 20 == 0 else None))
    had_pyplot = "matplotlib.pyplot" in sys.modules
    out = tmp_path / "curves.png"
    plot_curves(path, out, [("losses", ["loss_d", "loss_g"]), ("D outputs", ["d_real", "d_fake"]),
                            ("SWD", ["swd"])], title="test run", smooth=5)
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules
    with Image.open(out) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert width == 800 and height > 3 * 200   # three stacked panels
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "log.csv"]


def test_plot_curves_from_columns_and_missing_column_error(tmp_path):
    columns = {"step": np.arange(4), "loss": np.array([1.0, 0.5, 0.4, 0.3])}
    plot_curves(columns, tmp_path / "a.png", [("loss", ["loss"])])
    assert (tmp_path / "a.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"\['loss_g'\] not found.*available columns: "
                                         r"\['step', 'loss'\]"):
        plot_curves(columns, tmp_path / "b.png", [("losses", ["loss", "loss_g"])])
    with pytest.raises(ValueError, match=r"single column still goes in a list"):
        plot_curves(columns, tmp_path / "b.png", [("loss", "loss")])
    assert not (tmp_path / "b.png").exists()


def test_constant_curve_gets_a_readable_range():
    # a learning rate that never changed must not be drawn as rounding noise around 1e-4
    from matplotlib.figure import Figure
    from tinygan.train.curves import _widen_flat_axis
    ax = Figure().subplots()
    ax.plot([0, 1, 2], [1e-4, 1e-4 + 1e-20, 1e-4])
    _widen_flat_axis(ax, np.array([1e-4, 1e-4 + 1e-20, 1e-4]))
    lo, hi = ax.get_ylim()
    assert lo == pytest.approx(0.5e-4) and hi == pytest.approx(1.5e-4)
    ax2 = Figure().subplots()
    ax2.plot([0, 1], [0.2, 0.5])
    before = ax2.get_ylim()
    _widen_flat_axis(ax2, np.array([0.2, 0.5]))
    assert ax2.get_ylim() == before  # a varying curve keeps matplotlib's range
