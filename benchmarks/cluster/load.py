"""The load: closed-loop callers signing through a :class:`ClusterClient`, one measured
window per point, with the CPU each side used in it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from benchmarks.cluster.cpu import CpuMark
from benchmarks.cluster.plan import MAX_STRETCH, MIN_ROUNDS, PointSpec
from benchmarks.cluster.target import Target
from benchmarks.micro import Progress
from ittc.combiner import ClientStats, ClusterClient, SignItem
from ittc.scheme.encoding import Scheme

__all__ = ["Bar", "completion_slope", "measure_point"]


def _percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {
            "n": 0,
            "p50": None,
            "p90": None,
            "p99": None,
            "max": None,
            "min": None,
            "mean": None,
        }
    xs = sorted(values)

    def pct(q: float) -> float:  # nearest-rank
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]

    return {
        "n": len(xs),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": xs[-1],
        "min": xs[0],
        "mean": statistics.fmean(xs),
    }


def completion_slope(completions: Sequence[tuple[float, int]]) -> float | None:
    """Signatures per second as the least-squares slope of signatures completed against
    time. A batching combiner finishes signatures in bursts (a batch of 64 at once); a
    count over a short window is then off by up to a burst, the slope is not."""
    if len(completions) < 8:
        return None
    times, cumulative, total = [], [], 0
    for t, n in sorted(completions):
        total += n
        times.append(t)
        cumulative.append(total)
    mean_t = statistics.fmean(times)
    mean_c = statistics.fmean(cumulative)
    sxx = sum((t - mean_t) ** 2 for t in times)
    if sxx <= 0:
        return None
    return sum((t - mean_t) * (c - mean_c) for t, c in zip(times, cumulative, strict=True)) / sxx


def _stats_dict(stats: ClientStats) -> dict[str, Any]:
    return {
        "signatures": stats.signatures,
        "batches": stats.batches,
        "rpcs": stats.rpcs,
        "shares_asked": stats.shares_asked,
        "hedges": stats.hedges,
        "proof_rounds": stats.proof_rounds,
        "node_failures": {str(k): v for k, v in sorted(stats.node_failures.items())},
        "blamed": {str(k): v for k, v in sorted(stats.blamed.items())},
    }


def _stats_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = {
                k: v - before[key].get(k, 0) for k, v in value.items() if v - before[key].get(k, 0)
            }
        else:
            out[key] = value - before[key]
    return out


class Bar:
    """A progress bar on stderr over the whole run: points done, the current point's
    share of its time, and a live rate."""

    def __init__(self, progress: Progress, total: int, width: int = 24) -> None:
        self.progress = progress
        self.total = max(total, 1)
        self.width = width
        self.done = 0
        self.started = time.monotonic()

    def show(self, label: str, fraction: float, rate: float | None) -> None:
        whole = min(1.0, (self.done + max(0.0, min(fraction, 1.0))) / self.total)
        filled = int(round(whole * self.width))
        elapsed = time.monotonic() - self.started
        eta = elapsed / whole - elapsed if whole > 0.02 else None
        shown = f"{rate:,.0f} sig/s" if rate is not None else "warming up"
        self.progress.status(
            f"[{'#' * filled}{'.' * (self.width - filled)}] {whole * 100:3.0f}% "
            f"{min(self.done + 1, self.total)}/{self.total} {label}: {shown}"
            + (
                f", ~{eta / 60:.0f} min left"
                if eta is not None and eta > 90
                else f", ~{eta:.0f} s left"
                if eta is not None
                else ""
            ),
            every_s=10.0,
        )


async def measure_point(
    target: Target,
    spec: PointSpec,
    *,
    warmup: float,
    duration: float,
    deadline: float,
    node_timeout: float,
    bar: Bar,
    max_batch: int | None = None,
    max_window: float = 600.0,
) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` callers each sign ``batch`` random digests per
    call, again and again. Only calls that end inside the measured window count."""
    params = target.params
    groups = target.node_groups()
    latencies: list[float] = []
    completions: list[tuple[float, int]] = []  # (time, signatures) of each counted call
    errors: collections.Counter[str] = collections.Counter()
    error_examples: dict[str, str] = {}
    to_verify: list[tuple[bytes, bytes]] = []
    state = {"measuring": False, "stop": False, "sigs": 0, "calls": 0, "all_sigs": 0}
    enough = asyncio.Event()
    count = spec.count

    client = ClusterClient(
        target.cluster,
        mode=spec.mode,  # type: ignore[arg-type]
        proofs=spec.proofs,  # type: ignore[arg-type]
        deadline=deadline,
        node_timeout=node_timeout,
        max_batch=max_batch or 64,
    )

    async def caller() -> None:
        batch = spec.batch
        while not state["stop"]:
            items = [SignItem(Scheme.PKCS1V15, "sha256", os.urandom(32)) for _ in range(batch)]
            started = time.perf_counter()
            try:
                signatures = await client.sign_items(items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted and shown by type
                if state["measuring"]:
                    name = type(exc).__name__
                    errors[name] += 1
                    error_examples.setdefault(name, str(exc)[:300])
                await asyncio.sleep(0.01)  # no hot loop if every call fails at once
                continue
            state["all_sigs"] += len(signatures)
            if state["measuring"]:
                now = time.perf_counter()
                latencies.append(now - started)
                completions.append((now, len(signatures)))
                state["calls"] += 1
                state["sigs"] += len(signatures)
                if len(to_verify) < 16:
                    to_verify.append((items[0].digest, signatures[0]))
                if count is not None and state["sigs"] >= count:
                    enough.set()

    def tick_rate(window_start: float | None) -> float | None:
        if window_start is None:
            return None
        elapsed = time.perf_counter() - window_start
        return state["sigs"] / elapsed if elapsed > 0.2 else None

    async with client:
        tasks = [asyncio.ensure_future(caller()) for _ in range(spec.concurrency)]
        try:
            label = f"{spec.sweep} {spec.label()}"
            t_warm = time.perf_counter()
            warm_limit = warmup + (30.0 if spec.fault == "random-share" else 0.0)
            found_at: float | None = None
            while True:
                elapsed = time.perf_counter() - t_warm
                if (
                    spec.fault == "random-share"
                    and found_at is None
                    and (client.stats.blamed.get(spec.fault_node or 0))
                ):
                    found_at = elapsed
                if elapsed >= warm_limit or (
                    elapsed >= warmup
                    and (
                        spec.fault != "random-share"
                        or (found_at is not None and elapsed >= found_at + 0.5)
                    )
                ):
                    break
                await asyncio.sleep(0.05)
                bar.show(label, min(elapsed / (warmup + duration), 0.99), None)
            warm_elapsed = time.perf_counter() - t_warm
            before_stats = _stats_dict(client.stats)
            first = CpuMark.now(groups, nodes_first=True)
            state["measuring"] = True
            window_start = first.wall
            # A window holds at least MIN_ROUNDS calls per caller (bursts of big batches
            # would make a short one too coarse), within MAX_STRETCH times the duration.
            limit = max_window if count is not None else duration * MAX_STRETCH
            while True:
                elapsed = time.perf_counter() - window_start
                if (
                    enough.is_set()
                    # A window without one whole call measures nothing: on a loaded
                    # machine it stretches further, up to the client's deadline.
                    or (elapsed >= limit and (state["calls"] > 0 or elapsed >= deadline))
                    or (
                        count is None
                        and elapsed >= duration
                        and state["calls"] >= MIN_ROUNDS * spec.concurrency
                    )
                ):
                    break
                if all(t.done() for t in tasks):  # pragma: no cover - callers crashed
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(enough.wait(), min(0.1, max(limit - elapsed, 0.02)))
                frac = state["sigs"] / count if count else min(elapsed / duration, 1.0)
                bar.show(
                    label, (warmup + frac * duration) / (warmup + duration), tick_rate(window_start)
                )
            state["measuring"] = False
            last = CpuMark.now(groups, nodes_first=False)
            after_stats = _stats_dict(client.stats)
            state["stop"] = True
            # Callers finish the call they are in (not counted); then the client closes.
            await asyncio.wait(tasks, timeout=deadline + 5)
        finally:
            state["stop"] = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        run_stats = _stats_dict(client.stats)

    window = last.wall - first.wall
    sigs = state["sigs"]
    client_cpu = last.client - first.client
    nodes_cpu = (
        (last.nodes - first.nodes) if (last.nodes is not None and first.nodes is not None) else None
    )
    machine = (
        (last.machine - first.machine)
        if (last.machine is not None and first.machine is not None)
        else None
    )
    exps_cpu = (
        (last.nodes_exponentiation - first.nodes_exponentiation)
        if last.nodes_exponentiation is not None and first.nodes_exponentiation is not None
        else None
    )
    ours = client_cpu + (nodes_cpu or 0.0)
    foreign = max(0.0, machine - ours) if machine is not None and nodes_cpu is not None else None

    verified = 0
    public = params.public_key()
    for digest, signature in to_verify:
        public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        verified += 1

    counted = sigs / window if window > 0 else 0.0
    slope = completion_slope(completions)
    # CPU per signature over the signatures the window's rate stands for (a count would
    # be off by a burst, like the count-based rate).
    made = (slope if slope is not None else counted) * window

    def per_sig(value: float | None) -> float | None:
        return value / made if made > 0 and value is not None else None

    return {
        "window_s": window,
        "warmup_s": warm_elapsed,
        "warmup_until_blamed_s": found_at,
        "signatures": sigs,
        "calls": state["calls"],
        "throughput_per_s": slope if slope is not None else counted,
        "throughput_count_per_s": counted,
        "throughput_method": "slope" if slope is not None else "count",
        "latency_s": _percentiles(latencies),
        "errors": dict(errors),
        "error_examples": error_examples,
        "verified_signatures": verified,
        "cpu": {
            "client_s": client_cpu,
            "nodes_s": nodes_cpu,
            "nodes_exponentiation_threads_s": exps_cpu,
            "machine_busy_s": machine,
            "others_s": foreign,
            "client_per_signature_s": per_sig(client_cpu),
            "nodes_per_signature_s": per_sig(nodes_cpu),
            "total_per_signature_s": per_sig(ours) if nodes_cpu is not None else None,
            "ours_utilization": (
                ours / (window * target.cores) if nodes_cpu is not None and window > 0 else None
            ),
            "others_utilization": (
                foreign / (window * target.cores) if foreign is not None and window > 0 else None
            ),
        },
        "client_stats_window": _stats_delta(after_stats, before_stats),
        "client_stats_run": run_stats,
    }
