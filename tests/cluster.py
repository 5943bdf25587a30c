"""Test helpers: a throwaway ceremony output and its nodes as real local processes.

    root = make_cluster(tmp_path)                  # 3-of-5, 1024-bit TEST key, free ports
    site_passphrase(root, 2)                       # site 2's own passphrase
    with LocalCluster(root) as nodes:
        nodes.start([1, 2, 3])                     # real `python -m ittc_node` processes
        stub = nodes.stub(1)                       # raw SignerStub over mutual TLS
        stub.Sign(sign_request(nodes.params, [pkcs1_item(b"hi")]), timeout=10)
        nodes.kill(2); nodes.restart(1); nodes.audit_log(1)

Every process is killed when the ``with`` block ends, however it ends (each node runs in
its own process group, so worker processes go too).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import os
import pathlib
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ittc.config import ClusterFile, NodeConfig
from ittc.deploy.ceremony import create_cluster
from ittc.deploy.layout import CeremonyFolder
from ittc.deploy.localcluster import LocalCluster as _BaseLocalCluster
from ittc.deploy.localcluster import free_loopback_ports
from ittc.scheme import dealer
from ittc.scheme.params import PublicParams
from ittc.storage import KdfLimits, pki
from ittc.wire import tls
from ittc.wire.v1 import signer_pb2 as pb
from ittc.wire.v1 import signer_pb2_grpc

__all__ = [
    "CLIENT",
    "EmbeddedNode",
    "FakeClock",
    "FaultCluster",
    "LocalCluster",
    "cluster_ca",
    "copy_node",
    "fault_env",
    "file_state",
    "foreign_client",
    "free_ports",
    "audit_log_of",
    "group_members",
    "issue_client",
    "issue_client_cert",
    "make_cluster",
    "open_fds",
    "pkcs1_item",
    "pss_item",
    "raw_method",
    "reissue_cert",
    "rss_bytes",
    "sign_request",
    "site_passphrase",
    "track_answers",
    "track_asks",
    "write_private",
]

#: Client identity the ceremony creates and every node allows.
CLIENT = "ittc-client"


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on right now (held open together, so distinct)."""
    return free_loopback_ports(count)


def write_private(path: pathlib.Path, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` with mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def make_cluster(
    tmp_path: pathlib.Path,
    bits: int = 1024,
    n: int = 5,
    k: int = 3,
    *,
    addresses: Sequence[str] | None = None,
    split_existing_key: bool = False,
) -> pathlib.Path:
    """The ceremony's output ``tmp_path/cluster`` for a small TEST key: fast KDF, free
    loopback ports, a random passphrase per site in ``site-<i>/passphrase`` (as the
    ceremony makes by default; :func:`site_passphrase` reads it).

    ``addresses`` (``host:port``, one per node) replaces the loopback ports: each node
    listens on exactly its own address and its certificate carries that IP.
    ``split_existing_key`` shares an ordinary RSA key over the integers instead (no safe
    primes, so share proofs are not sound: the ``ittc split`` path)."""
    tmp_path = pathlib.Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if split_existing_key:
        numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
        dealt = dealer.deal_integer(
            numbers.public_numbers.n, numbers.public_numbers.e, numbers.d, n, k
        )
    else:
        dealt = dealer.generate(bits, n=n, k=k, insecure_allow_small_modulus_for_tests=True)
    out = tmp_path / "cluster"
    chosen = list(addresses) if addresses is not None else [f"127.0.0.1:{p}" for p in free_ports(n)]
    create_cluster(out, dealt, addresses=chosen, listen=chosen, kdf=KdfLimits.fast_for_tests())
    return out


def site_passphrase(root: pathlib.Path, index: int) -> bytes:
    """Site ``index``'s own passphrase, from its folder in the ceremony output ``root``."""
    from ittc import storage

    return storage.read_passphrase_file(CeremonyFolder(root).passphrase(index))


def audit_log_of(etc: pathlib.Path) -> pathlib.Path:
    """Where the node whose config folder is ``etc`` (a site's ``etc/``) keeps its audit
    log: the site's ``var/``."""
    return etc.parent / "var" / "audit.log"


def fault_env(spec: str) -> dict[str, str]:
    """Environment that switches test faults on in a node (see ittc_node.faults)."""
    from ittc_node.faults import environment

    return environment(spec)


def issue_client(
    root: pathlib.Path, name: str, out: pathlib.Path
) -> tuple[pathlib.Path, pathlib.Path]:
    """A client certificate named ``name`` from the cluster's own CA: (cert, key) paths."""
    ca_cert = pki.load_cert(root / "ca" / "ca.pem")
    ca_key = pki.load_private_key(root / "ca" / "ca.key")
    cert, key = pki.issue_client_cert(ca_cert, ca_key, name)
    out.mkdir(parents=True, exist_ok=True)
    pki.write_cert(out / f"{name}.pem", cert, overwrite=True)
    pki.write_private_key(out / f"{name}.key", key, overwrite=True)
    return out / f"{name}.pem", out / f"{name}.key"


def cluster_ca(root: pathlib.Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The cluster CA's certificate and key, from the folder the ceremony wrote."""
    return (pki.load_cert(root / "ca" / "ca.pem"), pki.load_private_key(root / "ca" / "ca.key"))


def issue_client_cert(
    out: pathlib.Path,
    file_name: str,
    *,
    issuer: tuple[x509.Certificate | x509.Name, ec.EllipticCurvePrivateKey],
    common_names: Sequence[str] = (CLIENT,),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    usage: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH,
    san: str | None = "ittc-client",
) -> tuple[pathlib.Path, pathlib.Path]:
    """A client certificate with every field the caller wants wrong: any issuer (a CA's
    certificate, or just a name, for issuers that are not CAs), any validity period,
    zero or several common names, another extended key usage. ``(cert, key)`` paths.

    ``issuer=cluster_ca(root)`` with ``not_after`` in the past makes an expired
    certificate from the cluster's own CA.
    """
    issuer_cert, issuer_key = issuer
    issuer_name = issuer_cert.subject if isinstance(issuer_cert, x509.Certificate) else issuer_cert
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name) for name in common_names]
        or [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no common name")]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            pki.key_usage("digital_signature"),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    if isinstance(issuer_cert, x509.Certificate):
        try:
            ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
                critical=False,
            )
        except x509.ExtensionNotFound:
            pass
    cert = builder.sign(issuer_key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    pki.write_cert(out / f"{file_name}.pem", cert, overwrite=True)
    pki.write_private_key(out / f"{file_name}.key", key, overwrite=True)
    return out / f"{file_name}.pem", out / f"{file_name}.key"


def raw_method(channel: grpc.Channel, method: str) -> Any:
    """``/ittc.v1.Signer/<method>`` taking and returning raw bytes (no protobuf on our
    side), to send a node anything at all."""
    return channel.unary_unary(
        f"/ittc.v1.Signer/{method}", request_serializer=None, response_deserializer=None
    )


def file_state(path: pathlib.Path) -> tuple[bytes, int, int] | None:
    """(bytes, mtime in ns, mode) of a file, or None if there is none: compare before/after."""
    try:
        st = os.lstat(path)
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
    except FileNotFoundError:
        return None
    return data, st.st_mtime_ns, st.st_mode


def foreign_client(out: pathlib.Path, name: str = CLIENT) -> tuple[pathlib.Path, pathlib.Path]:
    """A client certificate with an allowed name, but from a CA the cluster never saw."""
    ca_cert, ca_key = pki.make_ca("not the cluster CA")
    cert, key = pki.issue_client_cert(ca_cert, ca_key, name)
    out.mkdir(parents=True, exist_ok=True)
    pki.write_cert(out / "foreign.pem", cert, overwrite=True)
    pki.write_private_key(out / "foreign.key", key, overwrite=True)
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


def sign_request(
    params: PublicParams,
    items: Sequence[pb.SignItem],
    *,
    with_proofs: bool = False,
    request_id: str | None = None,
    timestamp_ms: int | None = None,
    key_id: str | None = None,
    epoch: int | None = None,
    epoch_id: str | None = None,
) -> pb.SignRequest:
    """A well-formed SignRequest (fresh id, current time, the params' epoch) unless told
    otherwise."""
    return pb.SignRequest(
        request_id=request_id if request_id is not None else secrets.token_urlsafe(18),
        timestamp_ms=timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        key_id=key_id if key_id is not None else params.key_id,
        with_proofs=with_proofs,
        items=list(items),
        epoch=epoch if epoch is not None else params.epoch,
        epoch_id=epoch_id if epoch_id is not None else params.epoch_id,
    )


class LocalCluster(_BaseLocalCluster):
    """:class:`ittc.deploy.localcluster.LocalCluster` plus what node tests need: raw stubs under
    any identity, per-node config and audit-log paths, and process-group cleanup."""

    def __init__(self, root: str | os.PathLike[str] | ClusterFile, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.root = self.folder.root  # the ceremony's output folder
        self.params = self.cluster.params
        self._channels: list[grpc.Channel] = []

    # -- paths ------------------------------------------------------------------------

    def node_dir(self, index: int) -> pathlib.Path:
        """Node ``index``'s config folder: its site's ``etc/`` (node.toml, share, TLS)."""
        return self.folder.etc(index)

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self.stop_all()

    # -- talking to nodes -------------------------------------------------------------

    def channel(
        self, index: int, cert: pathlib.Path | None = None, key: pathlib.Path | None = None
    ) -> grpc.Channel:
        """A mutual-TLS channel to node ``index`` as the cluster client (or ``cert``/``key``)."""
        entry = self.cluster.node(index)
        return self.channel_at(entry.address, entry.tls_name, cert, key)

    def channel_at(
        self,
        address: str,
        tls_name: str,
        cert: pathlib.Path | None = None,
        key: pathlib.Path | None = None,
    ) -> grpc.Channel:
        """A mutual-TLS channel to any address (a node started outside this object)."""
        cert = cert or self.cluster.client_cert
        key = key or self.cluster.client_key
        assert cert is not None and key is not None
        creds = tls.channel_credentials(cert, key, self.cluster.ca)
        channel = grpc.secure_channel(
            address, creds, options=tls.channel_options(tls_name, 4 << 20)
        )
        self._channels.append(channel)
        return channel

    def stub(
        self, index: int, cert: pathlib.Path | None = None, key: pathlib.Path | None = None
    ) -> signer_pb2_grpc.SignerStub:
        return signer_pb2_grpc.SignerStub(self.channel(index, cert, key))  # type: ignore[no-untyped-call]

    def health_as(
        self, index: int, cert: pathlib.Path, key: pathlib.Path, service: str = ""
    ) -> str:
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


def reissue_cert(
    path: pathlib.Path,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> pathlib.Path:
    """Rewrite the certificate at ``path`` with other validity dates: same subject, key
    and extensions, signed again by ``issuer`` (the CA itself for the CA's certificate)."""
    cert = pki.load_cert(path)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or cert.not_valid_before_utc)
        .not_valid_after(not_after or cert.not_valid_after_utc)
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    pki.write_cert(path, builder.sign(issuer[1], hashes.SHA256()), overwrite=True)
    return path


def copy_node(root: pathlib.Path, index: int, name: str) -> pathlib.Path:
    """A copy of site ``index``'s folder as ``root/name`` with an empty ``var/`` (a fresh
    audit log); returns the copy's config folder (``etc/``, which holds node.toml)."""
    folder = CeremonyFolder(root)
    target = root / name
    shutil.copytree(folder.site(index), target)
    shutil.rmtree(target / "var")
    (target / "var").mkdir(mode=0o700)
    return target / "etc"


# -- a node in this process, with its clock injected -------------------------------------


class FakeClock:
    """A clock for ``serve(clock=...)`` that moves only when told to (seconds)."""

    def __init__(self, now: float | None = None) -> None:
        # Whole seconds near the real time: the node checks its TLS certificate (made for
        # the real time) against this clock too.
        self.now = float(int(time.time())) if now is None else now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def set(self, now: float) -> None:
        with self._lock:
            self.now = now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    @property
    def ms(self) -> int:
        return round(self() * 1000)


class EmbeddedNode:
    """:func:`ittc_node.daemon.serve` for a copy of node ``index``'s folder, on its own
    event-loop thread and a fresh port, with an injected clock, limits and faults.

        node = EmbeddedNode.start(root, 3, "replay", clock=FakeClock(), freshness_seconds=60)
        node.stub.Sign(...); node.close()
    """

    def __init__(
        self, config: NodeConfig, clock: Callable[[], float], faults: Any, channel: grpc.Channel
    ) -> None:
        from ittc_node.daemon import serve

        from ittc import storage

        self.config = config
        self.clock = clock
        assert config.passphrase_file is not None
        self.share = storage.read_share_file(
            config.share_file,
            config.load_params(),
            config.index,
            storage.read_passphrase_file(config.passphrase_file),
        )
        self.channel = channel
        self.stub = signer_pb2_grpc.SignerStub(channel)  # type: ignore[no-untyped-call]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def events() -> tuple[asyncio.Event, asyncio.Event, asyncio.Event]:
            return asyncio.Event(), asyncio.Event(), asyncio.Event()

        self._stop, ready, self._reload = asyncio.run_coroutine_threadsafe(
            events(), self.loop
        ).result()
        self.task = asyncio.run_coroutine_threadsafe(
            serve(
                config,
                self.share,
                clock=clock,
                stop=self._stop,
                ready=ready,
                faults=faults,
                reload=self._reload,
            ),
            self.loop,
        )
        while not ready.is_set():
            if self.task.done():
                self.close()
                self.task.result()
            time.sleep(0.01)

    @classmethod
    def start(
        cls,
        cluster: LocalCluster,
        index: int,
        name: str,
        *,
        clock: Callable[[], float],
        faults: Any = None,
        allowed_clients: Sequence[str] | None = None,
        **limits: Any,
    ) -> EmbeddedNode:
        """Copy node ``index``'s folder to ``<root>/<name>`` (a fresh audit log and port)
        and serve it here (for ``allowed_clients``, if given)."""
        import dataclasses

        from ittc_node.faults import Faults

        folder = copy_node(cluster.root, index, name)
        base = NodeConfig.load(folder / "node.toml")
        config = dataclasses.replace(
            base,
            listen=f"127.0.0.1:{free_ports(1)[0]}",
            limits=dataclasses.replace(base.limits, **limits),
            allowed_clients=tuple(allowed_clients or base.allowed_clients),
        )
        channel = cluster.channel_at(config.listen, f"ittc-node-{index}")
        return cls(config, clock, faults if faults is not None else Faults(), channel)

    def restart(self) -> EmbeddedNode:
        """Stop this node, then serve the same folder (share, audit log, port) again."""
        from ittc_node.faults import Faults

        self.close()
        return EmbeddedNode(self.config, self.clock, Faults(), self.channel)

    def reload(self) -> None:
        """What SIGHUP does to a node process: reload its TLS identity and allowed clients."""
        self.loop.call_soon_threadsafe(self._reload.set)

    def close(self) -> None:
        """Stop serving (gracefully) and end the loop thread; safe to call twice."""
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self._stop.set)
        try:
            if not self.task.done():
                self.task.result(timeout=30)
        except Exception:  # noqa: BLE001 - the start failure is raised by the caller
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)


# -- faults, answers and resources (tests/test_faults.py, tests/test_multihost.py) --------


class FaultCluster(LocalCluster):
    """A :class:`LocalCluster` whose nodes run with chosen test faults (``ittc_node.faults``).

    ``set_faults({2: "random-share", 4: "slow:3000"})`` brings every node up, resumed,
    with exactly those faults (the rest honest), restarting only the nodes that change.
    """

    def __init__(self, root: str | os.PathLike[str] | ClusterFile, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.faults: dict[int, str] = {}

    def set_faults(self, faults: Mapping[int, str] | None = None, *, timeout: float = 60.0) -> None:
        wanted = {i: spec for i, spec in (faults or {}).items() if spec}
        changed = [
            i for i in self.indices if self.faults.get(i) != wanted.get(i) or not self.running(i)
        ]
        for index in self.indices:
            self.resume(index)
        for index in changed:
            if self.running(index):
                self.kill(index)  # not SIGTERM: a slow node would wait for its requests
            spec = wanted.get(index)
            self.start([index], wait=False, env=fault_env(spec) if spec else None)
            self.faults[index] = spec if spec else ""
            if not spec:
                del self.faults[index]
        self.wait_serving(changed, timeout=timeout)


def track_answers(client: Any) -> collections.Counter[int]:
    """Count, per node index, the RPCs a :class:`~ittc.combiner.ClusterClient` got a
    well-formed answer to (through the client's public event hook)."""
    return _count_events(client, "answered")


def track_asks(client: Any) -> collections.Counter[int]:
    """Count, per node index, the Sign RPCs a :class:`~ittc.combiner.ClusterClient` sent."""
    return _count_events(client, "asked")


def _count_events(client: Any, kind: str) -> collections.Counter[int]:
    counts: collections.Counter[int] = collections.Counter()

    def listener(event: Any) -> None:
        if event.kind == kind:
            counts[event.node] += 1

    client.add_listener(listener)
    return counts


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc), in bytes."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")
