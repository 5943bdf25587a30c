"""Test helpers: a throwaway cluster folder and its nodes as real local processes.

    root = make_cluster(tmp_path)                  # 3-of-5, 1024-bit TEST key, free ports
    with LocalCluster(root) as nodes:
        nodes.start([1, 2, 3])                     # real `python -m ittc_node` processes
        stub = nodes.stub(1)                       # raw SignerStub over mutual TLS
        stub.Sign(sign_request(nodes.params, [pkcs1_item(b"hi")]), timeout=10)
        nodes.kill(2); nodes.restart(1); nodes.audit_log(1)

Every process is killed when the ``with`` block ends, however it ends (each node runs in
its own process group, so worker processes go too).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ittc import tls
from ittc.ceremony import create_cluster
from ittc.config import ClusterFile, NodeConfig
from ittc.localcluster import LocalCluster as _BaseLocalCluster
from ittc.scheme import dealer
from ittc.scheme.params import PublicParams
from ittc.storage import KdfLimits
from ittc.v1 import signer_pb2 as pb
from ittc.v1 import signer_pb2_grpc

__all__ = ["CLIENT", "PASSPHRASE", "LocalCluster", "copy_node", "fault_env", "foreign_client",
           "free_ports", "group_members", "issue_client", "make_cluster", "pkcs1_item",
           "pss_item", "sign_request", "write_private"]

#: The passphrase of every share file make_cluster writes (and of its passphrase file).
PASSPHRASE = b"correct horse battery staple"
#: Client identity the ceremony creates and every node allows.
CLIENT = "ittc-client"


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on right now (held open together, so distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_private(path: pathlib.Path, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` with mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def make_cluster(tmp_path: pathlib.Path, bits: int = 1024, n: int = 5, k: int = 3) -> pathlib.Path:
    """A cluster folder ``tmp_path/cluster`` for a small TEST key: fast KDF, free ports,
    a 0600 passphrase file ``tmp_path/passphrase`` named by every node.toml."""
    tmp_path = pathlib.Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    pass_file = write_private(tmp_path / "passphrase", PASSPHRASE + b"\n")
    dealt = dealer.generate(bits, n=n, k=k, insecure_allow_small_modulus_for_tests=True)
    out = tmp_path / "cluster"
    create_cluster(out, dealt, passphrases=[PASSPHRASE], passphrase_file=pass_file,
                   addresses=[f"127.0.0.1:{p}" for p in free_ports(n)],
                   kdf=KdfLimits.fast_for_tests())
    return out


def fault_env(spec: str) -> dict[str, str]:
    """Environment that switches test faults on in a node (see ittc_node.faults)."""
    from ittc_node.faults import ENABLE_VALUE, ENABLE_VAR, FAULT_VAR
    return {ENABLE_VAR: ENABLE_VALUE, FAULT_VAR: spec}


def issue_client(root: pathlib.Path, name: str, out: pathlib.Path) -> tuple[pathlib.Path,
                                                                            pathlib.Path]:
    """A client certificate named ``name`` from the cluster's own CA: (cert, key) paths."""
    ca_cert = tls.load_cert(root / "ca" / "ca.pem")
    ca_key = tls.load_private_key(root / "ca" / "ca.key")
    cert, key = tls.issue_client_cert(ca_cert, ca_key, name)
    out.mkdir(parents=True, exist_ok=True)
    tls.write_cert(out / f"{name}.pem", cert, overwrite=True)
    tls.write_private_key(out / f"{name}.key", key, overwrite=True)
    return out / f"{name}.pem", out / f"{name}.key"


def foreign_client(out: pathlib.Path, name: str = CLIENT) -> tuple[pathlib.Path, pathlib.Path]:
    """A client certificate with an allowed name, but from a CA the cluster never saw."""
    ca_cert, ca_key = tls.make_ca("not the cluster CA")
    cert, key = tls.issue_client_cert(ca_cert, ca_key, name)
    out.mkdir(parents=True, exist_ok=True)
    tls.write_cert(out / "foreign.pem", cert, overwrite=True)
    tls.write_private_key(out / "foreign.key", key, overwrite=True)
    return out / "foreign.pem", out / "foreign.key"


def pkcs1_item(message: bytes, hash_name: str = "sha256") -> pb.SignItem:
    digest = hashlib.new(hash_name, message).digest()
    return pb.SignItem(padding=pb.PADDING_PKCS1V15, hash=_HASH[hash_name], digest=digest)


def pss_item(message: bytes, hash_name: str = "sha256", salt: bytes | None = None) -> pb.SignItem:
    digest = hashlib.new(hash_name, message).digest()
    if salt is None:
        salt = secrets.token_bytes(hashlib.new(hash_name).digest_size)
    return pb.SignItem(padding=pb.PADDING_PSS, hash=_HASH[hash_name], digest=digest, salt=salt)


_HASH = {"sha256": pb.HASH_SHA256, "sha384": pb.HASH_SHA384, "sha512": pb.HASH_SHA512}


def sign_request(params: PublicParams, items: Sequence[pb.SignItem], *,
                 with_proofs: bool = False, request_id: str | None = None,
                 timestamp_ms: int | None = None, key_id: str | None = None) -> pb.SignRequest:
    """A well-formed SignRequest (fresh id, current time) unless told otherwise."""
    return pb.SignRequest(
        request_id=request_id if request_id is not None else secrets.token_urlsafe(18),
        timestamp_ms=timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        key_id=key_id if key_id is not None else params.key_id,
        with_proofs=with_proofs, items=list(items))


class LocalCluster(_BaseLocalCluster):
    """:class:`ittc.localcluster.LocalCluster` plus what node tests need: raw stubs under
    any identity, per-node config and audit-log paths, and process-group cleanup."""

    def __init__(self, root: str | os.PathLike[str] | ClusterFile, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.root = self.cluster.root
        self.params = self.cluster.params
        self._channels: list[grpc.Channel] = []

    # -- paths ------------------------------------------------------------------------

    def node_dir(self, index: int) -> pathlib.Path:
        return self.root / f"node-{index}"

    def config(self, index: int) -> NodeConfig:
        return NodeConfig.load(self.node_dir(index) / "node.toml")

    def audit_log(self, index: int) -> pathlib.Path:
        return self.config(index).audit_log

    def log(self, index: int) -> str:
        """Everything node ``index`` wrote to stdout and stderr (all its runs)."""
        return self.log_tail(index, lines=1_000_000)

    # -- processes --------------------------------------------------------------------

    def stop_all(self) -> dict[int, int | None]:
        """SIGTERM every node, then SIGKILL every process group left (workers included)."""
        return self.stop()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self.stop_all()

    # -- talking to nodes -------------------------------------------------------------

    def channel(self, index: int, cert: pathlib.Path | None = None,
                key: pathlib.Path | None = None) -> grpc.Channel:
        """A mutual-TLS channel to node ``index`` as the cluster client (or ``cert``/``key``)."""
        entry = self.cluster.node(index)
        return self.channel_at(entry.address, entry.tls_name, cert, key)

    def channel_at(self, address: str, tls_name: str, cert: pathlib.Path | None = None,
                   key: pathlib.Path | None = None) -> grpc.Channel:
        """A mutual-TLS channel to any address (a node started outside this object)."""
        cert = cert or self.cluster.client_cert
        key = key or self.cluster.client_key
        assert cert is not None and key is not None
        creds = tls.channel_credentials(cert, key, self.cluster.ca)
        channel = grpc.secure_channel(address, creds,
                                      options=tls.channel_options(tls_name, 4 << 20))
        self._channels.append(channel)
        return channel

    def stub(self, index: int, cert: pathlib.Path | None = None,
             key: pathlib.Path | None = None) -> signer_pb2_grpc.SignerStub:
        return signer_pb2_grpc.SignerStub(self.channel(index, cert, key))  # type: ignore[no-untyped-call]

    def health_as(self, index: int, cert: pathlib.Path, key: pathlib.Path,
                  service: str = "") -> str:
        """Health status seen with another identity (health needs no allowed identity)."""
        stub = health_pb2_grpc.HealthStub(self.channel(index, cert, key))  # type: ignore[no-untyped-call]
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"  # type: ignore[attr-defined]
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid`` (Linux /proc)."""
    found = []
    for stat_file in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found


def copy_node(root: pathlib.Path, index: int, name: str) -> pathlib.Path:
    """A copy of node ``index``'s folder beside it (same depth, so relative paths hold)."""
    target = root / name
    shutil.copytree(root / f"node-{index}", target)
    return target
