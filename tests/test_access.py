"""Who may sign: every way of reaching a node without being an allowed client.

Two kinds of refusal, and each case says which it expects:

* the TLS handshake fails (no certificate, a certificate the cluster CA did not issue,
  one outside its validity period, one not good for client authentication): the node
  never sees an RPC, so nothing reaches its audit log; the caller sees UNAVAILABLE;
* the handshake succeeds but the identity is not allowed (PERMISSION_DENIED) or there
  is none (UNAUTHENTICATED): the node refuses and audits the attempt, with the identity
  and the request.

Either way nothing is signed, and the node stays SERVING and keeps signing for its
allowed client. Already in tests/test_node.py (not repeated): another node's
certificate as a client, a plain foreign CA, an unlisted identity from the cluster CA.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from ittc_node.audit import verify_audit_log

from ittc.scheme.encoding import Scheme, encode
from ittc.storage import pki
from ittc.wire import tls
from ittc.wire.v1 import signer_pb2 as pb
from ittc.wire.v1 import signer_pb2_grpc
from tests.cluster import (
    CLIENT,
    LocalCluster,
    cluster_ca,
    issue_client,
    issue_client_cert,
    make_cluster,
    pkcs1_item,
    sign_request,
    site_passphrase,
)

TIMEOUT = 20.0
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = make_cluster(tmp_path_factory.mktemp("access"))
    with LocalCluster(root) as cluster:
        cluster.start([1, 2], timeout=120)
        yield cluster


def audit_records(cluster: LocalCluster, index: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.audit_log(index).read_text().splitlines()]


def signed_count(cluster: LocalCluster, index: int) -> int:
    return sum(r.get("outcome") == "signed" for r in audit_records(cluster, index))


def still_signs(cluster: LocalCluster, index: int) -> None:
    """The allowed client still gets a correct share from the node."""
    from ittc import storage

    config = cluster.config(index)
    share = storage.read_share_file(
        config.share_file, cluster.params, index, site_passphrase(cluster.root, index)
    )
    item = pkcs1_item(b"the allowed client still signs")
    response = cluster.stub(index).Sign(sign_request(cluster.params, [item]), timeout=TIMEOUT)
    x = encode(Scheme.PKCS1V15, "sha256", item.digest, cluster.params.bits)
    assert int.from_bytes(response.shares[0].value, "big") == share.signature_share(x).value
    assert cluster.health(index, timeout=5) == "SERVING"


def stub_with(
    cluster: LocalCluster, index: int, credentials: grpc.ChannelCredentials | None
) -> signer_pb2_grpc.SignerStub:
    """A Signer stub over exactly these credentials (None: plaintext)."""
    entry = cluster.cluster.node(index)
    options = tls.channel_options(entry.tls_name, 4 << 20)
    channel = (
        grpc.insecure_channel(entry.address)
        if credentials is None
        else grpc.secure_channel(entry.address, credentials, options=options)
    )
    cluster._channels.append(channel)  # closed with the cluster
    return signer_pb2_grpc.SignerStub(channel)  # type: ignore[no-untyped-call]


def cert_credentials(
    cluster: LocalCluster, cert: pathlib.Path, key: pathlib.Path
) -> grpc.ChannelCredentials:
    return tls.channel_credentials(cert, key, cluster.cluster.ca)


# -- refused at the handshake ---------------------------------------------------------

#: What a case presents: a (certificate, key) pair, or no certificate, or no TLS at all.
Presented = tuple[pathlib.Path, pathlib.Path] | str
NO_CERT, PLAINTEXT = "no client certificate", "plaintext"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _issued(**fields: Any) -> Callable[[LocalCluster, pathlib.Path], Presented]:
    def make(cluster: LocalCluster, tmp: pathlib.Path) -> Presented:
        kwargs = dict(fields)
        issuer = kwargs.pop("issuer", None) or cluster_ca(cluster.root)
        return issue_client_cert(tmp, "client", issuer=issuer, **kwargs)

    return make


def _impostor_ca(cluster: LocalCluster, tmp: pathlib.Path) -> Presented:
    # A CA with the cluster CA's exact name (and an allowed client name under it).
    real = pki.load_cert(cluster.cluster.ca)
    fake = pki.make_ca(real.subject.rfc4514_string().removeprefix("CN="))
    assert fake[0].subject == real.subject
    return issue_client_cert(tmp, "impostor", issuer=fake)


def _node_signed(cluster: LocalCluster, tmp: pathlib.Path) -> Presented:
    # A broken-into node mints a client certificate with its own TLS key: not a CA.
    folder = cluster.node_dir(2)
    issuer = (pki.load_cert(folder / "tls.pem"), pki.load_private_key(folder / "tls.key"))
    return issue_client_cert(tmp, "minted", issuer=issuer)


HANDSHAKE_FAILURES: dict[str, Callable[[LocalCluster, pathlib.Path], Presented]] = {
    "plaintext, no TLS at all": lambda cluster, tmp: PLAINTEXT,
    "TLS without a client certificate": lambda cluster, tmp: NO_CERT,
    "expired certificate from the cluster CA, allowed name": _issued(
        not_before=_now() - 30 * DAY, not_after=_now() - DAY
    ),
    "certificate from the cluster CA not valid yet, allowed name": _issued(
        not_before=_now() + DAY, not_after=_now() + 30 * DAY
    ),
    "server-only certificate from the cluster CA, allowed name": _issued(
        usage=ExtendedKeyUsageOID.SERVER_AUTH
    ),
    "certificate from another CA that has the cluster CA's name": _impostor_ca,
    "certificate signed by a node's TLS key, allowed name": _node_signed,
    "the node's own certificate used as a client": lambda cluster, tmp: (
        cluster.node_dir(1) / "tls.pem",
        cluster.node_dir(1) / "tls.key",
    ),
    # Whoever holds the CA key can mint any identity (docs/security.md); the CA's own
    # certificate (a CA; key usage keyCertSign and cRLSign only) is not a client.
    "the cluster CA's own certificate used as a client": lambda cluster, tmp: (
        cluster.root / "ca" / "ca.pem",
        cluster.root / "ca" / "ca.key",
    ),
}


def tls_probe(cluster: LocalCluster, index: int, presented: Presented) -> str:
    """Handshake with the node using Python's own TLS stack (which, unlike gRPC's client,
    sends whatever certificate it is given), then speak HTTP/2 until the server answers.

    Returns ``"served"`` when the node answered with an HTTP/2 frame, else how the
    connection ended: the node's TLS alert, or its closing the connection.
    """
    entry = cluster.cluster.node(index)
    host, port = entry.address.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cluster.cluster.ca)
    context.set_alpn_protocols(["h2"])
    if isinstance(presented, tuple):
        context.load_cert_chain(*presented)
    # The HTTP/2 client preface and an empty SETTINGS frame.
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=entry.tls_name) as conn:
                conn.sendall(preface)
                header = conn.recv(9)
        except ssl.SSLError as exc:
            return f"TLS alert: {exc.reason}"
        except (ConnectionError, TimeoutError) as exc:
            return f"closed: {type(exc).__name__}"
    return "served" if len(header) == 9 else "closed"


@pytest.mark.network
def test_control_a_certificate_made_the_same_way_but_valid_signs(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    """Without this, a helper that made broken certificates would pass every case below."""
    presented = _issued()(nodes, tmp_path)
    assert isinstance(presented, tuple)
    stub = stub_with(nodes, 1, cert_credentials(nodes, *presented))
    response = stub.Sign(sign_request(nodes.params, [pkcs1_item(b"control")]), timeout=TIMEOUT)
    assert response.index == 1 and len(response.shares) == 1
    assert audit_records(nodes, 1)[-1]["outcome"] == "signed"
    assert tls_probe(nodes, 1, presented) == "served"


@pytest.mark.parametrize("case", list(HANDSHAKE_FAILURES))
@pytest.mark.network
def test_refused_at_the_handshake(nodes: LocalCluster, tmp_path: pathlib.Path, case: str) -> None:
    log_before = nodes.audit_log(1).read_bytes()
    presented = HANDSHAKE_FAILURES[case](nodes, tmp_path)
    # The node itself refuses what it is shown (not our client refusing to show it).
    if presented != PLAINTEXT:
        assert tls_probe(nodes, 1, presented) != "served"
    # And through gRPC, as a combiner would try it. (gRPC's client does not even present
    # the CA's certificate; for that case the probe above is the test.)
    credentials = (
        None
        if presented == PLAINTEXT
        else grpc.ssl_channel_credentials(nodes.cluster.ca.read_bytes())
        if presented == NO_CERT
        else cert_credentials(nodes, *presented)
    )
    stub = stub_with(nodes, 1, credentials)
    request = sign_request(nodes.params, [pkcs1_item(b"sign me, whoever I am")])
    for call in (
        lambda: stub.Sign(request, timeout=TIMEOUT),
        lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    # No RPC reached the node: not a line in its log, let alone a signed one.
    assert nodes.audit_log(1).read_bytes() == log_before
    still_signs(nodes, 1)


# -- refused by the node, and audited -------------------------------------------------

AUDITED_REFUSALS: dict[str, tuple[dict[str, Any], grpc.StatusCode, str | None]] = {
    # A certificate from the cluster CA without a common name: no identity at all.
    "no common name": ({"common_names": ()}, grpc.StatusCode.UNAUTHENTICATED, None),
    # Names are compared exactly: no case folding.
    "allowed name in capitals": (
        {"common_names": ("ITTC-CLIENT",)},
        grpc.StatusCode.PERMISSION_DENIED,
        "ITTC-CLIENT",
    ),
    # The name is the certificate's, never a message field, and never its SAN.
    "allowed name only in the SAN": (
        {"common_names": ("mallory",), "san": CLIENT},
        grpc.StatusCode.PERMISSION_DENIED,
        "mallory",
    ),
    "trailing space in the name": (
        {"common_names": (CLIENT + " ",)},
        grpc.StatusCode.PERMISSION_DENIED,
        CLIENT + " ",
    ),
    # Two common names, the allowed one first: gRPC shows only the first, the node reads
    # the certificate itself and finds no single identity.
    "two common names": (
        {"common_names": (CLIENT, "mallory")},
        grpc.StatusCode.UNAUTHENTICATED,
        None,
    ),
}


@pytest.mark.parametrize("case", list(AUDITED_REFUSALS))
@pytest.mark.network
def test_refused_and_audited(nodes: LocalCluster, tmp_path: pathlib.Path, case: str) -> None:
    fields, code, identity = AUDITED_REFUSALS[case]
    cert, key = issue_client_cert(tmp_path, "client", issuer=cluster_ca(nodes.root), **fields)
    stub = stub_with(nodes, 1, cert_credentials(nodes, cert, key))
    signed_before = signed_count(nodes, 1)
    request = sign_request(nodes.params, [pkcs1_item(b"sign me")])
    with pytest.raises(grpc.RpcError) as sign_error:
        stub.Sign(request, timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as info_error:
        stub.GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT)
    assert sign_error.value.code() == code and info_error.value.code() == code
    sign_line, info_line = audit_records(nodes, 1)[-2:]
    assert (sign_line["method"], sign_line["outcome"], sign_line["client"]) == (
        "Sign",
        "refused",
        identity,
    )
    # Refused before its message is parsed: the line holds its size and hash, no field.
    data = request.SerializeToString()
    assert (sign_line["request_bytes"], sign_line["request_sha256"]) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert "request_id" not in sign_line and "items" not in sign_line
    assert sign_line["reason"] == sign_error.value.details()
    assert sign_line["peer"].startswith("ipv4:127.0.0.1:")
    assert (info_line["method"], info_line["outcome"], info_line["client"]) == (
        "GetInfo",
        "refused",
        identity,
    )
    assert signed_count(nodes, 1) == signed_before
    still_signs(nodes, 1)


# -- a client removed from the configuration ------------------------------------------


def _set_allowed(cluster: LocalCluster, index: int, names: list[str]) -> None:
    toml = cluster.node_dir(index) / "node.toml"
    listed = ", ".join(f'"{name}"' for name in names)
    text, count = re.subn(
        r"(?m)^allowed_clients = .*$", f"allowed_clients = [{listed}]", toml.read_text()
    )
    assert count == 1
    toml.write_text(text)


@pytest.mark.network
def test_removed_client_is_refused_after_restart(
    nodes: LocalCluster, tmp_path: pathlib.Path
) -> None:
    cert, key = issue_client(nodes.root, "carol", tmp_path)
    toml = nodes.node_dir(2) / "node.toml"
    original = toml.read_text()
    try:
        _set_allowed(nodes, 2, [CLIENT, "carol"])
        nodes.restart(2)
        carol = nodes.stub(2, cert, key)
        granted = sign_request(nodes.params, [pkcs1_item(b"carol, while listed")])
        assert len(carol.Sign(granted, timeout=TIMEOUT).shares) == 1
        assert carol.GetInfo(pb.GetInfoRequest(), timeout=TIMEOUT).index == 2

        # The operator removes carol and restarts the node: removing the name is the
        # revocation (there is no CRL), so her still-valid certificate no longer signs.
        _set_allowed(nodes, 2, [CLIENT])
        nodes.restart(2)
        signed_before = signed_count(nodes, 2)
        carol = nodes.stub(2, cert, key)  # a new connection to the restarted node
        revoked = sign_request(nodes.params, [pkcs1_item(b"carol, after removal")])
        with pytest.raises(grpc.RpcError) as info:
            carol.Sign(revoked, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'carol' is not allowed" in info.value.details()
        revoked_hash = hashlib.sha256(revoked.SerializeToString()).hexdigest()
        last = audit_records(nodes, 2)[-1]
        assert (last["client"], last["method"], last["outcome"], last["request_sha256"]) == (
            "carol",
            "Sign",
            "refused",
            revoked_hash,
        )
        assert signed_count(nodes, 2) == signed_before
        still_signs(nodes, 2)
        outcomes = [
            (r.get("client"), r.get("outcome"))
            for r in audit_records(nodes, 2)
            if r.get("request_id") == granted.request_id or r.get("request_sha256") == revoked_hash
        ]
        assert outcomes == [("carol", "signed"), ("carol", "refused")]
        assert verify_audit_log(nodes.audit_log(2)) > 0  # one chain across both restarts
    finally:
        toml.write_text(original)
        nodes.restart(2)
