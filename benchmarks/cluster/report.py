"""The cluster benchmark's report: Markdown tables from its JSON (plots: ``plots``).

python -m benchmarks.cluster.report benchmarks/results/cluster-<date>.json  # re-render
"""

from __future__ import annotations

import pathlib
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.cluster.plan import SWEEP_TITLES
from benchmarks.cluster.plots import write_plots
from benchmarks.micro import fmt_time, ittc_build

__all__ = ["main", "render_markdown", "write_latest"]

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
            values = [p["baseline"][name] for p in pts if p["baseline"].get(name) is not None]
            return statistics.median(values) if values else None

        default = [p for p in here if p["spec"].get("backend") is None] or here
        out[bits] = {
            "backend": default[0]["backend"],
            "t_share_s": med("t_share_s", default),
            "t_share_openssl_s": med("t_share_openssl_s"),
            "t_share_gmpy2_s": med("t_share_gmpy2_s"),
            "t_share_proof_s": med("t_share_proof_s"),
            "t_prove_s": med("t_prove_s"),
            "t_verify_s": med("t_verify_s"),
            "openssl_one_thread_per_s": med("openssl_one_thread_per_s"),
            "openssl_threads_per_s": med("openssl_threads_per_s"),
            "share_exponent_bits": here[0]["baseline"]["share_exponent_bits"],
            "points": len(here),
            "t_share_range": (
                min(p["baseline"]["t_share_s"] for p in default),
                max(p["baseline"]["t_share_s"] for p in default),
            ),
        }
    return out


# -- Markdown --------------------------------------------------------------------------------


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report: setting, targets, baselines, the lone signature, the backends,
    plots, every sweep, and how to read the columns."""
    points: list[dict[str, Any]] = report["points"]
    cores = report["config"]["cores"]
    lines = _header(report)
    lines += _targets(report["targets"], cores)
    lines += _baseline_table(points, cores)
    lines += _lone_table(points)
    lines += _backend_table(points)
    lines += _plot_links(report)
    for sweep in SWEEP_ORDER:
        lines += _sweep_table(points, sweep)
    lines += _legend()
    return "\n".join(lines) + "\n"


SWEEP_ORDER = (
    "point",
    "lone",
    "backend",
    "concurrency",
    "batch",
    "proofs",
    "mode",
    "slow",
    "liar",
    "k",
    "bits",
)


def _header(report: dict[str, Any]) -> list[str]:
    m, cfg = report["machine"], report["config"]
    points: list[dict[str, Any]] = report["points"]
    loads = [p["loadavg"][0] for p in points if p.get("loadavg")]
    lines = [
        f"# ittc cluster benchmark, {m['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_usable']} usable; the "
        f"bounds assume {cfg['cores']}), {m['platform']}; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m.get('loadavg_end', [float('nan')])[0]:.2f}"
        " at end"
        + (f" ({min(loads):.1f}–{max(loads):.1f} at the points' starts)" if loads else "")
        + ". A shared machine: every baseline is measured beside its point, and "
        '"others\' CPU" is what the rest of the machine used during the point.',
        f"Python {m['python']}, gmpy2 {m['gmpy2']} ({m['gmp']}), cryptography "
        f"{m['cryptography']} ({m['openssl']}); libcrypto {m.get('libcrypto') or 'none'}; "
        f"ittc {ittc_build(m)}"
        + (
            " with uncommitted changes in ittc/combiner or nodes/"
            if m.get("ittc_client_modified")
            else ""
        )
        + ".",
    ]
    where = {
        "local": "five `python -m ittc_node` processes on loopback, mutual TLS, "
        "started by the harness (keys cached in benchmarks/.clusters/)",
        "test": "a small test cluster's nodes started by the harness (test only)",
        "external": "a running cluster named by its cluster file (node CPU not measured: n/a)",
    }[cfg["target"]]
    lines.append(
        f"Cluster: {where}. Load: closed loop, each caller signs a batch of "
        f"{cfg['message']}, waits, signs again; {cfg['warmup_s']:g} s warm-up, then "
        + (
            f"{cfg['count']} signatures"
            if cfg.get("count")
            else f"{cfg['duration_s']:g} s measured"
        )
        + " per point; client "
        f"deadline {cfg['deadline_s']:g} s, node timeout {cfg['node_timeout_s']:g} s. "
        "The nodes run their default exponentiation backend (`auto`: OpenSSL's libcrypto "
        "where it loads) except in the backend sweep."
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
    return lines


def _targets(targets: list[dict[str, Any]], cores: int) -> list[str]:
    lines = ["", "## Targets (issue 10)", ""]
    if not targets:
        return [*lines, "No target applies to the points measured."]
    t0 = targets[0]
    lines += [
        f"{t0['bits']}-bit key, k={t0['k']} of n=5, {cores} cores.",
        "",
        "| target | measured | limit | result | where |",
        "|---|---:|---:|---|---|",
    ]
    for t in targets:
        limit = (
            "exactly the liar"
            if t["id"] == "liar_blamed_exactly"
            else f"{t['comparison']} {t['limit']:g}"
        )
        lines.append(
            f"| {t['description']} | {t['shown']} | {limit} | "
            f"**{'PASS' if t['pass'] else 'MISS'}** | {t['note']} |"
        )
    return lines


def _baseline_table(points: list[dict[str, Any]], cores: int) -> list[str]:
    bases = _baselines(points)
    ks = sorted({p["k"] for p in points})
    lines = [
        "",
        "## Baselines measured in this run (idle cluster, beside every point)",
        "",
        "| quantity | " + " | ".join(f"{b} bits" for b in bases) + " |",
        "|---|" + "---:|" * len(bases),
    ]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(b, bases[b]) for b in bases) + " |")

    row(
        "T_share, the nodes' default backend (median; min–max of points)",
        lambda b, x: (
            f"{fmt_time(x['t_share_s'])} {x['backend']} ({fmt_time(x['t_share_range'][0])}–"
            f"{fmt_time(x['t_share_range'][1])})"
        ),
    )
    row(
        "T_share, openssl: bare BN_mod_exp_mont_consttime, share-sized exponent",
        lambda b, x: fmt_time(x["t_share_openssl_s"]),
    )
    row(
        "T_share, gmpy2: bare gmpy2.powmod_sec, share-sized exponent",
        lambda b, x: fmt_time(x["t_share_gmpy2_s"]),
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
            f"compute bound cores/(k·T_share), k={k}, sig/s (default backend; gmpy2)",
            lambda b, x, k=k: (
                f"{_rate(cores / (k * x['t_share_s']))}; "
                + (_rate(cores / (k * x["t_share_gmpy2_s"])) if x["t_share_gmpy2_s"] else "-")
            ),
        )
    row(
        "bound with proofs, k=3: cores/(3·(T_share+T_prove) + 3·T_verify), sig/s",
        lambda b, x: (
            _rate(cores / (3 * x["t_share_proof_s"] + 3 * x["t_verify_s"]))
            if x["t_share_proof_s"] and x["t_verify_s"]
            else "-"
        ),
    )
    return lines


def _overhead(p: dict[str, Any], key: str = "per_rpc_s") -> float | None:
    value = (p.get("node_overhead") or {}).get(key)
    return float(value) if value is not None else None


def _overheads(p: dict[str, Any]) -> str:
    """Node CPU per RPC beyond its exponentiations: outside the exponentiation threads;
    nodes' CPU less T_share per share; (a lone point) less a share's CPU k at once."""
    threads, by_t_share = _overhead(p, "outside_exponentiation_threads_per_rpc_s"), _overhead(p)
    if by_t_share is None:
        return "n/a"
    shown = f"{_ms(threads, 3)}; {_ms(by_t_share, 3)}"
    k_at_once = _overhead(p, "k_at_once_per_rpc_s")
    if k_at_once is not None:
        shown += f"; {_ms(k_at_once, 3)}"
    return shown + " ms"


def _lone_table(points: list[dict[str, Any]]) -> list[str]:
    lone = [p for p in points if p["baseline"].get("floor_s") and p["fault"] is None]
    if not lone:
        return []
    lines = [
        "",
        "## A lone signature (concurrency 1, batch 1, idle cluster)",
        "",
        "| point | backend | signatures | p50 | p99 | k exponentiations at once | "
        "audit fsync | floor | p50 / floor | p50 / T_share | node CPU per RPC beyond "
        "its exponentiations (outside exp. threads; less T_share per share; less a share's "
        "CPU k at once) | "
        "Python gRPC alone: server CPU per empty call; per call answered after the floor's "
        "time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in lone:
        lat, base = p["latency_s"], p["baseline"]
        lines.append(
            f"| {p['sweep']} {_short(p)} | {p['backend']} | {lat['n']} | "
            f"{_ms(lat['p50'], 2)} ms | {_ms(lat['p99'], 2)} ms | "
            f"{_ms(base['k_parallel_makespan_s'], 2)} ms | {_ms(base['audit_fsync_s'], 2)} ms | "
            f"{_ms(base['floor_s'], 2)} ms | {_num(p.get('latency_p50_over_floor'))} | "
            f"{_num(p['latency_p50_over_t_share'])} | {_overheads(p)} | {_grpc_alone(base)} |"
        )
    return [
        *lines,
        "",
        "The floor is measured in the same run, beside the point: k processes, idle until "
        "told, each make one share-sized constant-time exponentiation (the point's "
        "backend) at the same moment, and the time until the last one is done is what k "
        "nodes on this machine's cores cannot beat; plus one append-and-fsync of an "
        "audit-sized line in the cluster's folder (the node answers only once its "
        "record is durable). The rest of a lone signature's latency is the RPCs, the "
        "node's and the client's Python, and the combine.",
        "",
        "Python gRPC alone (`python -m benchmarks.cluster.grpcfloor`), measured beside the "
        "point with the cluster's certificates: a server set up as a node is (grpc.aio, "
        "mutual TLS) answers empty calls made one at a time by a client set up as the "
        "combiner is, at once or from a thread after the floor's time (as a node answers "
        "from its exponentiation thread); the server process's CPU per call is what a "
        "node's figure cannot go below with this gRPC. It grows with the wait: gRPC's and "
        "the event loop's threads go idle and are woken again.",
    ]


def _grpc_alone(base: dict[str, Any]) -> str:
    empty, waiting = base.get("grpc_empty"), base.get("grpc_waiting")
    if not empty or not waiting:
        return "-"
    return (
        f"{_ms(empty['server_cpu_per_call_s'], 3)} ms; "
        f"{_ms(waiting['server_cpu_per_call_s'], 3)} ms"
    )


def _backend_table(points: list[dict[str, Any]]) -> list[str]:
    pts = [p for p in points if p["sweep"] == "backend"]
    if not pts:
        return []
    lines = [
        "",
        "## The nodes' backends side by side",
        "",
        "| point | openssl sig/s | gmpy2 sig/s | openssl / gmpy2 | openssl p50 | gmpy2 p50 | "
        "efficiency openssl (own bound) | efficiency gmpy2 (own bound) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in dict.fromkeys((p["concurrency"], p["batch"]) for p in pts):
        by = {p["backend"]: p for p in pts if (p["concurrency"], p["batch"]) == key}
        o, g = by.get("openssl"), by.get("gmpy2")
        if o is None or g is None:
            continue
        ratio = o["throughput_per_s"] / g["throughput_per_s"] if g["throughput_per_s"] else None
        lines.append(
            f"| c={key[0]} b={key[1]} | {_rate(o['throughput_per_s'])} | "
            f"{_rate(g['throughput_per_s'])} | {_num(ratio)} | {_ms(o['latency_s']['p50'], 2)} ms"
            f" | {_ms(g['latency_s']['p50'], 2)} ms | {o['efficiency']:.3f} | "
            f"{g['efficiency']:.3f} |"
        )
    return lines


def _plot_links(report: dict[str, Any]) -> list[str]:
    plots = report.get("plots")
    if plots:
        lines = ["", "## Plots", ""]
        for name, title in plots:
            lines += [f"![{title}]({name})", ""]
        return lines[:-1]
    if "plots" in report and plots is None:
        return ["", "(Plots skipped: matplotlib is not installed; `pip install -e '.[bench]'`.)"]
    return []


def _sweep_table(points: list[dict[str, Any]], sweep: str) -> list[str]:
    pts = [p for p in points if p["sweep"] == sweep]
    if not pts:
        return []
    lines = [
        "",
        f"## Sweep: {SWEEP_TITLES.get(sweep, sweep)}",
        "",
        "| point | sig/s | vs ref | p50 ms | p90 ms | p99 ms | max ms | bound | "
        "efficiency | eff. on cores left | CPU busy (ours) | CPU/sig client | "
        "CPU/sig nodes | node CPU/RPC beyond exps (threads; T_share; k at once) | "
        "total / ideal | "
        "others' CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
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
            f"{_ms(cpu['nodes_per_signature_s'], 2)} ms" if cpu["nodes_s"] is not None else "n/a"
        )
        lines.append(
            f"| {label} | {_rate(p['throughput_per_s'])} | {vs} | {_ms(lat['p50'])} | "
            f"{_ms(lat['p90'])} | {_ms(lat['p99'])} | {_ms(lat['max'])} | "
            f"{_rate(p['bound_per_s'])} | {p['efficiency']:.3f} | "
            f"{_num(p['efficiency_available'], '{:.3f}')} | "
            f"{_num(cpu['ours_utilization'], '{:.0%}')} | "
            f"{_ms(cpu['client_per_signature_s'], 2)} ms | "
            f"{nodes_cpu} | {_overheads(p)} | "
            f"{_num(cpu['total_over_ideal'])} | "
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
    return lines


def _legend() -> list[str]:
    return [
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
        "- **bound**: the compute bound for the point's key and k, with T_share (the "
        "bare constant-time exponentiation of the backend the nodes ran) etc. measured "
        "just before and after the point: `cores / (k·T_share)`; with proofs always "
        "`cores / (k·(T_share + T_prove) + k·T_verify)`, counting every node's share and "
        "proof (fresh nonce: under full load a node has no idle time to precompute one) "
        "and the combiner checking k proofs; the combine itself and all RPC work count "
        'as overhead. Mode "all" is held to the same bound, so its extra work shows as '
        "lower efficiency.",
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
        "- **node CPU/RPC beyond exps**: what a node spends on an RPC besides its "
        "exponentiations (gRPC, TLS, validation, the audit line, thread hand-offs), two "
        "ways: the nodes' CPU outside their exponentiation threads (`ittc-sign`, "
        "`ittc-worker`, by `/proc/<pid>/task`) over the RPCs the client made; and the "
        "nodes' CPU less one T_share (with proofs always: T_share + T_prove) per share "
        "the client asked for, over the RPCs. The second counts as overhead whatever a "
        "node's exponentiations cost beyond T_share, which is measured with the cluster "
        "idle: k of them at once on a loaded machine cost more CPU each. The first leaves "
        "out what the exponentiation threads do besides (their Python, and the audit line "
        "a node writes from the thread that made the shares when nothing else waits). A "
        "lone point adds a third, the one its target is judged on: the nodes' CPU less, "
        "per share, the CPU one share-sized exponentiation took while k ran at once "
        "(measured with the floor).",
        "- **CPU busy (ours)**: CPU time of this process and the nodes over the window "
        "times the cores; efficiency ≈ CPU busy / (total / ideal), so a low efficiency "
        "is either idle cores (latency-bound, pipeline gaps) or CPU spent beyond the "
        "modexps (overhead).",
        "- **others' CPU**: machine busy time not ours (`/proc/stat`) as a share of all "
        "cores: other people's work competing with the point.",
    ]


def _short(p: dict[str, Any]) -> str:
    parts = [f"c={p['concurrency']}", f"b={p['batch']}"]
    if p["mode"] != "exact":
        parts.append(f"mode {p['mode']}")
    if p["proofs"] != "on-failure":
        parts.append(f"proofs {p['proofs']}")
    if p["fault"]:
        parts.append(f"node {p['fault_node']} {p['fault']}")
    if p["spec"].get("backend"):
        parts.append(f"backend {p['backend']}")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Re-render the Markdown (and plots) of a saved cluster JSON; LATEST.md too when it
    is the newest in its folder."""
    import json

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(
            "usage: python -m benchmarks.cluster.report results/cluster-<date>.json",
            file=sys.stderr,
        )
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
