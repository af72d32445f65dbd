"""Training logs as CSV files: one row per step, written as training runs, read back as NumPy columns.

* :class:`CSVLog` appends one row per logged step to a CSV file, flushing each
  row so that the file can be read (or plotted) while training runs, and
  continuing the same file when a run is resumed.
* :func:`read_csv_log` reads such a file back into NumPy columns.
* :func:`truncate_log` drops the rows logged after a checkpoint, so a resumed
  run's log has no duplicates; :func:`write_epoch_row` keeps per-epoch tables
  at one row per epoch.

CSV was chosen over a binary format because a learner can open it in any
editor or spreadsheet, and ``tail -f`` shows training progress.

The curves drawn from these logs are in :mod:`tinygan.train.curves`.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
import warnings
from collections.abc import Mapping

import numpy as np

from ..files import atomic_write

__all__ = ["CSVLog", "write_epoch_row", "read_csv_log", "truncate_log"]


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def _check_fieldnames(fieldnames, where):
    names = list(fieldnames)
    if not names:
        raise ValueError(f"{where}: fieldnames must name at least one column, got {fieldnames!r}")
    for name in names:
        if not isinstance(name, str) or not name or name != name.strip() or any(
                ch in name for ch in ",\"\r\n"):
            raise ValueError(
                f"{where}: column names must be non-empty strings without commas, quotes, "
                f"newlines or surrounding spaces, got {name!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: duplicate column names {duplicates}")
    return names


def _format_value(value, column):
    """One CSV cell: numbers only, so every column reads back as a NumPy array."""
    if value is None:
        return ""  # read back as NaN: a metric not computed at this step
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, np.floating):
        return str(value)  # shortest text that round-trips at the value's own precision
    if isinstance(value, numbers.Real):
        return repr(float(value))  # 'nan' and 'inf' included; float() reads them back
    if isinstance(value, np.ndarray) or hasattr(value, "item"):
        # 0-d / size-1 arrays and device scalars: .item() is the explicit host copy.
        size = getattr(value, "size", 1)
        if size == 1:
            return _format_value(value.item(), column)
        raise ValueError(
            f"log value for column {column!r} must be a single number, got an array of shape "
            f"{getattr(value, 'shape', '?')}")
    raise ValueError(
        f"log value for column {column!r} must be a number (int, float, bool, NumPy scalar or "
        f"None for 'not computed'), got {type(value).__name__} {value!r}")


def _repair_torn_tail(path):
    """Cut a last line left incomplete by a crash mid-write, so appending starts a clean row."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Walk back in blocks to the last newline.
        pos, keep = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        fh.truncate(keep)
    warnings.warn(
        f"{path}: removed an incomplete last line ({size - keep} bytes), left by an "
        f"interrupted write, before appending", RuntimeWarning, stacklevel=3)


def _read_header(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), None)


class CSVLog:
    """Append-only CSV log with one row per logged training step.

    Each row is flushed as soon as it is written, so the file can be read and
    plotted while training runs. A last line cut short by a crash is removed
    (with a warning) before appending. Note that rows logged after the last
    checkpoint of an interrupted run stay in the file; a resumed run logs those
    steps again.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file. Created (with a header line) on the first :meth:`log`
        if it does not exist or is empty; otherwise rows are appended after
        the existing ones, which is what a resumed run wants.
    fieldnames : sequence of str, optional
        The columns, in order. If omitted, they are taken from an existing
        file's header, or else from the keys of the first logged row.

    Raises
    ------
    ValueError
        If ``path`` already has a header that differs from ``fieldnames``:
        appending rows of another layout would make the file unreadable.

    Examples
    --------
    ::

        with CSVLog("run/log.csv") as log:
            for step in range(steps):
                m = trainer.step(batch)
                log.log(step=step, loss_d=m["loss_d"], loss_g=m["loss_g"])
    """

    def __init__(self, path, fieldnames=None):
        self.path = os.fspath(path)
        self.fieldnames = None if fieldnames is None else _check_fieldnames(fieldnames, self.path)
        self._fh = None
        self._writer = None
        self._has_header = False
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"CSVLog path {self.path!r} is a directory, expected a file")
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            _repair_torn_tail(self.path)
            header = _read_header(self.path) if os.path.getsize(self.path) > 0 else None
            if header is not None:
                if self.fieldnames is not None and header != self.fieldnames:
                    raise ValueError(
                        f"{self.path!r} already exists with the columns {header}, which differ from "
                        f"the requested {self.fieldnames}; appending would mix two layouts. Use "
                        "another file, or the same columns as before")
                self.fieldnames = header
                self._has_header = True

    def log(self, row=None, **values):
        """Append one row, given as a mapping and/or keyword arguments, and flush it.

        Values must be numbers: Python or NumPy scalars, size-1 arrays (their
        ``.item()`` is taken, which is also how a device scalar is copied to the
        host) or ``None`` for a value not computed at this step (an empty cell,
        read back as NaN). Columns of the log that the row does not mention are
        left empty; a name that is not a column raises ``ValueError``.
        """
        if row is not None and not isinstance(row, Mapping):
            raise TypeError(f"row must be a dict of column -> number, got {type(row).__name__}")
        merged = {**(row or {}), **values}
        if not merged:
            raise ValueError("log() got no values; expected e.g. log(step=0, loss_d=0.69)")
        if self.fieldnames is None:
            self.fieldnames = _check_fieldnames(merged.keys(), self.path)
        unknown = [k for k in merged if k not in self.fieldnames]
        if unknown:
            raise ValueError(
                f"{self.path!r}: column {unknown[0]!r} is not in this log; its columns are "
                f"{self.fieldnames} (they are fixed by the header once the file is created)")
        cells = [_format_value(merged.get(name), name) for name in self.fieldnames]

        if self._fh is None:
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh, lineterminator="\n")
        if not self._has_header:
            self._writer.writerow(self.fieldnames)
            self._has_header = True
        self._writer.writerow(cells)
        self._fh.flush()

    def close(self):
        """Close the file; logging again reopens it for appending."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        # Only a safety net: a file object closes itself when collected anyway.
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"CSVLog({self.path!r}, fieldnames={self.fieldnames!r})"


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def write_epoch_row(path, row, key="epoch"):
    """Write the per-epoch ``row`` into the CSV at ``path``, replacing any row for the same or a later epoch.

    Per-epoch tables (metrics.csv, swd.csv) are written by hooks that a
    resumed run may run again for an epoch whose hooks were cut short; this
    keeps one row per epoch whatever happened. The file is rewritten
    atomically, so a kill leaves either the old table or the new one.
    """
    path = os.fspath(path)
    names = list(row)
    kept = []
    if os.path.exists(path):
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is not None and header != names:
                raise ValueError(f"{path} has the columns {header}, not {names}; "
                                 "it was written by another program or version")
            for cells in reader:
                epoch = _parse_int(cells[names.index(key)]) if len(cells) == len(names) else None
                if epoch is not None and epoch < row[key]:
                    kept.append(cells)
    lines = [names] + kept + [[_format_value(row[name], name) for name in names]]
    with atomic_write(path) as fh:
        fh.write("".join(",".join(cells) + "\n" for cells in lines).encode("utf-8"))


def _parse_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def read_csv_log(path):
    """Read a CSV log into a dict of column name -> 1-d NumPy array.

    A column whose cells are all integers (e.g. ``step``) becomes ``int64``;
    any other column becomes ``float64``, with empty cells as NaN. A log with
    a header and no rows gives arrays of length 0.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, a row has the wrong number of cells, or a cell is
        not a number (the message gives the line and the column).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"log file {path!r} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ValueError(f"log file {path!r} is empty; expected a header line of column names")
        cells = [[] for _ in header]
        for row in reader:
            if not row:
                continue  # tolerate blank lines
            if len(row) != len(header):
                raise ValueError(
                    f"{path!r} line {reader.line_num}: {len(row)} cells, expected {len(header)} "
                    f"for the columns {header}")
            for column, cell in zip(cells, row):
                column.append(cell.strip())

    columns = {}
    for name, texts in zip(header, cells):
        ints = [_parse_int(t) for t in texts]
        if all(v is not None for v in ints):
            columns[name] = np.array(ints, dtype=np.int64)
            continue
        values = np.empty(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            try:
                values[i] = float(text) if text else math.nan
            except ValueError:
                raise ValueError(
                    f"{path!r} data row {i + 1}, column {name!r}: {text!r} is not a number") from None
        columns[name] = values
    return columns


# --------------------------------------------------------------------------
# Plotting
# --------------------------------------------------------------------------


def truncate_log(path, step):
    """Drop rows logged after ``step`` (written before an interruption), so a resumed log has no duplicates."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        return
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and _row_step(ln) <= step]
    with atomic_write(path) as fh:
        fh.write("".join(kept).encode("utf-8"))


def _row_step(line):
    try:
        return int(float(line.split(",", 1)[0]))
    except ValueError:
        return math.inf
