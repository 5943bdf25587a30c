"""The key ceremony's output: one folder that holds a whole cluster, ready to ship.

From a dealt key (:func:`ittc.scheme.dealer.generate` or :func:`~ittc.scheme.dealer.split`)
:func:`create_cluster` writes::

    OUT/public.pem              the RSA public key (SubjectPublicKeyInfo PEM)
    OUT/params.json             the public parameters
    OUT/cluster.toml            for combiners: parameters, node addresses and TLS names
    OUT/ca/ca.pem, ca.key       the cluster CA (ca.key 0600; move it offline)
    OUT/ca/README.txt
    OUT/node-<i>/node.toml      one self-contained folder per site (0700):
    OUT/node-<i>/share.enc        encrypted share (0600)
    OUT/node-<i>/tls.pem, tls.key the node's TLS identity "ittc-node-<i>" (key 0600)
    OUT/node-<i>/ca.pem, params.json
    OUT/client/client.pem, client.key, ca.pem     the first client identity (0700)
    OUT/clients/<name>/client.pem, client.key, ca.pem   further client identities

The tree is built in a hidden sibling folder, checked (every config re-read, one share
decrypted), and only then renamed to ``OUT``: a failure leaves nothing half-written.
``p, q, d`` are never written; they are not even in :class:`~ittc.scheme.dealer.DealtKey`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ittc import storage
from ittc.config import ClusterFile, NodeConfig, NodeEntry, parse_address
from ittc.errors import ConfigError, ParameterError
from ittc.scheme.dealer import DealtKey
from ittc.scheme.params import PublicParams
from ittc.storage import pki

__all__ = ["CA_README", "create_cluster", "describe", "node_tls_name"]

Progress = Callable[[str], None]

#: The identities ``allowed_clients`` may list and certificates may carry (as in config).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

CA_README = """\
This folder holds the cluster's certificate authority.

ca.pem is public: every node and every combiner has a copy.

ca.key issues node and client identities. Whoever holds it can mint a client
certificate that the nodes accept (a node signs for any identity listed in its
allowed_clients), or impersonate a node to the combiners. It is not needed to run the
cluster: move it offline (an encrypted USB stick in a safe) and delete it here. Bring it
back only to issue a new node or client certificate.
"""


def node_tls_name(index: int) -> str:
    """The name node ``index``'s certificate carries and combiners check."""
    return f"ittc-node-{index}"


def _write_new(path: pathlib.Path, data: str | bytes, mode: int = 0o644) -> None:
    """Create ``path`` (must not exist) with ``mode`` from the start."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(path: pathlib.Path, mode: int) -> pathlib.Path:
    path.mkdir(mode=mode)
    os.chmod(path, mode)  # mkdir's mode is filtered by the umask; this is exact
    return path


def _check_out(out: pathlib.Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new folder")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder")


def _host(address: str) -> str:
    host, _ = parse_address(address)
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _addresses(
    params: PublicParams, addresses: Sequence[str] | None, host: str, base_port: int
) -> list[str]:
    if addresses is None:
        if not 1 <= base_port <= 65536 - params.n:
            raise ParameterError(f"base port {base_port} leaves no room for {params.n} nodes")
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        addresses = [f"{shown}:{base_port + i}" for i in range(params.n)]
    addresses = list(addresses)
    if len(addresses) != params.n:
        raise ParameterError(f"need {params.n} node addresses, got {len(addresses)}")
    for address in addresses:
        try:
            parse_address(address)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
    if len(set(addresses)) != len(addresses):
        raise ParameterError("node addresses must be distinct")
    return addresses


def _passphrases(
    params: PublicParams, passphrases: Sequence[bytes], passphrase_file: pathlib.Path | None
) -> list[bytes]:
    if len(passphrases) not in (1, params.n):
        raise ParameterError(
            f"give one passphrase for all nodes or one per node ({params.n}), "
            f"not {len(passphrases)}"
        )
    result = [bytes(p) for p in passphrases] * (params.n if len(passphrases) == 1 else 1)
    if any(not p for p in result):
        raise ParameterError("a share-file passphrase must not be empty")
    if passphrase_file is not None:
        on_file = storage.read_passphrase_file(passphrase_file)
        if any(p != on_file for p in result):
            raise ParameterError(
                f"{passphrase_file}: every node config will name this file, "
                "so every share must be encrypted with the passphrase in it"
            )
    return result


def _client_names(client_names: Sequence[str]) -> list[str]:
    names = list(client_names)
    if not names:
        raise ParameterError("at least one client identity is needed")
    for name in names:
        if not _NAME.match(name):
            raise ParameterError(
                f"{name!r} is not a valid client identity (letters, digits, '.', '_', '-')"
            )
    if len(set(names)) != len(names):
        raise ParameterError("client identities must be distinct")
    return names


def _write_identity(
    folder: pathlib.Path,
    stem: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca_pem: bytes,
) -> None:
    pki.write_cert(folder / f"{stem}.pem", cert)
    pki.write_private_key(folder / f"{stem}.key", key)
    _write_new(folder / "ca.pem", ca_pem)


def create_cluster(
    out: pathlib.Path,
    dealt: DealtKey,
    *,
    passphrases: Sequence[bytes],
    passphrase_file: pathlib.Path | None = None,
    addresses: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    base_port: int = 7001,
    client_names: Sequence[str] = ("ittc-client",),
    kdf: storage.KdfLimits | None = None,
    progress: Progress | None = None,
) -> ClusterFile:
    """Write the cluster folder ``out`` for ``dealt`` and return its loaded cluster file.

    ``passphrases`` encrypt the share files: one for all nodes, or one per node. With
    ``passphrase_file`` (which must hold that passphrase) each node.toml names the file by
    a path relative to the node's folder, so the node starts without asking.
    Addresses default to ``host:base_port``, ``host:base_port+1``, ...
    """

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    params = dealt.params
    out = pathlib.Path(out).expanduser()
    out = out.parent.resolve() / out.name
    _check_out(out)
    if passphrase_file is not None:
        passphrase_file = pathlib.Path(passphrase_file).expanduser().resolve()
    secrets_ = _passphrases(params, passphrases, passphrase_file)
    nodes = [
        NodeEntry(i, a, node_tls_name(i))
        for i, a in enumerate(_addresses(params, addresses, host, base_port), 1)
    ]
    clients = _client_names(client_names)
    if len(dealt.shares) != params.n or [s.index for s in dealt.shares] != list(
        range(1, params.n + 1)
    ):
        raise ParameterError("dealt key must hold shares 1..n in order")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _build(tmp, out, dealt, nodes, clients, secrets_, passphrase_file, kdf, say)
        say("checking what was written")
        _verify(tmp, dealt, secrets_)
        os.rename(tmp, out)  # atomic; replaces ``out`` only if it is an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out.parent)
    say(f"cluster written to {out}")
    return ClusterFile.load(out)


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(
    root: pathlib.Path,
    final: pathlib.Path,
    dealt: DealtKey,
    nodes: list[NodeEntry],
    clients: list[str],
    passphrases: list[bytes],
    passphrase_file: pathlib.Path | None,
    kdf: storage.KdfLimits | None,
    say: Progress,
) -> None:
    params = dealt.params
    os.chmod(root, 0o700)
    _write_new(
        root / "public.pem",
        params.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    _write_new(root / "params.json", params.to_json())

    say("making the cluster CA")
    ca_dir = _mkdir(root / "ca", 0o700)
    ca_cert, ca_key = pki.make_ca(f"ittc cluster CA {params.short_id}")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    pki.write_cert(ca_dir / "ca.pem", ca_cert)
    pki.write_private_key(ca_dir / "ca.key", ca_key)
    _write_new(ca_dir / "README.txt", CA_README)

    for entry, share, passphrase in zip(nodes, dealt.shares, passphrases, strict=True):
        i = entry.index
        say(f"writing node {i} of {params.n} ({entry.address})")
        folder = _mkdir(root / f"node-{i}", 0o700)
        relative = None
        if passphrase_file is not None:
            relative = os.path.relpath(passphrase_file, final / f"node-{i}")
        _write_new(
            folder / "node.toml",
            NodeConfig.render(
                i, entry.address, allowed_clients=list(clients), passphrase_file=relative
            ),
        )
        storage.write_share_file(folder / "share.enc", share, passphrase, kdf=kdf)
        cert, key = pki.issue_server_cert(
            ca_cert, ca_key, entry.tls_name, [_host(entry.address), "127.0.0.1"]
        )
        _write_identity(folder, "tls", cert, key, ca_pem)
        _write_new(folder / "params.json", params.to_json())

    say("issuing client identities: " + ", ".join(clients))
    for n, name in enumerate(clients):
        if n == 0:
            folder = _mkdir(root / "client", 0o700)
        else:
            if n == 1:
                _mkdir(root / "clients", 0o700)
            folder = _mkdir(root / "clients" / name, 0o700)
        cert, key = pki.issue_client_cert(ca_cert, ca_key, name)
        _write_identity(folder, "client", cert, key, ca_pem)

    _write_new(root / "cluster.toml", ClusterFile.render(params, nodes))


def _verify(root: pathlib.Path, dealt: DealtKey, passphrases: list[bytes]) -> None:
    """Re-read everything a node or combiner will read; decrypt one share."""
    params = dealt.params
    cluster = ClusterFile.load(root)
    if cluster.params != params:
        raise ConfigError(f"{cluster.path}: parameters read back differ from the dealt key")
    ca = pki.load_cert(cluster.ca)
    for entry in cluster.nodes:
        config = NodeConfig.load(root / f"node-{entry.index}" / "node.toml")
        if config.index != entry.index or config.load_params() != params:
            raise ConfigError(f"{config.path}: does not match the cluster file")
        cert = pki.load_cert(config.tls_cert)
        cert.verify_directly_issued_by(pki.load_cert(config.tls_ca))
        cert.verify_directly_issued_by(ca)
        if entry.index == 1:
            passphrase = passphrases[0]
            if config.passphrase_file is not None:  # also proves the relative path resolves
                passphrase = storage.read_passphrase_file(config.passphrase_file)
            share = storage.read_share_file(config.share_file, params, entry.index, passphrase)
            share.self_test()
            if share != dealt.shares[0]:
                raise ConfigError(f"{config.share_file}: share read back differs")
    if cluster.client_cert is None:
        raise ConfigError(f"{cluster.path}: no client identity")
    pki.load_cert(cluster.client_cert).verify_directly_issued_by(ca)


def describe(cluster: ClusterFile) -> str:
    """A summary an operator can check against what they meant to create."""
    p = cluster.params
    if p.proofs_sound:
        sharing = "shoup (safe primes): share proofs are sound"
    else:
        sharing = (
            "integer (split from an existing key): share proofs are NOT sound; bad "
            "shares are found by checking the final signature"
        )
    if p.robust:
        robust = f"robust: {p.k - 1} faulty nodes cannot stop the others from signing"
    else:
        robust = (
            f"NOT robust: {p.k - 1} faulty nodes can stop signing "
            f"(robustness needs n >= 2k-1 = {2 * p.k - 1})"
        )
    lines = [
        f"cluster    {cluster.path}",
        f"key id     {p.key_id}",
        f"key        RSA-{p.bits}, e = {p.e}",
        f"threshold  any {p.k} of {p.n} nodes sign; {robust}",
        f"sharing    {sharing}",
    ]
    if cluster.public_key is not None:
        lines.append(f"public key {cluster.public_key}")
    lines.append(f"CA         {cluster.ca}")
    if cluster.client_cert is not None:
        lines.append(f"client     {cluster.client_cert}")
    lines.append("nodes")
    width = max(len(n.address) for n in cluster.nodes)
    for node in cluster.nodes:
        lines.append(f"  {node.index:>2}  {node.address:<{width}}  TLS name {node.tls_name}")
    return "\n".join(lines)
