"""Identities over time, as an operator handles them, on real node processes.

* Reload (SIGHUP): the operator renews node 1's certificate from the cluster CA, adds a
  second combiner to its allowed clients, and sends SIGHUP: the same process (same pid,
  share still in memory, audit chain continued) serves the new certificate to new
  connections and allows the new client, and one ``reload`` line in its audit log says
  what is in force. A reload with a bad certificate changes nothing and is audited as
  refused. An embedded node whose certificate expired (NOT_SERVING) serves again once a
  renewed one is reloaded.
* ``ittc tls client``: a second combiner's bundle, refused until the nodes allow it.
* ``ittc tls new-ca / trust / renew``: the cluster CA rotated while one long-running
  combiner signs all along, without a single failure.
* The combiner warns about its own certificate and the nodes' well before they expire.
* ``ittc share passphrase`` and ``ittc share check``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import tomlkit
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ittc_node import certwatch
from ittc_node.audit import verify_audit_log

from ittc import storage
from ittc.combiner import SyncClusterClient
from ittc.config import NodeConfig
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ShareFileCorrupt, SigningError, WrongPassphrase
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


# -- the command line ------------------------------------------------------------------


def ittc(*args: str | pathlib.Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ittc", *map(str, args)],
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"ittc {' '.join(map(str, args))}: {done.returncode}\n{done.stderr}")
    return done


def test_a_second_combiner_signs_once_every_node_allows_it(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    """``ittc tls client`` writes a complete combiner bundle (no CA key in it, its key
    0600) for "combiner-b". Pass: it reaches the nodes (health) but cannot sign until its
    name is in allowed_clients; after every node.toml lists it and the nodes are reloaded
    (no restart), it signs a message ``openssl`` verifies. Without the CA's key, or into
    a folder that is not empty, the command refuses and writes nothing."""
    bundle = tmp_path / "combiner-b"
    no_key = tmp_path / "ca-without-key"
    no_key.mkdir()
    shutil.copy(nodes.root / "ca" / "ca.pem", no_key / "ca.pem")
    refused = ittc(
        "tls",
        "client",
        "combiner-b",
        "--ca",
        no_key,
        "--bundle",
        nodes.root / "combiner",
        "--out",
        bundle,
        check=False,
    )
    assert refused.returncode == 2 and "no ca.key here" in refused.stderr
    assert not bundle.exists()

    done = ittc(
        "tls",
        "client",
        "combiner-b",
        "--ca",
        nodes.root / "ca",
        "--bundle",
        nodes.root / "combiner",
        "--out",
        bundle,
    )
    assert "allowed_clients" in done.stderr
    assert sorted(p.name for p in bundle.iterdir()) == [
        "ca.pem",
        "client.key",
        "client.pem",
        "cluster.toml",
        "params.json",
        "public.pem",
    ]
    assert stat.S_IMODE((bundle / "client.key").stat().st_mode) == 0o600
    cert = pki.load_cert(bundle / "client.pem")
    assert cert.subject.rfc4514_string() == "CN=combiner-b"
    again = ittc(
        "tls",
        "client",
        "combiner-c",
        "--ca",
        nodes.root / "ca",
        "--bundle",
        nodes.root / "combiner",
        "--out",
        bundle,
        check=False,
    )
    assert again.returncode == 2 and "not empty" in again.stderr

    message = tmp_path / "message.txt"
    message.write_bytes(b"signed by a second combiner")
    with SyncClusterClient(bundle, deadline=5) as client:
        assert set(client.health().values()) == {"SERVING"}
        with pytest.raises(SigningError):
            client.sign(message.read_bytes())
    for index in nodes.indices:
        allow(nodes.node_dir(index) / "node.toml", "combiner-b")
        assert hup_and_wait(nodes, index)["added"] == ["combiner-b"]
    ittc("sign", "--cluster", bundle, "--in", message, "--out", tmp_path / "message.sig")
    subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            bundle / "public.pem",
            "-signature",
            tmp_path / "message.sig",
            message,
        ],
        check=True,
        capture_output=True,
    )


def test_tls_show_exits_1_when_a_certificate_expires_within_the_warning(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    """Pass: ``ittc tls show`` on the CA and a fresh node certificate exits 0 and says
    how long each has left; on a certificate renewed for 10 days it exits 1."""
    fine = ittc("tls", "show", nodes.root / "ca" / "ca.pem", nodes.node_dir(2) / "tls.pem")
    assert "CA CN=ittc cluster CA" in fine.stdout and "node (server) CN=ittc-node-2" in fine.stdout
    short = tmp_path / "short.pem"
    ittc(
        "tls",
        "renew",
        nodes.node_dir(2) / "tls.pem",
        "--ca",
        nodes.root / "ca",
        "--days",
        "10",
        "--out",
        short,
    )
    soon = ittc("tls", "show", short, check=False)
    assert soon.returncode == 1 and ("9 days left" in soon.stdout or "10 days left" in soon.stdout)


def test_the_combiner_warns_about_its_own_and_the_nodes_certificates(
    nodes: LocalCluster,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pass: a client whose certificate expires in 10 days logs a warning naming that
    file as it connects (logger ``ittc.combiner``); node 4, renewed for 20 days and
    reloaded, is named in a warning once the client looks at the nodes' certificates
    (first look FIRST_CHECK after connecting, here 0.1 s); nodes whose certificates
    expire later are not."""
    from ittc.combiner import certcheck

    monkeypatch.setattr(certcheck, "FIRST_CHECK", 0.1)
    caplog.set_level(logging.WARNING, logger="ittc.combiner")
    bundle = tmp_path / "short-lived"
    ittc(
        "tls",
        "client",
        "ittc-client",
        "--ca",
        nodes.root / "ca",
        "--bundle",
        nodes.root / "combiner",
        "--out",
        bundle,
        "--days",
        "10",
    )
    ittc("tls", "renew", nodes.node_dir(4) / "tls.pem", "--ca", nodes.root / "ca", "--days", "20")
    hup_and_wait(nodes, 4)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "ittc.combiner"]

    with SyncClusterClient(bundle, deadline=TIMEOUT) as client:
        client.sign(b"warned")
        own = [w for w in warnings() if "client certificate" in w]
        assert len(own) == 1 and str(bundle / "client.pem") in own[0]
        assert "expires on" in own[0] and "(in 9 days" in own[0]
        for _ in range(200):
            if any("node 4's certificate" in w for w in warnings()):
                break
            time.sleep(0.05)
        found = client.certificates()
    # Node 4, and any node an earlier test renewed for less than 30 days; no other.
    soon = {
        index
        for index in nodes.indices
        if pki.load_cert(nodes.node_dir(index) / "tls.pem").not_valid_after_utc.timestamp()
        < time.time() + 30 * 86400
    }
    named = {index for index in nodes.indices for w in warnings() if f"node {index}'s" in w}
    assert 4 in soon and named == soon
    assert any("node 4's certificate" in w and "(in 19 days" in w for w in warnings())
    assert set(found) == set(nodes.indices)
    assert all(isinstance(c, x509.Certificate) for c in found.values())


def test_the_cluster_ca_is_rotated_while_a_combiner_signs_without_a_failure(
    tmp_path: pathlib.Path,
) -> None:
    """A CA rotation as nodes/README.md tells it, with the commands it names, on five
    node processes, while ONE combiner (started before, never restarted) signs a message
    every 20 ms all along: (1) ``ittc tls new-ca``; (2) ``ittc tls trust`` old + new
    into every node's and the combiner's ca.pem, nodes reloaded; (3) every node's
    certificate renewed under the new CA (``ittc tls renew``), one node reloaded after
    the other; (4) the combiner's certificate renewed; (5) the new CA alone everywhere,
    nodes reloaded.

    Pass: no signing call fails, every signature verifies, each phase signed; each node
    applied three reloads in one run (no restart) and now presents a certificate of the
    new CA; a client with an identity of the old CA is refused at the handshake; a new
    combiner started from the bundle signs."""
    root = make_cluster(tmp_path)
    folder = CeremonyFolder(root)
    old_client = tmp_path / "old-client"
    old_client.mkdir()
    for name in ("client.pem", "client.key"):
        shutil.copy2(folder.combiner / name, old_client / name)
    with LocalCluster(root) as nodes:
        nodes.start(timeout=120)
        phases: list[str] = ["starting"]
        signed: collections.Counter[str] = collections.Counter()
        failures: list[str] = []
        stop = threading.Event()

        def sign_all_along() -> None:
            with SyncClusterClient(folder.combiner, deadline=TIMEOUT) as client:
                count = 0
                while not stop.is_set():
                    message = f"rotation {count}".encode()
                    count += 1
                    try:
                        signature = client.sign(message)
                        nodes.params.public_key().verify(
                            signature, message, padding.PKCS1v15(), hashes.SHA256()
                        )
                        signed[phases[-1]] += 1
                    except Exception as exc:  # noqa: BLE001 - every failure is the finding
                        failures.append(f"{phases[-1]}: {type(exc).__name__}: {exc}")
                    time.sleep(0.02)

        def phase(name: str) -> None:
            phases.append(name)
            time.sleep(2.5)  # signing goes on; the combiner looks at its files every second

        def reload_all() -> None:
            for index in nodes.indices:
                assert hup_and_wait(nodes, index)["outcome"] == "applied"

        signer = threading.Thread(target=sign_all_along)
        signer.start()
        try:
            phase("before")
            new_ca = tmp_path / "ca-2"
            ittc("tls", "new-ca", "--out", new_ca)
            phase("new CA made")
            both = tmp_path / "both.pem"
            ittc("tls", "trust", folder.ca / "ca.pem", new_ca / "ca.pem", "--out", both)
            for index in nodes.indices:
                shutil.copyfile(both, folder.etc(index) / "ca.pem")
            shutil.copyfile(both, folder.combiner / "ca.pem")
            reload_all()
            phase("both trusted")
            for index in nodes.indices:
                ittc("tls", "renew", folder.etc(index) / "tls.pem", "--ca", new_ca)
                assert hup_and_wait(nodes, index)["outcome"] == "applied"
            phase("nodes renewed")
            ittc("tls", "renew", folder.combiner / "client.pem", "--ca", new_ca)
            phase("combiner renewed")
            for index in nodes.indices:
                shutil.copyfile(new_ca / "ca.pem", folder.etc(index) / "ca.pem")
            shutil.copyfile(new_ca / "ca.pem", folder.combiner / "ca.pem")
            reload_all()
            phase("after")
        finally:
            stop.set()
            signer.join(timeout=60)
        assert not failures, failures[:5]
        assert all(signed[p] > 0 for p in phases[1:]), dict(signed)

        ca2 = pki.load_cert(new_ca / "ca.pem")
        for index in nodes.indices:
            lines = records(nodes.audit_log(index))
            assert [r["outcome"] for r in lines if r["type"] == "reload"] == ["applied"] * 3
            assert [r["type"] for r in lines].count("start") == 1
            entry = nodes.cluster.node(index)
            served = tls.server_certificate(
                entry.address,
                entry.tls_name,
                ca_path=new_ca / "ca.pem",
                cert_path=folder.combiner / "client.pem",
                key_path=folder.combiner / "client.key",
                timeout=5,
            )
            served.verify_directly_issued_by(ca2)
        channel = grpc.secure_channel(
            nodes.cluster.node(1).address,
            tls.channel_credentials(old_client / "client.pem", old_client / "client.key", both),
            options=tls.channel_options("ittc-node-1", 1 << 20),
        )
        with channel, pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        with SyncClusterClient(folder.combiner, deadline=TIMEOUT) as client:
            client.sign(b"a new combiner after the rotation")


# -- share files -------------------------------------------------------------------------


def test_share_passphrase_is_changed_and_a_backup_checked_offline(
    tmp_path: pathlib.Path,
) -> None:
    """``ittc share passphrase --generate`` on site 2, as an operator does before the node
    next starts. Pass: the share file now opens with the new passphrase only; a backup
    taken before still opens with the old one, and ``ittc share check`` says so without
    writing anything (no file in its folder changes); the check refuses the new
    passphrase on the backup, a damaged copy, and another node's index, each with a line
    naming the problem (exit 2); node 2 started with the new passphrase serves."""
    root = make_cluster(tmp_path)
    folder = CeremonyFolder(root)
    etc = folder.etc(2)
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    shutil.copy2(etc / "share.enc", backups / "share-2.enc")
    shutil.copy2(folder.passphrase(2), backups / "old-passphrase")
    old = storage.read_passphrase_file(folder.passphrase(2))

    new_file = tmp_path / "new-passphrase"
    done = ittc("share", "passphrase", "--config", etc / "node.toml", "--generate", new_file)
    assert "now encrypted under the new passphrase" in done.stderr
    new = storage.read_passphrase_file(new_file)
    params = NodeConfig.load(etc / "node.toml").load_params()
    with pytest.raises(WrongPassphrase):
        storage.read_share_file(etc / "share.enc", params, 2, old)
    assert storage.read_share_file(etc / "share.enc", params, 2, new).index == 2
    assert not list(etc.glob(".*new-passphrase*"))

    def listing() -> dict[str, tuple[int, bytes]]:
        return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in backups.iterdir()}

    before = listing()
    ok = ittc(
        "share",
        "check",
        backups / "share-2.enc",
        "--params",
        etc / "params.json",
        "--passphrase-file",
        backups / "old-passphrase",
    )
    assert "OK: node 2's share" in ok.stdout
    assert listing() == before
    wrong = ittc(
        "share",
        "check",
        backups / "share-2.enc",
        "--params",
        etc / "params.json",
        "--passphrase-file",
        new_file,
        check=False,
    )
    assert wrong.returncode == 2 and "the passphrase does not open" in wrong.stderr
    damaged = backups / "damaged.enc"
    data = bytearray((backups / "share-2.enc").read_bytes())
    data[-5] ^= 1
    damaged.write_bytes(bytes(data))
    damaged.chmod(0o600)
    bad = ittc(
        "share",
        "check",
        damaged,
        "--params",
        etc / "params.json",
        "--passphrase-file",
        backups / "old-passphrase",
        check=False,
    )
    assert bad.returncode == 2 and "damaged or was altered" in bad.stderr
    other = ittc(
        "share",
        "check",
        backups / "share-2.enc",
        "--params",
        etc / "params.json",
        "--index",
        "3",
        "--passphrase-file",
        backups / "old-passphrase",
        check=False,
    )
    assert other.returncode == 2 and "holds the share of node 2, not of node 3" in other.stderr
    assert ittc("share", "check", "--help").returncode == 0
    asked = ittc(
        "share", "check", backups / "share-2.enc", "--params", etc / "params.json", check=False
    )
    assert asked.returncode == 2 and asked.stderr == (
        f"ittc: error: no terminal to ask for the passphrase of {backups / 'share-2.enc'}: "
        "give it with --passphrase-file FILE\n"
    )

    shutil.copy2(new_file, folder.passphrase(2))
    with LocalCluster(root) as nodes:
        nodes.start([2], timeout=60)
        reply = nodes.stub(2).Sign(sign_request(nodes.params, [pkcs1_item(b"z")]), timeout=TIMEOUT)
        assert reply.index == 2


def test_a_passphrase_change_that_fails_to_verify_leaves_the_old_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass: when the re-encrypted copy does not read back (injected), or the old
    passphrase is wrong, the share file is byte for byte what it was and no new file is
    left beside it."""
    from ittc.deploy import sharefiles

    root = make_cluster(tmp_path)
    config = NodeConfig.load(CeremonyFolder(root).node_config(1))
    old = storage.read_passphrase_file(CeremonyFolder(root).passphrase(1))
    original = config.share_file.read_bytes()
    with pytest.raises(WrongPassphrase):
        sharefiles.change_passphrase(config, b"not the passphrase", b"new one")
    real = storage.read_share_file

    def fails_on_the_copy(path: Any, *args: Any) -> Any:
        if "new-passphrase" in str(path):
            raise ShareFileCorrupt(f"share file {path} is damaged (injected)")
        return real(path, *args)

    monkeypatch.setattr(storage, "read_share_file", fails_on_the_copy)
    with pytest.raises(ShareFileCorrupt):
        sharefiles.change_passphrase(config, old, b"a new passphrase")
    assert config.share_file.read_bytes() == original
    assert sorted(p.name for p in config.share_file.parent.iterdir()) == [
        "ca.pem",
        "node.toml",
        "params.json",
        "share.enc",
        "tls.key",
        "tls.pem",
    ]
