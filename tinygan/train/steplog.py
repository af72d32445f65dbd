"""The metrics of the steps between two logging points: kept on the device, brought to the host in one
transfer, checked for NaN and Inf, and written to log.csv (by rank 0 alone when many processes train)."""
from __future__ import annotations

import math
import time

from .. import backend
from .errors import TrainingError
from .runlog import CSVLog


class MetricBuffer:
    """Metrics of the steps since the last logging point: kept on the device, copied to the host in
    one transfer, checked for NaN/Inf, written as one log.csv row per step (none where ``path`` is
    None: the ranks other than 0, which still read the metrics, since schedules act on them)."""

    def __init__(self, path, trainer, last_good):
        self.log = CSVLog(path) if path is not None else None
        self.trainer, self.last_good = trainer, last_good
        self.pending = []
        self.restart_clock()

    def restart_clock(self):
        self.start = time.perf_counter()

    def add(self, row):
        self.pending.append(row)

    def flush(self):
        """Copy the pending metrics to the host and log them; returns the last row (or None)."""
        if not self.pending:
            return None
        rows = _to_host_rows(self.pending)  # waits for the device, so the clock below includes its work
        seconds = (time.perf_counter() - self.start) / len(self.pending)
        self.pending = []
        self.restart_clock()
        for row in rows:
            row["step_time"] = seconds
            bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise TrainingError(f"{', '.join(bad)} became {row[bad[0]]} at step {row['step']}; "
                                    f"stopped. {self.last_good()}")
        hook = getattr(self.trainer, "on_host_metrics", None)
        if hook is not None:
            hook(rows)
        for row in rows if self.log is not None else ():
            self.log.log(row)
        return rows[-1]

    def close(self):
        if self.log is not None:
            self.log.close()


def _to_host_rows(pending):
    """One device-to-host transfer for a whole logging interval of metrics.

    Rows come out ordered step, epoch, the trainer's metrics in its order, step_time.
    """
    keys = list(pending[0])
    device_keys = [k for k in keys if hasattr(pending[0][k], "shape")]
    host = None
    if device_keys:
        xp = backend.get_array_module(pending[0][device_keys[0]])
        stacked = xp.stack([xp.stack([p[k].reshape(()).astype("float64") for k in device_keys]) for p in pending])
        host = backend.to_host(stacked)
    order = ["step", "epoch"] + [k for k in keys if k not in ("step", "epoch", "step_time")] + ["step_time"]
    rows = []
    for i, p in enumerate(pending):
        values = dict(p)
        if host is not None:
            values.update(zip(device_keys, host[i].tolist()))
        rows.append({k: (float(values[k]) if k != "step" else int(values[k])) for k in order if k in values})
    return rows
