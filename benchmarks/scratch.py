"""The folder a benchmark writes its exports to: the one ``--work`` names (kept), or a temporary one that goes
when the benchmark ends (one int8 sweep leaves about 200 MB)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def work_folder(given: Path | None, prefix: str) -> Path:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        return given
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
