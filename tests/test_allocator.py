"""The command's allocator setting (edgekit/allocator.py): memory freed by one batch stays for the next."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process set up as argv[1] says: how much resident memory freeing a filled 64 MiB buffer gives back.
_GIVEN_BACK = """
import os, sys
import numpy as np
import edgekit, edgekit.api, edgekit.cli
if sys.argv[1] == "command":
    try:
        edgekit.cli.main(["--version"])
    except SystemExit:
        pass
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
buffer = np.ones(8 << 20)  # 64 MiB of float64, every page touched
before = resident()
del buffer
print((before - resident()) >> 20)
"""


def _given_back_mib(setup: str) -> int:
    done = subprocess.run([sys.executable, "-c", _GIVEN_BACK, setup], capture_output=True, text=True, timeout=60,
                          check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_command_keeps_freed_memory_and_importing_edgekit_changes_nothing():
    assert _given_back_mib("command") <= 1  # kept in the heap, where the next batch's activations find it
    # a program that imports edgekit keeps glibc's default: the buffer is unmapped (and faulted in again if reused)
    assert _given_back_mib("import") >= 60
