"""The host-array check shared by the metrics of :mod:`tinygan.eval`.

This module holds :func:`host_float64`, which turns a metric's input into a
float64 NumPy array and, for a device array (CuPy refuses implicit
device-to-host copies), raises a TypeError that names the argument and says to
copy it with ``tinygan.backend.to_host`` first. It lives apart so that
:mod:`.metrics` and :mod:`.swd` both use it without importing each other.
"""
import numpy as np


def host_float64(x, name):
    try:
        return np.asarray(x, dtype=np.float64)
    except TypeError as exc:  # CuPy refuses implicit device -> host copies
        raise TypeError(
            f"{name} must be a host NumPy array, got {type(x).__module__}.{type(x).__name__} "
            f"({exc}); copy it with tinygan.backend.to_host first") from exc
