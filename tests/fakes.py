"""Tiny stand-ins for real data, written by the tests that need them (no network, no ../shared)."""
import gzip

import numpy as np


def idx_bytes(array, magic=None):
    """A uint8 array as an IDX file: magic 0x0000 08 ndim (or ``magic``), big-endian sizes, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    return (int(magic).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            + array.tobytes())


def write_mnist(folder, counts=(("train", 128), ("t10k", 64)), seed=0, image_high=256):
    """Gzipped MNIST-shaped IDX files in ``folder``: random digits, labels 0..9; returns the folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in counts:
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, image_high, (n, 28, 28)))))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10)))
    return folder
