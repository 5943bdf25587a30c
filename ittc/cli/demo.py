"""``ittc demo``: a local five-node cluster that signs, verifies and survives two kills."""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ittc.cli import argtypes
from ittc.cli.command import EXIT_OK, Command
from ittc.config import ClusterFile
from ittc.errors import ConfigError, InvalidSignature

__all__ = ["DEMO"]


def _default_demo_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "ittc" / "demo"


def _setup_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        type=pathlib.Path,
        default=None,
        help="where the demo cluster is cached (~/.cache/ittc/demo)",
    )
    p.add_argument("--fresh", action="store_true", help="make a new demo cluster")
    p.add_argument(
        "--bits", type=int, default=2048, choices=[2048, 3072, 4096], help="key size (2048)"
    )
    p.add_argument(
        "--base-port",
        type=argtypes.integer(1, 65535 - 4),
        default=7001,
        help="loopback port of node 1; node i gets base+i-1 (7001)",
    )


def _check_ports_free(ports: list[int]) -> None:
    """Fail at once, naming the port and the way out, if a node could not listen."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise ConfigError(
                    f"port {port} on 127.0.0.1 is in use (another demo or cluster?): stop it, "
                    "or run the demo on other ports with --base-port"
                ) from None


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _openssl_verify(public_pem: pathlib.Path, data: bytes, signature: bytes, pss: bool) -> str:
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
    from ittc.ca import ThresholdRSAPrivateKey
    from ittc.combiner import SyncClusterClient
    from ittc.deploy.ceremony import create_cluster, describe
    from ittc.deploy.localcluster import LocalCluster
    from ittc.scheme import dealer

    root = args.dir or _default_demo_dir()
    cluster_dir = root / "cluster"
    ports = [args.base_port + i for i in range(5)]
    _check_ports_free(ports)
    if args.fresh and cluster_dir.exists():
        shutil.rmtree(cluster_dir)
    cached = cluster_dir / "combiner" / "cluster.toml"
    if cached.exists() and [e.address for e in ClusterFile.load(cached).nodes] != [
        f"127.0.0.1:{port}" for port in ports
    ]:
        _step(f"the cached demo cluster listens on other ports: making one for {ports[0]}...")
        shutil.rmtree(cluster_dir)
    # A cache from before site folders (cluster_dir/cluster.toml, node-<i>/) is remade.
    if not cached.exists():
        _step(f"key ceremony: a {args.bits}-bit key from safe primes, 3-of-5 (cached in {root})")
        if cluster_dir.exists():
            shutil.rmtree(cluster_dir)
        (root / "passphrase").unlink(missing_ok=True)  # the old cache's shared passphrase
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.monotonic()
        dealt = dealer.generate(args.bits, progress=lambda m: print(f"   {m}", flush=True))
        print(f"   safe primes and shares in {time.monotonic() - started:.1f} s")
        # A random passphrase per site, in its folder.
        create_cluster(cluster_dir, dealt, base_port=args.base_port)
        print(
            f"   one folder per site ({cluster_dir}/site-1 ... site-5: config, encrypted "
            "share, TLS identity, its own passphrase), a combiner bundle, the CA apart"
        )
    else:
        _step(f"using the cached demo cluster in {cluster_dir} (--fresh makes a new one)")
    cluster = ClusterFile.load(cluster_dir)
    print(describe(cluster))

    _step("starting five node daemons on loopback (mutual TLS, encrypted shares)")
    with LocalCluster(cluster) as local:
        started = time.monotonic()
        local.start(timeout=180)
        print(
            f"   all {len(local.indices)} nodes SERVING after {time.monotonic() - started:.1f} s"
            f"; logs in {local.log_dir}"
        )
        public_pem = cluster.public_key or cluster.root / "public.pem"
        message = (
            f"ittc demo: signed by 3 of 5 nodes at "
            f"{datetime.datetime.now(datetime.UTC).isoformat()}"
        ).encode()
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
            public.verify(
                sig, message, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
            )
            print("   cryptography: signature valid")
            print(f"   openssl dgst -verify: {_openssl_verify(public_pem, message, sig, True)}")

            _step("a self-signed root certificate made by the cluster key")
            key = ThresholdRSAPrivateKey(client)
            cert = ca.selfsign(key, "CN=ittc demo root,O=ittc", 30)
            print(
                f"   {cert.subject.rfc4514_string()}, serial {cert.serial_number:#x}, "
                f"{cert.signature_algorithm_oid._name}"
            )
            with tempfile.TemporaryDirectory() as tmp:
                pem = pathlib.Path(tmp, "root.pem")
                pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
                if shutil.which("openssl"):
                    out = subprocess.run(
                        ["openssl", "verify", "-CAfile", str(pem), str(pem)],
                        capture_output=True,
                        text=True,
                    )
                    print(f"   openssl verify: {out.stdout.strip() or out.stderr.strip()}")
                    if out.returncode != 0:
                        raise InvalidSignature("openssl refused the root certificate")

            _step("two sites go down (SIGKILL nodes 1 and 2): the other three still sign")
            local.kill(1)
            local.kill(2)
            t0 = time.monotonic()
            sig = client.sign(message)
            public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
            print(
                f"   signature valid, in {1000 * (time.monotonic() - t0):.1f} ms "
                "(with nodes 1 and 2 dead)"
            )
            stats = client.stats
            print(
                f"   client: {stats.signatures} signatures, {stats.rpcs} RPCs, "
                f"{sum(stats.node_failures.values())} node failures seen, "
                f"blamed: {dict(stats.blamed) or 'nobody'}"
            )
        _step("stopping the nodes")
    print(
        "\ndemo complete: a 3-of-5 threshold RSA key signed real messages and a "
        "certificate that OpenSSL accepts."
    )
    return EXIT_OK


DEMO = Command(
    "demo", "bring up a local five-node cluster, sign, verify, stop", _setup_demo, _run_demo
)
