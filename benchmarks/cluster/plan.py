"""What the cluster benchmark measures: its points, sweeps and their timing.

A point is one closed-loop run against one cluster configuration (key size, ``k``, the
nodes' exponentiation backend, faults); a sweep is a list of points that vary one thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BACKENDS",
    "BATCH_CONCURRENCY",
    "DEFAULT_BITS",
    "DEFAULT_K",
    "FAULT_NODE",
    "FAULT_WARMUP",
    "FULL",
    "LIAR_DURATION",
    "LOCAL_ONLY",
    "MAX_STRETCH",
    "MIN_ROUNDS",
    "N_NODES",
    "SWEEPS",
    "SWEEP_TITLES",
    "QUICK",
    "PointSpec",
    "plan",
]

N_NODES = 5
DEFAULT_BITS, DEFAULT_K = 2048, 3
#: The nodes' exponentiation backends the "backend" sweep compares (node config
#: ``[node] backend``); every other point runs the nodes' default, ``auto``.
BACKENDS = ("openssl", "gmpy2")
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
SWEEPS = (
    "lone",
    "backend",
    "concurrency",
    "batch",
    "k",
    "bits",
    "proofs",
    "mode",
    "slow",
    "liar",
)
#: Sweeps that need local node processes (other keys, or faults injected at start).
LOCAL_ONLY = {"k", "bits", "slow", "liar", "backend"}
SWEEP_TITLES = {
    "point": "one point",
    "lone": "a lone signature (concurrency 1, batch 1, idle cluster)",
    "backend": "the nodes' exponentiation backend, openssl vs gmpy2 (interleaved)",
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
    #: The nodes' ``[node] backend``; None: their default (``auto``).
    backend: str | None = None
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
        if self.backend is not None:
            parts.append(f"backend {self.backend}")
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
    if "backend" in sweeps:
        # Throughput at its best (many callers, batches) and a lone signature's latency,
        # each backend in turn (the nodes restart in between).
        for c, b in [(1, 1), (16, 4)] if quick else [(1, 1), (64, 1), (4, 64)]:
            for backend in BACKENDS:
                points.append(PointSpec("backend", c, b, backend=backend))
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
