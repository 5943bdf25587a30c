"""Signing through real node processes over real mutual TLS on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ittc.combiner import ClusterClient, SignItem, SyncClusterClient
from ittc.errors import CombinerClosed, EncodingError, IttcError, ParameterError, SigningError
from ittc.scheme.encoding import Scheme
from tests.cluster import track_answers

pytestmark = pytest.mark.network

HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


def _padding(name: str, algorithm: hashes.HashAlgorithm) -> padding.AsymmetricPadding:
    if name == "pss":
        return padding.PSS(padding.MGF1(algorithm), algorithm.digest_size)
    return padding.PKCS1v15()


@pytest.mark.parametrize("pad", ["pkcs1v15", "pss"])
@pytest.mark.parametrize("hash_name", sorted(HASHES))
def test_sign_through_five_nodes(cluster, pad, hash_name, tmp_path):
    message = f"through the cluster {pad} {hash_name}".encode()
    with SyncClusterClient(cluster.cluster) as client:
        signature = client.sign(message, padding=pad, hash_name=hash_name)
        assert client.stats.rpcs == client.params.k  # exactly k nodes asked
    algorithm = HASHES[hash_name]
    public = cluster.cluster.params.public_key()
    public.verify(signature, message, _padding(pad, algorithm), algorithm)
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(signature)
    cmd = [
        "openssl",
        "dgst",
        f"-{hash_name}",
        "-verify",
        str(cluster.cluster.public_key),
        "-signature",
        str(tmp_path / "sig"),
    ]
    if pad == "pss":
        cmd += [
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            f"rsa_pss_saltlen:{algorithm.digest_size}",
        ]
    out = subprocess.run(cmd + [str(tmp_path / "msg")], capture_output=True, text=True)
    assert out.returncode == 0 and "Verified OK" in out.stdout


def test_concurrent_distinct_messages_each_signature_for_its_own_message(cluster):
    params = cluster.cluster.params
    public = params.public_key()

    async def run() -> tuple[list[bytes], list[bytes], int]:
        messages = [os.urandom(24) for _ in range(300)]
        async with ClusterClient(cluster.cluster) as client:
            sigs = await asyncio.gather(*(client.sign(m) for m in messages))
            return messages, list(sigs), client.stats.batches

    messages, sigs, batches = asyncio.run(run())
    assert len(set(sigs)) == len(messages)
    for message, sig in zip(messages, sigs, strict=True):
        public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
    assert batches < len(messages)  # concurrent calls were batched together


def test_batch_api_and_prehashed_digests(cluster):
    items = [
        SignItem.make(digest=hashlib.sha384(b"%d" % i).digest(), hash_name="sha384", padding="pss")
        for i in range(10)
    ]
    with SyncClusterClient(cluster.cluster) as client:
        sigs = client.sign_items(items)
    public = cluster.cluster.params.public_key()
    for i, sig in enumerate(sigs):
        public.verify(
            sig,
            items[i].digest,
            padding.PSS(padding.MGF1(hashes.SHA384()), 48),
            Prehashed(hashes.SHA384()),
        )


def test_two_nodes_killed_still_signs(cluster):
    cluster.kill(1)
    cluster.kill(4)
    with SyncClusterClient(cluster.cluster, deadline=10) as client:
        for i in range(5):
            sig = client.sign(b"survives %d" % i)
            client.params.public_key().verify(
                sig, b"survives %d" % i, padding.PKCS1v15(), hashes.SHA256()
            )
        assert client.stats.node_failures[1] + client.stats.node_failures[4] >= 1


def test_three_nodes_killed_typed_error_within_deadline(cluster):
    for index in (2, 3, 5):
        cluster.kill(index)
    with SyncClusterClient(cluster.cluster, deadline=4.0) as client:
        started = time.monotonic()
        with pytest.raises(SigningError) as info:
            client.sign(b"cannot be signed")
        elapsed = time.monotonic() - started
    assert elapsed < 4.0 + 1.0
    assert {2, 3, 5} <= set(info.value.nodes)
    assert "node 2" in str(info.value)


def test_node_restarted_is_used_again(cluster):
    """Node 2 is killed, the client fails over, node 2 comes back.

    Pass: within 10 s of the restart (the client's back-off is at most 5 s, gRPC's
    reconnection at most 2 s) node 2 answers the client again, and the client records
    no failure of node 2 after the restart (it waits for the channel to reconnect rather
    than sending it RPCs that fail at once)."""
    with SyncClusterClient(cluster.cluster) as client:
        cluster.kill(2)
        for i in range(3):
            client.sign(b"while node 2 is down %d" % i)
        answered = track_answers(client.client)
        cluster.start([2])
        before = dict(client.stats.node_failures)
        started = time.monotonic()
        i = 0
        while not answered[2]:
            assert time.monotonic() - started < 10.0, "node 2 not used again within 10 s"
            client.sign(b"after restart %d" % i)
            i += 1
            time.sleep(0.02)
        assert client.stats.node_failures[2] == before.get(2, 0)


def test_all_mode_and_proofs_always(cluster):
    with SyncClusterClient(cluster.cluster, mode="all") as client:
        sig = client.sign(b"all n, first k")
        assert client.stats.rpcs == client.params.n
    cluster.cluster.params.public_key().verify(
        sig, b"all n, first k", padding.PKCS1v15(), hashes.SHA256()
    )
    with SyncClusterClient(cluster.cluster, proofs="always") as client:
        sig = client.sign(b"with proofs", padding="pss")
    cluster.cluster.params.public_key().verify(
        sig, b"with proofs", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )


def test_slow_node_is_hedged(cluster):
    cluster.pause(3)  # SIGSTOP: connected but silent
    with SyncClusterClient(cluster.cluster, deadline=5.0, hedge_after=0.2) as client:
        started = time.monotonic()
        for i in range(6):
            client.sign(b"around a hung node %d" % i)
        elapsed = time.monotonic() - started
        assert client.stats.hedges >= 1 or client.stats.node_failures[3] >= 1
    assert elapsed < 5.0


def test_client_parameter_errors(cluster):
    """Bad arguments raise typed errors (ValueErrors too) that say what is wrong."""
    with pytest.raises(EncodingError, match="exactly one of data or digest"):
        SignItem.make(data=b"x", digest=b"y" * 32)
    with pytest.raises(EncodingError, match="no salt"):
        SignItem.make(data=b"x", padding=Scheme.PKCS1V15, salt_length=8)
    for bad in ("PSS", "oaep"):
        with pytest.raises(EncodingError, match="unsupported padding"):
            SignItem.make(data=b"x", padding=bad)
    with pytest.raises(EncodingError, match="salt length must be in 0..512"):
        SignItem.make(data=b"x", padding="pss", salt_length=-1)
    with pytest.raises(EncodingError, match="unsupported hash"):
        SignItem.make(data=b"x", hash_name="md5")
    with pytest.raises(ParameterError, match="mode must be"):
        ClusterClient(cluster.cluster, mode="some")  # type: ignore[arg-type]
    for bad_deadline in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ParameterError, match="deadline must be"):
            ClusterClient(cluster.cluster, deadline=bad_deadline)
    with pytest.raises(TypeError, match="unknown option"):
        ClusterClient(cluster.cluster, deadlin=5.0)  # type: ignore[call-arg]
    for error in (EncodingError, ParameterError):
        assert issubclass(error, ValueError) and issubclass(error, IttcError)


def test_use_after_close_is_a_typed_error(cluster):
    client = SyncClusterClient(cluster.cluster)
    client.sign(b"before close")
    client.close()
    with pytest.raises(CombinerClosed, match="client closed"):
        client.sign(b"after close")

    async def scenario() -> None:
        async with ClusterClient(cluster.cluster) as aclient:
            await aclient.sign(b"before close")
        with pytest.raises(CombinerClosed, match="client closed"):
            await aclient.sign(b"after close")

    asyncio.run(scenario())


def test_cli_sign_then_openssl_verifies(cluster, tmp_path):
    data = tmp_path / "document.txt"
    data.write_bytes(b"a document to sign from the command line\n")
    sig = tmp_path / "document.sig"
    root = cluster.cluster.root
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ittc",
            "sign",
            "--cluster",
            str(root),
            "--in",
            str(data),
            "--out",
            str(sig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    ok = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(root / "public.pem"),
            "-signature",
            str(sig),
            str(data),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "Verified OK" in ok.stdout


def test_cli_verify_and_sign_refuses_to_overwrite(cluster, tmp_path):
    """`ittc verify` says 0 for a good signature, 1 for a bad one, 2 for bad input; with
    the cluster's key, a PEM or DER public key, or a certificate; PKCS#1 v1.5 and PSS
    (whatever its salt length). `ittc sign` does not replace an existing --out."""
    from cryptography.hazmat.primitives import serialization

    def ittc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ittc", *args], capture_output=True, text=True, timeout=60
        )

    root = str(cluster.cluster.path)
    data = tmp_path / "doc.txt"
    data.write_bytes(b"to be verified\n")
    public = cluster.cluster.params.public_key()
    pem, der = tmp_path / "pub.pem", tmp_path / "pub.der"
    pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    der.write_bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for pad, salt in (("pkcs1v15", None), ("pss", None), ("pss", "20")):
        sig = tmp_path / f"doc.{pad}{salt or ''}.sig"
        extra = ["--salt-length", salt] if salt else []
        out = ittc(
            "sign",
            "--cluster",
            root,
            "--in",
            str(data),
            "--out",
            str(sig),
            "--padding",
            pad,
            *extra,
        )
        assert out.returncode == 0, out.stderr
        for source in (["--cluster", root], ["--key", str(pem)], ["--key", str(der)]):
            ok = ittc("verify", *source, "--in", str(data), "--sig", str(sig), "--padding", pad)
            assert ok.returncode == 0 and "verifies" in ok.stdout, ok.stderr
        wrong = tmp_path / "other.txt"
        wrong.write_bytes(b"not what was signed\n")
        bad = ittc(
            "verify", "--cluster", root, "--in", str(wrong), "--sig", str(sig), "--padding", pad
        )
        assert bad.returncode == 1 and "does NOT verify" in bad.stderr
    again = ittc("sign", "--cluster", root, "--in", str(data), "--out", str(sig))
    assert again.returncode == 2 and "--force" in again.stderr
    missing = ittc(
        "verify", "--key", str(tmp_path / "nope.pem"), "--in", str(data), "--sig", str(sig)
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_status_command_reports_health_and_whether_k_can_sign(cluster):
    root = str(cluster.cluster.root)

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ittc", "status", "--cluster", root, "--timeout", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = status()
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SERVING") == 5 and "5 of 5 nodes ready: can sign" in out.stdout
    with SyncClusterClient(cluster.cluster) as client:
        assert set(client.health().values()) == {"SERVING"}
    for index in (1, 2, 3):
        cluster.kill(index)
    out = status()
    assert out.returncode == 1
    assert out.stdout.count("UNREACHABLE") == 3 and "2 of 5 nodes ready: CANNOT sign" in out.stdout
