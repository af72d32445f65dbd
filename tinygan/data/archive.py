"""Safe extraction of .tar, .tar.gz/.tgz and .zip archives.

An archive is a list of names chosen by whoever made it. A name such as
``../../.bashrc`` or ``/etc/cron.d/x``, or a symlink pointing outside, would let
an archive write anywhere the user can. :func:`safe_extract` checks every
member itself (tarfile's ``filter=`` argument only exists from Python 3.11.4 /
3.10.12, and zipfile has none) and writes each member with plain file
operations, so the only things created are the ones that were checked.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional, Union

from .errors import DataError

__all__ = ["safe_extract"]

# Errors by which the archive libraries report damaged input; anything else
# (a full disk, a permission problem) is left to propagate as it is.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error,
            gzip.BadGzipFile, lzma.LZMAError)


def safe_extract(archive: Union[str, os.PathLike], dest: Union[str, os.PathLike]) -> Path:
    """Extract ``archive`` into the new folder ``dest``, refusing unsafe members.

    The format is recognised from the file's content, not its name: zip, or
    tar with or without gzip/bz2/xz compression.

    Refused, with a :class:`DataError` that names the member:

    * absolute paths (``/etc/x``, ``C:\\x``) and paths with a ``..`` component;
    * symlinks and hard links whose target leaves ``dest``, and members stored
      *under* a link (``link/file``), which could otherwise be written through
      a link that points elsewhere;
    * device files, FIFOs and other special files.

    Everything is extracted into a temporary folder beside ``dest`` which is
    renamed to ``dest`` only at the end, so a refused or corrupt archive leaves
    nothing half-written behind. File permissions are reduced to 0644/0755 and
    owners are not copied.

    Parameters
    ----------
    archive : str or os.PathLike
        Path of the .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz/.zip file.
    dest : str or os.PathLike
        Folder to create. It must not exist, or be an empty folder.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataError
        Unsafe member, corrupt archive, or not an archive at all.
    FileExistsError
        ``dest`` exists and is not an empty folder.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise FileExistsError(
            f"cannot extract {archive} into {dest}: it already exists; remove it or "
            "choose another destination")

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as dest, so the final rename never crosses file systems.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        try:
            # Tar first: its headers carry checksums, while is_zipfile only looks
            # for a zip trailer, which a plain .tar ending in a .zip member has.
            if _is_tar(archive):
                _extract_tar(archive, tmp)
            elif zipfile.is_zipfile(archive):
                _extract_zip(archive, tmp)
            else:
                raise DataError(
                    f"{archive} is not a supported archive: expected a .tar, .tar.gz/.tgz, "
                    ".tar.bz2, .tar.xz or .zip file")
            _check_links_resolve_inside(archive, tmp)
        except _CORRUPT as e:
            raise DataError(f"{archive} is corrupt or truncated: {e}") from None
        os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700)
        if dest.exists():
            dest.rmdir()  # the empty folder allowed above
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _is_tar(path: Path) -> bool:
    """Whether ``path`` is a (possibly compressed) tar file, judged by content."""
    try:
        return tarfile.is_tarfile(path)
    except _CORRUPT + (OSError,):
        return False


def _check_name(archive: Path, name: str) -> PurePosixPath:
    """Return the member's relative path, or raise if it is absolute or has ``..``."""
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise DataError(f"refusing to extract {archive}: member {name!r} has an absolute path")
    # Split on both separators: a Windows-made archive may use backslashes.
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"refusing to extract {archive}: member {name!r} contains a '..' component")
    return PurePosixPath(*parts)  # no parts ("./" made by `tar -C dir .`): the root itself


def _inside(path: str) -> bool:
    """Whether a relative path, once ``..`` are resolved, stays inside the root."""
    norm = os.path.normpath(path)
    return not (os.path.isabs(norm) or norm == ".." or norm.startswith("../"))


class _Checker:
    """Validates members one by one, remembering links to catch ``link/file``."""

    def __init__(self, archive: Path):
        self.archive = archive
        self.links: set[PurePosixPath] = set()

    def path(self, name: str, is_dir: bool) -> Optional[PurePosixPath]:
        """The member's checked relative path; None for the root folder itself."""
        rel = _check_name(self.archive, name)
        if not rel.parts:
            if is_dir:
                return None
            raise DataError(f"refusing to extract {self.archive}: member {name!r} is not a "
                            "folder but has an empty path")
        for parent in rel.parents:
            if parent in self.links:
                raise DataError(
                    f"refusing to extract {self.archive}: member {name!r} is stored under "
                    f"the link {str(parent)!r}")
        return rel

    def symlink(self, name: str, rel: PurePosixPath, target: str) -> None:
        # A symlink's target is relative to the folder holding the link.
        if target.startswith(("/", "\\")) or PureWindowsPath(target).drive or not _inside(
                str(rel.parent / target.replace("\\", "/"))):
            raise DataError(
                f"refusing to extract {self.archive}: member {name!r} is a symlink to "
                f"{target!r}, which leaves the destination")
        self.links.add(rel)

    def hardlink(self, name: str, rel: PurePosixPath, target: str) -> PurePosixPath:
        # A hard link's target is a path from the archive's root.
        try:
            target_rel = _check_name(self.archive, target)
        except DataError:
            raise DataError(
                f"refusing to extract {self.archive}: member {name!r} is a hard link to "
                f"{target!r}, which leaves the destination") from None
        self.links.add(rel)
        return target_rel


def _check_links_resolve_inside(archive: Path, root: Path) -> None:
    """Second line of defence: resolve every extracted symlink for real.

    The per-member check is lexical; links that point through other links
    (``a -> .`` then ``b -> a/..``) can only be judged once they all exist.
    """
    real_root = os.path.realpath(root)
    for folder, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = os.path.join(folder, entry)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real != real_root and not real.startswith(real_root + os.sep):
                    rel = os.path.relpath(path, root).replace(os.sep, "/")
                    raise DataError(
                        f"refusing to extract {archive}: member {rel!r} is a symlink to "
                        f"{os.readlink(path)!r}, which leaves the destination")


def _extract_tar(archive: Path, root: Path) -> None:
    checker = _Checker(archive)
    # One pass over the stream: each member is checked before it is written,
    # and the whole temporary folder is discarded if a later member is refused.
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            rel = checker.path(member.name, member.isdir())
            if rel is None:
                continue
            target = root.joinpath(*rel.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tf.extractfile(member)
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
                os.utime(target, (member.mtime, member.mtime))
            elif member.issym():
                checker.symlink(member.name, rel, member.linkname)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, target)
            elif member.islnk():
                source_rel = checker.hardlink(member.name, rel, member.linkname)
                source = root.joinpath(*source_rel.parts)
                if not source.is_file() or source.is_symlink():
                    raise DataError(
                        f"refusing to extract {archive}: member {member.name!r} is a hard link "
                        f"to {member.linkname!r}, which is not a file extracted before it")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
            else:
                kind = "device file" if (member.ischr() or member.isblk()) else "special file"
                raise DataError(
                    f"refusing to extract {archive}: member {member.name!r} is a {kind}")


def _extract_zip(archive: Path, root: Path) -> None:
    checker = _Checker(archive)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            # Unix zip tools store the file type in the high 16 bits.
            mode = info.external_attr >> 16
            rel = checker.path(info.filename, info.is_dir() or stat.S_ISDIR(mode))
            if rel is None:
                continue
            target = root.joinpath(*rel.parts)
            if info.is_dir() or stat.S_ISDIR(mode):
                target.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(mode):
                link_target = zf.read(info).decode("utf-8", "replace")
                checker.symlink(info.filename, rel, link_target)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link_target, target)
            elif mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                kind = "device file" if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "special file"
                raise DataError(
                    f"refusing to extract {archive}: member {info.filename!r} is a {kind}")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)  # checks the CRC at the end
                os.chmod(target, 0o755 if mode & 0o111 else 0o644)
