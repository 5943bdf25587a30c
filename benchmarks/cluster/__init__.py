"""Throughput and latency of a running cluster under closed-loop load.

One command starts a five-node cluster on loopback (real ``python -m ittc_node``
processes, real mutual TLS; keys cached under ``benchmarks/.clusters/``) or targets a
running one by its cluster file, loads it with ``concurrency`` callers that each sign a
batch of fresh random digests, wait for the signatures and sign again, and measures each
point of the chosen sweeps as a separate run:

- signatures per second; p50/p90/p99/max latency per call; errors by type;
- CPU seconds per signature: this process (the combiner and the load generator, from
  ``getrusage``) and the node processes with their workers (``/proc/<pid>/stat``), what
  the rest of the machine used meanwhile (other people's work on a shared machine), and
  the nodes' CPU per RPC beyond their exponentiations;
- beside every point, in the same run while the cluster is idle (just before and just
  after the point): ``T_share`` under each exponentiation backend (a bare constant-time
  exponentiation with a share-sized exponent: OpenSSL's and gmpy2's), single-key OpenSSL
  signing through ``cryptography`` (one thread and ``cores`` threads), and for points
  with proofs ``T_prove`` and ``T_verify``; from them the compute bound
  ``cores / (k·T_share)`` for the backend the nodes ran, and the efficiency, throughput
  over bound; for a lone signature, its floor (k exponentiations at once plus one audit
  fsync).

    python -m benchmarks.cluster                       # every sweep (about 12 minutes)
    python -m benchmarks.cluster --quick               # every sweep, short points
    python -m benchmarks.cluster --sweep lone backend  # the nodes' backends side by side
    python -m benchmarks.cluster --concurrency 64 --batch 4 --duration 20   # one point
    python -m benchmarks.cluster --cluster DIR        # a running cluster (any site)

Writes ``cluster-<date>.json`` and ``.md`` (and PNG plots, with matplotlib) to
``benchmarks/results`` and copies the report to ``benchmarks/results/LATEST.md``. Speed
is reported, never asserted: the report marks the issue's targets PASS or MISS.

The parts, one idea each: :mod:`.plan` (points and sweeps), :mod:`.target` (the
cluster and its node processes), :mod:`.cpu` (CPU accounting), :mod:`.baseline` (the
single-machine figures and the bounds), :mod:`.load` (the closed loop), :mod:`.run`
(a whole run), :mod:`.targets` (PASS or MISS), :mod:`.report` and :mod:`.plots`, and
:mod:`.cli`.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.cluster.load import completion_slope
from benchmarks.cluster.plan import FAULT_NODE, SWEEPS, PointSpec, plan
from benchmarks.cluster.run import SCHEMA, run

__all__ = ["FAULT_NODE", "SCHEMA", "SWEEPS", "PointSpec", "completion_slope", "main", "plan", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.cluster`` (:mod:`.cli`, imported here when called, so that
    ``python -m benchmarks.cluster.report`` does not import itself first)."""
    from benchmarks.cluster.cli import main as cli_main

    return cli_main(argv)
