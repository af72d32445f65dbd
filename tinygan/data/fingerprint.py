"""A short, deterministic fingerprint of a data set's arrays, for checkpoints to record.

A run that resumes on other data (photos added, removed or replaced, another
size) must be told so; comparing counts and shapes catches most changes, the
fingerprint catches the rest. It hashes every byte: sha256 runs at over
1 GB/s, so the 13,194 LFW faces at 64x64 (162 MB) take about 0.1 s.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["fingerprint"]

_VERSION = b"tinygan-data-fingerprint-1\0"


def fingerprint(*arrays) -> str:
    """16 hex digits (the start of a sha256) over the arrays' dtypes, shapes and bytes.

    Deterministic across machines and processes: the same arrays (same values
    in the same order, same dtype and shape) give the same string; adding,
    removing, reordering or changing any element changes it. The arrays must
    be host (NumPy) arrays or convertible with ``np.asarray``; any memory
    layout is accepted (a non-contiguous array is hashed in C order, like its
    contiguous copy). Byte order is normalised, so a big-endian copy gives the
    same fingerprint as a native one.

    Example: ``fingerprint(images)`` or ``fingerprint(images, labels)``.
    """
    digest = hashlib.sha256(_VERSION)
    digest.update(f"{len(arrays)}\0".encode())
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise TypeError("fingerprint(): object arrays have no stable bytes to hash")
        # Little-endian C order: the same values give the same bytes on every machine.
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        digest.update(f"{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.reshape(-1).view(np.uint8))
    return digest.hexdigest()[:16]
