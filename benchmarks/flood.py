"""An allowed client's latency while a certificate from the cluster CA that is *not*
allowed floods a node with refused requests.

    python -m benchmarks.flood                    # 2048-bit key, 4 flooders, 10 s each phase
    python -m benchmarks.flood --flooders 8 --seconds 20 --payload-kib 1024

It makes a throwaway 2-of-3 cluster (an ordinary 2048-bit RSA key split by
``dealer.split``, the fast share-file KDF), starts its three nodes as real processes
over mutual TLS on loopback, issues a second client certificate from the cluster CA
under a name no node allows (``flood-probe``), and then measures, on node 1:

1. **quiet**: one allowed client sends one-item ``Sign`` requests at ``--rate`` per
   second, each on time whatever happened to the ones before (open loop);
2. **flood**: the same, while ``--flooders`` processes (each with its own connection,
   under the not-allowed name) send ``Sign`` requests of ``--payload-kib`` KiB of empty
   items back to back, each refused with PERMISSION_DENIED.

It prints the allowed client's p50 / p90 / max latency in each phase, how many refused
requests the flooders got through, and how much the node's audit log grew. The flooders
run in their own processes so that they do not slow the measuring client. Nothing is
asserted: the figures are compared within one run (quiet vs. flood on the same machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pathlib
import secrets
import statistics
import sys
import tempfile
import time
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import rsa

from ittc.config import ClusterFile, NodeConfig
from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.deploy.localcluster import LocalCluster, free_loopback_ports
from ittc.scheme import dealer
from ittc.storage import KdfLimits, pki
from ittc.wire import tls
from ittc.wire.v1 import signer_pb2 as pb

FLOOD_NAME = "flood-probe"


def make_cluster(folder: pathlib.Path, bits: int) -> pathlib.Path:
    """A 2-of-3 cluster folder for a split ``bits``-bit key; the flooder's identity."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    dealt = dealer.split(key, 3, 2)
    out = folder / "cluster"
    create_cluster(
        out,
        dealt,
        addresses=[f"127.0.0.1:{p}" for p in free_loopback_ports(3)],
        kdf=KdfLimits.fast_for_tests(),
    )
    ca_cert = pki.load_cert(out / "ca" / "ca.pem")
    ca_key = pki.load_private_key(out / "ca" / "ca.key")
    cert, private = pki.issue_client_cert(ca_cert, ca_key, FLOOD_NAME)
    pki.write_cert(folder / f"{FLOOD_NAME}.pem", cert)
    pki.write_private_key(folder / f"{FLOOD_NAME}.key", private)
    return out


def empty_items_request(payload_bytes: int) -> bytes:
    """A SignRequest of about ``payload_bytes`` bytes: a valid header and empty items."""
    header = pb.SignRequest(
        request_id=secrets.token_urlsafe(18), timestamp_ms=int(time.time() * 1000), key_id="00" * 32
    )
    one = pb.SignRequest(items=[pb.SignItem()]).SerializeToString()  # tag, length 0
    count = max(1, (payload_bytes - header.ByteSize()) // len(one))
    return header.SerializeToString() + one * count


def _channel(address: str, tls_name: str, ca: str, cert: str, key: str) -> grpc.Channel:
    creds = tls.channel_credentials(pathlib.Path(cert), pathlib.Path(key), pathlib.Path(ca))
    return grpc.secure_channel(address, creds, options=tls.channel_options(tls_name, 4 << 20))


def _flood(
    address: str,
    tls_name: str,
    ca: str,
    cert: str,
    key: str,
    payload_bytes: int,
    go: Any,
    stop: Any,
    sent: Any,
) -> None:
    """One flooder process: refused requests back to back until ``stop`` is set."""
    data = empty_items_request(payload_bytes)
    channel = _channel(address, tls_name, ca, cert, key)
    sign = channel.unary_unary(
        "/ittc.v1.Signer/Sign", request_serializer=None, response_deserializer=None
    )
    go.wait()
    count = 0
    while not stop.is_set():
        try:
            sign(data, timeout=30)
        except grpc.RpcError:
            pass
        count += 1
    with sent.get_lock():
        sent.value += count
    channel.close()


def measure(sign: Any, params: Any, seconds: float, rate: float) -> list[float]:
    """Latencies (ms) of one-item Sign requests sent at ``rate`` per second for
    ``seconds``, each on time whether or not the ones before it were answered (open loop:
    the samples are spread evenly over time, so a stalled node shows in the median)."""
    digest = bytes(32)
    pending = []
    start = time.monotonic()
    for n in range(max(1, int(seconds * rate))):
        due = start + n / rate
        time.sleep(max(0.0, due - time.monotonic()))
        request = pb.SignRequest(
            request_id=secrets.token_urlsafe(18),
            timestamp_ms=int(time.time() * 1000),
            key_id=params.key_id,
            epoch=params.epoch,
            epoch_id=params.epoch_id,
            items=[pb.SignItem(padding=pb.PADDING_PKCS1V15, hash=pb.HASH_SHA256, digest=digest)],
        )
        sent = time.perf_counter()
        future = sign.future(request, timeout=60)
        done: list[float] = []
        future.add_done_callback(
            lambda _f, sent=sent, done=done: done.append((time.perf_counter() - sent) * 1000)
        )
        pending.append((future, done))
    latencies = []
    for future, done in pending:
        future.result()  # raises if the node refused or timed out: the run is void
        while not done:
            time.sleep(0.001)
        latencies.append(done[0])
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ittc-flood-") as tmp:
        folder = pathlib.Path(tmp)
        print(
            f"making a 2-of-3 cluster for a {args.bits}-bit key in {folder} ...",
            file=sys.stderr,
            flush=True,
        )
        root = make_cluster(folder, args.bits)
        cluster = ClusterFile.load(root)
        entry = cluster.node(1)
        audit_log = NodeConfig.load(CeremonyFolder(root).node_config(1)).audit_log
        assert cluster.client_cert is not None and cluster.client_key is not None
        with LocalCluster(cluster, log_dir=folder / "logs") as local:
            local.start(timeout=120)
            channel = _channel(
                entry.address,
                entry.tls_name,
                str(cluster.ca),
                str(cluster.client_cert),
                str(cluster.client_key),
            )
            stub_sign = channel.unary_unary(
                "/ittc.v1.Signer/Sign",
                request_serializer=pb.SignRequest.SerializeToString,
                response_deserializer=pb.SignResponse.FromString,
            )
            measure(stub_sign, cluster.params, 1.0, args.rate)  # warm up
            print("quiet phase ...", file=sys.stderr, flush=True)
            quiet = measure(stub_sign, cluster.params, args.seconds, args.rate)

            ctx = multiprocessing.get_context("spawn")
            go, stop, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
            flooders = [
                ctx.Process(
                    target=_flood,
                    args=(
                        entry.address,
                        entry.tls_name,
                        str(cluster.ca),
                        str(folder / f"{FLOOD_NAME}.pem"),
                        str(folder / f"{FLOOD_NAME}.key"),
                        args.payload_kib * 1024,
                        go,
                        stop,
                        sent,
                    ),
                )
                for _ in range(args.flooders)
            ]
            for process in flooders:
                process.start()
            time.sleep(2.0)  # let them build their requests and connect
            lines_before = audit_log.read_bytes().count(b"\n")
            bytes_before = audit_log.stat().st_size
            go.set()
            print(
                f"flood phase ({args.flooders} flooders, {args.payload_kib} KiB each) ...",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1.0)
            started = time.monotonic()
            flooded = measure(stub_sign, cluster.params, args.seconds, args.rate)
            elapsed = time.monotonic() - started + 1.0
            stop.set()
            for process in flooders:
                process.join(timeout=120)
                if process.is_alive():
                    process.kill()
            channel.close()
            lines_after = audit_log.read_bytes().count(b"\n")
            bytes_after = audit_log.stat().st_size
    return {
        "bits": args.bits,
        "flooders": args.flooders,
        "payload_kib": args.payload_kib,
        "seconds": args.seconds,
        "rate": args.rate,
        "quiet": summary(quiet),
        "flood": summary(flooded),
        "refused_requests_sent": sent.value,
        "refused_per_second": round(sent.value / elapsed, 1),
        # Minus the allowed client's own requests during the flood phase.
        "audit_lines_for_refusals": lines_after - lines_before - len(flooded),
        "audit_bytes_during_flood": bytes_after - bytes_before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flood",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bits", type=int, default=2048, choices=[2048, 3072, 4096])
    parser.add_argument("--flooders", type=int, default=4, help="flooding processes (4)")
    parser.add_argument(
        "--payload-kib",
        type=int,
        default=1000,
        help="size of each refused request in KiB (1000: under the node's 1 MiB message limit)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each measured phase (10)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="the allowed client's requests per second, sent on time (20)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    q, f = result["quiet"], result["flood"]
    print(f"allowed client, one-item Sign on node 1 ({args.bits}-bit key):")
    print(
        f"  quiet: p50 {q['p50_ms']:8.1f} ms  p90 {q['p90_ms']:8.1f} ms  "
        f"max {q['max_ms']:8.1f} ms  ({q['requests']} requests)"
    )
    print(
        f"  flood: p50 {f['p50_ms']:8.1f} ms  p90 {f['p90_ms']:8.1f} ms  "
        f"max {f['max_ms']:8.1f} ms  ({f['requests']} requests)"
    )
    print(f"  flood/quiet p50: {f['p50_ms'] / q['p50_ms']:.1f}x")
    print(
        f"flooders ({args.flooders} x {args.payload_kib} KiB, not allowed): "
        f"{result['refused_requests_sent']} refused requests "
        f"({result['refused_per_second']}/s)"
    )
    print(
        f"node 1's audit log: {result['audit_lines_for_refusals']} lines for refusals, "
        f"{result['audit_bytes_during_flood']} bytes in all during the flood"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
