"""Resharing benchmark: what epochs cost.

For each key kind (generated from safe primes; split from an ordinary RSA key), in one
process and one run:

* twenty (``--epochs``) refreshes of a 3-of-5 cluster, each checked by the acceptance
  test, with the share size after each;
* the cost of one signature share at epoch 0, after the first reshare, and after the
  last, measured in interleaved rounds; the ratio last/epoch-0 is taken round by round
  (target: at most 1.15);
* the pure compute time of one refresh of five nodes, step by step: the three holders'
  two rounds, the public checks (run by every member and the coordinator: six times),
  each member's assembly and acceptance share, and the acceptance check.

Over the network (``--network N``, default 5): N refreshes of five real node processes
on loopback (mutual TLS, the coordinator of ``ittc reshare run``, approvals given, share
files written and fsynced with the KDF limits of the cached cluster, the commit
delivered to every site), each timed from the coordinator's start to every site's commit
(target: 10 s wall), with a signature from a combiner after each.

Speed is reported here, never asserted in tests.

    python -m benchmarks.reshare [--bits 2048] [--epochs 20] [--repeat 61] [--quick]
                                 [--network 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from benchmarks.micro import (
    Op,
    Progress,
    calibrate,
    fmt_time,
    ittc_build,
    machine_facts,
    measure_interleaved,
    paired,
    summarize,
)
from ittc.scheme import ct, dealer
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.keyshare import KeyShare
from ittc.scheme.reshare import (
    RUN_ID_BYTES,
    ResharePlan,
    acceptance_share,
    assemble_share,
    check_acceptance,
    verify_contributions,
)
from ittc.scheme.reshare.local import deal_round

__all__ = ["SCHEMA", "TARGET_SHARE_RATIO", "main", "run"]

SCHEMA = "ittc.bench.reshare/1"
DEFAULT_OUT = pathlib.Path("benchmarks") / "results"
N_NODES, THRESHOLD = 5, 3
KINDS = ("generated", "split")
#: Share cost after the last epoch over epoch 0, at most.
TARGET_SHARE_RATIO = 1.15
#: The whole run's compute for one 2048-bit five-node refresh, at most (seconds).
TARGET_REFRESH_S = 10.0
#: One five-node refresh over loopback, approvals given: wall time, at most (seconds).
TARGET_NETWORK_S = 10.0


def _make_key(kind: str, bits: int) -> dealer.DealtKey:
    if kind == "generated":
        return dealer.generate(
            bits, N_NODES, THRESHOLD, insecure_allow_small_modulus_for_tests=bits < 2048
        )
    key = rsa.generate_private_key(65537, bits)
    if bits >= 2048:
        return dealer.split(key, N_NODES, THRESHOLD)
    numbers = key.private_numbers()  # dealer.split refuses test-only sizes; same dealing
    return dealer.deal_integer(
        numbers.public_numbers.n, numbers.public_numbers.e, numbers.d, N_NODES, THRESHOLD
    )


def _share_exponent_bits(share: KeyShare) -> int:
    """Bit length of ``2·Δ·s_i`` (sets the exponentiation's cost; nothing secret kept)."""
    return (2 * share.params.delta * share.dangerously_export_secret()).bit_length()


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def refresh_steps(shares: Sequence[KeyShare]) -> tuple[dict[str, float], list[KeyShare]]:
    """One refresh of ``shares``' epoch to the same shape, each step timed on its own."""
    old = shares[0].params
    plan = ResharePlan(
        old, tuple(range(1, old.k + 1)), old.n, old.k, secrets.token_bytes(RUN_ID_BYTES)
    )
    t_holders, (commitments, contributions, sub_shares) = _timed(lambda: deal_round(plan, shares))
    t_verify, outcome = _timed(lambda: verify_contributions(plan, contributions, commitments))
    t_assemble, new = _timed(
        lambda: [assemble_share(outcome, j, sub_shares[j].values()) for j in range(1, plan.n + 1)]
    )
    t_accept_shares, accepted = _timed(lambda: [acceptance_share(outcome, s) for s in new])
    t_accept_check, _ = _timed(lambda: check_acceptance(outcome, accepted))
    steps = {
        "holders_s": t_holders,
        "public_checks_s": t_verify,
        "assemble_s": t_assemble,
        "acceptance_shares_s": t_accept_shares,
        "acceptance_check_s": t_accept_check,
    }
    # Every member and the coordinator run the public checks themselves.
    steps["all_parties_s"] = (
        t_holders + (plan.n + 1) * t_verify + t_assemble + t_accept_shares + t_accept_check
    )
    return steps, new


def bench_kind(
    kind: str, bits: int, epochs: int, rounds: int, sample_ms: float, progress: Progress
) -> dict[str, Any]:
    progress.line(f"{kind} key, {bits} bits: dealing")
    dealt = _make_key(kind, bits)
    shares = list(dealt.shares)
    history: list[dict[str, Any]] = [
        {
            "epoch": 0,
            "share_bits": dealt.params.share_bits,
            "largest_share_bits": max(s.dangerously_export_secret().bit_length() for s in shares),
            "sharing": dealt.params.sharing,
        }
    ]
    at: dict[str, KeyShare] = {"epoch0": shares[0]}
    refreshes: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        steps, shares = refresh_steps(shares)
        refreshes.append(steps)
        p = shares[0].params
        assert p.epoch == epoch and p.key_id == dealt.params.key_id
        history.append(
            {
                "epoch": epoch,
                "share_bits": p.share_bits,
                "largest_share_bits": max(
                    s.dangerously_export_secret().bit_length() for s in shares
                ),
                "sharing": p.sharing,
            }
        )
        if epoch == 1:
            at["epoch1"] = shares[0]
        progress.status(
            f"  epoch {epoch}/{epochs}: share_bits {p.share_bits}, "
            f"refresh {steps['all_parties_s']:.2f} s (all parties)"
        )
    at["last"] = shares[0]
    progress.line(f"  {epochs} epochs done; timing signature shares")

    messages = [
        encode(Scheme.PKCS1V15, "sha256", secrets.token_bytes(32), dealt.params.bits)
        for _ in range(8)
    ]
    ops = []
    for name, share in at.items():
        counter = [0]

        def call(share: KeyShare = share, counter: list[int] = counter) -> object:
            counter[0] += 1
            return share.signature_share(messages[counter[0] % len(messages)])

        ops.append(Op(name, call))
    calibrate(ops, sample_ms / 1e3)
    samples = measure_interleaved(
        ops, rounds, lambda r: progress.status(f"  share timing round {r}/{rounds}")
    )
    ratio = paired(samples["last"], samples["epoch0"], lambda a, b: a / b)
    return {
        "kind": kind,
        "bits": dealt.params.bits,
        "epochs": epochs,
        "history": history,
        "share_exponent_bits": {name: _share_exponent_bits(s) for name, s in at.items()},
        "share_s": {name: summarize(values) for name, values in samples.items()},
        "share_ratio_last_over_epoch0": ratio,
        # Load only ever adds time: the fastest samples are the least disturbed.
        "share_ratio_of_fastest": min(samples["last"]) / min(samples["epoch0"]),
        "share_exponent_ratio": _share_exponent_bits(at["last"])
        / _share_exponent_bits(at["epoch0"]),
        "share_ratio_epoch1_over_epoch0": paired(
            samples["epoch1"], samples["epoch0"], lambda a, b: a / b
        ),
        "refresh_s": {step: summarize([r[step] for r in refreshes]) for step in refreshes[0]},
        "targets": {
            "share_ratio": {
                "limit": TARGET_SHARE_RATIO,
                "value": ratio["median"],
                "pass": ratio["median"] <= TARGET_SHARE_RATIO,
            },
            "refresh_all_parties_s": {
                "limit": TARGET_REFRESH_S,
                "value": statistics.median(r["all_parties_s"] for r in refreshes),
                "pass": statistics.median(r["all_parties_s"] for r in refreshes)
                <= TARGET_REFRESH_S,
            },
        },
    }


def bench_network(
    bits: int,
    runs: int,
    progress: Progress,
    *,
    cache: pathlib.Path,
    root: pathlib.Path | None,
    kdf: str = "cluster",
) -> dict[str, Any]:
    """``runs`` refreshes of a five-node cluster of real processes on loopback. ``kdf``
    "moderate" first re-encrypts every site's share file under the default KDF limits
    (what a ceremony writes), so each member's new share file costs what it costs in
    production; "cluster" keeps the cached cluster's (fast) limits."""
    import asyncio
    import shutil
    import tempfile

    from benchmarks.cluster.target import cached_cluster
    from ittc.combiner import SyncClusterClient
    from ittc.config import ClusterFile
    from ittc.deploy.layout import CeremonyFolder
    from ittc.deploy.localcluster import LocalCluster
    from ittc.deploy.reshare import Coordinator, refresh_plan
    from ittc.deploy.sites import enroll_local_sites
    from ittc.lifecycle import approve
    from ittc.storage import read_passphrase_file, read_site_key

    source = root or cached_cluster(cache, bits, THRESHOLD, N_NODES, progress)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ittc-reshare-bench-"))
    try:
        copy = work / "cluster"
        shutil.copytree(source, copy)
        folder = CeremonyFolder(copy)
        if kdf == "moderate":
            from ittc.storage import KdfLimits, read_share_file, write_share_file

            params = ClusterFile.load(copy).params
            for i in folder.sites():
                path, secret = (
                    folder.etc(i) / "share.enc",
                    read_passphrase_file(folder.passphrase(i)),
                )
                share = read_share_file(path, params, i, secret)
                write_share_file(path, share, secret, kdf=KdfLimits.moderate(), overwrite=True)
        enroll_local_sites(folder)
        keys = {
            i: read_site_key(folder.etc(i) / "site.key", read_passphrase_file(folder.passphrase(i)))
            for i in folder.sites()
        }
        walls: list[float] = []
        with LocalCluster(copy) as nodes:
            nodes.start(timeout=300)
            with SyncClusterClient(copy, deadline=30.0) as client:
                client.sign(b"before")
                for n in range(runs):
                    cluster = ClusterFile.load(copy)
                    plan = refresh_plan(cluster)
                    approvals = [approve(keys[i], plan) for i in (1, 2, 3)]
                    start = time.perf_counter()
                    certificate = asyncio.run(Coordinator(cluster, plan, approvals).run())
                    walls.append(time.perf_counter() - start)
                    client.sign(b"after %d" % n)
                    assert client.client.epoch == certificate.epoch
                    progress.line(
                        f"  network refresh {n + 1}/{runs}: epoch {certificate.epoch} "
                        f"in {walls[-1]:.2f} s wall"
                    )
        wall = summarize(walls)
        return {
            "runs": runs,
            "wall_s": wall,
            "kdf": (
                "the default (moderate: 256 MiB, 3 passes) for every share file"
                if kdf == "moderate"
                else "the cached cluster's share files' (fast; see benchmarks/cluster.py)"
            ),
            "target": {
                "limit": TARGET_NETWORK_S,
                "value": wall["median"],
                "pass": wall["median"] <= TARGET_NETWORK_S,
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [
        f"# Reshare benchmark, {report['bits']} bits, {N_NODES} nodes, k={THRESHOLD}",
        "",
        f"{m['date']} · {m['cpu_model']} ({m['cpus_usable']} usable cores) · "
        f"backend {m['ct_backend']} · ittc {ittc_build(m)} · "
        f"load {m['loadavg_start']}",
        "",
        "## Share cost by epoch (median of interleaved rounds)",
        "",
        "| key | epoch 0 | after 1 reshare | after the last | last / epoch 0 "
        "(median of paired ratios [IQR]) | fastest / fastest | exponent bits ratio | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["kinds"]:
        s = r["share_s"]
        t = r["targets"]["share_ratio"]
        ratio = r["share_ratio_last_over_epoch0"]
        out.append(
            f"| {r['kind']} | {fmt_time(s['epoch0']['median'])} | "
            f"{fmt_time(s['epoch1']['median'])} | {fmt_time(s['last']['median'])} "
            f"(epoch {r['epochs']}) | {ratio['median']:.3f} "
            f"[{ratio['p25']:.3f}, {ratio['p75']:.3f}] | {r['share_ratio_of_fastest']:.3f} | "
            f"{r['share_exponent_ratio']:.3f} | "
            f"≤ {t['limit']} {'PASS' if t['pass'] else 'MISS'} |"
        )
    out += [
        "",
        "Exponent bits of a signature share (`2Δ·s_i`): "
        + "; ".join(
            f"{r['kind']}: " + ", ".join(f"{k} {v}" for k, v in r["share_exponent_bits"].items())
            for r in report["kinds"]
        ),
        "",
        "## Share size by epoch (bits above |N|: bound, largest share)",
        "",
        "| key | " + " | ".join(str(h["epoch"]) for h in report["kinds"][0]["history"]) + " |",
        "|---|" + "---|" * len(report["kinds"][0]["history"]),
    ]
    for r in report["kinds"]:
        cells = [
            f"{h['share_bits'] - r['bits']:+d} / {h['largest_share_bits'] - r['bits']:+d}"
            for h in r["history"]
        ]
        out.append(f"| {r['kind']} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## One refresh of five nodes: pure compute (median over the epochs)",
        "",
        "| key | 3 holders, both rounds | public checks (once) | 5 assemblies | "
        "5 acceptance shares | acceptance check | all parties | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["kinds"]:
        f = r["refresh_s"]
        t = r["targets"]["refresh_all_parties_s"]
        out.append(
            f"| {r['kind']} | {fmt_time(f['holders_s']['median'])} | "
            f"{fmt_time(f['public_checks_s']['median'])} | {fmt_time(f['assemble_s']['median'])} | "
            f"{fmt_time(f['acceptance_shares_s']['median'])} | "
            f"{fmt_time(f['acceptance_check_s']['median'])} | "
            f"{fmt_time(f['all_parties_s']['median'])} | ≤ {t['limit']} s "
            f"{'PASS' if t['pass'] else 'MISS'} |"
        )
    out += [
        "",
        '"All parties" adds every step once, with the public checks counted six times (each '
        "member and the coordinator run them): the compute a refresh costs in total, one "
        "step after another on one core; messages and disks not included.",
        "",
    ]
    network = report.get("network")
    if network:
        w, t = network["wall_s"], network["target"]
        out += [
            "## One refresh of five nodes over loopback (real processes, mutual TLS)",
            "",
            f"Share files' KDF: {network.get('kdf', 'fast')}.",
            "",
            "| refreshes | wall, median [IQR] | fastest | slowest | target |",
            "|---|---|---|---|---|",
            f"| {network['runs']} | {fmt_time(w['median'])} [{fmt_time(w['p25'])}, "
            f"{fmt_time(w['p75'])}] | {fmt_time(w['min'])} | {fmt_time(w['max'])} | "
            f"≤ {t['limit']} s {'PASS' if t['pass'] else 'MISS'} |",
            "",
            "From the coordinator's start to every site's commit: every node checks the "
            "approvals, holders deal, members check everything, store their share (fsynced) "
            "and acknowledge, the coordinator checks and writes the certificate and the new "
            "cluster file, every site commits. Approvals are given (signed beforehand). A "
            "combiner signs after each, in the new epoch.",
            "",
        ]
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reshare", description=__doc__)
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=61, help="interleaved timing rounds")
    parser.add_argument("--sample-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="11 rounds")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--network",
        type=int,
        default=5,
        metavar="N",
        help="refreshes of five real nodes on loopback (0: none)",
    )
    parser.add_argument(
        "--cache",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks") / ".clusters",
        help="where benchmark clusters are kept (benchmarks/cluster.py)",
    )
    parser.add_argument(
        "--network-kdf",
        choices=("cluster", "moderate"),
        default="cluster",
        help="share files' KDF in the network part: the cached cluster's (fast), or the "
        "default a ceremony writes (moderate)",
    )
    # Test-only: a small-key cluster folder to run the network part on.
    parser.add_argument("--test-cluster", type=pathlib.Path, help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    ct.release_gil()
    rounds = 11 if args.quick else args.repeat
    machine = machine_facts()
    kinds = [
        bench_kind(kind, args.bits, args.epochs, rounds, args.sample_ms, progress)
        for kind in args.kinds
    ]
    network = (
        bench_network(
            args.bits,
            args.network,
            progress,
            cache=args.cache,
            root=args.test_cluster,
            kdf=args.network_kdf,
        )
        if args.network > 0
        else None
    )
    machine["loadavg_end"] = list(os.getloadavg())
    return {
        "network": network,
        "schema": SCHEMA,
        "command": " ".join(["python -m benchmarks.reshare", *sys.argv[1:]]),
        "bits": args.bits,
        "nodes": N_NODES,
        "threshold": THRESHOLD,
        "rounds": rounds,
        "machine": machine,
        "kinds": kinds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 1:
        raise SystemExit("--epochs must be at least 1")
    progress = Progress(enabled=not args.no_progress)
    report = run(args, progress)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"reshare-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    base.with_suffix(".md").write_text(markdown)
    print(markdown)
    progress.line(f"wrote {base}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
