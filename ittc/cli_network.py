"""Network commands: ``ittc node``, ``ittc cluster up``, ``ittc sign``, ``ittc demo``,
``ittc audit verify``."""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.cli import EXIT_ERROR, EXIT_OK, Command, register
from ittc.config import ClusterFile
from ittc.errors import InvalidSignature

__all__: list[str] = []

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- ittc node ---------------------------------------------------------------------------

def _setup_node(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=pathlib.Path, help="the node's node.toml")


def _run_node(args: argparse.Namespace) -> int:
    from ittc_node.daemon import run
    code: int = run(args.config)
    return code


register(Command("node", "run one node daemon from its config file", _setup_node, _run_node))


# -- ittc cluster up ---------------------------------------------------------------------

def _setup_cluster(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="run every node of a cluster folder here until Ctrl-C")
    up.add_argument("dir", type=pathlib.Path, help="cluster folder (from ittc keygen)")
    up.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for the nodes to become healthy")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _run_cluster(args: argparse.Namespace) -> int:
    from ittc.localcluster import LocalCluster
    cluster = ClusterFile.load(args.dir)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    local = LocalCluster(cluster)
    try:
        _err(f"starting {len(local.indices)} nodes of key {cluster.params.short_id} "
             f"(logs in {local.log_dir})")
        local.start(timeout=args.timeout)
        for entry in cluster.nodes:
            _err(f"  node {entry.index}: {entry.address}  SERVING  pid {local.pid(entry.index)}")
        _err("cluster up; Ctrl-C stops it")
        while True:
            for index in local.indices:
                if not local.running(index):
                    _err(f"node {index} exited with code {local.returncode(index)}:\n"
                         f"{local.log_tail(index)}")
                    return EXIT_ERROR
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        _err("stopping nodes")
        return EXIT_OK
    finally:
        codes = local.stop()
        _err("stopped: " + ", ".join(f"node {i} exit {c}" for i, c in sorted(codes.items())))
        signal.signal(signal.SIGTERM, previous)


register(Command("cluster", "run a whole cluster locally (cluster up DIR)", _setup_cluster,
                 _run_cluster))


# -- ittc sign ---------------------------------------------------------------------------

def _setup_sign(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    p.add_argument("--in", dest="input", required=True, type=pathlib.Path,
                   help="file to sign ('-' for standard input)")
    p.add_argument("--out", required=True, type=pathlib.Path, help="where to write the signature")
    p.add_argument("--hash", default="sha256", choices=sorted(_HASHES))
    p.add_argument("--padding", default="pkcs1v15", choices=["pkcs1v15", "pss"])
    p.add_argument("--salt-length", type=int, default=None,
                   help="PSS salt length in bytes (default: the digest length)")
    p.add_argument("--deadline", type=float, default=10.0, help="seconds (10)")


def _verify(public_key: object, signature: bytes, data: bytes, pad: str, hash_name: str,
            salt_length: int | None) -> None:
    algorithm = _HASHES[hash_name]()
    padder: padding.AsymmetricPadding = padding.PKCS1v15() if pad == "pkcs1v15" else padding.PSS(
        padding.MGF1(algorithm), salt_length if salt_length is not None else algorithm.digest_size)
    try:
        public_key.verify(signature, data, padder, algorithm)  # type: ignore[attr-defined]
    except CryptoInvalidSignature:
        raise InvalidSignature("the signature does not verify (not written)") from None


def _run_sign(args: argparse.Namespace) -> int:
    from ittc.client import SyncClusterClient
    data = sys.stdin.buffer.read() if str(args.input) == "-" else args.input.read_bytes()
    with SyncClusterClient(args.cluster, deadline=args.deadline) as client:
        signature = client.sign(data, padding=args.padding, hash_name=args.hash,
                                salt_length=args.salt_length)
        _verify(client.params.public_key(), signature, data, args.padding, args.hash,
                args.salt_length)
    args.out.write_bytes(signature)
    _err(f"signed {len(data)} bytes with {args.padding}/{args.hash}: {args.out} "
         f"({len(signature)} bytes, verified)")
    return EXIT_OK


register(Command("sign", "sign a file through the cluster", _setup_sign, _run_sign))


# -- ittc status -------------------------------------------------------------------------

def _setup_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, type=pathlib.Path, help="cluster folder or file")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per node (5)")


def _run_status(args: argparse.Namespace) -> int:
    """Health and self-description of every node; exit 0 when k of them can sign."""
    from ittc.client import SyncClusterClient
    with SyncClusterClient(args.cluster, node_timeout=args.timeout) as client:
        params = client.params
        health, info = client.health(), client.info()
    ready = 0
    print(f"key {params.short_id}: {params.bits}-bit, any {params.k} of {params.n} nodes sign")
    for index in sorted(health):
        about = info[index]
        if isinstance(about, str):
            detail = f"GetInfo refused: {about}"
        elif about.key_id != params.key_id or about.index != index:
            detail = f"WRONG NODE: answers as node {about.index} of key {about.key_id[:16]}"
        else:
            detail = (f"ready={about.ready} version {about.software_version} "
                      f"max_batch {about.max_batch}")
            ready += int(about.ready and health[index] == "SERVING")
        print(f"  node {index}: {health[index]:<12} {detail}")
    ok = ready >= params.k
    print(f"{ready} of {params.n} nodes ready: {'can' if ok else 'CANNOT'} sign")
    return EXIT_OK if ok else 1


register(Command("status", "health and identity of every node of a cluster", _setup_status,
                 _run_status))


# -- ittc audit verify -------------------------------------------------------------------

def _setup_audit(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check an audit log's hash chain")
    v.add_argument("file", type=pathlib.Path)


def _run_audit(args: argparse.Namespace) -> int:
    from ittc_node.audit import verify_audit_log
    lines = verify_audit_log(args.file)
    print(f"{args.file}: {lines} records, hash chain intact")
    return EXIT_OK


register(Command("audit", "audit log tools (audit verify FILE)", _setup_audit, _run_audit))


# -- ittc demo ---------------------------------------------------------------------------

def _default_demo_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "ittc" / "demo"


def _setup_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=pathlib.Path, default=None,
                   help="where the demo cluster is cached (~/.cache/ittc/demo)")
    p.add_argument("--fresh", action="store_true", help="make a new demo cluster")
    p.add_argument("--bits", type=int, default=2048, choices=[2048, 3072, 4096])


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _openssl_verify(public_pem: pathlib.Path, data: bytes, signature: bytes,
                    pss: bool) -> str:
    if shutil.which("openssl") is None:
        return "openssl not installed: skipped"
    with tempfile.TemporaryDirectory() as tmp:
        msg, sig = pathlib.Path(tmp, "msg"), pathlib.Path(tmp, "sig")
        msg.write_bytes(data)
        sig.write_bytes(signature)
        cmd = ["openssl", "dgst", "-sha256", "-verify", str(public_pem), "-signature", str(sig)]
        if pss:
            cmd += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
        out = subprocess.run(cmd + [str(msg)], capture_output=True, text=True)
        if out.returncode != 0:
            raise InvalidSignature(f"openssl refused the signature: {out.stdout}{out.stderr}")
        return out.stdout.strip()


def _run_demo(args: argparse.Namespace) -> int:
    from ittc import ca
    from ittc.cakey import ThresholdRSAPrivateKey
    from ittc.ceremony import create_cluster, describe
    from ittc.client import SyncClusterClient
    from ittc.localcluster import LocalCluster
    from ittc.scheme import dealer

    root = args.dir or _default_demo_dir()
    cluster_dir, pass_file = root / "cluster", root / "passphrase"
    if args.fresh and root.exists():
        shutil.rmtree(root)
    if not (cluster_dir / "cluster.toml").exists():
        _step(f"key ceremony: a {args.bits}-bit key from safe primes, 3-of-5 (cached in {root})")
        if cluster_dir.exists():
            shutil.rmtree(cluster_dir)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24) + "\n")
        started = time.monotonic()
        dealt = dealer.generate(args.bits, progress=lambda m: print(f"   {m}", flush=True))
        print(f"   safe primes and shares in {time.monotonic() - started:.1f} s")
        from ittc.storage import read_passphrase_file
        create_cluster(cluster_dir, dealt, passphrases=[read_passphrase_file(pass_file)],
                       passphrase_file=pass_file)
    else:
        _step(f"using the cached demo cluster in {cluster_dir} (--fresh makes a new one)")
    cluster = ClusterFile.load(cluster_dir)
    print(describe(cluster))

    _step("starting five node daemons on loopback (mutual TLS, encrypted shares)")
    with LocalCluster(cluster) as local:
        started = time.monotonic()
        local.start(timeout=180)
        print(f"   all {len(local.indices)} nodes SERVING after {time.monotonic() - started:.1f} s"
              f"; logs in {local.log_dir}")
        public_pem = cluster.public_key or cluster_dir / "public.pem"
        message = (f"ittc demo: signed by 3 of 5 nodes at "
                   f"{datetime.datetime.now(datetime.UTC).isoformat()}").encode()
        with SyncClusterClient(cluster) as client:
            public = client.params.public_key()
            _step("signing a message with PKCS#1 v1.5 / SHA-256 through the cluster")
            t0 = time.monotonic()
            sig = client.sign(message)
            print(f"   signature of {len(sig)} bytes in {1000 * (time.monotonic() - t0):.1f} ms")
            public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
            print("   cryptography: signature valid")
            print(f"   openssl dgst -verify: {_openssl_verify(public_pem, message, sig, False)}")

            _step("signing the same message with PSS / SHA-256")
            sig = client.sign(message, padding="pss")
            public.verify(sig, message, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                          hashes.SHA256())
            print("   cryptography: signature valid")
            print(f"   openssl dgst -verify: {_openssl_verify(public_pem, message, sig, True)}")

            _step("a self-signed root certificate made by the cluster key")
            key = ThresholdRSAPrivateKey(client)
            cert = ca.selfsign(key, "CN=ittc demo root,O=ittc", 30)
            print(f"   {cert.subject.rfc4514_string()}, serial {cert.serial_number:#x}, "
                  f"{cert.signature_algorithm_oid._name}")
            with tempfile.TemporaryDirectory() as tmp:
                pem = pathlib.Path(tmp, "root.pem")
                pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
                if shutil.which("openssl"):
                    out = subprocess.run(["openssl", "verify", "-CAfile", str(pem), str(pem)],
                                         capture_output=True, text=True)
                    print(f"   openssl verify: {out.stdout.strip() or out.stderr.strip()}")
                    if out.returncode != 0:
                        raise InvalidSignature("openssl refused the root certificate")

            _step("two sites go down (SIGKILL nodes 1 and 2): the other three still sign")
            local.kill(1)
            local.kill(2)
            t0 = time.monotonic()
            sig = client.sign(message)
            public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
            print(f"   signature valid, in {1000 * (time.monotonic() - t0):.1f} ms "
                  "(with nodes 1 and 2 dead)")
            stats = client.stats
            print(f"   client: {stats.signatures} signatures, {stats.rpcs} RPCs, "
                  f"{sum(stats.node_failures.values())} node failures seen, "
                  f"blamed: {dict(stats.blamed) or 'nobody'}")
        _step("stopping the nodes")
    print("\ndemo complete: a 3-of-5 threshold RSA key signed real messages and a "
          "certificate that OpenSSL accepts.")
    return EXIT_OK


register(Command("demo", "bring up a local five-node cluster, sign, verify, stop", _setup_demo,
                 _run_demo))
