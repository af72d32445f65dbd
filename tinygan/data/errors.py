"""Exceptions raised by :mod:`tinygan.data`.

Everything that goes wrong because of the *data* (a corrupt file, an archive
that tries to escape its folder, a checksum that does not match) raises
:class:`DataError`, so a caller can catch one exception type and show its
message: the messages name the file, what was found and what was expected.
Programming mistakes (a bad argument value) still raise ``ValueError`` or
``TypeError`` as usual.
"""

from __future__ import annotations

__all__ = ["DataError", "DownloadError", "DataWarning"]


class DataError(Exception):
    """A data file or archive is missing, corrupt or unsafe to use."""


class DownloadError(DataError):
    """A download failed: no mirror could be reached, or the bytes were wrong.

    A subclass of :class:`DataError` because, for the caller, "the data is not
    usable" is the same situation whether it came from disk or the network.
    """


class DataWarning(UserWarning):
    """A note about the data that is not an error (files skipped, a fallback source used).

    The loaders emit it with :func:`warnings.warn_explicit` under the file name
    ``tinygan.data``, so the standard warning display is one line with no
    Python source line under it; they also return the same notes (e.g.
    :attr:`tinygan.data.FaceStats.notes`) for callers that print their own,
    and ``warn=False`` turns the warnings off.
    """


def data_warning(message: str) -> None:
    """Emit ``message`` as a one-line :class:`DataWarning` (no source line is printed)."""
    import warnings
    warnings.warn_explicit(message, DataWarning, filename="tinygan.data", lineno=0)
