"""Reloading a running node (SIGHUP), as an operator does it, on real node processes.

The operator renews node 1's certificate from the cluster CA, adds a second combiner to
its allowed clients, and sends SIGHUP: the same process (same pid, share still in memory,
audit chain continued) serves the new certificate to new connections and allows the new
client, and one ``reload`` line in its audit log says what is in force. A reload with a
bad certificate changes nothing and is audited as refused. An embedded node whose
certificate expired (NOT_SERVING) serves again once a renewed one is reloaded.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import tomlkit
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ittc_node import certwatch
from ittc_node.audit import verify_audit_log

from ittc.combiner import SyncClusterClient
from ittc.storage import pki
from ittc.wire import tls
from ittc.wire.v1 import signer_pb2 as pb
from tests.cluster import (
    EmbeddedNode,
    FakeClock,
    LocalCluster,
    cluster_ca,
    issue_client,
    make_cluster,
    pkcs1_item,
    sign_request,
)

pytestmark = pytest.mark.network

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = make_cluster(tmp_path_factory.mktemp("reload"))
    with LocalCluster(root) as cluster:
        cluster.start(timeout=120)
        yield cluster


def records(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def served_certificate(nodes: LocalCluster, index: int) -> Any:
    """The certificate node ``index`` presents to a new connection now."""
    entry = nodes.cluster.node(index)
    assert nodes.cluster.client_cert is not None and nodes.cluster.client_key is not None
    return tls.server_certificate(
        entry.address,
        entry.tls_name,
        ca_path=nodes.cluster.ca,
        cert_path=nodes.cluster.client_cert,
        key_path=nodes.cluster.client_key,
        timeout=5,
    )


def hup_and_wait(nodes: LocalCluster, index: int) -> dict[str, Any]:
    """SIGHUP node ``index`` (as ``systemctl reload`` does); its new ``reload`` audit line."""
    log = nodes.audit_log(index)
    seen = sum(r["type"] == "reload" for r in records(log))
    pid = nodes.pid(index)
    assert pid is not None
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        reloads = [r for r in records(log) if r["type"] == "reload"]
        if len(reloads) > seen:
            return reloads[-1]
        time.sleep(0.05)
    raise AssertionError(f"no reload line in {log}:\n{nodes.log_tail(index)}")


def get_info_code(nodes: LocalCluster, index: int, cert: pathlib.Path, key: pathlib.Path) -> Any:
    try:
        nodes.stub(index, cert, key).GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK


def allow(config: pathlib.Path, name: str) -> None:
    """What an operator does by hand: add ``name`` to ``allowed_clients`` in node.toml."""
    doc = tomlkit.parse(config.read_text())
    doc["access"]["allowed_clients"].append(name)  # type: ignore[index, union-attr]
    config.write_text(tomlkit.dumps(doc))


def sign_and_check(nodes: LocalCluster, message: bytes) -> None:
    with SyncClusterClient(nodes.cluster, deadline=TIMEOUT) as client:
        signature = client.sign(message)
    nodes.params.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_sighup_reloads_certificate_and_allowed_clients_in_the_same_process(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    """Pass: after SIGHUP node 1 is the same process, presents the renewed certificate to
    a new connection, lets the new client "second" in (node 2, not reloaded, does not),
    still signs with its share, and its audit log holds one ``reload`` line (applied,
    the new serial, the client added) in an intact chain with no restart in it; the log
    warns that the renewed certificate expires within 30 days. A reload with a
    certificate of another CA is refused and changes nothing; SIGTERM then still ends
    with a ``stop`` line and exit 0."""
    config = nodes.node_dir(1) / "node.toml"
    pid = nodes.pid(1)
    cert, key = issue_client(nodes.root, "second", tmp_path)
    assert get_info_code(nodes, 1, cert, key) == grpc.StatusCode.PERMISSION_DENIED

    ca_cert, ca_key = cluster_ca(nodes.root)
    tls_pem = nodes.node_dir(1) / "tls.pem"
    before = served_certificate(nodes, 1)
    renewed = pki.recertify(pki.load_cert(tls_pem), ca_cert, ca_key, days=20)
    assert (
        renewed.public_key() == before.public_key()
        and renewed.serial_number != before.serial_number
    )
    pki.write_cert(tls_pem, renewed, overwrite=True)
    allow(config, "second")

    line = hup_and_wait(nodes, 1)
    assert line["outcome"] == "applied", line
    assert line["added"] == ["second"] and line["removed"] == []
    assert line["tls"]["cert_serial"] == f"{renewed.serial_number:x}"
    assert nodes.running(1) and nodes.pid(1) == pid
    assert served_certificate(nodes, 1).serial_number == renewed.serial_number
    assert get_info_code(nodes, 1, cert, key) == grpc.StatusCode.OK
    assert get_info_code(nodes, 2, cert, key) == grpc.StatusCode.PERMISSION_DENIED
    assert "the certificate expires on" in nodes.log(1)
    # Its share is still there: node 1 signs (ask it directly, and through the cluster).
    reply = nodes.stub(1).Sign(sign_request(nodes.params, [pkcs1_item(b"x")]), timeout=TIMEOUT)
    assert reply.index == 1 and len(reply.shares) == 1
    sign_and_check(nodes, b"after the reload")

    # A bad reload: a certificate from another CA. Nothing changes.
    other_ca = pki.make_ca("not the cluster CA")
    foreign, foreign_key = pki.issue_server_cert(*other_ca, "ittc-node-1", ["127.0.0.1"])
    good = tls_pem.read_bytes()
    pki.write_cert(tls_pem, foreign, overwrite=True)
    try:
        line = hup_and_wait(nodes, 1)
    finally:
        tls_pem.write_bytes(good)
    assert line["outcome"] == "refused" and str(tls_pem) in line["reason"]
    assert "not the certificate of the key" in line["reason"]
    assert served_certificate(nodes, 1).serial_number == renewed.serial_number
    assert get_info_code(nodes, 1, cert, key) == grpc.StatusCode.OK
    assert "reload refused, nothing changed" in nodes.log(1)
    sign_and_check(nodes, b"after a refused reload")

    assert nodes.terminate(1) == 0
    lines = records(nodes.audit_log(1))
    assert verify_audit_log(nodes.audit_log(1)) == len(lines)
    assert [r["type"] for r in lines if r["type"] in ("start", "stop")] == ["start", "stop"]
    assert lines[-1]["type"] == "stop"
    nodes.start([1])


def test_a_node_whose_certificate_expired_serves_again_after_a_renewal_is_reloaded(
    nodes: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass: with its clock past its certificate's expiry the node is NOT_SERVING and
    refuses to sign; a renewed certificate written in place and reloaded (no restart)
    makes it SERVING again, and it signs."""
    monkeypatch.setattr(certwatch, "CHECK_SECONDS", 0.05)
    expires = pki.load_cert(nodes.node_dir(3) / "tls.pem").not_valid_after_utc.timestamp()
    clock = FakeClock(expires - 3600)
    node = EmbeddedNode.start(nodes, 3, "expiring", clock=clock)
    health = health_pb2_grpc.HealthStub(node.channel)

    def status() -> Any:
        return health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status

    def wait_for(wanted: Any) -> None:
        for _ in range(400):
            if status() == wanted:
                return
            time.sleep(0.025)
        raise AssertionError(f"health is not {wanted}")

    try:
        assert status() == health_pb2.HealthCheckResponse.SERVING
        clock.set(expires + 60)
        wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(grpc.RpcError) as refused:
            node.stub.Sign(
                sign_request(nodes.params, [pkcs1_item(b"x")], timestamp_ms=clock.ms),
                timeout=TIMEOUT,
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

        renewed = pki.recertify(
            pki.load_cert(node.config.tls_cert), *cluster_ca(nodes.root), days=900
        )
        pki.write_cert(node.config.tls_cert, renewed, overwrite=True)
        node.reload()
        wait_for(health_pb2.HealthCheckResponse.SERVING)
        reply = node.stub.Sign(
            sign_request(nodes.params, [pkcs1_item(b"y")], timestamp_ms=clock.ms),
            timeout=TIMEOUT,
        )
        assert reply.index == 3
    finally:
        node.close()
