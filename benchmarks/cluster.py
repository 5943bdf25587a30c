"""Throughput and latency of a running cluster under closed-loop load.

One command starts a five-node cluster on loopback (real ``python -m ittc_node``
processes, real mutual TLS; keys cached under ``benchmarks/.clusters/``) or targets a
running one by its cluster file, loads it with ``concurrency`` callers that each sign a
batch of fresh random digests, wait for the signatures and sign again, and measures each
point of the chosen sweeps as a separate run:

- signatures per second; p50/p90/p99/max latency per call; errors by type;
- CPU seconds per signature: this process (the combiner and the load generator, from
  ``getrusage``) and the node processes with their workers (``/proc/<pid>/stat``), and
  what the rest of the machine used meanwhile (other people's work on a shared machine);
- beside every point, in the same run while the cluster is idle (just before and just
  after the point): ``T_share`` (bare ``gmpy2.powmod_sec`` with a share-sized exponent),
  single-key OpenSSL signing through ``cryptography`` (one thread and ``cores``
  threads), and for points with proofs ``T_prove`` and ``T_verify``; from them the
  compute bound ``cores / (k·T_share)`` and the efficiency, throughput over bound.

    python -m benchmarks.cluster                       # every sweep (about 10 minutes)
    python -m benchmarks.cluster --quick               # every sweep, short points
    python -m benchmarks.cluster --sweep concurrency batch
    python -m benchmarks.cluster --concurrency 64 --batch 4 --duration 20   # one point
    python -m benchmarks.cluster --cluster DIR        # a running cluster (any site)

Writes ``cluster-<date>.json`` and ``.md`` (and PNG plots, with matplotlib) to
``benchmarks/results`` and copies the report to ``benchmarks/results/LATEST.md``. Speed
is reported, never asserted: the report marks the issue's targets PASS or MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import gc
import json
import logging
import math
import os
import pathlib
import resource
import secrets
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import gmpy2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from benchmarks import micro
from benchmarks.micro import Op, Progress
from ittc import storage
from ittc.combiner import ClientStats, ClusterClient, SignItem
from ittc.config import ClusterFile, NodeConfig, parse_address
from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.deploy.localcluster import LocalCluster, free_loopback_ports
from ittc.errors import InvalidProof
from ittc.scheme import dealer
from ittc.scheme.ct import mpz
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.params import PublicParams
from ittc.scheme.proofs import verify_share

__all__ = ["SCHEMA", "SWEEPS", "PointSpec", "main", "plan", "run"]

SCHEMA = "ittc.bench.cluster/1"
REPO = micro.REPO
DEFAULT_OUT = pathlib.Path("benchmarks") / "results"
DEFAULT_CACHE = REPO / "benchmarks" / ".clusters"
N_NODES = 5
DEFAULT_BITS, DEFAULT_K = 2048, 3
#: The node given a fault in the slow and liar sweeps.
FAULT_NODE = N_NODES

#: Full / quick timing of one point (seconds), and signatures of a lone-signature run.
FULL = {"warmup": 1.0, "duration": 5.0, "lone_count": 300, "rounds": 9}
QUICK = {"warmup": 0.4, "duration": 2.5, "lone_count": 60, "rounds": 5}
#: A measured window lasts until each caller made this many calls on average, but no
#: longer than MAX_STRETCH times the duration.
MIN_ROUNDS, MAX_STRETCH = 4, 4.0
#: A fault sweep's warm-up: long enough for the client to find a liar.
FAULT_WARMUP = {"full": 2.0, "quick": 1.0}
#: The liar's window: long enough to include the client trying the liar again when its
#: first quarantine (5 s) ends.
LIAR_DURATION = {"full": 10.0, "quick": 4.0}

#: Callers in the batch sweep (few, so that big batches still make many rounds).
BATCH_CONCURRENCY = 4
SWEEPS = ("lone", "concurrency", "batch", "k", "bits", "proofs", "mode", "slow", "liar")
#: Sweeps that need local node processes (other keys, or faults injected at start).
LOCAL_ONLY = {"k", "bits", "slow", "liar"}
SWEEP_TITLES = {
    "point": "one point",
    "lone": "a lone signature (concurrency 1, batch 1, idle cluster)",
    "concurrency": "concurrency (batch 1)",
    "batch": "batch size (items per sign_items call)",
    "k": "threshold k (n = 5)",
    "bits": "modulus size",
    "proofs": "proofs always vs optimistic (interleaved)",
    "mode": 'mode "all" vs "exact" (interleaved)',
    "slow": "one node slow (+50 ms), honest runs interleaved",
    "liar": "one node lying (random shares), honest runs interleaved",
}


# -- what to measure ---------------------------------------------------------------------


@dataclass(frozen=True)
class PointSpec:
    """One measured run. ``bits``/``k`` None: the run's main cluster."""

    sweep: str
    concurrency: int
    batch: int
    bits: int | None = None
    k: int | None = None
    mode: str = "exact"
    proofs: str = "on-failure"
    fault: str | None = None
    fault_node: int | None = None
    #: Measure this many signatures instead of a duration.
    count: int | None = None
    warmup: float | None = None
    duration: float | None = None

    def label(self) -> str:
        parts = [f"c={self.concurrency}", f"b={self.batch}"]
        if self.bits is not None:
            parts.append(f"{self.bits} bits")
        if self.k is not None:
            parts.append(f"k={self.k}")
        if self.mode != "exact":
            parts.append(f"mode {self.mode}")
        if self.proofs != "on-failure":
            parts.append(f"proofs {self.proofs}")
        if self.fault:
            parts.append(f"node {self.fault_node} {self.fault}")
        return " ".join(parts)


def plan(
    sweeps: Sequence[str],
    quick: bool,
    *,
    single: PointSpec | None = None,
    lone_count: int | None = None,
) -> list[PointSpec]:
    """The points of the chosen sweeps, in the order they run (main cluster first)."""
    timing = QUICK if quick else FULL
    fault_warmup = FAULT_WARMUP["quick" if quick else "full"]
    points: list[PointSpec] = []
    if single is not None:
        points.append(single)
    if "lone" in sweeps:
        points.append(PointSpec("lone", 1, 1, count=lone_count or int(timing["lone_count"])))
    if "concurrency" in sweeps:
        for c in [1, 4, 16, 64, 256] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]:
            points.append(PointSpec("concurrency", c, 1))
    if "batch" in sweeps:
        for b in [1, 8, 64] if quick else [1, 2, 4, 8, 16, 32, 64]:
            points.append(PointSpec("batch", BATCH_CONCURRENCY, b))
    if "proofs" in sweeps:
        for c, b in [(1, 1), (16, 4)] if quick else [(1, 1), (4, 1), (16, 1), (64, 1), (8, 8)]:
            points.append(PointSpec("proofs", c, b))
            points.append(PointSpec("proofs", c, b, proofs="always"))
    if "mode" in sweeps:
        for c in [1, 64] if quick else [1, 16, 64]:
            points.append(PointSpec("mode", c, 1))
            points.append(PointSpec("mode", c, 1, mode="all"))
    if "slow" in sweeps:
        for c, b in [(1, 1), (64, 1)]:
            points.append(PointSpec("slow", c, b, warmup=fault_warmup))
            points.append(
                PointSpec("slow", c, b, fault="slow:50", fault_node=FAULT_NODE, warmup=fault_warmup)
            )
    if "liar" in sweeps:
        liar_s = LIAR_DURATION["quick" if quick else "full"]
        points.append(PointSpec("liar", 64, 1, warmup=fault_warmup, duration=liar_s))
        points.append(
            PointSpec(
                "liar",
                64,
                1,
                fault="random-share",
                fault_node=FAULT_NODE,
                warmup=fault_warmup,
                duration=liar_s,
            )
        )
    if "k" in sweeps:
        for k in (2, 3, 4, 5):
            for c, b in [(1, 1), (64, 1)] if quick else [(1, 1), (16, 1), (64, 1)]:
                points.append(PointSpec("k", c, b, bits=DEFAULT_BITS, k=k))
    if "bits" in sweeps:
        for bits in (2048, 3072, 4096):
            for c, b in [(1, 1), (16, 1)] if quick else [(1, 1), (4, 1), (16, 1), (8, 4)]:
                points.append(PointSpec("bits", c, b, bits=bits, k=DEFAULT_K))
            points.append(PointSpec("bits", 4, 1, bits=bits, k=DEFAULT_K, proofs="always"))
    return points


# -- clusters ------------------------------------------------------------------------------


def _fault_env(spec: str) -> dict[str, str]:
    from ittc_node.faults import environment

    return environment(spec)


def _port_free(address: str) -> bool:
    host, port = parse_address(address)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _create(folder: pathlib.Path, dealt: dealer.DealtKey) -> pathlib.Path:
    out = folder / "cluster"
    create_cluster(
        out,
        dealt,
        addresses=[f"127.0.0.1:{p}" for p in free_loopback_ports(dealt.params.n)],
        kdf=storage.KdfLimits.fast_for_tests(),
    )
    return out


def cached_cluster(
    cache: pathlib.Path, bits: int, k: int, n: int, progress: Progress, *, insecure: bool = False
) -> pathlib.Path:
    """A benchmark cluster folder for (bits, k, n): made once, then reused.

    Made with ``dealer.generate`` and the fastest share-file KDF (the nodes start in a
    second). If one of its ports is taken now, the folder is written again around the
    same shares with new ports.
    """
    folder = cache / f"rsa{bits}-{k}of{n}"
    root = folder / "cluster"
    # (A cache written before site folders, root/cluster.toml, is made anew.)
    if (root / "combiner" / "cluster.toml").exists():
        cluster = ClusterFile.load(root)
        if all(_port_free(entry.address) for entry in cluster.nodes):
            return root
        progress.line(f"  {folder.name}: a port is taken; rewriting its folder with new ports")
        shares = []
        sites = CeremonyFolder(root)
        for entry in cluster.nodes:
            config = NodeConfig.load(sites.node_config(entry.index))
            passphrase = storage.read_passphrase_file(sites.passphrase(entry.index))
            shares.append(
                storage.read_share_file(config.share_file, cluster.params, entry.index, passphrase)
            )
        old = folder / "cluster.old"
        shutil.rmtree(old, ignore_errors=True)
        root.rename(old)
        try:
            _create(folder, dealer.DealtKey(cluster.params, tuple(shares)))
        except BaseException:
            old.rename(root)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return root
    progress.line(
        f"  generating a {bits}-bit key for a {k}-of-{n} benchmark cluster (cached in {folder}) ..."
    )
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    start = time.monotonic()
    dealt = dealer.generate(bits, n=n, k=k, insecure_allow_small_modulus_for_tests=insecure)
    shutil.rmtree(root, ignore_errors=True)
    _create(folder, dealt)
    progress.line(f"  key and cluster folder made in {time.monotonic() - start:.1f} s")
    return root


class Target:
    """The cluster being measured: its file and, for local ones, its node processes."""

    def __init__(self, cluster: ClusterFile, local: LocalCluster | None, *, cores: int) -> None:
        self.cluster = cluster
        self.local = local
        self.cores = cores
        self.faults: dict[int, str] = {}

    @property
    def params(self) -> PublicParams:
        return self.cluster.params

    def node_groups(self) -> list[int] | None:
        """Process group ids of the node processes (each node leads its own group)."""
        if self.local is None:
            return None
        pids = [self.local.pid(i) for i in self.local.indices]
        return [p for p in pids if p is not None]

    def set_fault(self, index: int, spec: str | None) -> None:
        """Restart node ``index`` with test fault ``spec`` (or none) if it differs."""
        if self.faults.get(index) == spec:
            return
        if self.local is None:
            raise RuntimeError("faults need local node processes")
        self.local.terminate(index)
        self.local.start([index], env=_fault_env(spec) if spec else None, timeout=60)
        if spec:
            self.faults[index] = spec
        else:
            self.faults.pop(index, None)

    def clear_faults(self) -> None:
        for index in list(self.faults):
            self.set_fault(index, None)

    def close(self) -> None:
        if self.local is not None:
            self.local.stop()


def start_local(
    root: pathlib.Path, log_dir: pathlib.Path, cores: int, progress: Progress
) -> Target:
    """Start every node of the cluster folder ``root`` and wait until all are SERVING."""
    cluster = ClusterFile.load(root)
    for entry in cluster.nodes:  # a benchmark cluster's audit log need not grow forever
        config = NodeConfig.load(CeremonyFolder(root).node_config(entry.index))
        if config.audit_log.exists() and config.audit_log.stat().st_size > 64 << 20:
            config.audit_log.unlink()
    local = LocalCluster(cluster, log_dir=log_dir)
    start = time.monotonic()
    try:
        local.start(timeout=120)
    except BaseException:
        local.stop()
        raise
    p = cluster.params
    progress.line(
        f"  started {p.n} nodes ({p.bits}-bit, k={p.k}) in {time.monotonic() - start:.1f} s"
    )
    return Target(cluster, local, cores=cores)


# -- CPU accounting ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def node_cpu_seconds(groups: Sequence[int]) -> float:
    """CPU time (user + system) of every live process in the given process groups, plus
    what their leaders' reaped children used."""
    wanted = set(groups)
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None or int(fields[2]) not in wanted:  # field 5: pgrp
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if int(entry.name) in wanted:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def machine_busy_seconds() -> float | None:
    """CPU time the whole machine spent busy (all cores), from /proc/stat."""
    try:
        first = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _TICK


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMark:
    wall: float
    client: float
    nodes: float | None
    machine: float | None

    @classmethod
    def now(cls, groups: Sequence[int] | None, *, nodes_first: bool) -> CpuMark:
        # The /proc scan costs this process CPU: do it outside the client's window.
        nodes = node_cpu_seconds(groups) if groups is not None and nodes_first else None
        machine = machine_busy_seconds()
        client = client_cpu_seconds()
        wall = time.perf_counter()
        if groups is not None and not nodes_first:
            nodes = node_cpu_seconds(groups)
        return cls(wall, client, nodes, machine)


# -- baselines measured beside each point ---------------------------------------------------


def share_exponent_bits(params: PublicParams) -> int:
    """Bit length of ``2·Δ·s_i``: a Shoup share lies below ``m = p'q'`` (about ``N/4``);
    an integer share below ``2^share_bits``."""
    secret_bits = params.share_bits - 2 if params.sharing == "shoup" else params.share_bits - 1
    return secret_bits + (2 * params.delta).bit_length()


class Baseline:
    """The single-machine figures the cluster is compared with, for one key size.

    ``T_share`` is a bare ``gmpy2.powmod_sec`` with a random exponent of a share's
    length (what a node's share costs, see benchmarks/micro.py). Proof costs use a share
    with a random secret: it costs what a real one does, and its proofs (which cannot
    verify against the key's ``v_i``) are verified to the end all the same.
    """

    POOL = 8

    def __init__(self, params: PublicParams, cores: int) -> None:
        self.params = params
        self.cores = cores
        self.exponent_bits = share_exponent_bits(params)
        self._n = mpz(params.modulus)
        self._exp = micro._random_exponent(self.exponent_bits)
        digests = [secrets.token_bytes(32) for _ in range(self.POOL)]
        self._digests = digests
        self._xs = [encode(Scheme.PKCS1V15, "sha256", d, params.bits) for d in digests]
        self._xms = [mpz(x) for x in self._xs]
        secret_bits = self.exponent_bits - (2 * params.delta).bit_length()
        self._share = KeyShare(
            params, 1, secrets.randbits(secret_bits - 1) | (1 << (secret_bits - 2))
        )
        self._proved = [self._share.signature_share(x, proof=True) for x in self._xs]
        self._key = rsa.generate_private_key(65537, params.bits)
        self._i = 0

    def _next(self) -> int:
        self._i = (self._i + 1) % self.POOL
        return self._i

    def _verify(self) -> None:
        i = self._next()
        try:
            verify_share(self.params, self._xs[i], self._proved[i])
        except InvalidProof:
            pass  # expected: the proving share is not the key's

    def ops(self, proofs: bool) -> list[Op]:
        n, e = self._n, self._exp
        sha = hashes.SHA256()
        pkcs = padding.PKCS1v15()
        prehashed = Prehashed(sha)
        ops = [
            Op("t_share", lambda: gmpy2.powmod_sec(self._xms[self._next()], e, n)),
            Op(
                "openssl_sign", lambda: self._key.sign(self._digests[self._next()], pkcs, prehashed)
            ),
        ]
        if proofs:
            ops += [
                Op(
                    "t_share_proof",
                    lambda: self._share.signature_share(self._xs[self._next()], proof=True),
                ),
                Op("t_verify", self._verify),
            ]
        return ops

    def measure(self, rounds: int, proofs: bool) -> dict[str, list[float]]:
        """Seconds per call of each operation over ``rounds`` interleaved rounds: CPU time
        of this thread (``<name>``; what the bound needs, and blind to other processes
        taking the core away) and wall time (``<name>_wall``)."""
        ops = self.ops(proofs)
        micro.calibrate(ops, 0.002)
        samples = measure_cpu_interleaved(ops, rounds)
        samples["openssl_threads_per_s"] = [self.openssl_rate(self.cores, 0.15)]
        return samples

    def openssl_rate(self, threads: int, seconds: float) -> float:
        """Signatures per second of single-key OpenSSL with ``threads`` threads at once."""
        sha = hashes.SHA256()
        pkcs = padding.PKCS1v15()
        key, digests = self._key, self._digests
        stop = time.perf_counter() + seconds
        barrier = threading.Barrier(threads)

        def work() -> int:
            barrier.wait()
            done = 0
            while time.perf_counter() < stop:
                key.sign(digests[done % self.POOL], pkcs, Prehashed(sha))
                done += 1
            return done

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(lambda _: work(), range(threads)))
        return total / (time.perf_counter() - start)


def measure_cpu_interleaved(ops: Sequence[Op], rounds: int) -> dict[str, list[float]]:
    """Like :func:`benchmarks.micro.measure_interleaved` (same rotation, garbage
    collector between rounds only), timing each sample in thread CPU time and wall time."""
    samples: dict[str, list[float]] = {}
    for op in ops:
        samples[op.name] = []
        samples[op.name + "_wall"] = []
    ops = list(ops)
    enabled = gc.isenabled()
    try:
        for r in range(rounds):
            gc.collect()
            gc.disable()
            shift = r % len(ops)
            for op in ops[shift:] + ops[:shift]:
                call, count = op.call, op.inner
                wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
                for _ in range(count):
                    call()
                cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
                samples[op.name].append(cpu / count / 1e9)
                samples[op.name + "_wall"].append(wall / count / 1e9)
            if enabled:
                gc.enable()
    finally:
        if enabled:
            gc.enable()
    return samples


def _makespan_worker(modulus: int, exponent: int, go: Any, done: Any, out: Any) -> None:
    """One of k processes that each make one share-sized powmod_sec when told to."""
    n, e = mpz(modulus), mpz(exponent)
    x = mpz(secrets.randbelow(modulus - 2) + 2)
    while True:
        go.wait()
        if done.is_set():
            return
        gmpy2.powmod_sec(x, e, n)
        out.put(time.perf_counter())
        while go.is_set() and not done.is_set():
            time.sleep(0.0002)


def parallel_makespan(
    params: PublicParams, exponent_bits: int, processes: int, rounds: int
) -> list[float]:
    """Seconds from "go" until ``processes`` processes (idle until then) have each made
    one share-sized ``powmod_sec``: the compute floor of a lone signature, ``k`` nodes
    computing their shares at once, on this machine's scheduler."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    go, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    exponent = int(micro._random_exponent(exponent_bits))
    workers = [
        ctx.Process(
            target=_makespan_worker, args=(params.modulus, exponent, go, done, out), daemon=True
        )
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    spans: list[float] = []
    try:
        time.sleep(0.3)
        for r in range(rounds + 2):
            start = time.perf_counter()
            go.set()
            ends = [out.get(timeout=30) for _ in workers]
            go.clear()
            if r >= 2:
                spans.append(max(ends) - start)
            time.sleep(0.02)  # idle, as between a lone caller's signatures
    finally:
        done.set()
        go.set()
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
    return spans


def bound_per_s(
    cores: int,
    k: int,
    t_share: float,
    proofs: bool,
    t_share_proof: float | None = None,
    t_verify: float | None = None,
) -> float:
    """``cores / (k·T_share)``; with proofs ``cores / (k·(T_share + T_prove) + k·T_verify)``
    where ``T_share + T_prove`` is a share with its proof (fresh nonce)."""
    if not proofs:
        return cores / (k * t_share)
    assert t_share_proof is not None and t_verify is not None
    return cores / (k * t_share_proof + k * t_verify)


# -- one measured run ------------------------------------------------------------------------


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
                    or elapsed >= limit
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
                    await asyncio.wait_for(enough.wait(), min(0.1, max(limit - elapsed, 0.001)))
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


def _available_efficiency(result: dict[str, Any], bound: float, cores: int) -> float | None:
    others = result["cpu"]["others_s"]
    window = result["window_s"]
    if others is None or window <= 0:
        return None
    available = max(cores - float(others) / float(window), 0.05 * cores)
    return float(result["throughput_per_s"]) / (bound * available / cores)


def others_busy(seconds: float = 0.5) -> float | None:
    """Share of all cores busy over ``seconds`` while our cluster is idle: other work."""
    start = machine_busy_seconds()
    t0 = time.perf_counter()
    time.sleep(seconds)
    end = machine_busy_seconds()
    if start is None or end is None:
        return None
    return (end - start) / ((time.perf_counter() - t0) * _cores())


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


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


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
        for index in target.local.indices:
            target.set_fault(index, spec.fault if index == spec.fault_node else None)
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
    t_share = _median(samples["t_share"])
    base: dict[str, Any] = {
        "t_share_s": t_share,
        "t_share_wall_s": _median(samples["t_share_wall"]),
        "t_share_samples": len(samples["t_share"]),
        "share_exponent_bits": baseline.exponent_bits,
        "openssl_sign_s": _median(samples["openssl_sign"]),
        "openssl_one_thread_per_s": 1.0 / _median(samples["openssl_sign"]),
        "openssl_threads_per_s": _median(samples["openssl_threads_per_s"]),
        "openssl_threads": target.cores,
    }
    if proofs:
        base["t_share_proof_s"] = _median(samples["t_share_proof"])
        base["t_prove_s"] = base["t_share_proof_s"] - t_share
        base["t_verify_s"] = _median(samples["t_verify"])
        base["t_share_proof_wall_s"] = _median(samples["t_share_proof_wall"])
        base["t_verify_wall_s"] = _median(samples["t_verify_wall"])
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
        "loadavg": [load_before, os.getloadavg()[0]],
        "quiet_wait": quiet,
    }
    if spec.sweep == "lone":
        spans = parallel_makespan(params, baseline.exponent_bits, k, rounds * 4)
        base["k_parallel_makespan_s"] = _median(spans)
        base["k_parallel_makespan_rounds"] = len(spans)
        record["latency_p50_over_makespan"] = (
            lat["p50"] / base["k_parallel_makespan_s"] if lat["p50"] else None
        )
    ideal = record["ideal_cpu_per_signature_s"]
    cpu = result["cpu"]
    record["cpu"]["total_over_ideal"] = (
        cpu["total_per_signature_s"] / ideal if cpu["total_per_signature_s"] else None
    )
    return record


# -- targets ---------------------------------------------------------------------------------

#: (id, description, comparison, limit)
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    (
        "efficiency",
        "optimistic efficiency (throughput / cores÷(k·T_share)) at the best concurrency and batch",
        ">=",
        0.85,
    ),
    (
        "efficiency_proofs",
        "proofs always: throughput / its own bound "
        "cores÷(k·(T_share+T_prove)+k·T_verify), best point",
        ">=",
        0.85,
    ),
    (
        "liar_over_honest",
        "one lying node: throughput once it is found / honest throughput",
        ">=",
        0.5,
    ),
    (
        "liar_blamed_exactly",
        "one lying node: nodes the client blamed (ClientStats.blamed)",
        "==",
        0.0,
    ),
    ("lone_p50_over_t_share", "a lone signature: p50 latency / T_share", "<=", 2.2),
)


def _headline(points: list[dict[str, Any]]) -> tuple[int, int]:
    """The (bits, k) the targets are about: 2048/3 when measured, else the main cluster."""
    keys = [(p["bits"], p["k"]) for p in points]
    return (DEFAULT_BITS, DEFAULT_K) if (DEFAULT_BITS, DEFAULT_K) in keys else keys[0]


def evaluate_targets(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not points:
        return []
    bits, k = _headline(points)
    here = [p for p in points if p["bits"] == bits and p["k"] == k and p["fault"] is None]
    out: list[dict[str, Any]] = []

    def add(ident: str, value: float | None, passed: bool, note: str, shown: str) -> None:
        _, description, comparison, limit = next(t for t in TARGETS if t[0] == ident)
        out.append(
            {
                "id": ident,
                "description": description,
                "comparison": comparison,
                "limit": limit,
                "value": value,
                "pass": bool(passed),
                "note": note,
                "shown": shown,
                "bits": bits,
                "k": k,
            }
        )

    def best(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
        good = [p for p in candidates if p["signatures"] > 0]
        return max(good, key=lambda p: p["efficiency"]) if good else None

    optimistic = best(
        [
            p
            for p in here
            if p["proofs"] == "on-failure"
            and p["mode"] == "exact"
            and p["sweep"] not in ("liar", "slow", "lone")
        ]
    )
    if optimistic is not None:
        add(
            "efficiency",
            optimistic["efficiency"],
            optimistic["efficiency"] >= 0.85,
            f"{optimistic['throughput_per_s']:.1f} sig/s vs bound "
            f"{optimistic['bound_per_s']:.1f} at {optimistic['label']} "
            f"({optimistic['sweep']} sweep){_left(optimistic)}",
            f"{optimistic['efficiency']:.3f}",
        )
    proofs = best([p for p in here if p["proofs"] == "always" and p["mode"] == "exact"])
    if proofs is not None:
        add(
            "efficiency_proofs",
            proofs["efficiency"],
            proofs["efficiency"] >= 0.85,
            f"{proofs['throughput_per_s']:.1f} sig/s vs bound {proofs['bound_per_s']:.1f} "
            f"at {proofs['label']}{_left(proofs)}",
            f"{proofs['efficiency']:.3f}",
        )
    liars = [p for p in points if p["sweep"] == "liar" and p["bits"] == bits and p["k"] == k]
    for liar in (p for p in liars if p["fault"]):
        honest = _partner(points, liar)
        if honest is not None and honest["throughput_per_s"] > 0:
            ratio = liar["throughput_per_s"] / honest["throughput_per_s"]
            add(
                "liar_over_honest",
                ratio,
                ratio >= 0.5,
                f"{liar['throughput_per_s']:.1f} vs {honest['throughput_per_s']:.1f} sig/s "
                f"at {honest['label']}, measured {liar['window_s']:.1f} s from "
                f"{liar['warmup_s']:.1f} s after the start (liar blamed at "
                f"{liar['warmup_until_blamed_s'] or float('nan'):.1f} s)",
                f"{ratio:.3f}",
            )
        blamed = sorted(int(i) for i in liar["client_stats_run"]["blamed"])
        wanted = [liar["fault_node"]]
        add(
            "liar_blamed_exactly",
            float(len(set(blamed) ^ set(wanted))),
            blamed == wanted,
            f"blamed {blamed or 'nobody'} (counts {liar['client_stats_run']['blamed']}), "
            f"liar was node {liar['fault_node']}",
            f"{blamed or 'nobody'}, liar {wanted}",
        )
    lone = [p for p in here if p["sweep"] == "lone" and p["latency_s"]["p50"]]
    if lone:
        p = lone[0]
        ratio = p["latency_p50_over_t_share"]
        add(
            "lone_p50_over_t_share",
            ratio,
            ratio <= 2.2,
            f"p50 {p['latency_s']['p50'] * 1e3:.2f} ms, T_share "
            f"{p['baseline']['t_share_s'] * 1e3:.2f} ms, {p['latency_s']['n']} signatures",
            f"{ratio:.2f}",
        )
    return out


def _left(point: dict[str, Any]) -> str:
    share = point["cpu"]["others_utilization"]
    if share is None or point["efficiency_available"] is None:
        return ""
    return (
        f"; others used {share:.0%} of the CPU meanwhile, "
        f"{point['efficiency_available']:.3f} on the cores left"
    )


def _partner(points: list[dict[str, Any]], point: dict[str, Any]) -> dict[str, Any] | None:
    """The honest run measured next to a faulty one (same sweep and configuration)."""
    for p in points:
        if (
            p is not point
            and p["sweep"] == point["sweep"]
            and p["fault"] is None
            and p["bits"] == point["bits"]
            and p["k"] == point["k"]
            and p["concurrency"] == point["concurrency"]
            and p["batch"] == point["batch"]
            and p["mode"] == point["mode"]
            and p["proofs"] == point["proofs"]
        ):
            return p
    return None


# -- the run ---------------------------------------------------------------------------------


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
        )
    sweeps = list(args.sweep or ([] if single else SWEEPS))
    skipped = []
    if external or test_cluster:
        for name in [s for s in sweeps if s in LOCAL_ONLY and (external or s in ("k", "bits"))]:
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


# -- command line ----------------------------------------------------------------------------


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
    args.single = (
        any(
            getattr(args, name) is not None
            for name in ("concurrency", "batch", "bits", "k", "mode", "proofs", "fault")
        )
        and not args.sweep
    )
    if args.sweep and any(
        getattr(args, name) is not None
        for name in ("concurrency", "batch", "bits", "k", "mode", "proofs", "fault")
    ):
        parser.error(
            "point options (--concurrency, --batch, ...) choose one point; not with --sweep"
        )
    if args.cluster is not None and args.test_cluster is not None:
        parser.error("--cluster or a test cluster, not both")
    if args.cluster is not None and args.fault:
        parser.error("--fault needs local node processes, not --cluster")
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

    from benchmarks import report as reporting

    base = out / f"cluster-{stamp}"
    if not args.no_plot:
        report["plots"] = reporting.write_plots(report, base)
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


if __name__ == "__main__":
    sys.exit(main())
