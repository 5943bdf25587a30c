"""The cluster benchmark runs against real nodes and writes a complete report.

A small test cluster (1024-bit key, real ``python -m ittc_node`` processes, mutual TLS)
is loaded for a fraction of a second per point; only the shape and sanity of the output
are checked. Speed is measured by ``python -m benchmarks.cluster`` and never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import cluster as bench
from benchmarks.cluster import plots
from tests.cluster import make_cluster

MACHINE_FIELDS = {
    "date",
    "cpu_model",
    "cpu_count",
    "cpus_usable",
    "python",
    "gmpy2",
    "gmp",
    "cryptography",
    "openssl",
    "ittc_commit",
    "loadavg_start",
    "loadavg_end",
}
POINT_FIELDS = {
    "sweep",
    "label",
    "bits",
    "n",
    "k",
    "concurrency",
    "batch",
    "mode",
    "proofs",
    "fault",
    "fault_node",
    "window_s",
    "warmup_s",
    "signatures",
    "calls",
    "throughput_per_s",
    "throughput_count_per_s",
    "latency_s",
    "errors",
    "cpu",
    "client_stats_window",
    "client_stats_run",
    "baseline",
    "cores",
    "bound_per_s",
    "efficiency",
    "efficiency_available",
    "latency_p50_over_t_share",
    "verified_signatures",
    "loadavg",
    "backend",
    "node_overhead",
}
LATENCY_FIELDS = {"n", "p50", "p90", "p99", "max", "min", "mean"}
CPU_FIELDS = {
    "client_s",
    "nodes_s",
    "machine_busy_s",
    "others_s",
    "client_per_signature_s",
    "nodes_per_signature_s",
    "total_per_signature_s",
    "ours_utilization",
    "others_utilization",
    "total_over_ideal",
    "nodes_exponentiation_threads_s",
}


def _positive(value):
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-cluster")
    root = make_cluster(tmp / "key", bits=1024)
    out = tmp / "results"
    plot = importlib.util.find_spec("matplotlib") is not None
    argv = [
        "--test-cluster",
        str(root),
        "--sweep",
        "lone",
        "backend",
        "proofs",
        "liar",
        "--quick",
        "--duration",
        "0.4",
        "--warmup",
        "0.2",
        "--max-quiet-wait",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert bench.main(argv if plot else [*argv, "--no-plot"]) == 0
    jsons = sorted(out.glob("cluster-*.json"))
    assert len(jsons) == 1
    return json.loads(jsons[0].read_text()), jsons[0], out, plot


@pytest.mark.network
def test_machine_facts_and_config(run):
    doc, *_ = run
    assert doc["schema"] == bench.SCHEMA
    assert doc["command"].startswith("python -m benchmarks.cluster --test-cluster")
    assert MACHINE_FIELDS <= set(doc["machine"])
    assert doc["config"]["target"] == "test" and doc["config"]["cores"] >= 1
    assert doc["config"]["sweeps"] == ["lone", "backend", "proofs", "liar"]
    [cluster] = doc["clusters"]
    assert cluster["bits"] == 1024 and cluster["n"] == 5 and cluster["k"] == 3


@pytest.mark.network
def test_every_point_complete_and_sane(run):
    doc, *_ = run
    points = doc["points"]
    assert [p["sweep"] for p in points] == ["lone"] + ["backend"] * 4 + ["proofs"] * 4 + [
        "liar"
    ] * 2
    # The backend sweep ran each backend in turn, and measured each one's T_share.
    assert [p["backend"] for p in points if p["sweep"] == "backend"] == [
        "openssl",
        "gmpy2",
    ] * 2
    for p in points:
        base = p["baseline"]
        assert base["t_share_s"] == base[f"t_share_{p['backend']}_s"], p["label"]
        assert base["t_share_openssl_s"] < base["t_share_gmpy2_s"], p["label"]
    for p in points:
        assert POINT_FIELDS <= set(p), p["label"]
        assert p["signatures"] >= 1 and p["calls"] >= 1, p["label"]
        assert p["signatures"] == p["calls"] * p["batch"], p["label"]
        assert p["verified_signatures"] >= 1, p["label"]
        for name in (
            "window_s",
            "throughput_per_s",
            "throughput_count_per_s",
            "bound_per_s",
            "efficiency",
        ):
            assert _positive(p[name]), (p["label"], name)
        lat = p["latency_s"]
        assert set(lat) == LATENCY_FIELDS and lat["n"] == p["calls"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        cpu = p["cpu"]
        assert CPU_FIELDS <= set(cpu)
        for name in (
            "client_s",
            "nodes_s",
            "client_per_signature_s",
            "nodes_per_signature_s",
            "total_per_signature_s",
            "total_over_ideal",
        ):
            assert _positive(cpu[name]), (p["label"], name)
        assert 0 < cpu["ours_utilization"]
        base = p["baseline"]
        for name in (
            "t_share_s",
            "t_share_wall_s",
            "openssl_sign_s",
            "openssl_one_thread_per_s",
            "openssl_threads_per_s",
        ):
            assert _positive(base[name]), (p["label"], name)
        assert base["share_exponent_bits"] > 1024
        if p["proofs"] == "always":
            for name in ("t_share_proof_s", "t_verify_s"):
                assert _positive(base[name]), (p["label"], name)
            assert base["t_share_proof_s"] > base["t_share_s"]
            assert p["bound_per_s"] < p["bound_optimistic_per_s"]
        else:
            assert p["bound_per_s"] == pytest.approx(p["cores"] / (p["k"] * base["t_share_s"]))
        stats = p["client_stats_run"]
        assert stats["signatures"] >= p["signatures"] and stats["rpcs"] >= 1
        overhead = p["node_overhead"]
        assert overhead["rpcs"] == p["client_stats_window"]["rpcs"] >= 1
        # Every call in the window asked k nodes (calls at the window's edges may have
        # asked before it opened).
        edge = p["concurrency"] * p["batch"] * p["k"]
        assert overhead["shares_asked"] >= p["signatures"] * p["k"] - edge
        assert isinstance(overhead["per_rpc_s"], float)
        # The nodes name their exponentiation threads; the CPU outside them is counted.
        # Both are read from /proc in clock ticks (10 ms per thread), so in a short window
        # the part outside the threads can round to nothing, never below it.
        tick = 0.01 * (1 + p["n"])
        assert 0 < cpu["nodes_exponentiation_threads_s"] <= cpu["nodes_s"] + tick, p["label"]
        assert overhead["outside_exponentiation_threads_per_rpc_s"] >= -tick, p["label"]
        if p["fault"] is None:
            assert p["errors"] == {} and stats["blamed"] == {}, p["label"]


@pytest.mark.network
def test_lone_signature_and_liar(run):
    doc, *_ = run
    lone = doc["points"][0]
    assert lone["concurrency"] == 1 and lone["batch"] == 1
    assert lone["signatures"] == 60  # --quick counts 60 signatures
    base = lone["baseline"]
    for name in ("k_parallel_makespan_s", "audit_fsync_s", "floor_s"):
        assert _positive(base[name]), name
    assert base["floor_s"] == pytest.approx(base["k_parallel_makespan_s"] + base["audit_fsync_s"])
    # Python gRPC alone beside it: empty calls over mutual TLS, answered at once and after
    # the floor's time.
    for name, wait in (("grpc_empty", 0.0), ("grpc_waiting", base["floor_s"])):
        alone = base[name]
        assert alone["wait_s"] == wait and alone["calls"] >= 100
        assert _positive(alone["server_cpu_per_call_s"]), name
        assert alone["server_loop_thread_cpu_per_call_s"] <= alone["server_cpu_per_call_s"]
        assert _positive(alone["latency_p50_s"]) and _positive(alone["client_cpu_per_call_s"])
    assert base["grpc_waiting"]["latency_p50_s"] >= base["floor_s"]
    assert _positive(lone["latency_p50_over_makespan"])
    assert _positive(lone["latency_p50_over_floor"])
    liar = doc["points"][-1]
    assert liar["fault"] == "random-share" and liar["fault_node"] == bench.FAULT_NODE
    assert liar["client_stats_run"]["blamed"] == {str(bench.FAULT_NODE): 1}
    assert liar["warmup_until_blamed_s"] is not None
    assert liar["warmup_s"] >= liar["warmup_until_blamed_s"]


@pytest.mark.network
def test_targets_and_report(run):
    doc, json_path, out, plot = run
    targets = {t["id"]: t for t in doc["targets"]}
    # "efficiency" is judged on optimistic points outside the lone sweep (here the
    # proofs sweep's).
    assert set(targets) == {
        "efficiency",
        "openssl_over_gmpy2",
        "node_cpu_per_rpc",
        "lone_p50_over_floor",
        "efficiency_proofs",
        "liar_over_honest",
        "liar_blamed_exactly",
    }
    for t in doc["targets"]:
        assert isinstance(t["pass"], bool) and t["bits"] == 1024 and t["k"] == 3
    assert targets["liar_blamed_exactly"]["pass"] is True
    md = json_path.with_suffix(".md").read_text()
    assert "## Targets (issue 10)" in md and ("PASS" in md or "MISS" in md)
    assert "## A lone signature" in md and "## Sweep: one node lying" in md
    assert "## The nodes' backends side by side" in md
    assert (out / "LATEST.md").read_text().endswith(md)
    if plot:
        # The run above has no concurrency sweep; its points still draw every plot.
        points = [
            dict(p, sweep="concurrency", concurrency=c)
            for c, p in zip(
                (1, 4, 16), [p for p in doc["points"] if p["proofs"] == "on-failure"], strict=False
            )
        ]
        points += [dict(points[0], sweep="k", k=k) for k in (2, 3)]
        points += [dict(points[0], sweep="batch", batch=b) for b in (1, 8)]
        points += [p for p in doc["points"] if p["sweep"] == "backend"]
        written = plots.write_plots(dict(doc, points=points), out / "plots")
        assert [name for name, _ in written] == [
            "plots-throughput.png",
            "plots-latency.png",
            "plots-k.png",
            "plots-batch.png",
            "plots-backend.png",
        ]
        for name, _ in written:
            assert (out / name).stat().st_size > 1000


def test_plan_and_targets_logic():
    full = bench.plan(bench.SWEEPS, quick=False)
    assert {p.sweep for p in full} == set(bench.SWEEPS)
    assert sorted({p.k for p in full if p.sweep == "k"}) == [2, 3, 4, 5]
    assert sorted({p.bits for p in full if p.sweep == "bits"}) == [2048, 3072, 4096]
    assert sorted({p.batch for p in full if p.sweep == "batch"}) == [1, 2, 4, 8, 16, 32, 64]
    assert max(p.concurrency for p in full if p.sweep == "concurrency") == 256
    quick = bench.plan(bench.SWEEPS, quick=True)
    assert len(quick) < len(full)
    # A batching combiner finishes signatures in bursts; the slope sees the true rate.
    bursts = [(0.1 + 0.25 * i + j * 1e-5, 1) for i in range(10) for j in range(64)]
    assert bench.completion_slope(bursts) == pytest.approx(64 / 0.25, rel=0.02)


def test_profile_collapses_samples_and_draws_a_flame_graph(tmp_path):
    """benchmarks.profile's pieces on py-spy's raw format (the sampling itself needs
    py-spy and is not run here): stacks, top frames, a flame graph, this process's
    threads and their CPU."""
    from benchmarks import profile

    raw = tmp_path / "nodes-1.txt"
    raw.write_text(
        "thread (1): MainThread;run (asyncio/runners.py:190);"
        "SignerService.sign (ittc_node/service.py:463);validate (ittc_node/service.py:120) 6\n"
        "thread (1): MainThread;run (asyncio/runners.py:190);"
        "SignerService.sign (ittc_node/service.py:470) 3\n"
        "thread (1): MainThread;run (asyncio/runners.py:190);select (selectors.py:468) 1\n"
    )
    stacks = profile.collapse([raw, tmp_path / "missing.txt"])
    assert sum(stacks.values()) == 10
    top = profile.top_frames(stacks)
    assert top["samples"] == 10
    assert top["self"][0] == ("validate (ittc_node/service.py)", 0.6)
    assert dict(top["inclusive"])["SignerService.sign (ittc_node/service.py)"] == 0.9
    assert "run (asyncio/runners.py)" not in dict(top["inclusive"])  # plumbing left out
    if importlib.util.find_spec("matplotlib") is not None:
        png = tmp_path / "flame.png"
        assert profile.flame_graph(stacks, png, "test")
        assert png.stat().st_size > 1000
    import os

    threads = profile.thread_cpu([("client", os.getpid())], None)
    assert any(name == "client: MainThread" for name, *_ in threads.values())
