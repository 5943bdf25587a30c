"""``cluster.toml``: copied to every combiner. It names the key, the epoch and its public
parameters, the address each node is dialled at and the name its certificate must carry,
for resharing each node's site identity (its public keys), the cluster CA and the
combiner's own client identity; relative paths are relative to the file.

The key ceremony writes it into a ``combiner/`` folder of its output; :meth:`ClusterFile.load`
given such an output folder finds it there. A reshare writes a new cluster file for the
new epoch (and its parameters beside it); a running combiner picks it up
(:mod:`ittc.combiner.client`)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import tomlkit

from ittc.config import writer
from ittc.config.reader import (
    IDENTITY,
    SMALL_KEY_FIELD,
    VERSION,
    Reader,
    check_format,
    load_params,
    load_toml,
    parse_address,
)
from ittc.errors import ConfigError, ParameterError
from ittc.lifecycle import SiteIdentity
from ittc.scheme.params import MIN_MODULUS_BITS, PublicParams

__all__ = ["CLUSTER_FORMAT", "ClusterFile", "NodeEntry"]

CLUSTER_FORMAT = "ittc.cluster"
#: The file's name, and the folder of a ceremony's output that holds the combiner's copy.
CLUSTER_FILE = "cluster.toml"
COMBINER_FOLDER = "combiner"


@dataclass(frozen=True)
class NodeEntry:
    index: int
    address: str
    #: The name the node's TLS certificate is checked against.
    tls_name: str
    #: The site holding this index: its name and public keys (for resharing), if known.
    site: SiteIdentity | None = None


@dataclass(frozen=True)
class ClusterFile:
    path: pathlib.Path
    params: PublicParams
    nodes: tuple[NodeEntry, ...]
    ca: pathlib.Path
    public_key: pathlib.Path | None = None
    client_cert: pathlib.Path | None = None
    client_key: pathlib.Path | None = None
    #: The commit certificate that made this epoch current (none at epoch 0).
    certificate: pathlib.Path | None = None
    #: The parameters file this cluster file names.
    params_path: pathlib.Path | None = None

    @property
    def root(self) -> pathlib.Path:
        return self.path.parent

    @property
    def epoch(self) -> int:
        return self.params.epoch

    def sites(self) -> dict[int, SiteIdentity]:
        """Each index's site identity; :class:`ConfigError` unless every node has one."""
        missing = [n.index for n in self.nodes if n.site is None]
        if missing:
            raise ConfigError(
                f"{self.path}: nodes {missing} have no site identity (site, sign_key, "
                "box_key): every site needs one to approve or take part in a reshare"
            )
        return {n.index: n.site for n in self.nodes if n.site is not None}

    def node(self, index: int) -> NodeEntry:
        for entry in self.nodes:
            if entry.index == index:
                return entry
        raise ConfigError(f"{self.path}: no node {index}")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClusterFile:
        """Read a cluster file: ``path`` is the file, or a folder holding it, or a key
        ceremony's output folder (whose ``combiner/`` holds it)."""
        path = pathlib.Path(path).absolute()
        if path.is_dir():
            nested = path / COMBINER_FOLDER / CLUSTER_FILE
            direct = path / CLUSTER_FILE
            path = nested if not direct.exists() and nested.exists() else direct
        r = Reader(path, load_toml(path))
        check_format(r, CLUSTER_FORMAT)
        r.unknown(
            {
                "format",
                "version",
                "key_id",
                "epoch",
                "params",
                "certificate",
                "public_key",
                "ca",
                "client",
                "nodes",
                SMALL_KEY_FIELD,
            }
        )
        params = load_params(r, "params", small_key_allowed=r.get(SMALL_KEY_FIELD, bool, False))
        if r.get("key_id", str) != params.key_id:
            raise r.fail("key_id", "does not match the public parameters file")
        if r.get("epoch", int, params.epoch) != params.epoch:
            raise r.fail("epoch", f"does not match the public parameters file ({params.epoch})")
        nodes_raw = r.get("nodes", list)
        nodes = []
        for i, raw in enumerate(nodes_raw):
            if not isinstance(raw, Mapping):
                raise r.fail(f"nodes[{i}]", "must be a table")
            nr = Reader(path, raw, f"nodes[{i}].")
            nr.unknown({"index", "address", "tls_name", "site", "sign_key", "box_key"})
            index = nr.int("index", 1, params.n)
            address = nr.get("address", str)
            try:
                parse_address(address)
            except ValueError as exc:
                raise nr.fail("address", str(exc)) from None
            tls_name = nr.get("tls_name", str, f"ittc-node-{index}")
            if not IDENTITY.match(tls_name):
                raise nr.fail("tls_name", "not a valid name")
            nodes.append(NodeEntry(index, address, tls_name, _site(nr)))
        if sorted(n.index for n in nodes) != list(range(1, params.n + 1)):
            raise r.fail("nodes", f"must list nodes 1..{params.n} once each")
        named = [n.site.name for n in nodes if n.site is not None]
        if len(set(named)) != len(named):
            raise r.fail("nodes", "two nodes name the same site")
        client = r.table("client", required=False)
        client.unknown({"cert", "key"})
        return cls(
            path=path,
            params=params,
            nodes=tuple(sorted(nodes, key=lambda n: n.index)),
            ca=r.path_("ca") or path,
            public_key=r.path_("public_key", None),
            client_cert=client.path_("cert", None),
            client_key=client.path_("key", None),
            certificate=r.path_("certificate", None),
            params_path=r.path_("params"),
        )

    def rendered(
        self,
        *,
        params: PublicParams | None = None,
        nodes: Sequence[NodeEntry] | None = None,
        params_file: str | None = None,
        certificate: str | None = None,
    ) -> str:
        """The text of this cluster file with other ``params``, ``nodes``, parameters
        file or commit certificate; every path it names kept relative to its folder."""
        root = self.root

        def relative(path: pathlib.Path | None) -> str | None:
            if path is None:
                return None
            try:
                return str(path.relative_to(root))
            except ValueError:
                return str(path)

        return ClusterFile.render(
            params or self.params,
            list(self.nodes if nodes is None else nodes),
            params_file=params_file or relative(self.params_path) or "params.json",
            public_key=relative(self.public_key) or "public.pem",
            ca=relative(self.ca) or "ca.pem",
            client_cert=relative(self.client_cert),
            client_key=relative(self.client_key),
            certificate=certificate if certificate is not None else relative(self.certificate),
        )

    @staticmethod
    def render(
        params: PublicParams,
        nodes: list[NodeEntry],
        *,
        params_file: str = "params.json",
        public_key: str = "public.pem",
        ca: str = "ca.pem",
        client_cert: str | None = "client.pem",
        client_key: str | None = "client.key",
        client_name: str | None = None,
        certificate: str | None = None,
    ) -> str:
        """The text of a cluster.toml, every field explained by a comment above it."""
        doc = writer.document(
            f"ittc cluster file: key {params.short_id}, RSA-{params.bits}, epoch "
            f"{params.epoch}: any {params.k} of {params.n} nodes sign.\n"
            "For combiners (ittc sign/status/ca --cluster, ClusterClient): it names the key,\n"
            "where each node is reached and how it is recognised, and this combiner's\n"
            "identity. Relative paths are relative to this file's folder."
        )
        writer.field(doc, "format", CLUSTER_FORMAT, "What this file is, and its format version.")
        writer.field(doc, "version", VERSION)
        writer.field(
            doc, "key_id", params.key_id, "The key's id: must match the parameters file below."
        )
        writer.field(
            doc,
            "epoch",
            params.epoch,
            "The epoch: which sharing of the key the nodes hold now (0 at the key ceremony,\n"
            "one more at each reshare). Must match the parameters file below.",
        )
        writer.field(
            doc, "params", params_file, "The key's public parameters at this epoch (public)."
        )
        if params.bits < MIN_MODULUS_BITS:
            writer.field(
                doc,
                SMALL_KEY_FIELD,
                True,
                "A TEST key (below 2048 bits): it protects nothing, and loads only with this.",
            )
        if certificate is not None:
            writer.field(
                doc,
                "certificate",
                certificate,
                "The commit certificate of this epoch: the approved plan and every new\n"
                "node's acknowledgement. A combiner hands it to nodes that missed the commit.",
            )
        writer.field(
            doc, "public_key", public_key, "The RSA public key (PEM), to verify signatures."
        )
        writer.field(
            doc,
            "ca",
            ca,
            "The cluster CA's certificate: nodes are trusted only if it issued theirs.\n"
            "Its private key is not here and is never needed by a combiner.",
        )
        if client_cert and client_key:
            who = f' "{client_name}"' if client_name else ""
            client = writer.table(
                doc,
                "client",
                f"This combiner's identity{who}.\n"
                "Nodes sign only for identities in their allowed_clients. Keep the key\n"
                "private (mode 0600): whoever holds it signs as this combiner.",
            )
            writer.field(client, "cert", client_cert)
            writer.field(client, "key", client_key)
        doc.add(tomlkit.nl())
        doc.add(
            tomlkit.comment(
                "The nodes: the address a combiner dials (host:port, a DNS name or an IP),"
            )
        )
        doc.add(
            tomlkit.comment(
                "and the name the node's certificate must carry (checked, not the address);"
            )
        )
        doc.add(
            tomlkit.comment(
                "for resharing, the site holding it and that site's public keys (Ed25519 to"
            )
        )
        doc.add(tomlkit.comment("sign, X25519 to receive sealed values; from ittc site keygen)."))
        entries = tomlkit.aot()
        for n in nodes:
            entry = tomlkit.table()
            entry.add("index", n.index)
            entry.add("address", n.address)
            entry.add("tls_name", n.tls_name)
            if n.site is not None:
                entry.add("site", n.site.name)
                entry.add("sign_key", n.site.sign_key.hex())
                entry.add("box_key", n.site.box_key.hex())
            entries.append(entry)
        doc.add("nodes", entries)
        return tomlkit.dumps(doc)


def _site(r: Reader) -> SiteIdentity | None:
    """A node entry's site identity: all of site, sign_key, box_key, or none of them."""
    given = [k for k in ("site", "sign_key", "box_key") if k in r.data]
    if not given:
        return None
    if len(given) != 3:
        raise r.fail("site", "give site, sign_key and box_key together (a site identity)")
    try:
        return SiteIdentity.from_dict({k: r.get(k, str) for k in ("site", "sign_key", "box_key")})
    except ParameterError as exc:
        raise r.fail("site", str(exc)) from None
