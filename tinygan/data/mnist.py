"""MNIST from its original IDX files.

The IDX format (http://yann.lecun.com/exdb/mnist/, bottom of the page) is a
4-byte magic number, one big-endian uint32 per dimension, then the values in
C order. The magic's first two bytes are zero, the third gives the type
(0x08 = unsigned byte) and the fourth the number of dimensions, so MNIST's
images are 0x00000803 (2051: uint8, 3-d) and its labels 0x00000801 (2049:
uint8, 1-d).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .download import Source, default_cache_dir, fetch
from .errors import DataError

__all__ = ["read_idx", "load_mnist", "mnist_sources", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC"]

IDX_IMAGES_MAGIC = 0x00000803  # 2051
IDX_LABELS_MAGIC = 0x00000801  # 2049

# IDX type byte -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

# The gzipped originals' md5s, as published with the files.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: The end of the message when no mirror delivers a file: how to do without them.
MNIST_BY_HAND = ("get the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                 "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzipped or not) by hand "
                 "from a public dataset site that mirrors MNIST, and pass their folder with "
                 "--data FOLDER (load_mnist(root=FOLDER) in Python)")


def mnist_sources(name: str):
    """The :class:`~tinygan.data.Source` list of one MNIST file: each mirror, with the file's md5."""
    return [Source(mirror + name, f"md5:{MNIST_MD5[name]}", "", name)
            for mirror in MNIST_MIRRORS]


def _download_file(sources, folder, **kwargs):
    """load_mnist's one network call (a module function, so tests can replace it)."""
    return fetch(sources, folder, **kwargs)


_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _magic_str(magic: int) -> str:
    return f"0x{magic:08X} ({magic})"


def read_idx(path: Union[str, os.PathLike], expected_magic: Optional[int] = None) -> np.ndarray:
    """Read an IDX file, gzipped or not, into a NumPy array.

    Gzip is recognised by the file's first bytes (``1f 8b``), not its name, so
    a decompressed file that kept its ``.gz`` suffix (some browsers do that)
    still reads.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    expected_magic : int, optional
        If given, the magic number the file must have, e.g.
        :data:`IDX_IMAGES_MAGIC` (2051) or :data:`IDX_LABELS_MAGIC` (2049).

    Returns
    -------
    numpy.ndarray
        An array of the shape stored in the header, in native byte order
        (``uint8`` for MNIST), writable and owning its memory.

    Raises
    ------
    DataError
        Bad gzip stream, wrong or unknown magic number, or a payload whose
        length does not match the header's dimensions (a truncated download).
        The message names the file, what it expected and what it got.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None

    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX file: got {len(raw)} bytes, "
                        "expected at least a 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path}: wrong IDX magic number: expected {_magic_str(expected_magic)}, "
                        f"got {_magic_str(magic)}")
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file: magic number {_magic_str(magic)}, expected "
                        f"0x0000TTDD with a type TT in 08,09,0B,0C,0D,0E and DD >= 1 dimensions "
                        f"(MNIST: {_magic_str(IDX_IMAGES_MAGIC)} images, "
                        f"{_magic_str(IDX_LABELS_MAGIC)} labels)")
    dtype = _IDX_DTYPES[type_code]

    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: expected {header} bytes for {ndim} "
                        f"dimensions, got {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing bytes after the data"
        raise DataError(f"{path}: {what}: header says shape {shape} of {dtype.name}, i.e. "
                        f"{expected} bytes in all, got {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    # frombuffer over bytes is read-only and big-endian: give back a normal array.
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find(root: Path, stem: str) -> Optional[Path]:
    """The file for ``stem`` in ``root``: gzipped or not, dash or dot spelling."""
    dotted = stem.replace("-idx", ".idx")  # e.g. 'train-images.idx3-ubyte' (Kaggle)
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        if (root / name).is_file():
            return root / name
    return None


def load_mnist(
    root: Union[str, os.PathLike, None] = None,
    split: str = "train",
    download: bool = True,
    *,
    progress: bool = True,
) -> Tuple[np.ndarray, np.ndarray]:
    """Load the MNIST digits (LeCun, Cortes, Burges) from the original IDX files.

    Each file is downloaded from the first of :data:`MNIST_MIRRORS` that
    serves it with its published md5; a mirror that fails (unreachable, HTTP
    error, wrong md5) is skipped for the next.

    Parameters
    ----------
    root : str, os.PathLike or None
        A folder holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or not. Nothing is
        downloaded into a folder you name. ``None`` uses
        ``default_cache_dir() / "mnist"`` and downloads what is missing.
    split : str
        ``"train"`` (60,000 digits) or ``"test"`` (10,000).
    download : bool
        With ``root=None``, fetch missing files from public mirrors and check
        the original md5s. ``False`` never touches the network.
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    images : numpy.ndarray
        ``uint8``, shape ``(N, 28, 28)``; 0 is background, 255 ink.
    labels : numpy.ndarray
        ``uint8``, shape ``(N,)``; digits 0-9.

    Raises
    ------
    DataError
        A file is missing, corrupt, holds labels outside 0..9, or the image
        and label counts disagree.
    DownloadError
        A DataError: no mirror delivers a file. One line names each mirror
        and why it failed, and how to get the files by hand (``--data``).
    ValueError
        Unknown ``split``.
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {sorted(_SPLITS)}")
    stems = _SPLITS[split]

    if root is None:
        folder = default_cache_dir() / "mnist"
        paths = []
        for stem in stems:
            name = stem + ".gz"
            dest = folder / name
            if download:
                # Returns at once when the file is there and its md5 matches.
                _download_file(mnist_sources(name), folder, desc=name, progress=progress,
                               hint=MNIST_BY_HAND)
            elif not dest.is_file():
                raise DataError(f"MNIST file {name} is not in the cache {folder}; call "
                                "load_mnist(download=True) or pass root= a folder holding it")
            paths.append(dest)
    else:
        folder = Path(root)
        if not folder.is_dir():
            raise DataError(f"MNIST root {folder} is not a folder; expected a folder holding "
                            f"{stems[0]} and {stems[1]} (gzipped or not)")
        paths = []
        for stem in stems:
            found = _find(folder, stem)
            if found is None:
                raise DataError(f"MNIST file {stem} (or {stem}.gz) not found in {folder}")
            paths.append(found)

    images = read_idx(paths[0], expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(paths[1], expected_magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: expected images of 28x28 pixels, got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{paths[1]}: expected a 1-d array of labels, got shape {labels.shape}")
    bad = np.unique(labels[(labels < 0) | (labels > 9)])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        count = int(np.count_nonzero((labels < 0) | (labels > 9)))
        raise DataError(f"{paths[1]}: MNIST labels must be digits 0..9, found {count} outside that "
                        f"range (values {shown})")
    if len(images) != len(labels):
        raise DataError(f"MNIST {split} split disagrees: {paths[0]} holds {len(images)} images "
                        f"but {paths[1]} holds {len(labels)} labels")
    return images, labels
