"""Fetching published checkpoints: cache first, then download with progress and a hash check.

The cache is torch hub's (``$TORCH_HOME/hub/checkpoints``), so files torchvision already downloaded are
found offline. ``EDGEKIT_WEIGHTS_URL`` replaces the download host (a mirror, or a local server in tests).

Why not ``torch.hub.download_url_to_file(url, dst, hash_prefix=...)``, which also downloads to a temporary file,
checks a sha256 prefix and renames: it takes no timeout (a dead mirror hangs the export), draws its progress
with tqdm on stderr whatever ``-q`` says (edgekit's ``Progress`` follows the console settings), and reports a bad
hash as a bare RuntimeError without the file or the fix; the one-line errors tests/test_models.py checks would be
lost (torch/hub.py, download_url_to_file in torch 2.13).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..console import Progress, info
from ..errors import EdgekitError

# torchvision names files <name>-<first hex digits of the sha256>.pth
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def cache_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def base_url(default: str) -> str:
    url = os.environ.get("EDGEKIT_WEIGHTS_URL", default)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file" and not parsed.netloc):
        raise EdgekitError(f"EDGEKIT_WEIGHTS_URL={url!r} is not an http(s) or file URL; set it to a mirror such as "
                           "https://mirror.example/models/ or unset it")
    return url if url.endswith("/") else url + "/"


def fetch_checkpoint(filename: str, url_base: str, directory: Path | None = None, timeout: float = 30.0) -> Path:
    """Return the cached file, downloading it first if needed; raise EdgekitError when it cannot be had."""
    directory = directory or cache_dir()
    target = directory / filename
    match = _HASH_IN_NAME.search(filename)
    expected_prefix = match.group(1) if match else None
    if target.exists():
        return target
    url = url_base + filename
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgekitError(f"cannot create the weights cache {directory}: {e.strerror}; set TORCH_HOME "
                           "to a writable folder") from None
    info(f"downloading {url} -> {target}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            progress = Progress(f"{filename} MiB", (total >> 20) if total else None)
            digest = hashlib.sha256()
            received_mib = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                if out.tell() >> 20 > received_mib:
                    progress.advance((out.tell() >> 20) - received_mib)
                    received_mib = out.tell() >> 20
        actual = digest.hexdigest()
        if expected_prefix and not actual.startswith(expected_prefix):
            raise EdgekitError(f"downloaded {filename} is corrupt: sha256 {actual[:12]}... does not start with "
                               f"{expected_prefix}; delete partial downloads and try again, or check "
                               "EDGEKIT_WEIGHTS_URL")
        os.replace(tmp, target)
    except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise EdgekitError(f"cannot download {url} ({reason}); when offline, copy {filename} to {directory} "
                           "or pass --weights FILE") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
