"""The cluster benchmark's PNG plots (matplotlib, the ``bench`` extra; skipped without it)."""

from __future__ import annotations

import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["write_plots"]


def write_plots(report: dict[str, Any], base: pathlib.Path) -> list[tuple[str, str]] | None:
    """PNG plots beside ``base``; returns (file name, title) pairs, None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = report["points"]
    written: list[tuple[str, str]] = []
    date = report["machine"]["date"]

    def save(fig: Any, suffix: str, title: str) -> None:
        path = base.parent / f"{base.name}-{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append((path.name, title))

    # Throughput and latency vs concurrency: batch-1 points of the main cluster.
    series = _by_concurrency(points)
    if series:
        colors = {name: f"C{i}" for i, name in enumerate(series)}
        xs_all = sorted({p["concurrency"] for pts in series.values() for p in pts})
        fig, ax = plt.subplots(figsize=(8, 4.8))
        drawn: list[float] = []
        for name, pts in series.items():
            ax.plot(
                [p["concurrency"] for p in pts],
                [p["throughput_per_s"] for p in pts],
                marker="o",
                color=colors[name],
                label=name,
            )
            bound = statistics.median(p["bound_per_s"] for p in pts)
            if any(abs(bound - b) < 0.05 * b for b in drawn):
                continue  # one line for bounds that are the same
            drawn.append(bound)
            ax.axhline(bound, linestyle="--", linewidth=1, color=colors[name], alpha=0.7)
            ax.annotate(
                f"bound {bound:.0f}/s",
                (xs_all[0], bound),
                fontsize=8,
                color=colors[name],
                xytext=(2, 3),
                textcoords="offset points",
            )
        _log2_axis(ax, xs_all)
        ax.set_xlabel("concurrent callers (batch 1)")
        ax.set_ylabel("signatures per second")
        ax.set_ylim(
            0, max(drawn + [p["throughput_per_s"] for pts in series.values() for p in pts]) * 1.1
        )
        ax.set_title(f"Throughput vs concurrency ({_key(points)}), {date}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
        save(fig, "throughput", "throughput vs concurrency")

        fig, ax = plt.subplots(figsize=(8, 4.8))
        for name, pts in series.items():
            xs = [p["concurrency"] for p in pts]
            for pct, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
                ys = [(p["latency_s"][pct] or float("nan")) * 1e3 for p in pts]
                ax.plot(
                    xs,
                    ys,
                    style,
                    marker="o",
                    markersize=3,
                    color=colors[name],
                    label=f"{name} {pct}",
                )
        _log2_axis(ax, xs_all)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent callers (batch 1)")
        ax.set_ylabel("latency per call, ms (log)")
        ax.set_title(f"Latency percentiles vs concurrency ({_key(points)})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=len(series))
        save(fig, "latency", "latency percentiles vs concurrency")

    # Efficiency vs k.
    kpts = [p for p in points if p["sweep"] == "k"]
    if kpts:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for conc in sorted({p["concurrency"] for p in kpts}):
            pts = sorted((p for p in kpts if p["concurrency"] == conc), key=lambda p: p["k"])
            ax.plot(
                [p["k"] for p in pts],
                [p["efficiency"] for p in pts],
                marker="o",
                label=f"concurrency {conc}, batch {pts[0]['batch']}",
            )
        ax.axhline(0.85, linestyle="--", color="grey", linewidth=1)
        ax.set_xticks(sorted({p["k"] for p in kpts}))
        ax.set_xlabel("k (n = 5)")
        ax.set_ylabel("efficiency: sig/s / (cores / (k·T_share))")
        ax.set_ylim(0, max(1.05, max(p["efficiency"] for p in kpts) * 1.1))
        ax.set_title(f"Efficiency vs k ({kpts[0]['bits']} bits)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "k", "efficiency vs k")

    # Throughput vs batch size.
    bpts = sorted((p for p in points if p["sweep"] == "batch"), key=lambda p: p["batch"])
    if bpts:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(
            [p["batch"] for p in bpts],
            [p["efficiency"] for p in bpts],
            marker="o",
            label=f"efficiency (concurrency {bpts[0]['concurrency']})",
        )
        ax.axhline(0.85, linestyle="--", color="grey", linewidth=1)
        _log2_axis(ax, [p["batch"] for p in bpts])
        ax.set_xlabel("items per sign_items call")
        ax.set_ylabel("efficiency")
        ax.set_ylim(0, max(1.05, max(p["efficiency"] for p in bpts) * 1.1))
        ax.set_title(f"Efficiency vs batch size ({_key(points)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "batch", "efficiency vs batch size")
    _backend_plot(points, save, plt)
    return written


def _backend_plot(points: list[dict[str, Any]], save: Any, plt: Any) -> None:
    """Throughput of each point of the backend sweep, openssl and gmpy2 side by side."""
    pts = [p for p in points if p["sweep"] == "backend"]
    keys = list(dict.fromkeys((p["concurrency"], p["batch"]) for p in pts))
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.38
    for offset, (backend, color) in enumerate((("openssl", "C0"), ("gmpy2", "C1"))):
        rates = []
        for key in keys:
            found = [
                p for p in pts if (p["concurrency"], p["batch"]) == key and p["backend"] == backend
            ]
            rates.append(found[0]["throughput_per_s"] if found else 0.0)
        xs = [i + (offset - 0.5) * width for i in range(len(keys))]
        bars = ax.bar(xs, rates, width, color=color, label=f"nodes on {backend}")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"concurrency {c}, batch {b}" for c, b in keys], fontsize=8)
    ax.set_ylabel("signatures per second")
    ax.set_title(f"The nodes' exponentiation backend ({_key(points)})", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save(fig, "backend", "throughput by the nodes' backend")


def _log2_axis(ax: Any, ticks: Sequence[int]) -> None:
    """A log-2 x axis labelled with the plain numbers measured."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks))
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def _key(points: list[dict[str, Any]]) -> str:
    main = points[0]
    return f"{main['bits']} bits, k={main['k']} of {main['n']}"


def _by_concurrency(points: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Batch-1 series over concurrency: the concurrency sweep, and proofs/mode variants."""
    out: dict[str, list[dict[str, Any]]] = {}
    main = [p for p in points if p["sweep"] == "concurrency"]
    if main:
        out["optimistic, exact"] = main
    for sweep, field, value, name in (
        ("proofs", "proofs", "always", "proofs always"),
        ("mode", "mode", "all", 'mode "all"'),
    ):
        pts = [p for p in points if p["sweep"] == sweep and p[field] == value and p["batch"] == 1]
        if len({p["concurrency"] for p in pts}) >= 2:
            out[name] = pts
    return {k: sorted(v, key=lambda p: p["concurrency"]) for k, v in out.items()}
