"""Plots of training curves: chosen columns of a CSV log as a PNG of stacked panels.

For example the two losses in one panel and D's mean outputs on real and fake
data in another: the pictures that tell whether a GAN is training. Plots use
Matplotlib's object-oriented API with the Agg canvas directly
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), never ``pyplot``: that
works without a display and leaves the backend and open windows of a user's
interactive session alone.
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..files import atomic_write
from .runlog import read_csv_log

__all__ = ["plot_curves"]


def _moving_average(y, window):
    """Trailing mean of the last ``window`` points (fewer at the start), via cumulative sums."""
    csum = np.concatenate([[0.0], np.cumsum(y, dtype=np.float64)])
    end = np.arange(1, len(y) + 1)
    start = np.maximum(0, end - window)
    return (csum[end] - csum[start]) / (end - start)


def _check_panels(panels):
    if isinstance(panels, (str, Mapping)) or not isinstance(panels, Sequence) or not panels:
        raise ValueError(
            "panels must be a non-empty list of (panel_title, [column, ...]) pairs, e.g. "
            f"[('losses', ['loss_d', 'loss_g'])], got {panels!r}")
    checked = []
    for i, panel in enumerate(panels):
        ok = (isinstance(panel, (tuple, list)) and len(panel) == 2 and isinstance(panel[0], str)
              and isinstance(panel[1], (list, tuple)) and panel[1]
              and all(isinstance(c, str) for c in panel[1]))
        if not ok:
            hint = " (a single column still goes in a list: ('D(x)', ['d_real']))" \
                if isinstance(panel, (tuple, list)) and len(panel) == 2 and isinstance(panel[1], str) else ""
            raise ValueError(
                f"panels[{i}] must be a (title, [column, ...]) pair with at least one column, "
                f"got {panel!r}{hint}")
        checked.append((panel[0], list(panel[1])))
    return checked


def _widen_flat_axis(ax, values):
    """A (nearly) constant panel, e.g. a learning rate that never changed, gets a y range of
    +-50% around its value; matplotlib would zoom into rounding noise and label it "1e-16 + 1e-4"."""
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    scale = max(abs(lo), abs(hi))
    if hi - lo <= 1e-6 * scale:
        ax.set_ylim(lo - 0.5 * scale, hi + 0.5 * scale) if scale > 0 else ax.set_ylim(-1, 1)
    ax.ticklabel_format(axis="y", useOffset=False)


def plot_curves(log_path_or_columns, out_png, panels, x="step", title=None, smooth=0):
    """Plot columns of a training log as stacked panels sharing the x axis, to a PNG.

    Empty cells (NaN) are skipped, so a metric logged only every N steps in a
    per-step log still appears as a connected curve.

    Parameters
    ----------
    log_path_or_columns : str, os.PathLike or dict[str, array]
        A CSV log (read with :func:`read_csv_log`) or its columns.
    out_png : str or os.PathLike
        Output file, ending in ``.png``; written atomically, so it can be
        refreshed while someone is looking at it.
    panels : list of (str, list of str)
        One subplot per entry, top to bottom: the panel's title (used as its
        y-axis label) and the columns drawn in it, e.g.
        ``[("losses", ["loss_d", "loss_g"]), ("D outputs", ["d_real", "d_fake"])]``.
    x : str
        Column for the horizontal axis.
    title : str, optional
        Title over the whole figure.
    smooth : int
        If > 1, each curve is drawn as a trailing moving average over this
        many logged points, ``s_t = mean(y[max(0, t - smooth + 1) : t + 1])``,
        on top of the raw values drawn faintly in the same colour. 0 or 1 draws
        the raw values only, and so does a curve with at most ``2 * smooth``
        points (smoothing a sparse curve only adds lag).

    Raises
    ------
    ValueError
        If a requested column (or ``x``) is missing (the message lists the
        available ones), the columns have different lengths, or there are no
        rows to plot.
    """
    out_png = os.fspath(out_png)
    if not out_png.lower().endswith(".png"):
        raise ValueError(f"plot_curves writes PNG files; out_png must end in '.png', got {out_png!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, numbers.Integral) or smooth < 0:
        raise ValueError(f"smooth must be an integer >= 0 (points in the moving average), got {smooth!r}")
    panels = _check_panels(panels)

    if isinstance(log_path_or_columns, Mapping):
        source = "the given columns"
        columns = log_path_or_columns
    else:
        source = repr(os.fspath(log_path_or_columns))
        columns = read_csv_log(log_path_or_columns)
    wanted = [x] + [c for _, names in panels for c in names]
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise ValueError(
            f"plot_curves: column{'s' if len(missing) > 1 else ''} {missing} not found in {source}; "
            f"available columns: {list(columns)}")
    data = {c: np.asarray(columns[c], dtype=np.float64).reshape(-1) for c in dict.fromkeys(wanted)}
    n = len(data[x])
    uneven = {c: len(v) for c, v in data.items() if len(v) != n}
    if uneven:
        raise ValueError(f"plot_curves: column {x!r} has {n} values but {uneven} differ in length")
    if n == 0:
        raise ValueError(f"plot_curves: {source} has no rows to plot yet")

    # Imported on first use: Matplotlib takes a noticeable fraction of a second
    # to import, which a training script that only logs should not pay.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 0.6 + 2.6 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to the figure; no pyplot, no global state
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    xs = data[x]
    for ax, (panel_title, names) in zip(axes, panels):
        shown = []
        for name in names:
            ys = data[name]
            ok = np.isfinite(xs) & np.isfinite(ys)
            px, py = xs[ok], ys[ok]
            shown.append(py)
            # Markers keep sparse series (a metric every 1000 steps) visible.
            marker = "o" if 0 < len(px) <= 40 else None
            label = name if len(px) else f"{name} (no values)"
            # A series with few points (a metric computed every N steps) is not
            # smoothed: a window wider than half the series only adds lag.
            if smooth > 1 and len(px) > 2 * smooth:
                (raw,) = ax.plot(px, py, alpha=0.25, linewidth=0.8)
                ax.plot(px, _moving_average(py, smooth), color=raw.get_color(), linewidth=1.6,
                        marker=marker, markersize=3, label=label)
            else:
                ax.plot(px, py, linewidth=1.2, marker=marker, markersize=3, label=label)
        ax.set_ylabel(panel_title)
        _widen_flat_axis(ax, np.concatenate(shown) if shown else np.array([]))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small", framealpha=0.8)
    axes[-1].set_xlabel(x)
    if smooth > 1:
        axes[0].set_title(f"faint: raw values; solid: moving average over {smooth} logged points",
                          fontsize="small", loc="right", color="0.35")
    if title:
        fig.suptitle(title)
    with atomic_write(out_png) as fh:
        fig.savefig(fh, format="png", dpi=100)
