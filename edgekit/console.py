"""Messages for people: progress and warnings on stderr, so stdout stays clean for tables and JSON.

A step of long work (``step``) prints one line when it finishes: ``[edgekit] label done in 2.1s (detail)``. On a
terminal, while it runs, one line rewritten in place shows what is running and how far it got (``Progress``);
in a log (stderr not a terminal) nothing is printed until the step ends, except a progress count every
``LOG_PROGRESS_SECONDS`` so that long work is not taken for a hang. ``--verbose`` prints the full log instead: a
line when each step starts and every progress count.

Warnings go through the ``edgekit`` logger, so that Python users control them like any library's
(``logging.getLogger("edgekit").setLevel(logging.ERROR)`` silences them) and ``-q`` silences them on the
command line; its handler writes ``WARNING: ...`` to whatever ``sys.stderr`` is at that moment.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from contextlib import contextmanager

_QUIET = False
_VERBOSE = False
LOG_PROGRESS_SECONDS = 30.0
LOGGER = logging.getLogger("edgekit")
# the line being rewritten in place on a terminal (what runs, how far), or None; any other message clears it first
_live: str | None = None


def _terminal() -> bool:
    return sys.stderr.isatty()


def _show_live(text: str) -> None:
    """Rewrite the in-place line; cut to the terminal's width, since a wrapped line cannot be rewritten."""
    global _live
    width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
    line = text if len(text) <= width else text[:width - 3] + "..."
    print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
    _live = text


def _clear_live() -> None:
    global _live
    if _live is not None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
        _live = None


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if getattr(record, "loud", False):
            bar = "!" * min(100, len(message) + 9)
            text = f"{bar}\nWARNING: {message}\n{bar}"
        else:
            text = f"{record.levelname}: {message}"
        live = _live
        _clear_live()
        print(text, file=sys.stderr, flush=True)
        if live is not None:
            _show_live(live)


LOGGER.addHandler(_StderrHandler())
LOGGER.propagate = False  # one line per warning, not a second copy from the root logger
LOGGER.setLevel(logging.WARNING)


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet
    LOGGER.setLevel(logging.ERROR if quiet else logging.WARNING)


def set_verbose(verbose: bool) -> None:
    global _VERBOSE
    _VERBOSE = verbose


def info(message: str) -> None:
    if not _QUIET:
        live = _live
        _clear_live()
        print(message, file=sys.stderr, flush=True)
        if live is not None:
            _show_live(live)


def warn(message: str, loud: bool = False) -> None:
    """A warning for people; a loud one is framed so it cannot be missed in a CI log."""
    LOGGER.warning(message, extra={"loud": loud})


_steps: list[str] = []  # labels of the steps running, innermost last: what the in-place line names


@contextmanager
def step(label: str):
    """One line when ``label`` finishes (its duration and the detail the caller puts in the yielded dict), an
    in-place ``label ...`` while it runs on a terminal; with --verbose also a line when it starts."""
    if _VERBOSE:
        info(f"[edgekit] {label} ...")
    elif _terminal() and not _QUIET:
        _show_live(f"[edgekit] {label} ...")
    _steps.append(label)
    started = time.perf_counter()
    outcome: dict = {}
    try:
        yield outcome
    except BaseException as e:
        _steps.pop()
        _clear_live()
        ended = "stopped" if isinstance(e, KeyboardInterrupt) else "FAILED"  # Ctrl-C or SIGTERM is no failure
        info(f"[edgekit] {label} {ended} after {time.perf_counter() - started:.1f}s")
        raise
    _steps.pop()
    outcome.setdefault("seconds", time.perf_counter() - started)
    detail = f" ({outcome['detail']})" if outcome.get("detail") else ""
    _clear_live()
    info(f"[edgekit] {label} done in {outcome['seconds']:.1f}s{detail}")
    if _steps and _terminal() and not _QUIET and not _VERBOSE:
        _show_live(f"[edgekit] {_steps[-1]} ...")  # the enclosing step is still running


class Progress:
    """A progress counter (``label 37/100``). On a terminal it rewrites the in-place line (after the running
    step's name) and leaves nothing behind when done; in a log, a line every ``LOG_PROGRESS_SECONDS``; with
    --verbose, a line every half second and the final count."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done = label, total, 0
        self._tty = _terminal()
        self._last_print = time.monotonic() if not (self._tty or _VERBOSE) else 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        interval = 0.5 if self._tty or _VERBOSE else LOG_PROGRESS_SECONDS
        if _QUIET or (now - self._last_print < interval and not finished):
            return
        self._last_print = now
        count = f"{self.label} {self.done}" + (f"/{self.total}" if self.total else "")
        if _VERBOSE:
            end = "\r" if self._tty and not finished else "\n"
            print(f"  {count}", end=end, file=sys.stderr, flush=True)
        elif self._tty:
            if finished:
                _clear_live()
                if _steps:
                    _show_live(f"[edgekit] {_steps[-1]} ...")
            else:
                _show_live(f"[edgekit] {_steps[-1]} ... {count}" if _steps else f"  {count}")
        elif not finished:  # a log: the count now and then; the step's own line reports the end
            print(f"  {count}", file=sys.stderr, flush=True)
