"""The one check every user-named file passes before anything opens it.

Volumes, detached voxel files (``.mhd`` / ``.nrrd`` data files), DICOM folders, checkpoints,
support folders and reference label maps all go through :func:`check_regular_file` (or
:func:`check_folder`), so a FIFO, a device such as ``/dev/zero`` or ``/dev/urandom``, a socket, a
dangling symlink or an unreadable file is refused *before* any library opens it (a FIFO would
block forever, a device would be read without end). :func:`check_inside` is the containment
rule for files that another file names: they must lie in the naming file's folder, after
resolving symlinks and ``..``.

The error class is the caller's: :class:`~medseg.errors.InputError` (exit 2) for inputs,
:class:`~medseg.errors.ModelError` (exit 4) for checkpoints. Codes: ``not_found``,
``not_regular_file``, ``permission``, ``not_allowed`` (outside the folder). Like
:mod:`medseg.errors`, this module is a leaf: every layer may import it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from medseg.errors import InputError, MedsegError

__all__ = [
    "check_folder",
    "check_inside",
    "check_regular_file",
    "describe_mode",
    "open_regular",
    "stat_path",
]


def check_regular_file(
    path: str | os.PathLike[str],
    *,
    error: type[MedsegError] = InputError,
    what: str = "",
) -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed), refusing anything but a readable regular file.

    ``what`` prefixes the reason (``"checkpoint: not a regular file (it is a FIFO/pipe)"``).
    Nothing is opened, so a FIFO cannot block here.
    """
    st = stat_path(path, error=error, what=what)
    if not stat.S_ISREG(st.st_mode):
        raise error(
            "not_regular_file",
            f"{_prefix(what)}not a regular file (it is {describe_mode(st.st_mode)})",
            path=str(path),
        )
    if not os.access(path, os.R_OK):
        raise error("permission", f"{_prefix(what)}permission denied", path=str(path))
    return st


def check_folder(
    path: str | os.PathLike[str],
    *,
    error: type[MedsegError] = InputError,
    what: str = "",
) -> os.stat_result:
    """``os.stat`` of a folder the user named, or ``error`` (``not_found``, ``not_a_folder``)."""
    st = stat_path(path, error=error, what=what)
    if not stat.S_ISDIR(st.st_mode):
        raise error(
            "not_a_folder",
            f"{_prefix(what)}not a folder (it is {describe_mode(st.st_mode)})",
            path=str(path),
        )
    return st


def open_regular(path: str | os.PathLike[str], *, error: type[MedsegError] = InputError) -> int:
    """A read-only file descriptor of a regular file, opened without blocking.

    ``O_NONBLOCK`` keeps a FIFO swapped in after :func:`check_regular_file` from blocking the
    open; ``fstat`` then checks what was actually opened. The caller closes the descriptor.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise error("permission", "permission denied", path=where) from None
    except OSError as e:
        raise error("not_found", f"cannot open ({e.strerror})", path=where) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(
            "not_regular_file", f"not a regular file (it is {describe_mode(mode)})", path=where
        )
    return fd


def check_inside(
    path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    named_by: str | os.PathLike[str],
    error: type[MedsegError] = InputError,
) -> Path:
    """``path`` resolved, if it lies inside ``folder`` (both resolved: symlinks and ``..``).

    Refuses (``not_allowed``) an absolute name, a name that climbs with ``..`` and a symlink that
    leads out, naming the file ``named_by`` whose header pointed there.
    """
    name = Path(path)
    full = (Path(folder) / name).resolve()
    base = Path(folder).resolve()
    if name.is_absolute() or ".." in name.parts or not full.is_relative_to(base):
        raise error(
            "not_allowed",
            f"names the data file '{path}', which lies outside the header's folder; only files "
            "next to the header are read (move the data file there, or save as one .mha/.nrrd)",
            path=str(named_by),
        )
    return full


def describe_mode(mode: int) -> str:
    """``"a FIFO/pipe"``, ``"a device"``, ``"a folder"``, ... for an ``st_mode``."""
    if stat.S_ISFIFO(mode):
        return "a FIFO/pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a plain file"


def stat_path(
    path: str | os.PathLike[str],
    *,
    error: type[MedsegError] = InputError,
    what: str = "",
) -> os.stat_result:
    """``os.stat`` (symlinks followed) that never opens the file; failures -> ``error``."""
    where, pre = str(path), _prefix(what)
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(path)
            raise error(
                "not_found", f"{pre}not found (dangling symlink to {target})", path=where
            ) from None
        raise error("not_found", f"{pre}not found", path=where) from None
    except PermissionError:
        raise error("permission", f"{pre}permission denied", path=where) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error("not_found", f"{pre}not found (symlink loop)", path=where) from None
        if e.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
            raise error("not_found", f"{pre}not found ({e.strerror})", path=where) from None
        raise error("not_found", f"{pre}cannot access ({e.strerror})", path=where) from None


def _prefix(what: str) -> str:
    return f"{what}: " if what else ""
