"""``medseg`` entry point: subcommand dispatch, exit codes, one-line errors, signals.

Exit codes (DESIGN.md §2): 0 ok, 2 bad input or arguments, 3 output/IO error, 4 model or
checkpoint error, 130 SIGINT, 143 SIGTERM. Errors print one line ``error: <file>: <reason>`` on
stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import traceback
from collections.abc import Sequence

from medseg.errors import MedsegError

EXIT_OK, EXIT_INPUT, EXIT_OUTPUT, EXIT_MODEL = 0, 2, 3, 4
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
TRAIN_COMMANDS = ("fit", "validate", "test", "predict")
#: options whose value may be a list of numbers starting with a minus sign (RAS millimetres,
#: a negative CT window level): ``--box-mm -60,-80,10,...`` is read as ``--box-mm=-60,...``
NUMBER_OPTIONS = ("--box", "--point", "--box-mm", "--point-mm", "--window", "--slices")
_NUMBERS = re.compile(r"^-[0-9.][0-9.eE+-]*(\s*,\s*-?[0-9.][0-9.eE+-]*)*$")


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives, so ``finally`` blocks clean up."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 as we do; keep one line
        self.print_usage(sys.stderr)
        raise SystemExit(f"error: {message}") from None


def build_parser() -> argparse.ArgumentParser:
    from medseg import __version__
    from medseg.cli import demo, evaluate, prepare, restore, segment, view

    parser = _ArgumentParser(
        prog="medseg",
        description="Medical image segmentation and restoration (research use, not a medical "
        "device).",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    common = _ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print tracebacks on errors")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True
    segment.add_parser(sub, parents=[common])
    restore.add_parser(sub, parents=[common])
    demo.add_parser(sub, parents=[common])
    prepare.add_parser(sub, parents=[common])
    evaluate.add_parser(sub, parents=[common])
    view.add_parser(sub, parents=[common])
    for name in TRAIN_COMMANDS:  # LightningCLI; main() dispatches them before argparse
        sub.add_parser(name, help=f"LightningCLI {name} (medseg {name} --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medseg`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAIN_COMMANDS:
        from medseg.cli import train

        return train.main(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(join_negative_numbers(argv))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_INPUT
        return int(exc.code or 0)
    previous = _install_sigterm()
    try:
        return int(args.run(args) or 0)
    except MedsegError as exc:
        _report(exc, args)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    except MemoryError as exc:
        from medseg.errors import InputError

        error = InputError(
            "not_enough_memory",
            "not enough memory: use a smaller input (--roi, --batch-size where offered) or a "
            "machine with more memory",
        )
        _report(error, args, exc)
        return error.exit_code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def join_negative_numbers(argv: list[str]) -> list[str]:
    """``[..., "--box-mm", "-60,-80,...", ...]`` -> ``[..., "--box-mm=-60,-80,...", ...]`` for
    the options in :data:`NUMBER_OPTIONS` (argparse would take the value for an option)."""
    out: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if argv[i] in NUMBER_OPTIONS and nxt is not None and _NUMBERS.match(nxt):
            out.append(f"{argv[i]}={nxt}")
            next(it, None)
        else:
            out.append(argv[i])
    return out


def _report(
    exc: BaseException, args: argparse.Namespace, cause: BaseException | None = None
) -> None:
    if getattr(args, "debug", False):
        traceback.print_exception(cause or exc)
    print(f"error: {exc}", file=sys.stderr)


def _install_sigterm():
    """Turn SIGTERM into :class:`Terminated` in the main thread (no-op elsewhere)."""

    def _handler(signum, frame):  # noqa: ARG001
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, _handler)
    except ValueError:  # not the main thread (e.g. called from a test worker thread)
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
