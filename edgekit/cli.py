"""The ``edgekit`` command: parses arguments, calls one command module, turns errors into one line.

Each sub-command lives in ``edgekit/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import signal
import sys
import threading
import traceback

from . import __version__
from .allocator import keep_freed_memory
from .console import set_quiet, set_verbose
from .errors import EdgekitError, Terminated

COMMANDS = ("models", "info", "export", "finetune", "validate", "eval", "inspect", "bench", "emulate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekit", description="PyTorch vision models to phones and edge boards.")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages or warnings")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="the full log: a line when each step starts and every progress count (default: one "
                             "line per finished step, and on a terminal one line rewritten in place while it runs)")
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("EDGEKIT_DEBUG")),
                        help="on failure, print the full traceback, including the library's own (EDGEKIT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        # each command module imports its heavy libraries inside run(): building the parser stays fast
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
        # accepted after the command too (`edgekit export NAME -q`); SUPPRESS keeps the global value otherwise
        sub.choices[name].add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                       help="no progress messages")
        sub.choices[name].add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="the full log: step starts and every progress count")
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # a command's batches reuse freed memory instead of faulting it in again (allocator.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    set_verbose(args.verbose)
    try:
        return int(args.run(args) or 0)
    except EdgekitError as e:
        if args.debug:
            _print_traceback(e)
        print(f"edgekit: error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        _stopping(argv)
        print("edgekit: terminated", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        _stopping(argv)
        print("edgekit: interrupted", file=sys.stderr)
        return 130


def _stopping(argv: list[str] | None) -> None:
    """edgekit stops for a signal, and the exit status must stay 130 or 143. When edgekit is the process (``argv``
    from the command line), a second signal (another Ctrl-C while it prints its line) is ignored; a program
    that calls ``main([...])`` keeps its handlers."""
    if argv is None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    # The interrupt may have passed through Python code that a library ran from C (PyRun_String, during an import
    # inside litert-torch's conversion): that leaves CPython's "unhandled KeyboardInterrupt" flag set although
    # edgekit caught it, and `python -m edgekit.cli` then kills itself with SIGINT after returning 130 (seen
    # under load). Every PyRun_String clears the flag as it starts.
    if hasattr(ctypes, "pythonapi"):  # CPython's C API; the flag is CPython's too
        ctypes.pythonapi.PyRun_SimpleString(b"pass")


def _print_traceback(error: BaseException) -> None:
    """The one-line errors hide the library exception they were made from (``raise ... from None`` keeps it as
    ``__context__``); --debug shows it, then edgekit's own."""
    cause = error.__cause__ or error.__context__
    if cause is not None:
        traceback.print_exception(cause, file=sys.stderr)
        print("\nwhich edgekit reported as:", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
