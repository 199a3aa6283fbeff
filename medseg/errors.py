"""Exceptions that carry a stable code, a one-line user message and a process exit code.

This module is a leaf: it imports nothing from medseg, so every layer (``io`` included) may use it.
The CLI turns any :class:`MedsegError` into ``error: <file>: <reason>`` on stderr and exits with
:attr:`MedsegError.exit_code` (DESIGN.md §2: 2 input, 3 output/IO, 4 model/checkpoint).
"""

from __future__ import annotations

import unicodedata


class MedsegError(Exception):
    """Base class: ``code`` is a short machine-readable tag, ``message`` one human line."""

    exit_code = 1

    def __init__(self, code: str, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path

    def __str__(self) -> str:
        """``<path>: <message>`` on one line: control characters of either are escaped, so a
        file name holding a newline cannot split the line or forge a second ``error:`` line."""
        message = printable(self.message)
        return f"{printable(self.path)}: {message}" if self.path else message


def printable(text: object) -> str:
    """``str(text)`` with control and format characters (newline, carriage return, escape,
    bidirectional overrides, ...) written as Python escapes (``\\n``, ``\\x1b``, ``\\u202e``);
    everything else, non-ASCII letters included, is kept as it is."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
        else ch
        for ch in str(text)
    )


class InputError(MedsegError):
    """The input file or an argument is unusable (exit code 2)."""

    exit_code = 2


class OutputError(MedsegError):
    """An output could not be written (exit code 3): disk full, permission, read-only folder."""

    exit_code = 3


class ModelError(MedsegError):
    """A model, checkpoint or device is unusable (exit code 4)."""

    exit_code = 4
