"""``python -m benchmarks.cluster``: the command line."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import pathlib
import sys
from collections.abc import Sequence

from benchmarks.cluster import plots
from benchmarks.cluster import report as reporting
from benchmarks.cluster.plan import (
    BACKENDS,
    FAULT_NODE,
    FAULT_WARMUP,
    FULL,
    N_NODES,
    QUICK,
    SWEEPS,
)
from benchmarks.cluster.run import run
from benchmarks.micro import Progress
from ittc.scheme import dealer

__all__ = ["main"]

DEFAULT_OUT = pathlib.Path("benchmarks") / "results"
DEFAULT_CACHE = pathlib.Path("benchmarks") / ".clusters"
#: Options that choose one point (without --sweep).
POINT_OPTIONS = ("concurrency", "batch", "bits", "k", "mode", "proofs", "fault", "backend")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description="Throughput and latency of an ittc cluster under closed-loop load.",
    )
    p.add_argument(
        "--cluster",
        type=pathlib.Path,
        default=None,
        help="measure this running cluster (its folder or cluster.toml) instead "
        "of starting a local one; node CPU is then not measured",
    )
    p.add_argument(
        "--sweep",
        nargs="+",
        choices=SWEEPS,
        default=None,
        help="sweeps to run (default: all; with point options and no --sweep, one point)",
    )
    point = p.add_argument_group("one point (any of these without --sweep)")
    point.add_argument("--concurrency", type=int, default=None, help="concurrent callers (1)")
    point.add_argument("--batch", type=int, default=None, help="items per sign_items call (1)")
    point.add_argument(
        "--bits",
        type=int,
        default=None,
        choices=dealer.SUPPORTED_BITS,
        help="key size of the local cluster (2048)",
    )
    point.add_argument(
        "--k",
        type=int,
        default=None,
        choices=range(2, N_NODES + 1),
        metavar="K",
        help="threshold of the local cluster, n = 5 (3)",
    )
    point.add_argument("--mode", choices=("exact", "all"), default=None)
    point.add_argument("--proofs", choices=("on-failure", "always"), default=None)
    point.add_argument(
        "--fault",
        default=None,
        help='a test fault for one local node, e.g. "slow:50", "random-share"',
    )
    point.add_argument(
        "--fault-node", type=int, default=FAULT_NODE, help=f"the node given --fault ({FAULT_NODE})"
    )
    point.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="the local nodes' exponentiation backend (their default: auto)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"measured seconds per point ({FULL['duration']:g}; --quick {QUICK['duration']:g})",
    )
    p.add_argument(
        "--count",
        type=int,
        default=None,
        help="measure this many signatures per point instead of a duration",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help=f"unmeasured seconds of load before each point ({FULL['warmup']:g}; "
        f"--quick {QUICK['warmup']:g}; fault sweeps at least "
        f"{FAULT_WARMUP['quick']:g})",
    )
    p.add_argument("--quick", action="store_true", help="fewer and shorter points")
    p.add_argument(
        "--deadline", type=float, default=30.0, help="client deadline per call, seconds (30)"
    )
    p.add_argument(
        "--node-timeout",
        type=float,
        default=5.0,
        help="client timeout per node RPC, seconds (5, the client's default)",
    )
    p.add_argument(
        "--client-max-batch",
        type=int,
        default=None,
        help="the client's max_batch: items per RPC (64, the client's default)",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="before each point wait until other work uses less than this share "
        "of the cores (0.15)",
    )
    p.add_argument(
        "--max-quiet-wait",
        type=float,
        default=None,
        help="longest wait for quiet before a point, seconds (20; --quick 5; 0: "
        "never wait); all waits of a run stay within 300 s (--quick 60)",
    )
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="cores the bound assumes (default: this machine's usable cores; "
        "give the nodes' total for a cluster elsewhere)",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=DEFAULT_OUT,
        help="directory for cluster-<date>.json/.md/.png (benchmarks/results)",
    )
    p.add_argument(
        "--cache",
        type=pathlib.Path,
        default=DEFAULT_CACHE,
        help="where benchmark clusters are kept (benchmarks/.clusters)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--no-latest", action="store_true", help="do not copy the report to LATEST.md in --out"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    # Test-only: start the nodes of this (small-key) cluster folder instead of a cached
    # benchmark cluster.
    p.add_argument("--test-cluster", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.single = any(getattr(args, name) is not None for name in POINT_OPTIONS) and not args.sweep
    if args.sweep and any(getattr(args, name) is not None for name in POINT_OPTIONS):
        parser.error(
            "point options (--concurrency, --batch, ...) choose one point; not with --sweep"
        )
    if args.cluster is not None and args.test_cluster is not None:
        parser.error("--cluster or a test cluster, not both")
    if args.cluster is not None and (args.fault or args.backend):
        parser.error("--fault and --backend need local node processes, not --cluster")
    for name in ("concurrency", "batch", "count", "cores"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.batch is not None and args.batch > 4096:
        parser.error("--batch is at most 4096")
    for name in ("duration", "deadline", "node_timeout"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.client_max_batch is not None and not 1 <= args.client_max_batch <= 4096:
        parser.error("--client-max-batch is 1..4096")
    if args.max_quiet_wait is None:
        args.max_quiet_wait = 5.0 if args.quick else 20.0
    # All waits of a run together stay within this, so a busy machine cannot stretch a
    # run without end.
    args.quiet_budget = 60.0 if args.quick else 300.0

    shown = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks.cluster", *shown])
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    out: pathlib.Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    args.log_dir = out / "raw" / f"cluster-{stamp}"
    progress = Progress(enabled=not args.no_progress)
    _quiet_client_logs(args.log_dir)
    report = run(args, command, progress)

    base = out / f"cluster-{stamp}"
    if not args.no_plot:
        report["plots"] = plots.write_plots(report, base)
    markdown = reporting.render_markdown(report)
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown)
    if not args.no_latest:
        reporting.write_latest(out, base, markdown)
    print(markdown)
    progress.line(
        f"wrote {base}.json and .md"
        + (f" and {len(report.get('plots') or [])} plot(s)" if report.get("plots") else "")
    )
    return 0


def _quiet_client_logs(log_dir: pathlib.Path) -> None:
    """The client's warnings (failed and blamed nodes) go to a file, not over the bar."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "client.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ittc", "benchmarks"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
