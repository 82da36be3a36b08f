"""Writing files so that a crash or Ctrl-C never leaves one that looks finished: temp name, then rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import EdgekitError


def ensure_writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgekitError(f"cannot create output folder {path}: {e.strerror}; choose another with --out") from None
    if not os.access(path, os.W_OK):
        raise EdgekitError(f"output folder {path} is not writable; choose another with --out")
    return path


def check_output_file(path: Path, option: str) -> Path:
    """Fail before the work, not after it, when ``option`` (e.g. ``--json``) names a file that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"cannot write {option} {path}: it is a folder; give a file name")
    try:
        ensure_writable_dir(path.resolve().parent)
    except EdgekitError as e:
        raise EdgekitError(f"cannot write {option} {path}: {str(e).split(';')[0]}; choose another path") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise EdgekitError(f"cannot write {option} {path}: the file is read-only; choose another path")
    return path


def _usual_mode(path: Path) -> None:
    """mkstemp creates 0600; a finished file gets what any file the user writes gets (umask), like the bundle."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only if the block succeeds."""
    ensure_writable_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise EdgekitError(f"cannot write {target}: {e.strerror}; free space or choose another path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _usual_mode(tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as e:  # a full disk or quota: the user's to fix, not a bug to report
            raise EdgekitError(f"cannot write {target}: {e.strerror}; free space or choose another path") from None


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
