"""Messages for people: progress and warnings on stderr, so stdout stays clean for tables and JSON."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def info(message: str) -> None:
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)


def warn(message: str, loud: bool = False) -> None:
    """Warnings always print; a loud one is framed so it cannot be missed in a CI log."""
    if loud:
        bar = "!" * min(100, len(message) + 9)
        print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr, flush=True)
    else:
        print(f"WARNING: {message}", file=sys.stderr, flush=True)


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
