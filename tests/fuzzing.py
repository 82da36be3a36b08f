"""A seeded mutator for bundle files, shared by tests/test_fuzz.py (a few hundred cases) and
benchmarks/fuzz_bundles.py (as many as asked).

Each case copies a finished bundle, damages one file (bytes flipped, truncated, a run zeroed, junk inserted; for
JSON also values swapped for other types), optionally re-records the damaged file's sha256 in the manifest (a
*consistent* corruption, which reaches the runtimes' parsers), and runs one command on it. What must hold: exit
code 1 or 2 (never 0 when a model file differs from what the export wrote, unless the manifest was updated to
match and the numbers still pass), no Python traceback, no hang.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

MUTATIONS = ("flip", "truncate", "zero", "insert")
JSON_MUTATIONS = ("bytes", "retype", "drop")


@dataclass(frozen=True)
class FuzzCase:
    seed: int
    target: str  # the file inside the bundle that is damaged
    mutation: str
    consistent: bool  # the manifest records the damaged file's sha256
    command: str  # validate | eval | bench

    @property
    def id(self) -> str:
        return f"{self.seed}-{self.command}-{self.target}-{self.mutation}{'-rehashed' if self.consistent else ''}"


def mutate_bytes(data: bytes, mutation: str, rng: random.Random) -> bytes:
    if not data:
        return b"\0"
    if mutation == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if mutation == "truncate":
        return data[:rng.randrange(len(data))]
    if mutation == "zero":
        start = rng.randrange(len(data))
        length = rng.randint(1, max(1, len(data) // 8))
        return data[:start] + b"\0" * min(length, len(data) - start) + data[start + length:]
    if mutation == "insert":
        at = rng.randrange(len(data))
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[at:]
    raise ValueError(mutation)


def mutate_json(data: bytes, mutation: str, rng: random.Random) -> bytes:
    """A manifest damaged as text, or one of its values replaced by another type, or a key dropped."""
    if mutation == "bytes":
        return mutate_bytes(data, rng.choice(MUTATIONS), rng)
    document = json.loads(data)
    paths = list(_leaves(document, ()))
    path = rng.choice(paths)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if mutation == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice([None, -1e9, 1e308, "", "../../etc/passwd", [], {}, True, "nan", 2 ** 70])
    return json.dumps(document).encode()


def _leaves(node, path):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,)
            yield from _leaves(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield path + (index,)
            yield from _leaves(value, path + (index,))


def cases(count: int, targets: list[str], seed: int = 0) -> list[FuzzCase]:
    rng = random.Random(seed)
    made = []
    for i in range(count):
        target = rng.choice(targets)
        mutation = rng.choice(JSON_MUTATIONS if target == "manifest.json" else MUTATIONS)
        consistent = target != "manifest.json" and rng.random() < 0.3
        made.append(FuzzCase(seed * 100_000 + i, target, mutation, consistent,
                             rng.choice(("validate", "validate", "eval", "bench"))))
    return made


def damage(bundle: Path, case: FuzzCase, into: Path) -> Path:
    """A copy of ``bundle`` at ``into`` with ``case`` applied; returns the copy."""
    copy = Path(shutil.copytree(bundle, into))
    rng = random.Random(case.seed)
    path = copy / case.target
    original = path.read_bytes()
    if case.target == "manifest.json":
        damaged = mutate_json(original, case.mutation, rng)
    else:
        damaged = mutate_bytes(original, case.mutation, rng)
        if damaged == original:  # a flip can undo itself on a tiny file
            damaged = original + b"\0"
    path.write_bytes(damaged)
    if case.consistent:
        manifest = json.loads((copy / "manifest.json").read_text())
        digest = hashlib.sha256(damaged).hexdigest()
        for entry in manifest["artifacts"]:
            if entry["path"] == case.target:
                entry["sha256"], entry["bytes"] = digest, len(damaged)
        if manifest.get("reference", {}).get("file") == case.target:
            manifest["reference"]["sha256"] = digest
        if manifest.get("labels", {}).get("file") == case.target:
            manifest["labels"]["sha256"] = digest
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def argv(case: FuzzCase, copy: Path, data_csv: Path) -> list[str]:
    if case.command == "validate":
        return ["validate", str(copy)]
    if case.command == "eval":
        return ["eval", str(copy), "--data", str(data_csv), "--limit", "4", "--pytorch", "skip"]
    return ["bench", str(copy), "--runs", "2", "--warmup", "1", "--threads", "1"]
