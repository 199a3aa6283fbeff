"""What the writing subcommands print: warnings, notes and summaries, one line each.

Every path and text is passed through :func:`medseg.errors.printable`, so a crafted file name
can neither split a line nor forge an ``error:`` line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from medseg.errors import printable

__all__ = ["SliceProgress", "print_summary", "warning_printer"]


def warning_printer(where: object):
    """A callback printing ``warning: <where>: <text>`` on stderr (also with --quiet; the same
    warnings are kept in the statistics JSON)."""

    def show(text: str) -> None:
        print(f"warning: {printable(where)}: {printable(text)}", file=sys.stderr)

    return show


def print_summary(paths: Iterable[Path], labels: list[dict], *, prompted: bool) -> None:
    """Per-label volumes, or that nothing was found, then the files written."""
    for entry in labels:
        print(
            f"label {entry['label']} ({printable(entry['name'])}): {entry['volume_ml']:.2f} mL, "
            f"{entry['voxels']} voxels"
        )
    if not labels:
        what = "for this prompt" if prompted else "in this volume"
        print(f"the model found no object {what} (empty label map written)")
    for path in paths:
        print(f"wrote {printable(path)}")


class StageProgress:
    """A ``progress(done, total, stage)`` callback drawing one progress bar per stage on stderr
    (a new bar when the stage or the total changes); silent when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.key = quiet, None, None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self.quiet:
            return
        if self.key != (stage, total):
            from tqdm.auto import tqdm

            if self.bar is not None:
                self.bar.close()
            self.key = (stage, total)
            self.bar = tqdm(desc=stage, total=total, leave=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
            self.bar, self.key = None, None


class SliceProgress:
    """A ``progress(done)`` callback drawing a slice progress bar on stderr, created on the
    first call, so a run refused before any model work prints only its error line. Use as a
    context manager (the bar is closed on exit)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def __call__(self, done: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc="segmenting", unit="slice", leave=False)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> SliceProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
