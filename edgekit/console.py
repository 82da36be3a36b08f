"""Messages for people: progress and warnings on stderr, so stdout stays clean for tables and JSON.

Warnings go through the ``edgekit`` logger, so that Python users control them like any library's
(``logging.getLogger("edgekit").setLevel(logging.ERROR)`` silences them) and ``-q`` silences them on the
command line; its handler writes ``WARNING: ...`` to whatever ``sys.stderr`` is at that moment.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

_QUIET = False
LOGGER = logging.getLogger("edgekit")


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if getattr(record, "loud", False):
            bar = "!" * min(100, len(message) + 9)
            text = f"{bar}\nWARNING: {message}\n{bar}"
        else:
            text = f"{record.levelname}: {message}"
        print(text, file=sys.stderr, flush=True)


LOGGER.addHandler(_StderrHandler())
LOGGER.propagate = False  # one line per warning, not a second copy from the root logger
LOGGER.setLevel(logging.WARNING)


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet
    LOGGER.setLevel(logging.ERROR if quiet else logging.WARNING)


def info(message: str) -> None:
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)


def warn(message: str, loud: bool = False) -> None:
    """A warning for people; a loud one is framed so it cannot be missed in a CI log."""
    LOGGER.warning(message, extra={"loud": loud})


@contextmanager
def step(label: str):
    """Print ``label ...`` then its duration; yields a dict the caller may fill with a short result."""
    info(f"[edgekit] {label} ...")
    started = time.perf_counter()
    outcome: dict = {}
    try:
        yield outcome
    except BaseException:
        info(f"[edgekit] {label} FAILED after {time.perf_counter() - started:.1f}s")
        raise
    outcome.setdefault("seconds", time.perf_counter() - started)
    detail = f" ({outcome['detail']})" if outcome.get("detail") else ""
    info(f"[edgekit] {label} done in {outcome['seconds']:.1f}s{detail}")


class Progress:
    """A one-line progress counter (``label 37/100``) that rewrites itself on a terminal."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done = label, total, 0
        self._tty = sys.stderr.isatty()
        self._last_print = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if _QUIET or (now - self._last_print < 0.5 and not finished):
            return
        self._last_print = now
        total = f"/{self.total}" if self.total else ""
        end = "\r" if self._tty and not finished else "\n"
        print(f"  {self.label} {self.done}{total}", end=end, file=sys.stderr, flush=True)
