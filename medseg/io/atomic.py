"""Atomic writes of one or several files: stage into temp files, then rename into place.

RELIABILITY.md B.4: a file is written to ``.tmp_<random><ext>`` in its **target folder**, flushed
and fsynced, then ``os.replace``-d onto the target and the folder fsynced. A reader never sees a
partial file, a full disk or a failing writer leaves the previous target untouched, and a SIGKILL
can only leave an orphan ``.tmp_*`` (removed later by
:func:`medseg.io.save.cleanup_orphan_temps`).

:class:`StagedWrites` does this for several files as one (a label map, its statistics and its
preview): every file is staged first; only when all are staged are they renamed, one after
another, with SIGINT/SIGTERM held back for those few renames. Any failure while staging removes
every temp file and leaves every previous target as it was. Failures become
:class:`~medseg.errors.OutputError` (exit 3) ``could not write output: <reason>``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from medseg.errors import OutputError

TEMP_PREFIX = ".tmp_"
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class StagedWrites:
    """Several files written all-or-nothing. Use as a context manager::

        with StagedWrites() as staged:
            staged.stage_bytes(Path("out/a.json"), data)
            staged.stage(Path("out/b.nii.gz"), lambda tmp: img.to_filename(tmp), suffix=".nii.gz")
        # leaving the block without an exception commits; an exception discards every temp

    Renames happen in staging order. Between two renames of a commit a reader could see a new
    file beside an old one (a window of a few renames; signals are held back, so only a SIGKILL
    or a failing ``rename`` leaves a mix).
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []  # (temp file, target)
        self._temps: list[Path] = []  # every temp file/folder created, removed at the end

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False

    def stage(self, target: Path, write: Callable[[str], None], *, suffix: str = "") -> None:
        """Write ``target``'s new content with ``write(temp_path)`` into a fsynced temp beside it.

        ``suffix`` is the temp file's extension (writers that pick the format from the name need
        it; default ``target``'s last suffix). ``OSError`` becomes :class:`OutputError`.
        """
        target = Path(target)
        tmp = Path(self._mkstemp(target, suffix or target.suffix))
        with output_errors(target):
            write(str(tmp))
            fsync_path(tmp)
            os.chmod(tmp, default_mode())
        self._moves.append((tmp, target))

    def stage_bytes(self, target: Path, data: bytes) -> None:
        """Stage ``data`` as ``target``'s new content."""

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                handle.write(data)

        self.stage(target, write)

    def staging_folder(self, target: Path) -> Path:
        """A temp folder beside ``target`` for writers that produce several files at once; add
        each (fsynced) file with :meth:`add`. The folder is removed after commit or discard."""
        try:
            folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=Path(target).parent))
        except OSError as e:
            raise output_error(e, Path(target)) from e
        self._temps.append(folder)
        return folder

    def add(self, temp: Path, target: Path) -> None:
        """Rename ``temp`` (already written and fsynced, in a :meth:`staging_folder` on the same
        file system) onto ``target`` at commit."""
        self._moves.append((Path(temp), Path(target)))

    def commit(self) -> None:
        """Rename every staged file into place (signals held back), fsync the folders, clean up."""
        target = None
        try:
            with _signals_held():
                for tmp, target in self._moves:
                    os.replace(tmp, target)
            for folder in dict.fromkeys(t.parent for _, t in self._moves):
                fsync_path(folder)
        except OSError as e:
            raise output_error(e, target or Path(".")) from e
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove every temp file/folder not yet renamed; the targets are untouched."""
        for path in reversed(self._temps):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._temps.clear()
        self._moves.clear()

    def _mkstemp(self, target: Path, suffix: str) -> str:
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=target.parent)
            os.close(fd)
        except OSError as e:
            raise output_error(e, target) from e
        self._temps.append(Path(tmp))
        return tmp


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT/SIGTERM (delivered on exit) in the main thread, where Python runs handlers."""
    can_block = hasattr(signal, "pthread_sigmask") and (
        threading.current_thread() is threading.main_thread()
    )
    if not can_block:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def fsync_path(path: Path) -> None:
    """fsync a file or folder (some file systems cannot fsync a folder: that is ignored)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if not Path(path).is_dir() or e.errno not in (errno.EINVAL, errno.EBADF):
            raise  # a file must fsync
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_errors(target: Path) -> Iterator[None]:
    """Writing ``target``: ``OSError`` becomes :class:`OutputError`, which names ``target``."""
    try:
        yield
    except OSError as e:
        raise output_error(e, target) from e
    except OutputError as e:
        e.path = e.path or str(target)
        raise


def output_error(e: OSError, target: Path) -> OutputError:
    """The :class:`OutputError` (exit 3) for an ``OSError`` while writing ``target``."""
    code = {
        errno.ENOSPC: "disk_full",
        errno.EFBIG: "disk_full",
        errno.EDQUOT: "disk_full",
        errno.EACCES: "permission",
        errno.EPERM: "permission",
        errno.EROFS: "permission",
        errno.ENOENT: "no_folder",
        errno.ENOTDIR: "no_folder",
    }.get(e.errno or 0, "write_failed")
    reason = e.strerror or type(e).__name__
    return OutputError(code, f"could not write output: {reason}", path=str(target))


def default_mode() -> int:
    """0o666 minus the process umask (mkstemp creates 0o600 files)."""
    # not Linux (no /proc): fall back to the usual umask 022
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/self/status", encoding="ascii") as f,
    ):
        for line in f:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644
