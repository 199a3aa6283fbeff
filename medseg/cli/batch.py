"""Inputs that may be a folder of volumes, shared by ``medseg segment --checkpoint`` and
``medseg restore``.

:func:`list_inputs` reads ``IN``: a file, a DICOM series folder, or a folder of volume files
(any file named ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``). A folder holding no such
file is read as one DICOM series. In a folder of volumes, hidden files are skipped and every
other entry that is not a volume file (sub-folders included: they are not searched) is named in
one ``note:`` line. :func:`run_cases` runs one function per input: with a single input its
error is the command's error; in a folder, failures are listed and the others still run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from medseg.errors import InputError, MedsegError

__all__ = ["case_names", "check_batch_outputs", "list_inputs", "run_cases"]


def list_inputs(path: Path) -> tuple[list[Path], list[str]]:
    """``([path], [])`` for a file or a DICOM series folder; for a folder of volume files
    ``(sorted volume files, names of the other non-hidden entries)`` (see the module doc)."""
    from medseg.io.sniff import extension_kind

    if not path.is_dir():
        return [path], []
    entries = sorted(e for e in path.iterdir() if not e.name.startswith("."))
    volumes = [e for e in entries if e.is_file() and extension_kind(e)[1] is not None]
    if not volumes:
        if entries and all(e.is_dir() for e in entries):
            raise InputError(
                "no_inputs",
                "holds only sub-folders: give a folder of volume files or one DICOM series "
                "folder (sub-folders are not searched)",
                path=str(path),
            )
        return [path], []  # a DICOM series (load_volume reports an empty/unreadable folder)
    companions = {v.with_suffix(s).name for v in volumes for s in (".raw", ".zraw")}
    ignored = [e.name for e in entries if e not in volumes and e.name not in companions]
    return volumes, ignored


def case_names(inputs: list[Path]) -> dict[Path, str | None]:
    """Output stem per input; None for inputs whose stem another input already has."""
    from medseg.api.outputs import case_name

    seen: dict[str, int] = {}
    for p in inputs:
        seen[case_name(p)] = seen.get(case_name(p), 0) + 1
    return {p: case_name(p) if seen[case_name(p)] == 1 else None for p in inputs}


def check_batch_outputs(inputs: list[Path], outputs_of: Callable[[str], list[Path]]) -> list[Path]:
    """Refuse, before any model work, a run in which a case's output would replace an input.

    ``outputs_of(name)`` lists the files case ``name`` writes. Every input of the run is
    protected, not only the case's own (``-o`` on the input folder with ``a.nii.gz`` and
    ``a_seg.nii.gz`` side by side must not turn case ``a``'s result into the loss of the
    input ``a_seg.nii.gz``), even with ``--overwrite``. Returns the inputs, the ``protect``
    list every later write of the run passes on.
    """
    from medseg.api.outputs import resolved

    protected = {resolved(p): p for p in inputs}
    for name in filter(None, case_names(inputs).values()):
        for out in outputs_of(name):
            hit = protected.get(resolved(out))
            if hit is not None:
                raise InputError(
                    "would_overwrite_input",
                    f"case {name}'s output would replace the input {hit.name} of this run "
                    "(even with --overwrite); write the outputs to another folder with -o",
                    path=str(out),
                )
    return list(inputs)


def note_ignored(source: str, ignored: list[str]) -> None:
    """One ``note:`` line naming the folder entries that are not volume files."""
    if ignored:
        shown = ", ".join(ignored[:5]) + (f", ... ({len(ignored)})" if len(ignored) > 5 else "")
        print(
            f"note: {source}: ignoring entries that are not volume files: {shown}", file=sys.stderr
        )


def run_cases(
    inputs: list[Path],
    batch: bool,
    one: Callable[[Path, str], None],
    *,
    quiet: bool,
) -> int:
    """Call ``one(path, name)`` per input; 0, or the first failure's exit code after listing
    the failed cases (``batch``: ``IN`` was a folder of volumes)."""
    from tqdm.auto import tqdm

    names = case_names(inputs)
    failures: list[tuple[Path, MedsegError]] = []
    for path in tqdm(inputs, desc="cases", unit="case", disable=quiet or not batch):
        if not batch:  # one input: its error is the command's error (one line, by main)
            one(path, names[path] or path.name)
            continue
        try:
            if names[path] is None:
                raise InputError("duplicate_name", "another input has the same name; rename one")
            one(path, names[path])
        except MedsegError as exc:
            if exc.path is None:
                exc.path = str(path)
            print(f"error: {exc}", file=sys.stderr)
            failures.append((path, exc))
    if failures:
        listed = ", ".join(p.name for p, _ in failures)
        print(f"error: {len(failures)} of {len(inputs)} case(s) failed: {listed}", file=sys.stderr)
        return failures[0][1].exit_code
    return 0
