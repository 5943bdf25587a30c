"""Network commands: ``ittc node``, ``ittc cluster up``, ``ittc sign``, ``ittc status``."""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import signal
import sys
import time
from types import FrameType
from typing import Any

from cryptography import x509

from ittc.cli import argtypes
from ittc.cli.command import EXIT_ERROR, EXIT_OK, Command, add_log_options
from ittc.cli.verify import check_signature
from ittc.config import ClusterFile
from ittc.errors import ConfigError, InvalidSignature
from ittc.scheme.encoding import HASHES, MAX_SALT_BYTES
from ittc.scheme.params import PublicParams
from ittc.storage.files import write_file_atomically
from ittc.wire.v1 import signer_pb2 as pb

__all__ = ["CLUSTER", "NODE", "SIGN", "STATUS"]


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- ittc node ---------------------------------------------------------------------------


def _setup_node(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=pathlib.Path, help="the node's node.toml")
    what.add_argument(
        "--print-systemd-unit",
        action="store_const",
        const="ittc-node@.service",
        dest="print_file",
        help="print the systemd unit (ittc-node@.service) shipped with ittc, and exit",
    )
    what.add_argument(
        "--print-example-config",
        action="store_const",
        const="node.toml",
        dest="print_file",
        help="print an example node.toml with every field explained, and exit",
    )
    add_log_options(p, default=False)


def _run_node(args: argparse.Namespace) -> int:
    if args.print_file is not None:
        from importlib import resources

        sys.stdout.write((resources.files("ittc_node") / "files" / args.print_file).read_text())
        return EXIT_OK
    from ittc_node.daemon import run

    code: int = run(args.config, log_format=args.log_format, log_level=args.log_level or "info")
    return code


NODE = Command("node", "run one node daemon from its config file", _setup_node, _run_node)


# -- ittc cluster up ---------------------------------------------------------------------


def _setup_cluster(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="run every node of a cluster folder here until Ctrl-C")
    up.add_argument("dir", type=pathlib.Path, help="cluster folder (from ittc keygen)")
    up.add_argument(
        "--timeout",
        type=argtypes.seconds,
        default=120.0,
        help="seconds to wait for the nodes to become healthy (120)",
    )


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _run_cluster(args: argparse.Namespace) -> int:
    from ittc.deploy.localcluster import LocalCluster

    cluster = ClusterFile.load(args.dir)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    local = LocalCluster(cluster)
    try:
        _err(
            f"starting {len(local.indices)} nodes of key {cluster.params.short_id} "
            f"(logs in {local.log_dir})"
        )
        local.start(timeout=args.timeout)
        for entry in cluster.nodes:
            _err(f"  node {entry.index}: {entry.address}  SERVING  pid {local.pid(entry.index)}")
        _err("cluster up; Ctrl-C stops it")
        while True:
            for index in local.indices:
                if not local.running(index):
                    _err(
                        f"node {index} exited with code {local.returncode(index)}:\n"
                        f"{local.log_tail(index)}"
                    )
                    return EXIT_ERROR
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        _err("stopping nodes")
        return EXIT_OK
    finally:
        codes = local.stop()
        _err("stopped: " + ", ".join(f"node {i} exit {c}" for i, c in sorted(codes.items())))
        signal.signal(signal.SIGTERM, previous)


CLUSTER = Command(
    "cluster", "run a whole cluster locally (cluster up DIR)", _setup_cluster, _run_cluster
)


# -- ittc sign ---------------------------------------------------------------------------


def _setup_sign(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    p.add_argument(
        "--in",
        dest="input",
        required=True,
        type=pathlib.Path,
        help="file to sign ('-' for standard input)",
    )
    p.add_argument("--out", required=True, type=pathlib.Path, help="where to write the signature")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--hash", default="sha256", choices=sorted(HASHES), help="(sha256)")
    p.add_argument("--padding", default="pkcs1v15", choices=["pkcs1v15", "pss"], help="(pkcs1v15)")
    p.add_argument(
        "--salt-length",
        type=argtypes.integer(0, MAX_SALT_BYTES),
        default=None,
        help=f"PSS salt length in bytes, 0..{MAX_SALT_BYTES} (default: the digest length)",
    )
    p.add_argument(
        "--deadline",
        type=argtypes.seconds,
        default=10.0,
        help="seconds the whole signature may take (10)",
    )


def _run_sign(args: argparse.Namespace) -> int:
    from ittc.combiner import SyncClusterClient

    data = sys.stdin.buffer.read() if str(args.input) == "-" else args.input.read_bytes()
    with SyncClusterClient(args.cluster, deadline=args.deadline) as client:
        signature = client.sign(
            data, padding=args.padding, hash_name=args.hash, salt_length=args.salt_length
        )
        try:
            check_signature(
                client.params.public_key(),
                signature,
                data,
                args.padding,
                args.hash,
                args.salt_length,
            )
        except InvalidSignature:
            raise InvalidSignature("the signature does not verify (not written)") from None
    try:
        write_file_atomically(args.out, signature, mode=0o644, overwrite=args.force)
    except FileExistsError:
        raise ConfigError(f"{args.out}: exists; give --force to replace it") from None
    _err(
        f"signed {len(data)} bytes with {args.padding}/{args.hash}: {args.out} "
        f"({len(signature)} bytes, verified)"
    )
    return EXIT_OK


SIGN = Command("sign", "sign a file through the cluster", _setup_sign, _run_sign)


# -- ittc status -------------------------------------------------------------------------


def _setup_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    p.add_argument("--timeout", type=argtypes.seconds, default=5.0, help="seconds per node (5)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (key, threshold, each node's health, readiness, "
        "version, epoch and certificate expiry) instead of text",
    )


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_report(
    index: int,
    params: PublicParams,
    health: str,
    about: pb.NodeInfo | str,
    cert: x509.Certificate | str | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """What ``ittc status`` knows of one node (JSON-ready)."""
    entry: dict[str, Any] = {"index": index, "health": health, "ready": False}
    if isinstance(about, str):
        entry["problem"] = f"GetInfo refused: {about}"
    elif about.key_id == params.key_id and about.index == 0:
        # A site whose share is lost (or a new site): it waits for a reshare to give it one.
        entry["problem"] = (
            f"NO SHARE: site waits for a reshare to give it one (epoch {about.epoch}; "
            "docs/runbooks.md)"
        )
    elif about.key_id != params.key_id or about.index != index:
        entry["problem"] = f"WRONG NODE: answers as node {about.index} of key {about.key_id[:16]}"
    else:
        entry.update(
            ready=bool(about.ready) and health == "SERVING",
            version=about.software_version,
            epoch=about.epoch,
            max_batch=about.max_batch,
        )
    if isinstance(cert, x509.Certificate):
        left = cert.not_valid_after_utc - now
        entry["certificate"] = {
            "subject": cert.subject.rfc4514_string(),
            "serial": f"{cert.serial_number:x}",
            "not_after": _utc(cert.not_valid_after_utc),
            "days_left": left.days,
        }
    return entry


def _run_status(args: argparse.Namespace) -> int:
    """Health, self-description and certificate of every node; exit 0 when k can sign."""
    from ittc.combiner import SyncClusterClient

    with SyncClusterClient(args.cluster, node_timeout=args.timeout) as client:
        params = client.params
        health, info, certs = client.health(), client.info(), client.certificates()
    now = datetime.datetime.now(datetime.UTC)
    nodes = [_node_report(i, params, health[i], info[i], certs.get(i), now) for i in sorted(health)]
    ready = sum(1 for node in nodes if node["ready"])
    ok = ready >= params.k
    if args.json:
        report = {
            "key_id": params.key_id,
            "epoch": params.epoch,
            "bits": params.bits,
            "k": params.k,
            "n": params.n,
            "ready": ready,
            "can_sign": ok,
            "nodes": nodes,
        }
        print(json.dumps(report, indent=2))
        return EXIT_OK if ok else 1
    print(f"key {params.short_id}: {params.bits}-bit, any {params.k} of {params.n} nodes sign")
    for node in nodes:
        if "problem" in node:
            detail = node["problem"]
        else:
            detail = (
                f"ready={node['ready']} version {node['version']} epoch {node['epoch']} "
                f"max_batch {node['max_batch']}"
            )
        if "certificate" in node:
            detail += f", certificate expires {node['certificate']['not_after']}"
            detail += f" ({node['certificate']['days_left']} days)"
        print(f"  node {node['index']}: {node['health']:<12} {detail}")
    print(f"{ready} of {params.n} nodes ready: {'can' if ok else 'CANNOT'} sign")
    return EXIT_OK if ok else 1


STATUS = Command(
    "status", "health and identity of every node of a cluster", _setup_status, _run_status
)
