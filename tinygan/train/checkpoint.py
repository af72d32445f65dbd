"""The library's one checkpoint format: named arrays and JSON metadata in one ``.npz``.

A checkpoint is a single ``.npz`` file (a ZIP archive of ``.npy`` arrays):

* every array of the training state (generator and discriminator state dicts,
  optimizer moments, ...) under its own name, e.g. ``"G/layers.0.weight"``;
* under the reserved name ``"__meta__"``, a 1-d ``uint8`` array holding UTF-8
  JSON text: everything that is not an array (step, epoch, the
  ``bit_generator.state`` dicts of NumPy generators with their 128-bit
  integers, learning-rate schedule state, the command-line configuration).

Why this shape:

* ``.npz`` loads with ``np.load(..., allow_pickle=False)``, so opening a
  checkpoint never runs code from the file (pickle would). Object arrays, which
  need pickle, are refused on saving as well as on loading.
* JSON keeps the metadata readable by anything and exact for Python integers
  of any size (a PCG64 state is a 128-bit integer, which no NumPy dtype holds).
* The file is written to a temporary name in the same directory, flushed,
  fsync'ed and then renamed over the target with :func:`os.replace`, which is
  atomic on POSIX and Windows. A run killed in the middle of saving leaves the
  previous checkpoint untouched instead of a truncated file.

Example::

    save_checkpoint("run/ckpt.npz",
                    {"G/" + k: v for k, v in G_state.items()},
                    {"step": 1200, "rng": rng.bit_generator.state, "config": vars(args)})
    arrays, meta = load_checkpoint("run/ckpt.npz")
    loaded = {k[2:]: v for k, v in arrays.items() if k.startswith("G/")}
    check_state_matches({k: v.shape for k, v in G_state.items()}, loaded, what="generator")
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from .. import backend
from ..files import atomic_write

__all__ = ["CheckpointError", "META_KEY", "save_checkpoint", "load_checkpoint", "flatten_state", "unflatten_state"]

#: Name of the archive entry that holds the JSON metadata.
META_KEY = "__meta__"

# First bytes of the files a user might hand us by mistake, to say what they are.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_MAGIC = b"\x80"  # pickles of protocol 2 and later


class CheckpointError(Exception):
    """A checkpoint could not be written, read, or does not fit the model it is loaded into."""


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------

def _check_key(key):
    if not isinstance(key, str):
        raise CheckpointError(
            f"checkpoint array names must be str, got {type(key).__name__} {key!r}")
    if not key:
        raise CheckpointError("checkpoint array names must be non-empty, got ''")
    if key == META_KEY:
        raise CheckpointError(
            f"the array name {META_KEY!r} is reserved for the checkpoint's metadata; "
            "put that value in `meta` or rename the array")
    if key.endswith(".npy"):
        # Entries are stored as "<name>.npy" and np.load strips one ".npy";
        # a name that already ends in it can be confused with another entry.
        raise CheckpointError(f"checkpoint array names must not end in '.npy', got {key!r}")
    if "\x00" in key or "\\" in key:
        # ZIP truncates names at NUL, and writers on Windows turn '\' into '/'.
        raise CheckpointError(
            f"checkpoint array names must not contain NUL or backslash characters, got {key!r}")


def _host_array(value, key):
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception as exc:  # e.g. CuPy refuses implicit device -> host copies
            raise CheckpointError(
                f"arrays[{key!r}] is a {type(value).__module__}.{type(value).__name__} that is not "
                f"a host array ({exc}); copy it to the host first, e.g. with tinygan.backend.to_host"
            ) from exc
    if array.dtype.hasobject:
        raise CheckpointError(
            f"arrays[{key!r}] has dtype {array.dtype}, which holds Python objects and could only "
            "be stored with pickle; checkpoints hold numeric (or string) arrays only")
    return array


def _jsonable(obj, where):
    """Return ``obj`` as plain JSON types, or raise naming the offending entry.

    Converted on the way: NumPy scalars -> Python numbers, ndarrays -> nested
    lists (an MT19937 state holds one), tuples -> lists. JSON would silently
    turn a non-string dict key into a string, so that is refused instead.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):  # includes Python ints of any size (PCG64 states)
        return int(obj)
    if isinstance(obj, float):
        return float(obj)  # NaN/inf are written as NaN/Infinity, which Python's json reads back
    if isinstance(obj, np.generic):
        return _jsonable(obj.item(), where)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CheckpointError(f"checkpoint meta{where} is an object array, which JSON cannot hold")
        return obj.tolist()
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(
                    f"checkpoint meta{where} has the key {k!r} of type {type(k).__name__}; "
                    "JSON object keys must be str (convert it with str() if that is what you want)")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    hint = " (pass vars(args) for an argparse.Namespace)" if type(obj).__name__ == "Namespace" else ""
    raise CheckpointError(
        f"checkpoint meta{where} is a {type(obj).__module__}.{type(obj).__name__}, which is not "
        f"JSON-serialisable; expected dict, list, str, int, float, bool or None{hint}")


def save_checkpoint(path, arrays, meta):
    """Write a checkpoint: named host arrays plus JSON metadata, atomically, to one ``.npz``.

    The write goes through :func:`atomic_write`: an interrupted save never
    damages an existing checkpoint at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. It is used exactly as given (no ``.npz`` suffix is
        added, unlike ``np.savez``); its directory must exist.
    arrays : dict[str, numpy.ndarray]
        The array state. Names may contain ``'/'`` and ``'.'``
        (``"G/layers.0.weight"``) and round-trip exactly. The name
        ``"__meta__"`` is reserved, names may not end in ``".npy"``, and arrays
        of dtype ``object`` are refused (they would need pickle). Device
        (CuPy) arrays must be copied to the host first.
    meta : dict
        JSON-serialisable metadata: str keys; values dict, list, tuple, str,
        int (any size), float (NaN and inf allowed), bool, None, NumPy scalars
        and small ndarrays. Tuples and ndarrays come back as lists.

    Raises
    ------
    CheckpointError
        If a name, an array or a meta value cannot be stored; nothing is written then.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a dict of name -> numpy array, got {type(arrays).__name__}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    # Validate and convert everything before touching the file system, so a bad
    # input fails without leaving anything behind.
    entries = []
    for key, value in arrays.items():
        _check_key(key)
        entries.append((key, _host_array(value, key)))
    meta_text = json.dumps(_jsonable(meta, ""), ensure_ascii=False, allow_nan=True)
    entries.append((META_KEY, np.frombuffer(meta_text.encode("utf-8"), dtype=np.uint8)))

    with atomic_write(path) as fh:
        # Stored, not deflated: float weights barely compress and saving stays fast.
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, array in entries:
                # force_zip64 because the member size is not known in advance
                # (as np.savez does); needed for members over 2 GiB.
                with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`.

    The file is opened with ``np.load(path, allow_pickle=False)``: a file that
    would need pickle to load (object arrays, a ``torch.save`` file, a plain
    pickle) is refused rather than executed.

    Returns
    -------
    arrays : dict[str, numpy.ndarray]
        Name -> array, without the reserved ``"__meta__"`` entry.
    meta : dict
        The metadata dict decoded from JSON.

    Raises
    ------
    CheckpointError
        If the file does not exist, is not a ``.npz`` archive, is truncated or
        corrupt, holds pickled objects, or lacks the ``"__meta__"`` entry.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path!r} is a directory, expected a .npz file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {path!r}: {exc}") from exc
    if not head.startswith(_ZIP_MAGICS):
        if head.startswith(_NPY_MAGIC):
            what = "a single .npy array"
        elif head.startswith(_PICKLE_MAGIC):
            what = ("a pickle (e.g. from pickle.dump or an old-format torch.save), "
                    "which is never loaded for safety")
        elif not head:
            what = "empty"
        else:
            what = f"not a ZIP archive (it starts with {head!r})"
        raise CheckpointError(f"{path!r} is not a tinygan .npz checkpoint: it is {what}")

    arrays = {}
    try:
        # Opening the file ourselves guarantees it is closed even when the ZIP
        # directory is unreadable (np.load(path) then leaks its handle).
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            for name in npz.files:
                value = npz[name]  # reads and CRC-checks the member now, inside the try
                if not isinstance(value, np.ndarray):
                    raise CheckpointError(
                        f"checkpoint {path!r}: entry {name!r} is not a NumPy .npy array")
                arrays[name] = value
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {path!r} contains object arrays, which can only be loaded with pickle; "
                "refused for safety (pickle can run arbitrary code)") from exc
        raise CheckpointError(f"checkpoint {path!r} is corrupt: {exc}") from exc
    except Exception as exc:
        # A damaged archive surfaces as zipfile.BadZipFile (bad directory or
        # CRC), EOFError, OSError or zlib.error, depending on where it is cut.
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupt: {type(exc).__name__}: {exc}") from exc

    if META_KEY not in arrays:
        shown = sorted(arrays)[:10]
        more = f" and {len(arrays) - 10} more" if len(arrays) > 10 else ""
        raise CheckpointError(
            f"{path!r} has no {META_KEY!r} entry, so it was not written by "
            f"tinygan.train.checkpoint.save_checkpoint (entries found: {shown}{more})")
    raw = arrays.pop(META_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(
            f"checkpoint {path!r}: {META_KEY!r} has dtype {raw.dtype} and shape {raw.shape}, "
            "expected a 1-d uint8 array of UTF-8 JSON text")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path!r}: {META_KEY!r} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {path!r}: {META_KEY!r} holds a JSON {type(meta).__name__}, expected an object")
    return arrays, meta


# --------------------------------------------------------------------------
# A trainer's nested state <-> one checkpoint
# --------------------------------------------------------------------------

def flatten_state(state, prefix=""):
    """Split a nested state dict into (name -> host array, JSON-able rest), for one .npz checkpoint."""
    arrays, meta = {}, {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            sub_arrays, sub_meta = flatten_state(value, name + "/")
            arrays.update(sub_arrays)
            meta[str(key)] = sub_meta
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            arrays[name] = backend.to_host(value)
        else:
            meta[str(key)] = value
    return arrays, meta


def unflatten_state(arrays, meta, prefix=""):
    """Inverse of :func:`flatten_state`."""
    state = {}
    for key, value in meta.items():
        state[key] = unflatten_state(arrays, value, f"{prefix}{key}/") if isinstance(value, dict) else value
    for name, value in arrays.items():
        if name.startswith(prefix) and "/" not in name[len(prefix):]:
            state[name[len(prefix):]] = value
    return state
