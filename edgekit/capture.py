"""Keeping libraries' console output off the user's terminal without losing it.

Converters, quantizers and runtimes print from native code (C++ logs, progress bars, delegate notices) straight
to file descriptors 1 and 2, where edgekit keeps its tables (stdout) and its own messages (stderr). Their text
is captured instead, so that a failure can still quote it. Imports only the standard library: the runtimes
use this without PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Send everything written to stdout/stderr inside the block (C++ logs, progress bars, prints) to a
    temporary file instead of the user's terminal; the captured lines are appended to the yielded list, so a
    failure can quote them. Both levels: the file descriptors, where native code writes, and ``sys.stdout``/
    ``sys.stderr``, which may not be those descriptors (a caller capturing output, a notebook)."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    python_level = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(python_level), contextlib.redirect_stderr(python_level):
                yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", errors="replace").splitlines())
            lines.extend(python_level.getvalue().splitlines())


def one_line(error: BaseException, log: list[str] | None = None) -> str:
    """A converter's exception as one line: its type and the first non-empty line of its message. When the
    message is empty, the last line the library printed (``log``, from ``captured_output``) says why."""
    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    if not reason and log:
        reason = next((line.strip() for line in reversed(log) if line.strip()), "")
    return f"{type(error).__name__}: {reason[:300]}" if reason else type(error).__name__
