"""Sites for resharing: a site's key made at the site, the cluster file that lists every
site, and the folder of a new site that will receive its first share in a reshare.

The order of things (docs/runbooks.md):

1. at each site, :func:`site_keygen` (``ittc site keygen --config etc/node.toml``) makes
   the site key beside the node's config, encrypted under the node's own passphrase, adds
   the ``[reshare]`` table to ``node.toml`` and prints the site's public identity;
2. the operator collects the identities (comparing fingerprints with each site by voice)
   and :func:`enroll` (``ittc reshare enroll``) writes them into the cluster file;
3. that cluster file goes to every site, as ``etc/cluster.toml`` (what ``[reshare] sites``
   names): it says which sites may approve the first reshare.

A site that joins later (a sixth site, a replacement for a lost one) gets a folder from
:func:`new_site` — configuration and TLS identity, no share — then makes its key there
with :func:`site_keygen`; the plan names its identity and its first share is sealed to it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Mapping, Sequence

import tomlkit

from ittc import storage
from ittc.config import ClusterFile, NodeConfig, NodeEntry, render_node_toml
from ittc.deploy.ceremony import CREDENTIAL
from ittc.deploy.layout import CeremonyFolder
from ittc.errors import ConfigError, IttcError
from ittc.lifecycle import SiteIdentity, SiteKey
from ittc.scheme.params import MIN_MODULUS_BITS
from ittc.storage import KdfLimits, pki
from ittc.storage.files import write_file_atomically

__all__ = [
    "SITE_KEY_FILE",
    "SITES_FILE",
    "enroll",
    "enroll_local_sites",
    "install_sites_file",
    "new_site",
    "site_keygen",
]

#: Names, beside a site's node.toml, of its site key and of its copy of the cluster file.
SITE_KEY_FILE = "site.key"
SITES_FILE = "cluster.toml"
#: The node's epoch state, relative to its config folder (the site's writable ``var/``).
STATE_DIR = "../var/state"


def _passphrase(config: NodeConfig) -> bytes:
    from ittc_node.daemon import read_passphrase

    return read_passphrase(config)


def site_keygen(
    config_path: str | os.PathLike[str],
    name: str,
    *,
    kdf: KdfLimits | None = None,
) -> SiteIdentity:
    """Make this site's key (at the site) beside its ``node.toml``, encrypted under the
    node's passphrase, and point ``node.toml``'s ``[reshare]`` table at it. Returns the
    public identity to hand to the operator. Refuses to replace an existing key."""
    config = NodeConfig.load(config_path)
    folder = config.path.parent
    key_path = folder / SITE_KEY_FILE
    if key_path.exists():
        raise ConfigError(f"{key_path}: this site already has a key (not replaced)")
    passphrase = _passphrase(config)
    if kdf is None:
        try:
            kdf = storage.read_share_header(config.share_file).kdf
        except (OSError, IttcError):
            kdf = KdfLimits.moderate()
    key = SiteKey.generate(name)
    storage.write_site_key(key_path, key, passphrase, kdf=kdf)
    _add_reshare_table(config)
    return key.identity


def _add_reshare_table(config: NodeConfig) -> None:
    doc = tomlkit.parse(config.path.read_text())
    if "reshare" in doc:
        return
    doc.add(tomlkit.nl())
    doc.add(tomlkit.comment("Resharing: moving the key to a new epoch (docs/lifecycle.md)."))
    table = tomlkit.table()
    table.add(tomlkit.comment("This site's key (Ed25519 + X25519), under the node's passphrase."))
    table.add("site_key", SITE_KEY_FILE)
    table.add(tomlkit.comment("Writable: the node's shares by epoch, certificates, runs."))
    table.add("state_dir", STATE_DIR)
    table.add(tomlkit.comment("The cluster file listing every site's identity: who may approve."))
    table.add("sites", SITES_FILE)
    doc.add("reshare", table)
    write_file_atomically(config.path, tomlkit.dumps(doc).encode(), mode=0o644, overwrite=True)


def enroll(cluster_path: str | os.PathLike[str], identities: Mapping[int, SiteIdentity]) -> None:
    """Write each node's site identity into the cluster file (same epoch; atomic)."""
    cluster = ClusterFile.load(cluster_path)
    unknown = sorted(set(identities) - {n.index for n in cluster.nodes})
    if unknown:
        raise ConfigError(f"{cluster.path}: no nodes {unknown}")
    nodes = [
        NodeEntry(n.index, n.address, n.tls_name, identities.get(n.index, n.site))
        for n in cluster.nodes
    ]
    # Checked over the whole membership, enrolled and given, before anything is written:
    # a cluster file naming one site twice would not load again.
    sites = [n.site for n in nodes if n.site is not None]
    names = [s.name for s in sites]
    keys = [s.sign_key.hex() for s in sites]
    for what, values in (("name", names), ("key", keys)):
        twice = sorted({v[:16] for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(
                f"{cluster.path}: two nodes would have the same site {what}: {', '.join(twice)}"
            )
    _rewrite(cluster, nodes)


def _rewrite(cluster: ClusterFile, nodes: Sequence[NodeEntry]) -> None:
    text = cluster.rendered(nodes=nodes)
    write_file_atomically(cluster.path, text.encode(), mode=0o644, overwrite=True)


def install_sites_file(cluster_path: str | os.PathLike[str], etc: pathlib.Path) -> pathlib.Path:
    """Copy the cluster file (with every site's identity) to a site's config folder, as
    its ``[reshare] sites`` file; its parameters must be the ones the site has."""
    cluster = ClusterFile.load(cluster_path)
    if cluster.params_path is not None:
        params = etc / cluster.params_path.relative_to(cluster.root)
        if not params.exists():
            params.write_text(cluster.params.to_json())
    target = etc / SITES_FILE
    shutil.copyfile(cluster.path, target)
    return target


def new_site(
    folder: CeremonyFolder,
    cluster: ClusterFile,
    index: int,
    address: str,
    *,
    listen: str | None = None,
    tls_name: str | None = None,
    allowed_clients: Sequence[str] = ("ittc-client",),
    passphrase: bytes | None = None,
) -> pathlib.Path:
    """The folder of a site that holds no share yet, at ``folder.site(index)`` (which must
    not exist): config, TLS identity from the cluster CA (``folder.ca``), the current
    epoch's parameters and cluster file, a random passphrase; no share and no site key
    (made at the site: :func:`site_keygen`). Returns the path of its ``node.toml``.

    ``index`` names the folder and the default TLS name (``ittc-node-<index>``); the index
    the site will hold is the plan's.
    """
    site = folder.site(index)
    if site.exists():
        raise ConfigError(f"{site}: exists; choose another index or move it away")
    ca_cert = pki.load_cert(folder.ca / "ca.pem")
    ca_key = pki.load_private_key(folder.ca / "ca.key")
    tls_name = tls_name or f"ittc-node-{index}"
    etc, var = folder.etc(index), folder.var(index)
    for path in (site, etc, var):
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)
    secret = passphrase or storage.new_passphrase()
    storage.write_passphrase_file(folder.passphrase(index), secret)
    host = address.rpartition(":")[0].strip("[]")
    cert, key = pki.issue_server_cert(ca_cert, ca_key, tls_name, [host, "127.0.0.1"])
    pki.write_cert(etc / "tls.pem", cert)
    pki.write_private_key(etc / "tls.key", key)
    shutil.copyfile(folder.ca / "ca.pem", etc / "ca.pem")
    (etc / "params.json").write_text(cluster.params.to_json())
    text = render_node_toml(
        index,
        listen or address,
        advertised=address,
        allowed_clients=list(allowed_clients),
        passphrase_credential=CREDENTIAL,
        passphrase_file=os.path.relpath(folder.passphrase(index), etc),
        audit=os.path.relpath(var / "audit.log", etc),
        small_key=cluster.params.bits < MIN_MODULUS_BITS,
    )
    (etc / "node.toml").write_text(text)
    install_sites_file(cluster.path, etc)
    return etc / "node.toml"


def enroll_local_sites(
    folder: CeremonyFolder, names: Sequence[str] | None = None
) -> dict[int, SiteIdentity]:
    """Every step of enabling resharing, for a ceremony folder whose sites are all on this
    machine (a local trial, the tests, the benchmarks): a key made in each site folder,
    the identities enrolled in the combiner's cluster file, that file installed at each
    site. ``names`` default to ``site-<i>``. Returns the identities by index."""
    indices = folder.sites()
    chosen = list(names) if names is not None else [f"site-{i}" for i in indices]
    identities = {
        i: site_keygen(folder.node_config(i), name)
        for i, name in zip(indices, chosen, strict=False)
    }
    enroll(folder.cluster_file, identities)
    for i in indices:
        install_sites_file(folder.cluster_file, folder.etc(i))
    return identities
