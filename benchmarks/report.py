"""The cluster benchmark's report: Markdown tables and PNG plots from its JSON.

    python -m benchmarks.report benchmarks/results/cluster-<date>.json   # re-render

Plots need matplotlib (the ``bench`` extra); without it they are skipped and the
Markdown says so.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.micro import fmt_time

__all__ = ["render_markdown", "write_latest", "write_plots"]

LATEST = "LATEST.md"


# -- helpers ---------------------------------------------------------------------------------


def _ms(seconds: float | None, digits: int = 1) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.{digits}f}"


def _num(value: float | None, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _reference(points: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any] | None:
    """The default-setting run (optimistic, exact, honest) beside ``p`` in its sweep."""
    if p["proofs"] == "on-failure" and p["mode"] == "exact" and not p["fault"]:
        return None
    for q in points:
        if (
            q["sweep"] == p["sweep"]
            and q["bits"] == p["bits"]
            and q["k"] == p["k"]
            and q["concurrency"] == p["concurrency"]
            and q["batch"] == p["batch"]
            and q["proofs"] == "on-failure"
            and q["mode"] == "exact"
            and not q["fault"]
        ):
            return q
    return None


def _errors(p: dict[str, Any]) -> str:
    if not p["errors"]:
        return "0"
    return ", ".join(f"{name} {count}" for name, count in sorted(p["errors"].items()))


def _baselines(points: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per key size: medians over every point's baseline (each measured beside its point)."""
    out: dict[int, dict[str, Any]] = {}
    for bits in sorted({p["bits"] for p in points}):
        here = [p for p in points if p["bits"] == bits]

        def med(name: str, pts: list[dict[str, Any]] = here) -> float | None:
            values = [p["baseline"][name] for p in pts if name in p["baseline"]]
            return statistics.median(values) if values else None

        out[bits] = {
            "t_share_s": med("t_share_s"),
            "t_share_proof_s": med("t_share_proof_s"),
            "t_prove_s": med("t_prove_s"),
            "t_verify_s": med("t_verify_s"),
            "openssl_one_thread_per_s": med("openssl_one_thread_per_s"),
            "openssl_threads_per_s": med("openssl_threads_per_s"),
            "share_exponent_bits": here[0]["baseline"]["share_exponent_bits"],
            "points": len(here),
            "t_share_range": (
                min(p["baseline"]["t_share_s"] for p in here),
                max(p["baseline"]["t_share_s"] for p in here),
            ),
        }
    return out


# -- Markdown --------------------------------------------------------------------------------


def render_markdown(report: dict[str, Any]) -> str:
    m, cfg = report["machine"], report["config"]
    points: list[dict[str, Any]] = report["points"]
    cores = cfg["cores"]
    lines = [
        f"# ittc cluster benchmark, {m['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_usable']} usable; the "
        f"bounds assume {cores}), {m['platform']}; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m.get('loadavg_end', [float('nan')])[0]:.2f}"
        " at end. A shared machine: every baseline is measured beside its point, and "
        '"others\' CPU" is what the rest of the machine used during the point.',
        f"Python {m['python']}, gmpy2 {m['gmpy2']} ({m['gmp']}), cryptography "
        f"{m['cryptography']} ({m['openssl']}); ittc {str(m['ittc_commit'])[:12]}"
        + (
            " with uncommitted changes in ittc/combiner or nodes/"
            if m.get("ittc_client_modified")
            else ""
        )
        + ".",
    ]
    target = cfg["target"]
    where = {
        "local": "five `python -m ittc_node` processes on loopback, mutual TLS, "
        "started by the harness (keys cached in benchmarks/.clusters/)",
        "test": "a small test cluster's nodes started by the harness (test only)",
        "external": "a running cluster named by its cluster file (node CPU not measured: n/a)",
    }[target]
    lines.append(
        f"Cluster: {where}. Load: closed loop, each caller signs a batch of "
        f"{cfg['message']}, waits, signs again; {cfg['warmup_s']:g} s warm-up, then "
        + (
            f"{cfg['count']} signatures"
            if cfg.get("count")
            else f"{cfg['duration_s']:g} s measured"
        )
        + " per point; client "
        f"deadline {cfg['deadline_s']:g} s, node timeout {cfg['node_timeout_s']:g} s."
    )
    waits = [p["quiet_wait"]["waited_s"] for p in points if p.get("quiet_wait")]
    if waits:
        lines.append(
            f"Before each point the run waited for other work to use less than "
            f"{cfg['quiet_threshold']:.0%} of the cores (at most "
            f"{cfg['max_quiet_wait_s']:g} s): {sum(waits):.0f} s in all."
        )
    if cfg.get("skipped_sweeps"):
        lines.append(f"Skipped (need local node processes): {', '.join(cfg['skipped_sweeps'])}.")

    # Targets.
    lines += ["", "## Targets (issue 5)", ""]
    if report["targets"]:
        t0 = report["targets"][0]
        lines += [
            f"{t0['bits']}-bit key, k={t0['k']} of n=5, {cores} cores.",
            "",
            "| target | measured | limit | result | where |",
            "|---|---:|---:|---|---|",
        ]
        for t in report["targets"]:
            limit = (
                "exactly the liar"
                if t["id"] == "liar_blamed_exactly"
                else f"{t['comparison']} {t['limit']:g}"
            )
            lines.append(
                f"| {t['description']} | {t['shown']} | {limit} | "
                f"**{'PASS' if t['pass'] else 'MISS'}** | {t['note']} |"
            )
    else:
        lines.append("No target applies to the points measured.")

    # Baselines.
    bases = _baselines(points)
    ks = sorted({p["k"] for p in points})
    lines += [
        "",
        "## Baselines measured in this run (idle cluster, beside every point)",
        "",
        "| quantity | " + " | ".join(f"{b} bits" for b in bases) + " |",
        "|---|" + "---:|" * len(bases),
    ]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(b, bases[b]) for b in bases) + " |")

    row(
        "T_share: bare gmpy2.powmod_sec, share-sized exponent (median; min–max of points)",
        lambda b, x: (
            f"{fmt_time(x['t_share_s'])} ({fmt_time(x['t_share_range'][0])}–"
            f"{fmt_time(x['t_share_range'][1])})"
        ),
    )
    row("share exponent bits (2·Δ·s_i)", lambda b, x: str(x["share_exponent_bits"]))
    row(
        "T_share + T_prove: a share with its proof, fresh nonce",
        lambda b, x: fmt_time(x["t_share_proof_s"]),
    )
    row("T_verify: one share's proof checked", lambda b, x: fmt_time(x["t_verify_s"]))
    row("single-key OpenSSL sign/s, one thread", lambda b, x: _rate(x["openssl_one_thread_per_s"]))
    row(
        f"single-key OpenSSL sign/s, {cores} threads",
        lambda b, x: _rate(x["openssl_threads_per_s"]),
    )
    for k in ks:
        row(
            f"compute bound cores/(k·T_share), k={k}, sig/s",
            lambda b, x, k=k: _rate(cores / (k * x["t_share_s"])),
        )
    row(
        "bound with proofs, k=3: cores/(3·(T_share+T_prove) + 3·T_verify), sig/s",
        lambda b, x: (
            _rate(cores / (3 * x["t_share_proof_s"] + 3 * x["t_verify_s"]))
            if x["t_share_proof_s"] and x["t_verify_s"]
            else "-"
        ),
    )

    # Lone signature.
    lone = [p for p in points if p["sweep"] == "lone"]
    if lone:
        lines += [
            "",
            "## A lone signature (concurrency 1, batch 1, idle cluster)",
            "",
            "| key | signatures | p50 | p99 | max | p50 / T_share | p99 / T_share | "
            "k shares at once in k processes (floor) | p50 / floor | "
            "OpenSSL, one signature |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in lone:
            lat = p["latency_s"]
            lines.append(
                f"| {p['bits']} bits, k={p['k']} | {lat['n']} | {_ms(lat['p50'], 2)} ms"
                f" | {_ms(lat['p99'], 2)} ms | {_ms(lat['max'], 2)} ms | "
                f"{_num(p['latency_p50_over_t_share'])} | "
                f"{_num(p['latency_p99_over_t_share'])} | "
                f"{_ms(p['baseline'].get('k_parallel_makespan_s'), 2)} ms | "
                f"{_num(p.get('latency_p50_over_makespan'))} | "
                f"{_ms(p['baseline']['openssl_sign_s'], 3)} ms |"
            )
        lines += [
            "",
            "The floor is measured in the same run: k processes, idle until told, each "
            "make one share-sized `powmod_sec` at the same moment; the time until the "
            "last one is done is what k nodes on this machine's cores cannot beat. "
            "The rest of a lone signature's latency is RPCs, thread hops, the audit "
            "write and the combine.",
        ]

    # Plots.
    plots = report.get("plots")
    if plots:
        lines += ["", "## Plots", ""]
        for name, title in plots:
            lines.append(f"![{title}]({name})")
            lines.append("")
        lines.pop()
    elif "plots" in report and plots is None:
        lines += ["", "(Plots skipped: matplotlib is not installed; `pip install -e '.[bench]'`.)"]

    # Every sweep.
    order = ["point", "lone", "concurrency", "batch", "proofs", "mode", "slow", "liar", "k", "bits"]
    from benchmarks.cluster import SWEEP_TITLES

    for sweep in order:
        pts = [p for p in points if p["sweep"] == sweep]
        if not pts:
            continue
        lines += [
            "",
            f"## Sweep: {SWEEP_TITLES.get(sweep, sweep)}",
            "",
            "| point | sig/s | vs ref | p50 ms | p90 ms | p99 ms | max ms | bound | "
            "efficiency | eff. on cores left | CPU busy (ours) | CPU/sig client | "
            "CPU/sig nodes | total / ideal | others' CPU | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for p in pts:
            lat, cpu = p["latency_s"], p["cpu"]
            ref = _reference(points, p)
            vs = (
                f"{p['throughput_per_s'] / ref['throughput_per_s']:.2f}×"
                if ref and ref["throughput_per_s"]
                else ""
            )
            label = p["label"] if sweep in ("point", "k", "bits") else _short(p)
            nodes_cpu = (
                f"{_ms(cpu['nodes_per_signature_s'], 2)} ms"
                if cpu["nodes_s"] is not None
                else "n/a"
            )
            lines.append(
                f"| {label} | {_rate(p['throughput_per_s'])} | {vs} | {_ms(lat['p50'])} | "
                f"{_ms(lat['p90'])} | {_ms(lat['p99'])} | {_ms(lat['max'])} | "
                f"{_rate(p['bound_per_s'])} | {p['efficiency']:.3f} | "
                f"{_num(p['efficiency_available'], '{:.3f}')} | "
                f"{_num(cpu['ours_utilization'], '{:.0%}')} | "
                f"{_ms(cpu['client_per_signature_s'], 2)} ms | "
                f"{nodes_cpu} | {_num(cpu['total_over_ideal'])} | "
                f"{_num(cpu['others_utilization'], '{:.0%}')} | {_errors(p)} |"
            )
        for p in pts:
            stats = p["client_stats_window"]
            if p["fault"] or stats.get("hedges") or stats.get("proof_rounds") or p["errors"]:
                run = p["client_stats_run"]
                lines.append("")
                lines.append(
                    f"- {p['label']}: in the window {stats['rpcs']} RPCs, {stats['hedges']} "
                    f"hedges, {stats['proof_rounds']} proof rounds, node failures "
                    f"{stats['node_failures'] or 'none'}; whole run (warm-up included): "
                    f"blamed {run['blamed'] or 'nobody'}, node failures "
                    f"{run['node_failures'] or 'none'}"
                    + (
                        f"; first error: {next(iter(p['error_examples'].values()))}"
                        if p["error_examples"]
                        else ""
                    )
                    + "."
                )

    lines += [
        "",
        "## Reading the columns",
        "",
        "- **sig/s**: the slope of signatures completed against time over the measured "
        "window (least squares; a batching combiner completes signatures in bursts, "
        "and a plain count over the window, kept in the JSON as "
        "`throughput_count_per_s`, is off by up to a burst). A window lasts the "
        "chosen duration and at least 4 calls per caller. "
        "**vs ref**: throughput over the default-setting run (optimistic, exact, "
        "honest) measured next to it with the same concurrency and batch.",
        "- **p50 … max**: latency of one `sign_items` call (a batch), nearest rank.",
        "- **bound**: the compute bound for the point's key and k, with T_share etc. "
        "measured just before and after the point: `cores / (k·T_share)`; with proofs "
        "always `cores / (k·(T_share + T_prove) + k·T_verify)`, counting every node's "
        "share and proof (fresh nonce: under full load a node has no idle time to "
        "precompute one) and the combiner checking k proofs; the combine itself and "
        'all RPC work count as overhead. Mode "all" is held to the same bound, so its '
        "extra work shows as lower efficiency.",
        "- **efficiency**: sig/s / bound. **eff. on cores left**: the same against the "
        "bound for the cores other people's work left free during the point "
        "(`cores − others' CPU`). An upper estimate of the efficiency on a quiet "
        "machine: other work also fills the point's idle gaps, which then count as "
        "cores taken.",
        "- **CPU/sig**: CPU seconds in the window per signature (sig/s × window) of "
        "this process (combiner + load generator, `getrusage`) and of the node "
        "processes with their workers (`/proc/<pid>/stat`). **total / ideal**: both "
        "together over the bound's CPU per signature (k·T_share, or the proof "
        "version): 1.00 means no overhead.",
        "- **CPU busy (ours)**: CPU time of this process and the nodes over the window "
        "times the cores; efficiency ≈ CPU busy / (total / ideal), so a low efficiency "
        "is either idle cores (latency-bound, pipeline gaps) or CPU spent beyond the "
        "modexps (overhead).",
        "- **others' CPU**: machine busy time not ours (`/proc/stat`) as a share of all "
        "cores: other people's work competing with the point.",
    ]
    return "\n".join(lines) + "\n"


def _short(p: dict[str, Any]) -> str:
    parts = [f"c={p['concurrency']}", f"b={p['batch']}"]
    if p["mode"] != "exact":
        parts.append(f"mode {p['mode']}")
    if p["proofs"] != "on-failure":
        parts.append(f"proofs {p['proofs']}")
    if p["fault"]:
        parts.append(f"node {p['fault_node']} {p['fault']}")
    return " ".join(parts)


def write_latest(out: pathlib.Path, base: pathlib.Path, markdown: str) -> pathlib.Path:
    """``LATEST.md`` in ``out``: a copy of the newest cluster report (same folder, so its
    plot links work), naming its source."""
    path = out / LATEST
    head = (
        f"<!-- A copy of {base.name}.md, the latest cluster benchmark "
        f"(JSON: {base.name}.json). -->\n"
    )
    path.write_text(head + markdown)
    return path


# -- plots -------------------------------------------------------------------------------------


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
    return written


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


def main(argv: Sequence[str] | None = None) -> int:
    """Re-render the Markdown (and plots) of a saved cluster JSON; LATEST.md too when it
    is the newest in its folder."""
    import json

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m benchmarks.report results/cluster-<date>.json", file=sys.stderr)
        return 2
    path = pathlib.Path(args[0])
    report = json.loads(path.read_text())
    base = path.with_suffix("")
    report["plots"] = write_plots(report, base)
    markdown = render_markdown(report)
    path.with_suffix(".md").write_text(markdown)
    print(path.with_suffix(".md"))
    newest = sorted(path.parent.glob("cluster-*.json"))[-1]
    if newest == path:
        print(write_latest(path.parent, base, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
