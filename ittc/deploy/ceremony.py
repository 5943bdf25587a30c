"""The key ceremony's output: one folder per site, a combiner bundle, the CA apart.

From a dealt key (:func:`ittc.scheme.dealer.generate` or :func:`~ittc.scheme.dealer.split`)
:func:`create_cluster` writes the folder :mod:`ittc.deploy.layout` describes. Each site's
folder holds its config, its share file, its TLS identity, an empty state folder for its
audit log, and the passphrase of its share file and of no other: by default a fresh
random passphrase per site, so a site (or a thief of its backups) can open only its own
share. Every path a site's ``node.toml`` names is inside that site's folder, and every
path of the combiner's ``cluster.toml`` is inside ``combiner/``, so each folder works
wherever it is copied, alone. The combiner bundle holds no CA key and no share; the CA key
is in ``ca/``, to go offline.

The tree is built in a hidden sibling folder, checked (every config re-read, every path
checked to stay inside its folder, one share decrypted through its config), and only then
renamed to ``OUT``: a failure leaves nothing half-written. ``p, q, d`` are never written;
they are not even in :class:`~ittc.scheme.dealer.DealtKey`. ``OUT/README.txt`` tells the
operator where each part goes and what to destroy; :mod:`ittc.deploy.leftovers` destroys it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ittc import storage
from ittc.config import ClusterFile, NodeConfig, NodeEntry, parse_address, render_node_toml
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ConfigError, ParameterError
from ittc.scheme.dealer import DealtKey
from ittc.scheme.params import MIN_MODULUS_BITS, PublicParams
from ittc.storage import pki
from ittc.storage.files import fsync_dir

__all__ = [
    "CA_README",
    "README_TITLE",
    "SitePlan",
    "check_monitoring",
    "create_cluster",
    "describe",
    "node_tls_name",
    "per_site",
    "plan_sites",
]

Progress = Callable[[str], None]

#: The identities ``allowed_clients`` may list and certificates may carry (as in config).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: The first line of ``OUT/README.txt``: how :mod:`ittc.deploy.leftovers` recognises a
#: ceremony folder before it destroys anything in it.
README_TITLE = "ittc key ceremony output"

#: The systemd credential a site's passphrase is expected under (LoadCredential=NAME:...).
CREDENTIAL = "passphrase"

CA_README = """\
This folder holds the cluster's certificate authority.

ca.pem is public: every node and every combiner has a copy.

ca.key issues node and client identities. Whoever holds it can mint a client
certificate that the nodes accept (a node signs for any identity listed in its
allowed_clients), or impersonate a node to the combiners. It is not needed to run the
cluster: copy this folder to offline storage (an encrypted USB stick in a safe), then
destroy it on the ceremony machine (ittc ceremony finish DIR --ca-key-offline). Bring it
back only to issue a new node or client certificate.
"""


def node_tls_name(index: int) -> str:
    """The name node ``index``'s certificate carries and combiners check."""
    return f"ittc-node-{index}"


@dataclass(frozen=True)
class SitePlan:
    """Where one site's node is reached and where it binds."""

    index: int
    #: What combiners dial (cluster.toml) and the node's certificate names.
    address: str
    #: What the node binds (node.toml).
    listen: str
    tls_name: str


def _host(address: str) -> str:
    host, _ = parse_address(address)
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked(address: str, what: str) -> str:
    try:
        parse_address(address)
    except ValueError as exc:
        raise ParameterError(f"{what} {address!r}: {exc}") from None
    return address


def _listen_at(spec: str, address: str) -> str:
    """``spec`` as a listen address: ``host:port`` as is, a bare host at ``address``'s port."""
    try:
        parse_address(spec)
        return spec
    except ValueError:
        pass
    host = f"[{spec}]" if _is_ipv6(spec) else spec
    if not host or (":" in host and not host.startswith("[")):
        raise ParameterError(f"listen address {spec!r} is neither host:port nor a host")
    return _checked(f"{host}:{parse_address(address)[1]}", "listen address")


def plan_sites(
    n: int,
    addresses: Sequence[str] | None = None,
    listen: Sequence[str] | None = None,
    *,
    host: str = "127.0.0.1",
    base_port: int = 7001,
) -> list[SitePlan]:
    """Check where ``n`` nodes are reached and where they bind (before any key exists).

    ``addresses`` (one per node) are what combiners dial: a DNS name or an IP, and a port.
    Without them node ``i`` is at ``host:base_port+i-1`` and binds exactly there (a local
    trial). With them each node binds every interface at its address's port (``0.0.0.0``,
    or ``[::]`` for an IPv6 address; a loopback IP binds itself: no one else dials it),
    unless ``listen`` says otherwise: one entry for every node or one per node, each
    ``host:port`` or a bare host (bound at the node's port).
    """
    explicit = addresses is not None
    if addresses is None:
        if not 1 <= base_port <= 65536 - n:
            raise ParameterError(f"base port {base_port} leaves no room for {n} nodes")
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        addresses = [f"{shown}:{base_port + i}" for i in range(n)]
    addresses = [_checked(a, "node address") for a in addresses]
    if len(addresses) != n:
        raise ParameterError(f"need {n} node addresses, one per node, got {len(addresses)}")
    if len(set(addresses)) != len(addresses):
        raise ParameterError("node addresses must be distinct")
    specs = list(listen or ())
    if len(specs) not in (0, 1, n):
        raise ParameterError(
            f"give one listen address for every node or one per node ({n}), not {len(specs)}"
        )
    plans = []
    for i, address in enumerate(addresses, 1):
        if specs:
            bind = _listen_at(specs[0] if len(specs) == 1 else specs[i - 1], address)
        elif explicit and not _is_loopback(_host(address)):
            bind = _listen_at("::" if _is_ipv6(_host(address)) else "0.0.0.0", address)  # noqa: S104 - a site's node serves the network
        else:
            bind = address
        plans.append(SitePlan(i, address, bind, node_tls_name(i)))
    return plans


def per_site(value: str | Sequence[str] | None, n: int, what: str) -> list[str | None]:
    """One ``what`` listen address per site, from one for every site or one per site."""
    if value is None:
        return [None] * n
    values = [value] if isinstance(value, str) else list(value)
    if len(values) not in (1, n):
        raise ParameterError(
            f"give one {what} address for every node or one per node ({n}), not {len(values)}"
        )
    checked: list[str | None] = [_checked(v, f"{what} address") for v in values]
    return checked * n if len(checked) == 1 else checked


def check_monitoring(
    sites: Sequence[SitePlan],
    metrics_listen: str | Sequence[str] | None,
    health_listen: str | Sequence[str] | None,
) -> list[tuple[str | None, str | None]]:
    """Each site's (metrics, health) listen addresses. When every node is on this host
    (loopback addresses), two nodes given the same address could not both start."""
    n = len(sites)
    metrics = per_site(metrics_listen, n, "metrics")
    health = per_site(health_listen, n, "health")
    if n > 1 and all(_is_loopback(_host(s.address)) for s in sites):
        for what, given in (("health", health), ("metrics", metrics)):
            if given[0] is not None and len(set(given)) < n:
                raise ParameterError(
                    f"every node is on this host (loopback addresses): give each node its "
                    f"own {what} listen address, once per node ({n} times)"
                )
    return list(zip(metrics, health, strict=True))


def _passphrases(params: PublicParams, given: Sequence[bytes] | None) -> list[bytes]:
    if given is None:
        return [storage.new_passphrase() for _ in range(params.n)]
    if len(given) not in (1, params.n):
        raise ParameterError(
            f"give one passphrase for all nodes or one per node ({params.n}), not {len(given)}"
        )
    result = [bytes(p) for p in given] * (params.n if len(given) == 1 else 1)
    if any(not p for p in result):
        raise ParameterError("a share-file passphrase must not be empty")
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


def create_cluster(
    out: str | os.PathLike[str],
    dealt: DealtKey,
    *,
    passphrases: Sequence[bytes] | None = None,
    addresses: Sequence[str] | None = None,
    listen: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    base_port: int = 7001,
    client_names: Sequence[str] = ("ittc-client",),
    metrics_listen: str | Sequence[str] | None = None,
    health_listen: str | Sequence[str] | None = None,
    kdf: storage.KdfLimits | None = None,
    leftovers: Sequence[str | os.PathLike[str]] = (),
    progress: Progress | None = None,
) -> ClusterFile:
    """Write the ceremony folder ``out`` for ``dealt``; return the combiner's cluster file.

    ``passphrases`` encrypt the share files: None (the default) makes a fresh random one
    per site; otherwise one for every site, or one per site. Each site's passphrase is
    written to its own folder. ``addresses``, ``listen``, ``host`` and ``base_port`` are
    those of :func:`plan_sites`. ``metrics_listen`` and ``health_listen`` go into the
    node.toml's ``[monitoring]`` (plain-HTTP metrics and health; off when None): one
    address for every site, or one per site (sites that share a host need their own).
    ``leftovers`` names files outside ``out`` that the operator must destroy too (the key
    file ``ittc split`` read), for ``OUT/README.txt``.
    """

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    params = dealt.params
    final = pathlib.Path(out).expanduser()
    final = final.parent.resolve() / final.name
    _check_out(final)
    sites = plan_sites(params.n, addresses, listen, host=host, base_port=base_port)
    monitoring = check_monitoring(sites, metrics_listen, health_listen)
    secrets_ = _passphrases(params, passphrases)
    clients = _client_names(client_names)
    if len(dealt.shares) != params.n or [s.index for s in dealt.shares] != list(
        range(1, params.n + 1)
    ):
        raise ParameterError("dealt key must hold shares 1..n in order")

    tmp = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    )
    try:
        os.chmod(tmp, 0o700)
        folder = CeremonyFolder(tmp)
        _build(folder, dealt, sites, clients, secrets_, kdf, say, monitoring)
        _mark(folder, CeremonyFolder(final), params, sites, clients, leftovers)
        say("checking what was written")
        _verify(folder, dealt, sites, clients, secrets_)
        os.rename(tmp, final)  # atomic; replaces ``final`` only if it is an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    say(f"ceremony output written to {final}")
    return ClusterFile.load(CeremonyFolder(final).cluster_file)


def _check_out(out: pathlib.Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new folder")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder")


def _mkdir(path: pathlib.Path, mode: int = 0o700) -> pathlib.Path:
    path.mkdir(mode=mode, parents=False)
    os.chmod(path, mode)  # mkdir's mode is filtered by the umask; this is exact
    return path


def _write_public(path: pathlib.Path, data: str | bytes) -> None:
    raw = data.encode() if isinstance(data, str) else data
    storage.write_file_atomically(path, raw, mode=0o644)


def _public_pem(params: PublicParams) -> bytes:
    return params.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_combiner(
    folder: pathlib.Path,
    params: PublicParams,
    sites: list[SitePlan],
    ca_pem: bytes,
    identity: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    name: str,
) -> None:
    """A complete combiner bundle: everything ``ittc sign --cluster FOLDER`` reads."""
    _mkdir(folder)
    _write_public(folder / "params.json", params.to_json())
    _write_public(folder / "public.pem", _public_pem(params))
    _write_public(folder / "ca.pem", ca_pem)
    pki.write_cert(folder / "client.pem", identity[0])
    pki.write_private_key(folder / "client.key", identity[1])
    nodes = [NodeEntry(s.index, s.address, s.tls_name) for s in sites]
    _write_public(folder / "cluster.toml", ClusterFile.render(params, nodes, client_name=name))


def _build(
    folder: CeremonyFolder,
    dealt: DealtKey,
    sites: list[SitePlan],
    clients: list[str],
    passphrases: list[bytes],
    kdf: storage.KdfLimits | None,
    say: Progress,
    monitoring: Sequence[tuple[str | None, str | None]],
) -> None:
    params = dealt.params
    say("making the cluster CA")
    _mkdir(folder.ca)
    ca_cert, ca_key = pki.make_ca(f"ittc cluster CA {params.short_id}")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    pki.write_cert(folder.ca / "ca.pem", ca_cert)
    pki.write_private_key(folder.ca / "ca.key", ca_key)
    _write_public(folder.ca / "README.txt", CA_README)

    for site, share, passphrase in zip(sites, dealt.shares, passphrases, strict=True):
        i = site.index
        say(f"writing site {i} of {params.n} (dialled at {site.address}, listens on {site.listen})")
        _mkdir(folder.site(i))
        etc, var = _mkdir(folder.etc(i)), _mkdir(folder.var(i))
        storage.write_passphrase_file(folder.passphrase(i), passphrase)
        storage.write_share_file(etc / "share.enc", share, passphrase, kdf=kdf)
        hosts = [_host(site.address), _host(site.listen), "127.0.0.1"]
        hosts = [h for h in dict.fromkeys(hosts) if h not in ("0.0.0.0", "::")]  # noqa: S104
        cert, key = pki.issue_server_cert(ca_cert, ca_key, site.tls_name, hosts)
        pki.write_cert(etc / "tls.pem", cert)
        pki.write_private_key(etc / "tls.key", key)
        _write_public(etc / "ca.pem", ca_pem)
        _write_public(etc / "params.json", params.to_json())
        config = render_node_toml(
            i,
            site.listen,
            advertised=site.address,
            allowed_clients=list(clients),
            passphrase_credential=CREDENTIAL,
            passphrase_file=os.path.relpath(folder.passphrase(i), etc),
            audit=os.path.relpath(var / "audit.log", etc),
            small_key=params.bits < MIN_MODULUS_BITS,
            metrics_listen=monitoring[i - 1][0],
            health_listen=monitoring[i - 1][1],
        )
        _write_public(etc / "node.toml", config)
        _write_public(folder.site(i) / "README.txt", _site_readme(params, site))

    say("issuing client identities: " + ", ".join(clients))
    for n, name in enumerate(clients):
        identity = pki.issue_client_cert(ca_cert, ca_key, name)
        if n == 0:
            _write_combiner(folder.combiner, params, sites, ca_pem, identity, name)
        else:
            if n == 1:
                _mkdir(folder.root / "clients")
            _write_combiner(folder.client(name), params, sites, ca_pem, identity, name)


def _inside(path: pathlib.Path, folder: pathlib.Path, what: str) -> None:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise ConfigError(f"{what}: {path} is outside {folder}") from None


def _verify(
    folder: CeremonyFolder,
    dealt: DealtKey,
    sites: list[SitePlan],
    clients: list[str],
    passphrases: list[bytes],
) -> None:
    """Re-read everything a node or combiner will read; decrypt one share through its
    config; check that no config names a file outside its own folder."""
    params = dealt.params
    ca = pki.load_cert(folder.ca / "ca.pem")
    bundles = [folder.combiner] + [folder.client(name) for name in clients[1:]]
    for bundle in bundles:
        cluster = ClusterFile.load(bundle / "cluster.toml")
        if cluster.params != params:
            raise ConfigError(f"{cluster.path}: parameters read back differ from the dealt key")
        if cluster.client_cert is None or cluster.client_key is None:
            raise ConfigError(f"{cluster.path}: no client identity")
        for path in (cluster.ca, cluster.client_cert, cluster.client_key, cluster.public_key):
            assert path is not None
            _inside(path, bundle, str(cluster.path))
        pki.load_cert(cluster.client_cert).verify_directly_issued_by(ca)
        if [(e.index, e.address) for e in cluster.nodes] != [(s.index, s.address) for s in sites]:
            raise ConfigError(f"{cluster.path}: node addresses read back differ")
    for site, passphrase in zip(sites, passphrases, strict=True):
        i = site.index
        config = NodeConfig.load(folder.node_config(i))
        if config.index != i or config.load_params() != params or config.listen != site.listen:
            raise ConfigError(f"{config.path}: does not match the cluster file")
        named = [config.params_file, config.share_file, config.tls_cert, config.tls_key]
        named += [config.tls_ca, config.audit_log]
        assert config.passphrase_file is not None
        for path in [*named, config.passphrase_file]:
            _inside(path, folder.site(i), str(config.path))
        if storage.read_passphrase_file(config.passphrase_file) != passphrase:
            raise ConfigError(f"{config.passphrase_file}: passphrase read back differs")
        cert = pki.load_cert(config.tls_cert)
        cert.verify_directly_issued_by(pki.load_cert(config.tls_ca))
        cert.verify_directly_issued_by(ca)
        if i == 1:  # one Argon2id run proves the path from config to share works
            share = storage.read_share_file(config.share_file, params, i, passphrase)
            share.self_test()
            if share != dealt.shares[0]:
                raise ConfigError(f"{config.share_file}: share read back differs")


# -- what the operator reads ---------------------------------------------------------------


def _site_readme(params: PublicParams, site: SitePlan) -> str:
    i = site.index
    return f"""\
ittc site {i}: share {i} of key {params.short_id} (RSA-{params.bits}, any {params.k} of \
{params.n} sites sign)

Combiners dial this node at {site.address}; it listens on {site.listen}.

  etc/          read-only at the site
    node.toml     the node's config; every field is explained in it
    share.enc     this site's share of the key, encrypted (mode 0600)
    tls.pem       the node's certificate, name {site.tls_name}; tls.key its key (0600)
    ca.pem        the cluster CA; params.json the key's public parameters
  var/          writable at the site: the audit log (var/audit.log). Keep it.
  passphrase    opens etc/share.enc, and no other site's share (mode 0600)

Try it where it is:
    ittc node --config etc/node.toml        (or: python -m ittc_node --config ...)

Install (see nodes/README.md in the ittc source): copy this folder as a whole to
/srv/ittc/site-{i}, owned by the node's user (chown -R ittc:ittc; folders 0700), and
run it as ittc-node@{i}, with the systemd unit that this prints:
    ittc node --print-systemd-unit > /etc/systemd/system/ittc-node@.service
Move the passphrase into the machine's credential store and delete the file here:
    systemd-creds encrypt --name={CREDENTIAL} passphrase \\
        /etc/credstore.encrypted/ittc-site-{i}.passphrase
    shred -u passphrase
The unit's LoadCredentialEncrypted={CREDENTIAL}:... line hands it to the node.
"""


def _mark(
    folder: CeremonyFolder,
    final: CeremonyFolder,
    params: PublicParams,
    sites: list[SitePlan],
    clients: list[str],
    leftovers: Sequence[str | os.PathLike[str]],
) -> None:
    """Write ``OUT/README.txt``: where each part goes and what to destroy (with the final
    paths, not those of the folder being built)."""
    n = params.n
    written = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    width = max(len(s.address) for s in sites)
    reach = "\n".join(
        f"      site {s.index:<3} dialled at {s.address:<{width}}  listens on {s.listen}"
        for s in sites
    )
    extra = ""
    if len(clients) > 1:
        extra = f"""clients/<name>/
    More client identities, each a complete bundle like combiner/ for the host that
    uses it: {", ".join(clients[1:])}.
"""
    outside = [os.path.abspath(p) for p in leftovers]
    also = "".join(
        f"  {p}\n      outside this folder (ittc ceremony finish --also {p})\n" for p in outside
    )
    text = f"""\
{README_TITLE}
key {params.key_id}
RSA-{params.bits}, any {params.k} of {n} sites sign. Written {written}.

This folder holds every site's share file AND the passphrase that opens it: together,
the whole signing key. Ship each part, check that it arrived, then destroy what is left
here. This lists what it will destroy, and asks first:

    ittc ceremony finish {final.root}

To try the whole cluster on this machine first (its nodes on the addresses below):

    ittc cluster up {final.root}
    ittc sign --cluster {final.root / "combiner"} --in FILE --out FILE.sig

Where each part goes
--------------------
site-1/ ... site-{n}/
    Ship site-<i>/ to site <i> as a whole; its README.txt says how to install and start
    it. etc/ is its read-only config, share and TLS identity; var/ its state (the audit
    log); passphrase opens site <i>'s share file and no other site's. Carry the
    passphrase by another channel than the folder if you can; at the site, move it into
    the secret store (a systemd credential) and delete the file.
{reach}
combiner/
    Copy to every host that signs through the cluster: ittc sign --cluster combiner/,
    or ClusterClient("combiner"). It holds the cluster file, the public key, the cluster
    CA's certificate and the client identity "{clients[0]}"; no CA key and no share.
{extra}ca/
    The cluster CA. Whoever holds ca.key can mint identities the nodes accept. Copy ca/
    to offline storage (an encrypted USB stick in a safe); it is needed only to issue new
    node or client certificates.

What to destroy here, once each part is where it belongs
--------------------------------------------------------
  site-1/ ... site-{n}/
      every site's share file and passphrase: together, the whole key
  combiner/{" and clients/" if len(clients) > 1 else ""}
      client identities: whoever holds client.key signs as that combiner
  ca/ca.key
      once a copy is offline (ittc ceremony finish --ca-key-offline)
{also}
A deleted file can survive on an SSD, a copy-on-write or a journaling file system and
in backups: hold the ceremony on an encrypted disk or a live system without persistent
storage, and destroy the medium if in doubt.
"""
    _write_public(folder.readme, text)


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
