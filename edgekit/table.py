"""Plain-text and Markdown tables: what people read at the end of every command."""

from __future__ import annotations

from typing import Iterable, Sequence


def _cells(rows: Iterable[Sequence[object]]) -> list[list[str]]:
    return [["" if c is None else str(c) for c in row] for row in rows]


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%x").removesuffix(" ms").removesuffix(" MB"))
        return True
    except ValueError:
        return False


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns for a terminal; numbers right-aligned."""
    body = _cells(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if _is_number(c) else c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    body = _cells(rows)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    return "\n".join(out)


def human_count(n: float) -> str:
    """4231976 -> '4.23 M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def format_ms(value: float | None) -> str:
    """Milliseconds with the digits that matter: 1240 -> '1240', 12.34 -> '12.3', 1.234 -> '1.23'."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
