"""CuPy's API read from the installed cupy package: its names and each callable's keyword arguments.

The strict backend (:mod:`tinygan._strict`) refuses what real CuPy lacks, from
these tables rather than from a hand-kept list. Without the cupy package the
tables are None and the strict backend checks no names.
"""
from __future__ import annotations

import functools
import inspect
import re


class CupyAPIError(AttributeError):
    """Code called a function, method or keyword that the real cupy package does not have."""


ANY = None  # keyword table entry: the callable takes **kwargs, every keyword goes through

# What introspection cannot see, each entry with its reason:
# - CuPy's where and clip are Python functions wrapping elementwise kernels (ufuncs inside),
#   so like ufuncs their results are freshly allocated C-contiguous arrays.
_ELEMENTWISE_FUNCTIONS = {"where", "clip"}


def _split_params(text):
    """Top-level comma split of a parameter list (defaults may hold brackets and strings)."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_DOC_SIGNATURE = re.compile(r"^\s*[\w.]+\((.*)\)")


def _keywords_from_doc(doc):
    """Keyword names of Cython's embedded signature line ``name(a, /, out=None, \\*, dtype=None)``."""
    first = (doc or "").strip().splitlines()[:1]
    match = _DOC_SIGNATURE.match(first[0]) if first else None
    if match is None:
        return ANY
    names = set()
    for p in _split_params(match.group(1).replace("\\*", "*")):
        if p == "/":
            names.clear()  # what comes before '/' cannot be passed by keyword
            continue
        if p.startswith("**"):
            return ANY
        if p.startswith("*"):
            continue
        name = p.split("=")[0].split(":")[0].strip().split()[-1]  # "Py_ssize_t axis1" -> axis1
        if name != "self":
            names.add(name)
    return frozenset(names)


def _keywords(f):
    """Keyword arguments a CuPy callable accepts, or ANY."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return _keywords_from_doc(getattr(f, "__doc__", None))
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return ANY
    return frozenset(n for n, p in sig.parameters.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


class _Table:
    """Names of one CuPy namespace (a module or ndarray) and, lazily, each callable's keywords."""

    def __init__(self, namespace, label):
        self.namespace, self.label = namespace, label
        self.names = frozenset(n for n in dir(namespace) if not n.startswith("__"))
        self._keywords = {}

    def keywords(self, name):
        if name not in self._keywords:
            self._keywords[name] = _keywords(getattr(self.namespace, name))
        return self._keywords[name]

    def check(self, name, kwargs):
        """Raise CupyAPIError if CuPy lacks ``name`` or one of ``kwargs``."""
        if name not in self.names:
            raise CupyAPIError(f"{self.label}{name} does not exist in cupy (NumPy has it): "
                               "CuPy would raise AttributeError on a GPU")
        if kwargs:
            allowed = self.keywords(name)
            if allowed is not ANY:
                bad = sorted(set(kwargs) - allowed)
                if bad:
                    raise CupyAPIError(f"{self.label}{name}() in cupy takes no keyword "
                                       f"{', '.join(map(repr, bad))} (it takes {', '.join(sorted(allowed)) or 'none'}): "
                                       "CuPy would raise TypeError on a GPU")


@functools.lru_cache(maxsize=None)
def _table(path):
    """The table of ``cupy.<path>`` ('' for cupy itself, 'ndarray' for the array type), or None."""
    from . import backend  # only backend.py imports cupy (from here: a foundation module, as backend)
    cupy = backend._cupy_package()
    if cupy is None:
        return None
    ns = cupy
    for part in filter(None, path.split(".")):
        ns = getattr(ns, part, None)
        if ns is None:
            return None
    label = "cupy.ndarray." if path == "ndarray" else f"cupy.{path + '.' if path else ''}"
    return _Table(ns, label)


def cupy_api():
    """The table of the installed cupy package's module namespace, or None without cupy."""
    return _table("")
