"""A PNG of latency distributions: one row per artifact x device x threads, since people would rather look.

Rows with per-inference samples (the Python runner) get a violin with a box of the 25th-75th percentiles, the
median as a white bar and p99 as a tick; rows with only summary figures (benchmark_model on a phone) get a
min-max line with mean and median marks. A log axis is used when the rows span more than 20x.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.fileio import atomic_path

from .results import LatencyResult, format_ms

_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _row_label(r: LatencyResult) -> str:
    thread_word = "thread" if r.threads == 1 else "threads"
    return f"{r.artifact}  [{r.precision}]\n{r.device} · {r.runtime_label or r.format} · {r.threads} {thread_word}"


def write_latency_chart(results: list[LatencyResult], path: Path, title: str) -> Path | None:
    """Draw the successful rows; returns the path, or None when no row has figures to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.ok and r.mean_ms is not None]
    if not rows:
        return None
    failed = len(results) - len(rows)
    devices = list(dict.fromkeys(r.device for r in rows))
    # Colour tells devices apart; with one device it tells artifacts apart instead.
    key = (lambda r: r.device) if len(devices) > 1 else (lambda r: r.artifact)
    color = {k: _COLORS[i % len(_COLORS)] for i, k in enumerate(dict.fromkeys(key(r) for r in rows))}

    height = 1.4 + 0.62 * len(rows)
    fig, ax = plt.subplots(figsize=(11, height), layout="constrained")
    positions = np.arange(len(rows))[::-1]  # first row at the top
    lows = [r.min_ms for r in rows if r.min_ms]
    highs = [r.max_ms or r.mean_ms for r in rows]
    log_axis = bool(lows) and max(highs) / max(min(lows), 1e-6) > 20
    for y, r in zip(positions, rows):
        c = color[key(r)]
        if len(r.samples_ms) >= 2:
            samples = np.asarray(r.samples_ms)
            parts = ax.violinplot(np.log10(samples) if log_axis else samples, positions=[y], orientation="horizontal",
                                  widths=0.8, showextrema=False)
            if log_axis:  # violins are drawn in log space, then mapped back so the axis can be log
                for body in parts["bodies"]:
                    verts = body.get_paths()[0].vertices
                    verts[:, 0] = 10 ** verts[:, 0]
            for body in parts["bodies"]:
                body.set_facecolor(c)
                body.set_edgecolor(c)
                body.set_alpha(0.45)
            q1, q3 = np.percentile(samples, [25, 75])
            ax.plot([r.min_ms, r.max_ms], [y, y], color=c, lw=0.8)
            ax.plot([q1, q3], [y, y], color=c, lw=6, solid_capstyle="butt")
            ax.plot([r.p50_ms], [y], marker="|", color="white", markersize=9, markeredgewidth=2)
            if r.p99_ms is not None:
                ax.plot([r.p99_ms], [y], marker="|", color="black", markersize=11, markeredgewidth=1.2)
        else:
            low, high = r.min_ms or r.mean_ms, r.max_ms or r.mean_ms
            ax.plot([low, high], [y, y], color=c, lw=2, marker="|", markersize=10)
            ax.plot([r.mean_ms], [y], marker="o", color=c, markersize=7)
            if r.p50_ms is not None:
                ax.plot([r.p50_ms], [y], marker="|", color="black", markersize=12, markeredgewidth=1.5)
        ax.annotate(f"p50 {format_ms(r.p50_ms or r.mean_ms)} ms", xy=(1.0, y), xycoords=("axes fraction", "data"),
                    xytext=(6, 0), textcoords="offset points", va="center", fontsize=8.5)
    ax.set_yticks(positions, [_row_label(r) for r in rows], fontsize=8.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    top = max(max(r.samples_ms, default=0) for r in rows)
    top = max(top, *highs)
    if log_axis:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.set_xlim(min(lows) / 1.5, top * 1.5)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 20, not 2x10^1
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_xlim(0, top * 1.05)  # bars from zero, so ratios between rows read true
    ax.set_xlabel("time per inference (ms)" + (", log scale" if log_axis else ""))
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    note = ("violin: all runs · thick bar: 25-75% · white: median · black tick: p99 "
            "(or median when only summary figures)")
    if failed:
        note += f" · {failed} failed row{'s' if failed > 1 else ''} not drawn (see the table)"
    ax.set_title(f"{title}\n", fontsize=11, loc="left")
    ax.text(0, 1.01, note, transform=ax.transAxes, fontsize=7.5, color="#555555", va="bottom")
    if len(devices) > 1:
        handles = [plt.Line2D([], [], color=color[d], lw=6, label=d) for d in devices]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(devices), 6), fontsize=8,
                   frameon=False)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
