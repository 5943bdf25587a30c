"""A run: every planned point measured in turn, each between two baselines."""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import time
from dataclasses import asdict, replace
from typing import Any

from benchmarks import micro
from benchmarks.cluster.baseline import (
    Baseline,
    audit_fsync_seconds,
    bound_per_s,
    median,
    parallel_makespan,
)
from benchmarks.cluster.cpu import cores as _cores
from benchmarks.cluster.cpu import others_busy
from benchmarks.cluster.load import Bar, measure_point
from benchmarks.cluster.plan import (
    DEFAULT_BITS,
    DEFAULT_K,
    FULL,
    LOCAL_ONLY,
    N_NODES,
    QUICK,
    SWEEPS,
    PointSpec,
    plan,
)
from benchmarks.cluster.target import Target, cached_cluster, start_local
from benchmarks.cluster.targets import evaluate_targets
from benchmarks.micro import Progress
from ittc.config import ClusterFile
from ittc.scheme import ct

__all__ = ["SCHEMA", "run", "run_point"]

SCHEMA = "ittc.bench.cluster/2"


def _available_efficiency(result: dict[str, Any], bound: float, cores: int) -> float | None:
    others = result["cpu"]["others_s"]
    window = result["window_s"]
    if others is None or window <= 0:
        return None
    available = max(cores - float(others) / float(window), 0.05 * cores)
    return float(result["throughput_per_s"]) / (bound * available / cores)


def wait_for_quiet(threshold: float, max_wait: float, bar: Bar, spec: PointSpec) -> dict[str, Any]:
    """Before a point, wait (at most ``max_wait`` s) until other work on the machine uses
    less than ``threshold`` of its cores: a shared machine's numbers are cleaner then."""
    start = time.monotonic()
    busy = others_busy(0.3) if max_wait > 0 else None
    while busy is not None and busy > threshold and time.monotonic() - start < max_wait:
        bar.show(f"{spec.sweep} {spec.label()} (waiting: others use {busy:.0%})", 0.0, None)
        busy = others_busy(0.5)
    return {
        "waited_s": time.monotonic() - start,
        "others_busy_at_start": busy,
        "threshold": threshold,
    }


def nodes_backend(target: Target, spec: PointSpec) -> str:
    """The backend the nodes use at this point: the one asked for, or what their default
    (``auto``) resolves to on this machine (libcrypto where it loads)."""
    chosen = spec.backend or target.backend
    return ct.backend() if chosen == "auto" else chosen


def _baselines(
    samples: dict[str, list[float]], baseline: Baseline, backend: str, cores: int, proofs: bool
) -> dict[str, Any]:
    """Medians of the samples taken before and after a point; ``t_share_s`` is the
    backend the nodes used."""
    t_share = median(samples[f"t_share_{backend}"])
    base: dict[str, Any] = {
        "backend": backend,
        "t_share_s": t_share,
        "t_share_wall_s": median(samples[f"t_share_{backend}_wall"]),
        "t_share_samples": len(samples[f"t_share_{backend}"]),
        "share_exponent_bits": baseline.exponent_bits,
        "openssl_sign_s": median(samples["openssl_sign"]),
        "openssl_one_thread_per_s": 1.0 / median(samples["openssl_sign"]),
        "openssl_threads_per_s": median(samples["openssl_threads_per_s"]),
        "openssl_threads": cores,
    }
    for name in baseline.backends:  # every backend's T_share, side by side
        base[f"t_share_{name}_s"] = median(samples[f"t_share_{name}"])
    if proofs:
        base["t_share_proof_s"] = median(samples["t_share_proof"])
        base["t_prove_s"] = base["t_share_proof_s"] - median(samples[f"t_share_{ct.backend()}"])
        base["t_verify_s"] = median(samples["t_verify"])
        base["t_share_proof_wall_s"] = median(samples["t_share_proof_wall"])
        base["t_verify_wall_s"] = median(samples["t_verify_wall"])
    return base


def _node_overhead(result: dict[str, Any], base: dict[str, Any], proofs: bool) -> dict[str, Any]:
    """Node CPU per RPC beyond its exponentiations: the nodes' CPU in the window, less one
    T_share (with proofs: a share and its proof) per share asked, over the RPCs; and the
    nodes' CPU outside their exponentiation threads, over the RPCs (T_share is measured
    in this process while the cluster is idle; a node's exponentiations, three at once
    on two cores, cost it more CPU than that, which the first figure counts as
    overhead)."""
    stats, nodes = result["client_stats_window"], result["cpu"]["nodes_s"]
    asked, rpcs = stats.get("shares_asked", 0), stats.get("rpcs", 0)
    per_share = base["t_share_proof_s"] if proofs else base["t_share_s"]
    if nodes is None or rpcs <= 0:
        return {"per_rpc_s": None, "shares_asked": asked, "rpcs": rpcs}
    threads = result["cpu"].get("nodes_exponentiation_threads_s")
    return {
        "per_rpc_s": (nodes - asked * per_share) / rpcs,
        "nodes_s": nodes,
        "shares_asked": asked,
        "rpcs": rpcs,
        "exponentiation_s": asked * per_share,
        # The same measured by thread: the nodes' CPU outside their exponentiation
        # threads (what those threads used is counted whole, their Python included).
        "outside_exponentiation_threads_per_rpc_s": (
            (nodes - threads) / rpcs if threads is not None and threads > 0 else None
        ),
        "exponentiation_threads_s": threads,
    }


def _k_at_once_overhead(overhead: dict[str, Any], per_share: float, proofs: bool) -> None:
    """Add to a lone point's node overhead: the nodes' CPU less, per share asked, what one
    share-sized exponentiation cost in CPU while k ran at once (as a lone signature's
    do), over the RPCs; wherever in a node the rest ran (its audit line may be written by
    the thread that made the shares)."""
    nodes, asked, rpcs = overhead.get("nodes_s"), overhead["shares_asked"], overhead["rpcs"]
    if proofs or nodes is None or rpcs <= 0:
        return
    overhead["t_share_k_at_once_cpu_s"] = per_share
    overhead["k_at_once_per_rpc_s"] = (nodes - asked * per_share) / rpcs


def _lone_floor(target: Target, baseline: Baseline, backend: str, rounds: int) -> dict[str, Any]:
    """The floor of a lone signature: k share-sized exponentiations started together in k
    processes, plus one append-and-fsync of an audit-sized line on the nodes' disk."""
    params = target.params
    spans, cpus = parallel_makespan(params, baseline.exponent_bits, params.k, rounds * 4, backend)
    fsyncs = audit_fsync_seconds(target.audit_dir(), rounds * 4)
    makespan, fsync = median(spans), median(fsyncs)
    floor: dict[str, Any] = {
        "k_parallel_makespan_s": makespan,
        "k_parallel_makespan_rounds": len(spans),
        # The CPU one of those exponentiations took (what a node's share costs it when
        # k nodes compute at once, as for a lone signature).
        "t_share_k_at_once_cpu_s": median(cpus),
        "audit_fsync_s": fsync,
        "audit_fsync_rounds": len(fsyncs),
        "floor_s": makespan + fsync,
    }
    if target.root is not None:
        # (imported here: ``python -m benchmarks.cluster.grpcfloor`` runs it as a script)
        from benchmarks.cluster.grpcfloor import measure_grpc_floor

        # What Python gRPC itself costs per RPC here, for a node's figure beside it: an
        # empty call answered at once, and one answered from a thread after the floor's
        # time (what a node's RPC waits for).
        floor["grpc_empty"] = measure_grpc_floor(target.root, rounds * 100)
        floor["grpc_waiting"] = measure_grpc_floor(
            target.root, rounds * 30, wait_s=makespan + fsync
        )
    return floor


def run_point(
    target: Target,
    spec: PointSpec,
    baseline: Baseline,
    *,
    timing: dict[str, Any],
    args: argparse.Namespace,
    bar: Bar,
    loop: asyncio.AbstractEventLoop,
) -> dict[str, Any]:
    """Baseline (idle), the point under load, baseline again; the point's record."""
    params = target.params
    proofs = spec.proofs == "always"
    if target.local is not None:
        target.set_backend(spec.backend)
        for index in target.local.indices:
            target.set_fault(index, spec.fault if index == spec.fault_node else None)
    backend = nodes_backend(target, spec)
    rounds = int(timing["rounds"])
    quiet = wait_for_quiet(
        args.quiet_threshold, min(args.max_quiet_wait, max(args.quiet_budget, 0.0)), bar, spec
    )
    args.quiet_budget -= quiet["waited_s"]
    before = baseline.measure(rounds, proofs)
    load_before = os.getloadavg()[0]
    # --warmup applies to every point; otherwise fault sweeps warm up longer (the client
    # must meet the liar before the window opens).
    warmup = (
        args.warmup
        if args.warmup is not None
        else (spec.warmup if spec.warmup is not None else float(timing["warmup"]))
    )
    duration = (
        float(timing["duration"])
        if args.duration is not None or spec.duration is None
        else spec.duration
    )
    result = loop.run_until_complete(
        measure_point(
            target,
            spec,
            warmup=warmup,
            duration=duration,
            deadline=args.deadline,
            node_timeout=args.node_timeout,
            bar=bar,
            max_batch=args.client_max_batch,
        )
    )
    after = baseline.measure(rounds, proofs)
    samples = {name: before[name] + after[name] for name in before}
    base = _baselines(samples, baseline, backend, target.cores, proofs)
    t_share = base["t_share_s"]
    k = params.k
    bound = bound_per_s(
        target.cores, k, t_share, proofs, base.get("t_share_proof_s"), base.get("t_verify_s")
    )
    lat = result["latency_s"]
    record = {
        "sweep": spec.sweep,
        "label": spec.label(),
        "spec": asdict(spec),
        "bits": params.bits,
        "n": params.n,
        "k": k,
        "concurrency": spec.concurrency,
        "batch": spec.batch,
        "mode": spec.mode,
        "proofs": spec.proofs,
        "fault": spec.fault,
        "fault_node": spec.fault_node,
        "backend": backend,
        **result,
        "baseline": base,
        "cores": target.cores,
        "bound_per_s": bound,
        "bound_optimistic_per_s": bound_per_s(target.cores, k, t_share, False),
        "efficiency": result["throughput_per_s"] / bound,
        # The same against the cores left after other people's work in the window.
        "efficiency_available": _available_efficiency(result, bound, target.cores),
        "latency_p50_over_t_share": (lat["p50"] / t_share) if lat["p50"] else None,
        "latency_p99_over_t_share": (lat["p99"] / t_share) if lat["p99"] else None,
        "ideal_cpu_per_signature_s": k
        * (base.get("t_share_proof_s", t_share) + base.get("t_verify_s", 0.0)),
        "node_overhead": _node_overhead(result, base, proofs),
        "loadavg": [load_before, os.getloadavg()[0]],
        "quiet_wait": quiet,
    }
    if spec.concurrency == 1 and spec.batch == 1 and spec.fault is None:
        floor = _lone_floor(target, baseline, backend, rounds)
        base.update(floor)
        record["latency_p50_over_makespan"] = (
            lat["p50"] / floor["k_parallel_makespan_s"] if lat["p50"] else None
        )
        record["latency_p50_over_floor"] = lat["p50"] / floor["floor_s"] if lat["p50"] else None
        _k_at_once_overhead(record["node_overhead"], floor["t_share_k_at_once_cpu_s"], proofs)
    ideal = record["ideal_cpu_per_signature_s"]
    cpu = result["cpu"]
    record["cpu"]["total_over_ideal"] = (
        cpu["total_per_signature_s"] / ideal if cpu["total_per_signature_s"] else None
    )
    return record


def _groups(points: list[PointSpec]) -> list[tuple[tuple[int | None, int | None], list[PointSpec]]]:
    """Points by cluster, main cluster first, keeping their order within a cluster."""
    by: dict[tuple[int | None, int | None], list[PointSpec]] = {}
    for p in points:
        key = (p.bits, p.k)
        if key == (DEFAULT_BITS, DEFAULT_K):
            key = (None, None)
        by.setdefault(key, []).append(p)
    return list(by.items())


def run(args: argparse.Namespace, command: str, progress: Progress) -> dict[str, Any]:
    """Measure every planned point and return the report (not yet written)."""
    timing = dict(QUICK if args.quick else FULL)
    if args.duration is not None:
        timing["duration"] = args.duration
    cores = args.cores or _cores()
    facts = micro.machine_facts()
    facts["ittc_client_modified"] = _modified("ittc/combiner", "nodes")
    external = args.cluster is not None
    test_cluster = args.test_cluster
    single = None
    if args.single:
        single = PointSpec(
            "point",
            args.concurrency or 1,
            args.batch or 1,
            bits=args.bits,
            k=args.k,
            mode=args.mode or "exact",
            proofs=args.proofs or "on-failure",
            count=args.count,
            fault=args.fault,
            fault_node=args.fault_node if args.fault else None,
            backend=args.backend,
        )
    sweeps = list(args.sweep or ([] if single else SWEEPS))
    skipped = []
    if external or test_cluster:
        test_skips = ("k", "bits")
        for name in [s for s in sweeps if s in LOCAL_ONLY and (external or s in test_skips)]:
            sweeps.remove(name)
            skipped.append(name)
        if single and (single.bits or single.k):
            raise SystemExit(
                "--bits/--k choose a local benchmark cluster; not with --cluster or a test cluster"
            )
    specs = plan(sweeps, args.quick, single=single, lone_count=args.count)
    if args.count is not None:
        specs = [replace(s, count=args.count) for s in specs]
    if not specs:
        raise SystemExit("nothing to measure")

    stamp_log = args.log_dir
    stamp_log.mkdir(parents=True, exist_ok=True)
    points: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    bar = Bar(progress, len(specs))
    loop = asyncio.new_event_loop()
    try:
        for (bits, k), group in _groups(specs):
            if external:
                cluster = ClusterFile.load(args.cluster)
                target = Target(cluster, None, cores=cores)
                progress.line(
                    f"cluster {cluster.path} ({cluster.params.bits}-bit, "
                    f"k={cluster.params.k} of n={cluster.params.n}): running "
                    "elsewhere, node CPU not measured"
                )
            else:
                root = test_cluster or cached_cluster(
                    args.cache, bits or DEFAULT_BITS, k or DEFAULT_K, N_NODES, progress
                )
                progress.line(f"cluster {root}: starting nodes ...")
                target = start_local(pathlib.Path(root), stamp_log, cores, progress)
            p = target.params
            clusters.append(
                {
                    "path": str(target.cluster.root),
                    "bits": p.bits,
                    "n": p.n,
                    "k": p.k,
                    "key_id": p.key_id,
                    "local": target.local is not None,
                    "addresses": [e.address for e in target.cluster.nodes],
                }
            )
            try:
                baseline = Baseline(p, cores)
                for spec in group:
                    record = run_point(
                        target, spec, baseline, timing=timing, args=args, bar=bar, loop=loop
                    )
                    points.append(record)
                    bar.done += 1
                    progress.line(_summary_line(record))
            finally:
                baseline.close()
                target.close()
    finally:
        loop.close()
    facts["loadavg_end"] = list(os.getloadavg())
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command,
        "machine": facts,
        "config": {
            "quick": bool(args.quick),
            "sweeps": sweeps,
            "skipped_sweeps": skipped,
            "warmup_s": args.warmup if args.warmup is not None else timing["warmup"],
            "duration_s": timing["duration"],
            "count": args.count,
            "baseline_rounds": timing["rounds"],
            "cores": cores,
            "deadline_s": args.deadline,
            "node_timeout_s": args.node_timeout,
            "client_max_batch": args.client_max_batch,
            "quiet_threshold": args.quiet_threshold,
            "max_quiet_wait_s": args.max_quiet_wait,
            "target": "external" if external else ("test" if test_cluster else "local"),
            "message": "EMSA-PKCS1-v1_5, SHA-256 digests of fresh random bytes",
        },
        "clusters": clusters,
        "points": points,
    }
    report["targets"] = evaluate_targets(points)
    return report


def _modified(*paths: str) -> bool | None:
    out = micro._git("status", "--porcelain", "--", *paths)
    return None if out is None else bool(out)


def _summary_line(p: dict[str, Any]) -> str:
    lat = p["latency_s"]
    errs = sum(p["errors"].values())
    p50 = f"{lat['p50'] * 1e3:.1f}" if lat["p50"] else "-"
    p99 = f"{lat['p99'] * 1e3:.1f}" if lat["p99"] else "-"
    return (
        f"  {p['sweep']:<11} {p['label']:<40} {p['throughput_per_s']:8.1f} sig/s  "
        f"eff {p['efficiency']:.2f}  p50 {p50} ms  p99 {p99} ms"
        + (f"  errors {errs}" if errs else "")
    )
