"""Signing while one node lies and then dodges the proof that would convict it.

    python -m benchmarks.dodge                       # 2048-bit keys, 60 signatures a case
    python -m benchmarks.dodge --bits 1024 --count 30

For a key generated from safe primes (sound proofs) and for an ordinary RSA key split
over the integers (no sound proofs), it runs five node processes over mutual TLS on
loopback (3-of-5) and signs ``--count`` messages one after another with the README's
``deadline=5.0`` (node timeout 5 s), first with every node honest, then with node 3
running each ``dodge`` test fault: random shares, and when asked to prove one, a refusal
(``refuse``), no answer until the deadline (``stall``) or its honest, proven share
(``honest``). It prints, per case, how many signatures came out and verified, the latency
p50 / p99 / max, and whom the client blamed or suspected. Nothing is asserted: the cases
are compared within one run, against the honest case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from ittc_node.faults import environment

from ittc.combiner import ClusterClient
from ittc.deploy.ceremony import create_cluster
from ittc.deploy.localcluster import LocalCluster, free_loopback_ports
from ittc.errors import IttcError
from ittc.scheme import dealer
from ittc.storage import KdfLimits

LIAR = 3
CASES = ("honest", "dodge:refuse", "dodge:stall", "dodge:honest")
RESULTS = pathlib.Path("benchmarks") / "results"


def _dealt(kind: str, bits: int) -> dealer.DealtKey:
    if kind == "generated":
        return dealer.generate(bits, 5, 3, insecure_allow_small_modulus_for_tests=bits < 2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if bits >= 2048:
        return dealer.split(key, 5, 3)
    numbers = key.private_numbers()
    return dealer.deal_integer(numbers.public_numbers.n, 65537, numbers.d, 5, 3)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sign_all(local: LocalCluster, count: int, tag: str) -> dict[str, Any]:
    public = local.cluster.params.public_key()
    latencies: list[float] = []
    ok = failed = 0
    async with ClusterClient(local.cluster, deadline=5.0) as client:
        for i in range(count):
            message = f"{tag} {i}".encode()
            started = time.monotonic()
            try:
                signature = await client.sign(message)
                public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
                ok += 1
            except IttcError:
                failed += 1
            latencies.append(time.monotonic() - started)
        stats = client.stats
    return {
        "signed": ok,
        "failed": failed,
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies), 1),
        "blamed": dict(stats.blamed),
        "suspected": dict(stats.suspected),
        "proof_rounds": stats.proof_rounds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"bits": args.bits, "count": args.count, "liar": LIAR, "cases": []}
    for kind in ("generated", "split"):
        print(f"{kind} {args.bits}-bit key: dealing...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="ittc-dodge-") as tmp:
            addresses = [f"127.0.0.1:{p}" for p in free_loopback_ports(5)]
            root = pathlib.Path(tmp) / "cluster"
            create_cluster(
                root,
                _dealt(kind, args.bits),
                addresses=addresses,
                listen=addresses,
                kdf=KdfLimits.fast_for_tests(),
            )
            with LocalCluster(root) as local:
                local.start(timeout=120)
                for case in CASES:
                    local.terminate(LIAR)
                    env = environment(case) if case != "honest" else None
                    local.start([LIAR], env=env, timeout=60)
                    print(f"  {case}...", file=sys.stderr, flush=True)
                    result = asyncio.run(_sign_all(local, args.count, f"{kind} {case}"))
                    out["cases"].append({"key": kind, "case": case, **result})
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# One liar that dodges its proof ({doc['bits']}-bit keys, 3-of-5, node {doc['liar']})",
        "",
        f"`python -m benchmarks.dodge --bits {doc['bits']} --count {doc['count']}`: "
        "signatures one after another, `deadline=5.0`, node timeout 5 s.",
        "",
        "| key | node 3 | signed | p50 ms | p99 ms | max ms | blamed | suspected |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for c in doc["cases"]:
        lines.append(
            f"| {c['key']} | {c['case']} | {c['signed']}/{c['signed'] + c['failed']} | "
            f"{c['p50_ms']} | {c['p99_ms']} | {c['max_ms']} | {c['blamed'] or '-'} | "
            f"{c['suspected'] or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dodge", description=__doc__)
    parser.add_argument("--bits", type=int, default=2048, choices=[1024, 2048, 3072])
    parser.add_argument("--count", type=int, default=60, help="signatures per case (60)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=RESULTS,
        help="directory for dodge-<date>.json/.md (benchmarks/results)",
    )
    args = parser.parse_args(argv)
    doc = run(args)
    text = markdown(doc)
    print(text)
    if not args.no_save:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"dodge-{stamp}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / f"dodge-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
