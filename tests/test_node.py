"""The node daemon, as real processes over real mutual TLS on loopback.

One 3-of-5 test cluster serves the whole module: nodes 1-3 run throughout; node 4 is
started, stopped and restarted by the lifecycle test; node 5 runs with worker processes;
copies of node folders are broken on purpose to check that a node refuses to start.
A few tests embed :func:`ittc_node.daemon.serve` in this process to inject a clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import errno
import hashlib
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ittc_node import compute as compute_mod
from ittc_node.audit import AuditLog, genesis_hash, verify_audit_log
from ittc_node.daemon import StartupError, load_share, serve
from ittc_node.faults import Faults
from ittc_node.refusals import OTHERS, RefusalLimiter
from ittc_node.replay import ReplayCache

from ittc import storage
from ittc.config import NodeConfig
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import AuditLogError, InvalidShare
from ittc.scheme import ct
from ittc.scheme.combine import combine
from ittc.scheme.encoding import Scheme, encode
from ittc.scheme.proofs import Proof, SignatureShare, verify_share
from ittc.storage import pki
from ittc.wire.v1 import signer_pb2 as pb
from ittc.wire.v1 import signer_pb2_grpc
from tests.cluster import (
    CLIENT,
    FakeClock,
    LocalCluster,
    audit_log_of,
    cluster_ca,
    copy_node,
    fault_env,
    foreign_client,
    free_ports,
    group_members,
    issue_client,
    make_cluster,
    pkcs1_item,
    pss_item,
    reissue_cert,
    sign_request,
    site_passphrase,
    write_private,
)

TIMEOUT = 20.0
_HASHES = {pb.HASH_SHA256: "sha256", pb.HASH_SHA384: "sha384", pb.HASH_SHA512: "sha512"}
_CRYPTO_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = make_cluster(tmp_path_factory.mktemp("nodes"))
    toml = CeremonyFolder(root).node_config(5)
    # Node 5: worker processes, on the portable backend (the others: auto, libcrypto here).
    toml.write_text(
        re.sub(r"(?m)^workers = 0$", 'workers = 2\nbackend = "gmpy2"', toml.read_text())
    )
    with LocalCluster(root) as cluster:
        cluster.start([1, 2, 3], timeout=120)
        yield cluster


def representative(params: Any, item: pb.SignItem) -> int:
    scheme = Scheme.PKCS1V15 if item.padding == pb.PADDING_PKCS1V15 else Scheme.PSS
    return encode(scheme, _HASHES[item.hash], item.digest, params.bits, item.salt)


def to_share(index: int, share: pb.Share) -> SignatureShare:
    proof = None
    if share.proof_c:
        proof = Proof(int.from_bytes(share.proof_c, "big"), int.from_bytes(share.proof_z, "big"))
    return SignatureShare(index, int.from_bytes(share.value, "big"), proof)


def verify_signature(params: Any, item: pb.SignItem, signature: bytes) -> None:
    algorithm = _CRYPTO_HASHES[_HASHES[item.hash]]()
    if item.padding == pb.PADDING_PKCS1V15:
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        pad = padding.PSS(padding.MGF1(algorithm), salt_length=len(item.salt))
    params.public_key().verify(signature, item.digest, pad, Prehashed(algorithm))


def audit_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def health(cluster: LocalCluster, index: int) -> str:
    return cluster.health(index, timeout=5)


# -- signing ---------------------------------------------------------------------------


@pytest.mark.network
def test_get_info(nodes: LocalCluster) -> None:
    info = nodes.stub(2).GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT)
    p = nodes.params
    assert (info.index, info.key_id, info.n, info.k) == (2, p.key_id, 5, 3)
    assert info.modulus_bits == p.bits and info.proofs_sound and info.ready
    assert info.max_batch == 64 and info.freshness_window_ms == 120_000
    assert info.software_version


@pytest.mark.network
def test_nodes_say_which_exponentiation_backend_they_use(nodes: LocalCluster) -> None:
    """Nodes 1-3 run the default (auto: libcrypto on this machine), in their log and in
    their audit log's start record; node 5 (gmpy2) is checked with its workers below."""
    for index in (1, 2, 3):
        assert "compute threads on openssl (OpenSSL " in nodes.log(index)
        start = [r for r in audit_lines(nodes.audit_log(index)) if r["type"] == "start"]
        assert start and start[-1]["backend"] == "openssl"


@pytest.mark.network
def test_a_node_asked_for_a_missing_backend_refuses_to_start(
    nodes: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nothing(path: str | None) -> Any:
        raise OSError("no libcrypto found")

    monkeypatch.setattr(ct, "_libraries", {})
    monkeypatch.setattr(ct, "_loader", nothing)
    monkeypatch.setattr(ct, "_active", ct._active)
    monkeypatch.setattr(ct, "_requested", ct._requested)
    config = dataclasses.replace(nodes.config(4), backend="openssl")
    with pytest.raises(
        StartupError,
        match="node.backend = 'openssl': the openssl backend cannot be used: cannot load libcrypto",
    ):
        load_share(config)
    auto = load_share(dataclasses.replace(config, backend="auto"))  # falls back, starts
    assert auto.index == 4 and ct.backend() == "gmpy2"


@pytest.mark.network
def test_sign_batch_combines_to_standard_signatures(nodes: LocalCluster) -> None:
    p = nodes.params
    items = [
        pkcs1_item(b"one"),
        pss_item(b"two"),
        pkcs1_item(b"three", "sha512"),
        pss_item(b"four", "sha384", salt=b""),
        pss_item(b"five", "sha512", salt=b"s" * 20),
    ]
    answers = {}
    for index in (1, 2, 3):
        response = nodes.stub(index).Sign(sign_request(p, items), timeout=TIMEOUT)
        assert response.index == index and response.key_id == p.key_id
        assert len(response.shares) == len(items)
        assert all(len(s.value) == p.size_bytes and not s.proof_c for s in response.shares)
        answers[index] = response
    for position, item in enumerate(items):
        x = representative(p, item)
        shares = [to_share(i, answers[i].shares[position]) for i in (1, 2, 3)]
        verify_signature(p, item, combine(p, x, shares))


@pytest.mark.network
def test_proofs_verify(nodes: LocalCluster) -> None:
    p = nodes.params
    items = [pkcs1_item(b"proof me"), pss_item(b"and me")]
    response = nodes.stub(3).Sign(sign_request(p, items, with_proofs=True), timeout=TIMEOUT)
    for item, share in zip(items, response.shares, strict=True):
        assert len(share.proof_c) == 32 and share.proof_z[0] != 0
        verify_share(p, representative(p, item), to_share(3, share))


# -- refusals --------------------------------------------------------------------------


def _bad_item(**fields: Any) -> pb.SignItem:
    item = pkcs1_item(b"x")
    for name, value in fields.items():
        setattr(item, name, value)
    return item


REFUSALS: dict[str, tuple[Callable[[Any], pb.SignRequest], grpc.StatusCode, str]] = {
    "short request id": (
        lambda p: sign_request(p, [pkcs1_item(b"x")], request_id="short"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
    "request id charset": (
        lambda p: sign_request(p, [pkcs1_item(b"x")], request_id="has spaces in it, see?"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
    "request id too long": (
        lambda p: sign_request(p, [pkcs1_item(b"x")], request_id="a" * 65),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
    "unknown key id": (
        lambda p: sign_request(p, [pkcs1_item(b"x")], key_id="00" * 32),
        grpc.StatusCode.NOT_FOUND,
        "unknown key id",
    ),
    "stale": (
        lambda p: sign_request(
            p, [pkcs1_item(b"x")], timestamp_ms=int(time.time() * 1000) - 600_000
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "stale",
    ),
    "future": (
        lambda p: sign_request(
            p, [pkcs1_item(b"x")], timestamp_ms=int(time.time() * 1000) + 600_000
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "future",
    ),
    "no items": (lambda p: sign_request(p, []), grpc.StatusCode.INVALID_ARGUMENT, "1..64"),
    "too many items": (
        lambda p: sign_request(p, [pkcs1_item(b"x")] * 65),
        grpc.StatusCode.INVALID_ARGUMENT,
        "1..64",
    ),
    "padding unspecified": (
        lambda p: sign_request(p, [pkcs1_item(b"ok"), _bad_item(padding=0)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1]: unknown padding",
    ),
    "padding unknown": (
        lambda p: sign_request(p, [_bad_item(padding=7)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0]: unknown padding",
    ),
    "hash unspecified": (
        lambda p: sign_request(p, [pkcs1_item(b"a"), pkcs1_item(b"b"), _bad_item(hash=0)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[2]: unknown hash",
    ),
    "digest length": (
        lambda p: sign_request(p, [_bad_item(digest=b"\x01" * 31)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0]: a sha256 digest is 32",
    ),
    "digest of another hash": (
        lambda p: sign_request(p, [_bad_item(hash=pb.HASH_SHA512)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "sha512 digest is 64",
    ),
    "salt with pkcs1": (
        lambda p: sign_request(p, [_bad_item(salt=b"salt")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0]: PKCS#1 v1.5 takes no salt",
    ),
    "pss salt too long": (
        lambda p: sign_request(p, [pss_item(b"x", salt=b"s" * 513)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0]: PSS salt longer",
    ),
    "pss salt too long for the modulus": (
        lambda p: sign_request(p, [pss_item(b"x", "sha512", salt=b"s" * 100)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0]: modulus too short",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
@pytest.mark.network
def test_sign_refusals(nodes: LocalCluster, case: str) -> None:
    make, code, words = REFUSALS[case]
    request = make(nodes.params)
    error = rpc_error(lambda: nodes.stub(1).Sign(request, timeout=TIMEOUT))
    assert error.code() == code, error.details()
    assert words in error.details()
    last = audit_lines(nodes.audit_log(1))[-1]
    assert last["outcome"] == "refused" and last["client"] == CLIENT
    assert last["request_id"] == request.request_id[:128] and words in last["reason"]
    assert health(nodes, 1) == "SERVING"


@pytest.mark.network
def test_reused_request_id_is_refused(nodes: LocalCluster) -> None:
    request = sign_request(nodes.params, [pkcs1_item(b"once")])
    nodes.stub(2).Sign(request, timeout=TIMEOUT)
    error = rpc_error(lambda: nodes.stub(2).Sign(request, timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    mine = [r for r in audit_lines(nodes.audit_log(2)) if r.get("request_id") == request.request_id]
    assert [r["outcome"] for r in mine] == ["signed", "refused"]


@pytest.mark.network
def test_identity_outside_allowed_clients_is_refused_and_audited(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    cert, key = issue_client(nodes.root, "mallory", tmp_path)
    stub = nodes.stub(1, cert, key)
    request = sign_request(nodes.params, [pkcs1_item(b"let me in")])
    error = rpc_error(lambda: stub.Sign(request, timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        rpc_error(lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT)).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )
    sign_line, info_line = audit_lines(nodes.audit_log(1))[-2:]
    assert (sign_line["client"], sign_line["method"], sign_line["outcome"]) == (
        "mallory",
        "Sign",
        "refused",
    )
    data = request.SerializeToString()  # refused unparsed: recorded by size and hash
    assert (sign_line["request_bytes"], sign_line["request_sha256"]) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert "request_id" not in sign_line
    assert sign_line["peer"].startswith("ipv4:127.0.0.1:") and "not allowed" in sign_line["reason"]
    assert (info_line["client"], info_line["method"]) == ("mallory", "GetInfo")
    # Health is open to any certificate of the cluster: operators' probes need no grant.
    assert nodes.health_as(1, cert, key) == "SERVING"


@pytest.mark.network
def test_node_certificate_is_not_a_client(nodes: LocalCluster, tmp_path: pathlib.Path) -> None:
    # A node's own certificate is for serverAuth only: TLS refuses it as a client...
    before = nodes.audit_log(1).read_bytes()
    node2 = nodes.node_dir(2)
    stub = nodes.stub(1, node2 / "tls.pem", node2 / "tls.key")
    request = sign_request(nodes.params, [pkcs1_item(b"x")])
    assert (
        rpc_error(lambda: stub.Sign(request, timeout=TIMEOUT)).code() == grpc.StatusCode.UNAVAILABLE
    )
    assert nodes.audit_log(1).read_bytes() == before
    # ...and a client certificate carrying a node's name is still not an allowed client.
    cert, key = issue_client(nodes.root, "ittc-node-2", tmp_path)
    error = rpc_error(lambda: nodes.stub(1, cert, key).Sign(request, timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    last = audit_lines(nodes.audit_log(1))[-1]
    assert (last["client"], last["outcome"]) == ("ittc-node-2", "refused")


@pytest.mark.network
def test_client_from_another_ca_fails_the_handshake(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    before = nodes.audit_log(1).read_bytes()
    cert, key = foreign_client(tmp_path)  # even with the allowed name "ittc-client"
    stub = nodes.stub(1, cert, key)
    error = rpc_error(lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert nodes.audit_log(1).read_bytes() == before  # no RPC ever reached the node
    assert health(nodes, 1) == "SERVING"


# -- startup refusals ------------------------------------------------------------------


def _break_wrong_passphrase(folder: pathlib.Path) -> pathlib.Path:
    wrong = write_private(folder / "wrong-passphrase", b"not the passphrase\n")
    return wrong  # the share file it fails to open


def _break_tampered_share(folder: pathlib.Path) -> pathlib.Path:
    share = folder / "share.enc"
    data = bytearray(share.read_bytes())
    data[-5] ^= 0x40
    share.write_bytes(bytes(data))
    return share


def _break_share_mode(folder: pathlib.Path) -> pathlib.Path:
    os.chmod(folder / "share.enc", 0o644)
    return folder / "share.enc"


def _break_audit_log(folder: pathlib.Path) -> pathlib.Path:
    # The audit log's folder is a regular file: it cannot be created, even by root.
    (folder / "not-a-folder").write_text("")
    return folder / "not-a-folder" / "audit.log"


def _break_audit_chain(folder: pathlib.Path) -> pathlib.Path:
    return audit_log_of(folder)


def _break_tls_key_mode(folder: pathlib.Path) -> pathlib.Path:
    os.chmod(folder / "tls.key", 0o644)
    return folder / "tls.key"


def _break_config(folder: pathlib.Path) -> pathlib.Path:
    return folder / "node.toml"


def _dated(days_before: float, days_after: float) -> dict[str, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "not_before": now + datetime.timedelta(days=days_before),
        "not_after": now + datetime.timedelta(days=days_after),
    }


def _break_cert_expired(folder: pathlib.Path) -> pathlib.Path:
    return reissue_cert(folder / "tls.pem", cluster_ca(folder.parent.parent), **_dated(-30, -1))


def _break_cert_not_yet_valid(folder: pathlib.Path) -> pathlib.Path:
    return reissue_cert(folder / "tls.pem", cluster_ca(folder.parent.parent), **_dated(1, 30))


def _break_ca_expired(folder: pathlib.Path) -> pathlib.Path:
    return reissue_cert(folder / "ca.pem", cluster_ca(folder.parent.parent), **_dated(-30, -0.01))


def _break_small_key(folder: pathlib.Path) -> pathlib.Path:
    toml = folder / "node.toml"
    text = toml.read_text()
    assert "insecure_small_key_for_tests = true\n" in text
    toml.write_text(text.replace("insecure_small_key_for_tests = true\n", ""))
    return folder / "params.json"


STARTUP_FAILURES: dict[str, tuple[Callable[[pathlib.Path], pathlib.Path], str]] = {
    "node certificate expired": (_break_cert_expired, "the certificate expired on"),
    "node certificate not valid yet": (_break_cert_not_yet_valid, "is not valid before"),
    "CA certificate expired": (_break_ca_expired, "the certificate expired on"),
    "no allowed clients": (_break_config, "access.allowed_clients: is empty"),
    "a test key without the test-only field": (_break_small_key, "is below 2048 bits"),
    "wrong passphrase": (_break_wrong_passphrase, "passphrase does not open"),
    "tampered share file": (_break_tampered_share, "altered"),
    "share file mode 0644": (_break_share_mode, "chmod 600"),
    "unwritable audit log": (_break_audit_log, "cannot open for appending"),
    "audit log does not verify": (_break_audit_chain, "does not chain"),
    "bad config": (_break_config, "unknown field"),
    "unknown backend": (_break_config, "node.backend: 'fast' is not one of auto, openssl, gmpy2"),
    "no passphrase and no terminal": (_break_config, "no passphrase"),
    "tls key readable by others": (_break_tls_key_mode, "chmod 600"),
    "audit log of another key": (_break_audit_chain, "belongs to key"),
    "audit log of another node": (_break_audit_chain, "belongs to node 2, not to this node (4)"),
}


def _write_broken_chain(path: pathlib.Path, key_id: str, edit: bool = True, node: int = 4) -> None:
    async def write() -> None:
        log = AuditLog.open(path, key_id, node)
        log.start()
        for n in range(3):
            await log.append({"type": "start" if n == 0 else "note", "key_id": key_id, "n": n})
        await log.close()

    asyncio.run(write())
    if not edit:
        return
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"n":1', b'"n":7')
    path.write_bytes(b"".join(lines))


@pytest.fixture(scope="module")
def startup_failures(nodes: LocalCluster) -> dict[str, tuple[int, str, pathlib.Path, pathlib.Path]]:
    """Start one broken copy of node 4 per case, all at once; collect exit code and stderr."""
    procs = {}
    for n, (case, (breaker, _)) in enumerate(STARTUP_FAILURES.items()):
        folder = copy_node(nodes.root, 4, f"node-4-broken-{n}")
        toml = folder / "node.toml"
        culprit = breaker(folder)
        text = toml.read_text()
        if case == "wrong passphrase":
            text = re.sub(r"(?m)^passphrase_file = .*$", f'passphrase_file = "{culprit}"', text)
            culprit = folder / "share.enc"
        elif case == "unwritable audit log":
            text = re.sub(r"(?m)^path = .*$", f'path = "{culprit}"', text)
        elif case == "audit log does not verify":
            _write_broken_chain(culprit, nodes.params.key_id)
        elif case == "audit log of another key":
            _write_broken_chain(culprit, "ab" * 32, edit=False)
        elif case == "audit log of another node":
            _write_broken_chain(culprit, nodes.params.key_id, edit=False, node=2)
        elif case == "bad config":
            text = text.replace("[node]\n", '[node]\ncolour = "blue"\n')
        elif case == "unknown backend":
            text = text.replace("[node]\n", '[node]\nbackend = "fast"\n')
        elif case == "no passphrase and no terminal":
            text = re.sub(r"(?m)^passphrase_file = .*$", "", text)
        elif case == "no allowed clients":
            text = re.sub(r"(?m)^allowed_clients = .*$", "allowed_clients = []", text)
        toml.write_text(text)
        before = sorted(p.name for p in folder.iterdir())
        procs[case] = (
            subprocess.Popen(
                [sys.executable, "-m", "ittc_node", "--config", str(toml)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            culprit,
            folder,
            before,
        )
    results = {}
    for case, (proc, culprit, folder, before) in procs.items():
        _, err = proc.communicate(timeout=60)
        assert sorted(p.name for p in folder.iterdir()) == before, f"{case}: files changed"
        results[case] = (proc.returncode, err.decode(), culprit, folder)
    return results


@pytest.mark.parametrize("case", list(STARTUP_FAILURES))
@pytest.mark.network
def test_node_refuses_to_start(startup_failures: dict[str, Any], case: str) -> None:
    code, stderr, culprit, folder = startup_failures[case]
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ittc-node: error: ")
    assert str(culprit) in lines[0] and STARTUP_FAILURES[case][1] in lines[0]
    if "audit log" not in case or "unwritable" in case:
        assert not audit_log_of(folder).exists()


# -- lifecycle and the audit log -------------------------------------------------------


def _sign_and_check(cluster: LocalCluster, index: int) -> None:
    item = pss_item(f"node {index}".encode())
    response = cluster.stub(index).Sign(
        sign_request(cluster.params, [item], with_proofs=True), timeout=TIMEOUT
    )
    verify_share(
        cluster.params, representative(cluster.params, item), to_share(index, response.shares[0])
    )


def _wait_health(cluster: LocalCluster, index: int, status: str) -> None:
    for _ in range(600):
        if cluster.health(index, timeout=2) == status:
            return
        assert cluster.running(index), cluster.log(index)
        time.sleep(0.05)
    raise AssertionError(f"node {index} never became {status}: {cluster.log(index)}")


@pytest.mark.network
def test_health_sigterm_audit_chain_and_restart(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    gate = tmp_path / "go"
    nodes.start([4], wait=False, env=fault_env(f"hold-start:{gate}"))
    _wait_health(nodes, 4, "NOT_SERVING")
    gate.write_text("")
    _wait_health(nodes, 4, "SERVING")
    assert "TEST FAULTS ACTIVE" in nodes.log(4)
    _sign_and_check(nodes, 4)
    assert nodes.terminate(4) == 0
    log = nodes.audit_log(4)
    assert verify_audit_log(log) == 3
    assert [r["type"] for r in audit_lines(log)] == ["start", "request", "stop"]

    # Restart without faults, the passphrase now from an environment variable.
    toml = nodes.node_dir(4) / "node.toml"
    original = toml.read_text()
    toml.write_text(
        re.sub(
            r"(?m)^passphrase_file = .*$", 'passphrase_env = "ITTC_TEST_NODE_PASSPHRASE"', original
        )
    )
    try:
        nodes.start([4], env={"ITTC_TEST_NODE_PASSPHRASE": site_passphrase(nodes.root, 4).decode()})
        _sign_and_check(nodes, 4)
        assert nodes.terminate(4) == 0
    finally:
        toml.write_text(original)
    assert verify_audit_log(log) == 6
    records = audit_lines(log)
    assert [r["type"] for r in records] == ["start", "request", "stop"] * 2
    third = log.read_bytes().splitlines()[2]
    assert records[3]["prev"] == hashlib.sha256(third).hexdigest()  # the chain continues


@pytest.mark.network
def test_audit_log_edits_and_deletions_are_detected(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    original = nodes.audit_log(1).read_bytes().splitlines(keepends=True)
    assert len(original) >= 5
    good = tmp_path / "good.log"
    good.write_bytes(b"".join(original))
    assert verify_audit_log(good) == len(original)

    def check(lines: list[bytes], bad_line: int) -> None:
        path = tmp_path / f"bad-{bad_line}.log"
        path.write_bytes(b"".join(lines))
        with pytest.raises(AuditLogError, match=rf": line {bad_line}: "):
            verify_audit_log(path)

    edited = list(original)
    edited[2] = edited[2].replace(b'"time":"', b'"time":"1999', 1)
    assert edited[2] != original[2]
    check(edited, 4)  # the line after the edit breaks
    check(original[:3] + original[4:], 4)  # a line deleted
    check(original[1:], 1)  # the first line deleted
    check(original[:2] + [original[3], original[2]] + original[4:], 3)  # two lines swapped
    check(original[:-1] + [original[-1][:-1]], len(original))  # cut short
    check(original[:2] + [b"not json\n"] + original[2:], 3)  # a line inserted


# -- worker processes ------------------------------------------------------------------


def _wait(condition: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {what}")


@pytest.mark.network
def test_worker_processes_sign_correctly(nodes: LocalCluster) -> None:
    nodes.start([5])
    try:
        assert "2 worker processes on gmpy2 " in nodes.log(5)  # the workers said so too
        assert audit_lines(nodes.audit_log(5))[-1]["backend"] == "gmpy2"
        p = nodes.params
        items = [pkcs1_item(f"worker {n}".encode()) for n in range(5)]
        answers = {
            i: nodes.stub(i).Sign(sign_request(p, items), timeout=TIMEOUT) for i in (1, 2, 5)
        }
        for position, item in enumerate(items):
            shares = [to_share(i, answers[i].shares[position]) for i in (1, 2, 5)]
            verify_signature(p, item, combine(p, representative(p, item), shares))
        _sign_and_check(nodes, 5)
        pid = nodes.pid(5)
        assert pid is not None and len(group_members(pid)) >= 3  # daemon + 2 workers
        os.kill(pid, signal.SIGINT)  # Ctrl-C stops gracefully, like SIGTERM
        _wait(lambda: nodes.returncode(5) is not None, "node 5 to exit on SIGINT")
        assert nodes.returncode(5) == 0
        assert verify_audit_log(nodes.audit_log(5)) == 4
        _wait(lambda: not group_members(pid), "worker processes to exit")

        # Workers hold the share: they must not outlive a daemon killed with SIGKILL.
        nodes.start([5])
        pid = nodes.pid(5)
        assert pid is not None and len(group_members(pid)) >= 3
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not group_members(pid), "orphaned workers to exit")
    finally:
        nodes.kill(5)


# -- embedded node with an injected clock ----------------------------------------------


class EmbeddedNode:
    """serve() on its own event loop thread, for tests that need to set the clock."""

    def __init__(self, config: NodeConfig, clock: Callable[[], float], faults: Faults) -> None:
        params = config.load_params()
        assert config.passphrase_file is not None
        passphrase = storage.read_passphrase_file(config.passphrase_file)
        share = storage.read_share_file(config.share_file, params, config.index, passphrase)
        self.share = share
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def events() -> tuple[asyncio.Event, asyncio.Event]:
            return asyncio.Event(), asyncio.Event()

        self.stop, self.ready = asyncio.run_coroutine_threadsafe(events(), self.loop).result()
        self.task = asyncio.run_coroutine_threadsafe(
            serve(config, share, clock=clock, stop=self.stop, ready=self.ready, faults=faults),
            self.loop,
        )
        while not self.ready.is_set():
            if self.task.done():
                self.task.result()
            time.sleep(0.01)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        try:
            self.task.result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)


@pytest.fixture
def embedded(nodes: LocalCluster, tmp_path: pathlib.Path) -> Iterator[Callable[..., Any]]:
    """Start node 3's share in-process on a fresh port, with the given clock and limits."""
    started: list[EmbeddedNode] = []
    counter = iter(range(100))

    def start(
        clock: Callable[[], float], faults: Faults | None = None, **limits: Any
    ) -> tuple[Any, ...]:
        folder = copy_node(nodes.root, 3, f"node-3-embedded-{tmp_path.name}-{next(counter)}")
        base = NodeConfig.load(folder / "node.toml")
        config = dataclasses.replace(
            base,
            listen=f"127.0.0.1:{free_ports(1)[0]}",
            limits=dataclasses.replace(base.limits, **limits),
        )
        node = EmbeddedNode(config, clock, faults or Faults())
        started.append(node)
        channel = nodes.channel_at(config.listen, "ittc-node-3")
        return node, signer_pb2_grpc.SignerStub(channel), config, channel

    yield start
    for node in started:
        node.close()


def ask_code(
    stub: Any, params: Any, timestamp_ms: int, request_id: str | None = None
) -> grpc.StatusCode:
    try:
        stub.Sign(
            sign_request(
                params, [pkcs1_item(b"t")], timestamp_ms=timestamp_ms, request_id=request_id
            ),
            timeout=TIMEOUT,
        )
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.network
def test_freshness_window_edges_with_injected_clock(nodes: LocalCluster, embedded: Any) -> None:
    now = [float(int(time.time()))]  # the node checks its certificate against this clock
    _, stub, config, _ = embedded(lambda: now[0])
    p = nodes.params
    window_ms = int(config.limits.freshness_seconds * 1000)
    started = int(now[0] * 1000)
    # A request older than the node's start may have been served before a restart.
    assert ask_code(stub, p, started - 1) == grpc.StatusCode.FAILED_PRECONDITION
    assert ask_code(stub, p, started) == grpc.StatusCode.OK
    now[0] += 3600
    base = int(now[0] * 1000)

    def ask(ts: int, request_id: str | None = None) -> grpc.StatusCode:
        return ask_code(stub, p, ts, request_id)

    assert ask(base - window_ms) == grpc.StatusCode.OK
    assert ask(base - window_ms - 1) == grpc.StatusCode.FAILED_PRECONDITION
    assert ask(base + window_ms) == grpc.StatusCode.OK
    assert ask(base + window_ms + 1) == grpc.StatusCode.FAILED_PRECONDITION
    # An id is remembered for twice the window, then forgotten (no fresh copy can exist).
    rid = "replay-me-0123456789"
    assert ask(base, rid) == grpc.StatusCode.OK
    now[0] += 2 * config.limits.freshness_seconds - 1
    assert ask(int(now[0] * 1000), rid) == grpc.StatusCode.ALREADY_EXISTS
    now[0] += 2
    assert ask(int(now[0] * 1000), rid) == grpc.StatusCode.OK


@pytest.mark.network
def test_pending_message_size_and_deadline_limits(
    nodes: LocalCluster, embedded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = nodes.params
    _, stub, config, _ = embedded(time.time, max_pending_items=2)
    error = rpc_error(lambda: stub.Sign(sign_request(p, [pkcs1_item(b"a")] * 3), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stub.Sign(sign_request(p, [pkcs1_item(b"a")] * 2), timeout=TIMEOUT)

    _, stub, config, _ = embedded(time.time, max_message_bytes=8192, max_batch=4)
    big = sign_request(p, [pss_item(b"b", salt=b"s" * 512)] * 20)
    assert big.ByteSize() > 8192
    assert (
        rpc_error(lambda: stub.Sign(big, timeout=TIMEOUT)).code()
        == grpc.StatusCode.RESOURCE_EXHAUSTED
    )

    # The node gives up at max_deadline_seconds even if the caller would wait longer.
    _, stub, config, _ = embedded(time.time, max_deadline_seconds=0.05)
    release = threading.Event()
    real_sign_chunk = compute_mod.sign_chunk

    def stuck(*args: Any) -> Any:
        release.wait(TIMEOUT)
        return real_sign_chunk(*args)

    monkeypatch.setattr(compute_mod, "sign_chunk", stuck)
    try:
        error = rpc_error(lambda: stub.Sign(sign_request(p, [pkcs1_item(b"a")]), timeout=TIMEOUT))
    finally:
        release.set()
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    last = audit_lines(config.audit_log)[-1]
    assert last["outcome"] == "refused" and "deadline" in last["reason"]


LIES = [
    "random-share",
    "other-message",
    "replay-old",
    "wrong-index",
    "bad-proof",
    "slow:1",
    "refuse",
]


@pytest.mark.parametrize("fault", LIES)
@pytest.mark.network
def test_test_faults_lie_as_documented(nodes: LocalCluster, embedded: Any, fault: str) -> None:
    """A fault that did not really lie would let the combiner's fault tests pass vacuously."""
    p = nodes.params
    node, stub, _, _ = embedded(time.time, faults=Faults.parse(fault))
    items = [pkcs1_item(b"first"), pss_item(b"second")]
    request = sign_request(p, items, with_proofs=True)
    if fault == "refuse":
        assert (
            rpc_error(lambda: stub.Sign(request, timeout=TIMEOUT)).code()
            == grpc.StatusCode.UNAVAILABLE
        )
        return
    response = stub.Sign(request, timeout=TIMEOUT)
    assert response.index == (4 if fault == "wrong-index" else 3)
    xs = [representative(p, item) for item in items]
    shares = [to_share(3, s) for s in response.shares]
    honest = [node.share.signature_share(x).value for x in xs]
    values_honest = [s.value for s in shares] == honest
    proofs_ok = []
    for x, share in zip(xs, shares, strict=True):
        try:
            verify_share(p, x, share)
            proofs_ok.append(True)
        except InvalidShare:
            proofs_ok.append(False)
    if fault in ("wrong-index", "slow:1"):
        assert values_honest and all(proofs_ok)
    elif fault == "bad-proof":
        assert values_honest and not any(proofs_ok)
    else:
        assert not values_honest and not any(proofs_ok)
    if fault == "replay-old":
        assert shares[0].value == shares[1].value
    if fault == "other-message":
        flipped = bytes([items[0].digest[0] ^ 1]) + items[0].digest[1:]
        verify_share(p, encode(Scheme.PKCS1V15, "sha256", flipped, p.bits), shares[0])


@pytest.mark.network
def test_audit_failure_stops_signing_and_health(
    nodes: LocalCluster, embedded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = nodes.params
    _, stub, config, channel = embedded(time.time)
    stub.Sign(sign_request(p, [pkcs1_item(b"before")]), timeout=TIMEOUT)

    def disk_full(self: AuditLog, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(AuditLog, "_write_sync", disk_full)
    error = rpc_error(lambda: stub.Sign(sign_request(p, [pkcs1_item(b"after")]), timeout=TIMEOUT))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "audit log unavailable")
    error = rpc_error(lambda: stub.Sign(sign_request(p, [pkcs1_item(b"again")]), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    status = (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service="ittc.v1.Signer"), timeout=TIMEOUT)
        .status
    )
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    records = audit_lines(config.audit_log)
    assert [r["outcome"] for r in records if r["type"] == "request"] == ["signed"]


@pytest.mark.network
def test_certificate_expiry_warned_then_not_serving(
    nodes: LocalCluster,
    embedded: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node whose clock says its certificate expires in ten days warns at start and then
    once a day; when it has expired, health turns NOT_SERVING and Sign is refused (no
    client could connect any more: the node must not look healthy)."""
    from ittc_node import certwatch

    monkeypatch.setattr(certwatch, "CHECK_SECONDS", 0.05)
    cert = pki.load_cert(nodes.node_dir(3) / "tls.pem")
    expires = cert.not_valid_after_utc.timestamp()
    clock = FakeClock(expires - 10 * 86400)
    caplog.set_level(logging.WARNING, logger="ittc_node")
    _, stub, config, channel = embedded(clock)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "expires on" in r.getMessage()]

    def status() -> int:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(  # type: ignore[no-any-return]
                health_pb2.HealthCheckRequest(service="ittc.v1.Signer"), timeout=TIMEOUT
            )
            .status
        )

    assert len(warnings()) == 1 and "(in 10 days 0 hours)" in warnings()[0]
    assert str(config.tls_cert) in warnings()[0]
    time.sleep(0.3)
    assert len(warnings()) == 1  # not again the same day
    clock.advance(86400)
    for _ in range(200):
        if len(warnings()) == 2:
            break
        time.sleep(0.02)
    assert "(in 9 days 0 hours)" in warnings()[-1]
    assert ask_code(stub, nodes.params, clock.ms) == grpc.StatusCode.OK
    assert status() == health_pb2.HealthCheckResponse.SERVING

    clock.set(expires + 1)
    for _ in range(200):
        if status() == health_pb2.HealthCheckResponse.NOT_SERVING:
            break
        time.sleep(0.02)
    assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert ask_code(stub, nodes.params, clock.ms) == grpc.StatusCode.UNAVAILABLE
    assert any("the certificate expired on" in r.getMessage() for r in caplog.records)


@pytest.mark.network
@pytest.mark.parametrize("entry", ["ittc node", "python -m ittc_node"])
@pytest.mark.parametrize("kind", ["binary", "directory", "missing"])
def test_a_config_that_is_not_a_toml_file_is_one_clear_line(
    tmp_path: pathlib.Path, entry: str, kind: str
) -> None:
    """Both entry points (systemd runs the second, and restarts it on a crash): one line
    naming the file and the problem, exit 2, never a traceback."""
    path = tmp_path / "node.toml"
    if kind == "binary":
        path.write_bytes(bytes(range(128, 256)) * 4)  # not UTF-8
    elif kind == "directory":
        path.mkdir()
    command = ["-m", "ittc", "node"] if entry == "ittc node" else ["-m", "ittc_node"]
    done = subprocess.run(
        [sys.executable, *command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    problem = {
        "binary": "not a TOML file (not UTF-8 text)",
        "directory": "is a directory, not a TOML file",
        "missing": "no such file",
    }[kind]
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"ittc-node: error: {path}: {problem}"]


def test_a_cluster_file_that_is_not_text_is_one_clear_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_bytes(b"\xff\xfe" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "ittc", "info", "--cluster", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"ittc: error: {path}: not a TOML file (not UTF-8 text)"]


# -- units -----------------------------------------------------------------------------


def test_audit_group_commit_and_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    key_id = "cd" * 32

    async def write(count: int) -> int:
        log = AuditLog.open(path, key_id, 3)
        log.start()
        await log.append({"type": "start", "key_id": key_id})
        await asyncio.gather(*(log.append({"type": "request", "n": n}) for n in range(count)))
        await log.close()
        return log.fsyncs

    assert asyncio.run(write(50)) < 51  # concurrent lines share fsyncs
    assert os.stat(path).st_mode & 0o777 == 0o600
    asyncio.run(write(5))  # reopening continues the chain
    assert verify_audit_log(path) == 57
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # the last write cut short: the message says where to cut
    with pytest.raises(AuditLogError) as cut:
        verify_audit_log(path)
    end = whole[:-1].rindex(b"\n") + 1
    assert str(cut.value).endswith(f"then cut the rest with `truncate -s {end} {path}`")
    path.write_bytes(whole)
    with pytest.raises(AuditLogError, match="belongs to key"):
        AuditLog.open(path, "ef" * 32, 3)
    with pytest.raises(AuditLogError, match=r"belongs to node 3, not to this node \(2\)"):
        AuditLog.open(path, key_id, 2)


def test_audit_line_written_by_the_caller_when_nothing_else_waits(tmp_path: pathlib.Path) -> None:
    """append_threadsafe(here=True): with no write under way and nothing queued, the
    caller's thread writes and fsyncs the line itself (the writer thread is not woken),
    with any line queued meanwhile, on the same chain; each caller is told once its line
    is durable; a failed log refuses at once and writes nothing."""
    path = tmp_path / "audit.log"
    key_id = "ab" * 32
    told: list[tuple[int, BaseException | None, int, int]] = []

    async def scenario() -> AuditLog:
        log = AuditLog.open(path, key_id, 1)
        log.start()
        await log.append({"type": "start", "key_id": key_id})

        def done(n: int) -> Callable[[BaseException | None], None]:
            return lambda error: told.append((n, error, log.lines, threading.get_ident()))

        write = log.append_threadsafe({"n": 1}, done(1), here=True)
        assert write is not None and told == []  # nothing written until it is called
        # A write is claimed: the next line waits for it, and goes out with it.
        assert log.append_threadsafe({"n": 2}, done(2), here=True) is None
        fsyncs = log.fsyncs
        writer = await asyncio.to_thread(lambda: (write(), threading.get_ident())[1])
        assert log.fsyncs == fsyncs + 1  # one write and fsync, in the caller's thread
        assert [(n, e, lines, ident) for n, e, lines, ident in told] == [
            (1, None, 3, writer),
            (2, None, 3, writer),
        ]
        # Idle again: the next caller may write its own line.
        again = log.append_threadsafe({"n": 3}, done(3), here=True)
        assert again is not None
        await asyncio.to_thread(again)
        assert told[-1][:3] == (3, None, 4)
        # Without here= the writer thread writes it.
        assert log.append_threadsafe({"n": 4}, done(4)) is None
        for _ in range(1000):
            if len(told) == 4:
                break
            await asyncio.sleep(0.01)
        assert told[-1][:3] == (4, None, 5) and told[-1][3] != writer
        log.failure = "disk gone (test)"
        assert log.append_threadsafe({"n": 5}, done(5), here=True) is None
        assert told[-1][0] == 5 and isinstance(told[-1][1], AuditLogError)
        return log

    log = asyncio.run(scenario())
    log.discard()
    assert verify_audit_log(path) == 5
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("n") for line in lines] == [None, 1, 2, 3, 4]


def test_audit_chain_binds_the_node_index_and_old_logs_still_verify(
    tmp_path: pathlib.Path,
) -> None:
    """The first line's ``prev`` binds key id and node index, so even a one-line log
    cannot be relabelled to another node. Logs started before that (the key id alone in
    the genesis) still verify, and their node (named in line 1, which line 2's hash
    covers) continues them; another node refuses them."""
    key_id = "cd" * 32
    path = tmp_path / "audit.log"

    async def write(where: pathlib.Path, node: int, records: list[dict[str, Any]]) -> None:
        log = AuditLog.open(where, key_id, node)
        log.start()
        for record in records:
            await log.append(record)
        await log.close()

    asyncio.run(write(path, 3, [{"type": "start"}]))
    [first] = audit_lines(path)
    assert (first["key_id"], first["node"]) == (key_id, 3)
    assert first["prev"] == genesis_hash(key_id, 3) != genesis_hash(key_id, 2)
    relabelled = path.read_text().replace('"node":3', '"node":2')
    path.write_text(relabelled)
    with pytest.raises(AuditLogError, match="line 1: does not start the hash chain"):
        verify_audit_log(path)

    # A log from before the node index was bound: genesis over the key id alone.
    legacy = tmp_path / "legacy.log"
    start = {"time": "2026-01-01T00:00:00.000Z", "type": "start", "node": 3, "key_id": key_id}
    start["prev"] = hashlib.sha256(b"ittc/v1/audit-log\x00" + key_id.encode()).hexdigest()
    line = json.dumps(start, separators=(",", ":")).encode()
    legacy.write_bytes(line + b"\n")
    os.chmod(legacy, 0o600)
    assert verify_audit_log(legacy) == 1
    with pytest.raises(AuditLogError, match=r"belongs to node 3, not to this node \(2\)"):
        AuditLog.open(legacy, key_id, 2)
    asyncio.run(write(legacy, 3, [{"type": "request", "n": 1}]))
    assert verify_audit_log(legacy) == 2
    assert audit_lines(legacy)[1]["prev"] == hashlib.sha256(line).hexdigest()


def test_replay_memory_is_bounded_per_identity() -> None:
    """One client cannot fill the replay memory for everyone: each identity has its own
    bound, while ids stay one namespace (a copy is refused whoever sends it)."""
    cache = ReplayCache(window_seconds=10, max_per_identity=2)
    cache.remember("a" * 16, now=0, identity="greedy")
    cache.remember("b" * 16, now=0, identity="greedy")
    assert cache.full(now=1, identity="greedy")
    assert not cache.full(now=1, identity="modest") and not cache.full(now=1)
    cache.remember("c" * 16, now=1, identity="modest")
    assert cache.seen("a" * 16, now=1)  # whoever asks
    assert (cache.held_by("greedy"), cache.held_by("modest")) == (2, 1)
    assert not cache.full(now=20.5, identity="greedy")  # expired, pruned
    assert cache.held_by("greedy") == 0 and cache.held_by("modest") == 1


def test_replay_memory_restored_from_the_log_outlives_every_copy() -> None:
    cache = ReplayCache(window_seconds=10)
    cache.restore("r" * 16, timestamp_ms=100_000, identity="c")  # dated t=100 s
    assert cache.seen("r" * 16, now=110)  # the last instant a copy is fresh
    assert cache.seen("r" * 16, now=120)  # and a window more (a clock stepped back)
    assert not cache.seen("r" * 16, now=120.001)
    assert cache.held_by("c") == 0


def test_replay_cache_refuses_when_full_instead_of_forgetting() -> None:
    cache = ReplayCache(window_seconds=10, max_per_identity=2)
    cache.remember("a" * 16, now=0)
    cache.remember("b" * 16, now=1)
    assert cache.seen("a" * 16, now=19) and cache.full(now=19)
    assert cache.seen("a" * 16, now=20)  # remembered up to and including 2 * window
    assert not cache.seen("a" * 16, now=20.25) and not cache.full(now=20.25)
    assert cache.seen("b" * 16, now=20.5)


def test_refusal_limiter_audits_a_burst_then_a_rate_and_counts_the_rest() -> None:
    limiter = RefusalLimiter(burst=3, per_second=0.5, summary_seconds=10)

    def admit(identity: str | None, now: float, peer: str = "p1") -> bool:
        return limiter.admit(identity, now, method="Sign", peer=peer, size=100)

    assert [admit("eve", 0) for _ in range(5)] == [True, True, True, False, False]
    assert admit("bob", 0)  # every identity has its own bucket
    assert admit(None, 0)  # no identity at all is one more bucket
    assert not admit("eve", 1.9, "p2") and admit("eve", 2.0)  # one token per 2 s
    assert not admit("eve", 2.5)
    assert limiter.due(9.9) == []  # the first counted refusal (t=0) is due at t=10
    [counted] = limiter.due(10.0)
    assert (counted.identity, counted.count, counted.first, counted.last) == ("eve", 4, 0, 2.5)
    assert (counted.request_bytes, dict(counted.methods), counted.peers) == (
        400,
        {"Sign": 4},
        ["p1", "p2"],
    )
    assert limiter.due(100) == [] and limiter.drain() == []  # handed over once
    # A clock stepped back refills nothing; a full bucket stays full.
    assert admit("ann", 50) and admit("ann", 50) and admit("ann", 50)
    assert not admit("ann", 20) and not admit("ann", 49)
    [counted] = limiter.drain()
    assert (counted.identity, counted.count) == ("ann", 2)


def test_refusal_limiter_memory_is_bounded() -> None:
    limiter = RefusalLimiter(burst=1, per_second=1, max_identities=3)
    for name in ("a", "b", "c"):
        assert limiter.admit(name, 0, method="Sign", peer="p", size=1)
    # Full of identities that are still limited: new ones share one "others" bucket.
    assert limiter.admit("d", 0, method="Sign", peer="p", size=1)
    assert not limiter.admit("x", 0.5, method="Sign", peer="p", size=1)
    assert len(limiter) == 4  # at most max_identities + the shared one
    # Once their buckets refill, idle identities are forgotten to make room.
    assert limiter.admit("e", 5, method="Sign", peer="p", size=1)
    assert len(limiter) == 2  # "e", and "others" (it still has a refusal counted)
    [counted] = limiter.drain()
    assert (counted.identity, counted.count) == (OTHERS, 1)


def test_example_config_in_the_operator_guide_loads() -> None:
    example = pathlib.Path(__file__).resolve().parent.parent / "nodes" / "examples" / "node.toml"
    config = NodeConfig.load(example)
    assert (config.index, config.workers, config.limits.max_batch) == (3, 0, 64)
    assert config.backend == "auto"
    assert config.passphrase_file is not None and config.passphrase_env is None


def test_faults_need_the_enabling_variable() -> None:
    assert not Faults.from_env({"ITTC_TEST_FAULT": "random-share"}).active
    assert Faults.from_env({"ITTC_TEST_FAULT": "random-share"}).ignored
    faults = Faults.from_env(fault_env("random-share,slow:20,wrong-index"))
    assert faults.random_share and faults.slow_ms == 20 and faults.index(5, 5) == 1
    with pytest.raises(ValueError, match="unknown test fault"):
        Faults.from_env(fault_env("be-evil"))


def test_compute_deadline_ends_a_request_only_while_its_shares_are_computed(
    vkey: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline (and cancelling) drop a request whose shares are not made yet, and its
    commit (the audit record) never runs; once the shares exist, the commit runs to its
    end and the caller gets the shares even past the deadline; a failed commit is the
    caller's error."""
    share = vkey.shares[0]
    x = encode(Scheme.PKCS1V15, "sha256", b"\x07" * 32, vkey.params.bits)
    compute = compute_mod.ThreadCompute(share, threads=1, proof_nonces=0)
    committed: list[str] = []

    async def run() -> None:
        await compute.start()

        # Shares made, commit slow: answered after the deadline, record written once.
        def slow_commit(done: Callable[[BaseException | None], None]) -> None:
            time.sleep(0.3)
            committed.append("slow")
            done(None)

        shares = await compute.sign([x], False, commit=slow_commit, timeout=0.05)
        assert shares[0][0] == share.signature_share(x).value.to_bytes(
            vkey.params.size_bytes, "big"
        )
        assert committed == ["slow"]

        # Shares not made within the deadline: TimeoutError, the commit never runs.
        release = threading.Event()
        real = compute_mod.sign_chunk

        def stuck(*args: Any) -> Any:
            release.wait(TIMEOUT)
            return real(*args)

        monkeypatch.setattr(compute_mod, "sign_chunk", stuck)
        with pytest.raises(TimeoutError):
            await compute.sign(
                [x], False, commit=lambda done: committed.append("late"), timeout=0.05
            )
        release.set()
        monkeypatch.setattr(compute_mod, "sign_chunk", real)
        for _ in range(100):
            if compute.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert compute.pending == 0 and committed == ["slow"]

        # A commit that fails: the caller gets its error.
        with pytest.raises(AuditLogError):
            await compute.sign([x], False, commit=lambda done: done(AuditLogError("disk full")))
        await compute.close()

    asyncio.run(run())


def test_nonce_keeper_refills_what_proofs_used_and_sleeps_otherwise(vkey: Any) -> None:
    """Idle time refills the proof nonces a request used; a request that used none does
    not wake the keeper (its wake-ups cost every request a thread switch)."""
    share = compute_mod.KeyShare(vkey.params, 1, vkey.shares[0].dangerously_export_secret())
    x = encode(Scheme.PKCS1V15, "sha256", b"\x09" * 32, vkey.params.bits)
    compute = compute_mod.ThreadCompute(share, threads=1, proof_nonces=2)
    keeper = compute._keeper
    wakes = 0
    real_notify = keeper._cond.notify

    def counting_notify(n: int = 1) -> None:
        nonlocal wakes
        wakes += 1
        real_notify(n)

    keeper._cond.notify = counting_notify  # type: ignore[method-assign]

    async def until(predicate: Callable[[], bool]) -> None:
        for _ in range(500):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def run() -> None:
        await compute.start()
        await until(lambda: share.precomputed_nonces == 2)
        before = wakes
        await compute.sign([x], False)
        assert wakes == before  # no proof, nothing to refill, no wake-up
        await compute.sign([x], True)
        assert wakes == before + 1
        await until(lambda: share.precomputed_nonces == 2)
        await compute.close()

    asyncio.run(run())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names of /proc")
def test_node_threads_carry_their_names_to_the_system() -> None:
    """``top -H`` and the cluster benchmark tell a node's threads apart by these names."""
    from ittc_node.threadname import name_this_thread

    seen: list[str] = []

    def run() -> None:
        name_this_thread()
        comm = pathlib.Path(f"/proc/self/task/{threading.get_native_id()}/comm")
        seen.append(comm.read_text().strip())

    thread = threading.Thread(target=run, name="ittc-sign_0-and-more")
    thread.start()
    thread.join()
    assert seen == ["ittc-sign_0-and"]  # the system keeps 15 characters
