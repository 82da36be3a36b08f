"""The host CPU as int8 sees it: vendor, model and the features that decide int8 speed and exactness.

The parser lives in the device runner (``edgekit.devices.runner``), which must stay self-contained because it is
copied to boards as it is; that file imports only the standard library, so the core can use it without pulling
the device code in. Every figure edgekit records names the CPU it came from: the same int8 file is exact and fast
on one CPU class and saturating or no faster than fp32 on another.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .devices.runner import cpu_info

# Which CPUs run int8 faster than fp32 (8-bit dot products accumulating in int32), named for people.
DOT_PRODUCT_CPUS = ("x86 with AVX-VNNI or AVX512-VNNI (Intel Ice Lake/Cascade Lake and later, AMD Zen 4 and "
                    "later) or AMX; ARMv8.2+ with dotprod or i8mm (most phones since 2018, Raspberry Pi 5)")


@lru_cache(maxsize=1)
def host_cpu() -> dict:
    """This machine's CPU (read once per process)."""
    return cpu_info()


def describe(cpu: dict) -> str:
    """``AMD EPYC (x86_64: avx2)``: the model and its int8-relevant features, for tables and notes."""
    features = ", ".join(cpu.get("features") or []) or "no int8 dot-product or wide-vector features"
    return f"{cpu.get('model') or 'unknown CPU'} ({cpu.get('arch') or '?'}: {features})"


def file_slug(cpu: dict) -> str:
    """The CPU class as part of a file name (model and the int8-relevant features): benchmark results are written
    one file per CPU class, so a run on another CPU adds to the record instead of replacing it."""
    return re.sub(r"\W+", "_", (cpu.get("model") or "unknown").lower()).strip("_") + "_" + "_".join(cpu["features"])


def missing_dot_product(cpu: dict) -> str:
    """What this CPU lacks for exact, fast int8, in the words of its own architecture."""
    if (cpu.get("arch") or "").startswith(("arm", "aarch")):
        return "no ARM dot-product instructions (asimddp/dotprod, i8mm)"
    return "no AVX-VNNI, AVX512-VNNI or AMX"
