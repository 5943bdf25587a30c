"""``cluster.toml``: public, copied to every combiner. It names the key, its public
parameters and where each node listens; relative paths are relative to the file."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ittc.config.reader import (
    IDENTITY,
    VERSION,
    Reader,
    check_format,
    load_params,
    load_toml,
    parse_address,
)
from ittc.config.writer import dump_toml
from ittc.errors import ConfigError
from ittc.scheme.params import PublicParams

__all__ = ["CLUSTER_FORMAT", "ClusterFile", "NodeEntry"]

CLUSTER_FORMAT = "ittc.cluster"


@dataclass(frozen=True)
class NodeEntry:
    index: int
    address: str
    #: The name the node's TLS certificate is checked against.
    tls_name: str


@dataclass(frozen=True)
class ClusterFile:
    path: pathlib.Path
    params: PublicParams
    nodes: tuple[NodeEntry, ...]
    ca: pathlib.Path
    public_key: pathlib.Path | None = None
    client_cert: pathlib.Path | None = None
    client_key: pathlib.Path | None = None

    @property
    def root(self) -> pathlib.Path:
        return self.path.parent

    def node(self, index: int) -> NodeEntry:
        for entry in self.nodes:
            if entry.index == index:
                return entry
        raise ConfigError(f"{self.path}: no node {index}")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClusterFile:
        """Read ``DIR/cluster.toml`` (``path`` may be the folder or the file)."""
        path = pathlib.Path(path).absolute()
        if path.is_dir():
            path = path / "cluster.toml"
        r = Reader(path, load_toml(path))
        check_format(r, CLUSTER_FORMAT)
        r.unknown({"format", "version", "key_id", "params", "public_key", "ca", "client", "nodes"})
        params = load_params(r, "params")
        if r.get("key_id", str) != params.key_id:
            raise r.fail("key_id", "does not match the public parameters file")
        nodes_raw = r.get("nodes", list)
        nodes = []
        for i, raw in enumerate(nodes_raw):
            if not isinstance(raw, Mapping):
                raise r.fail(f"nodes[{i}]", "must be a table")
            nr = Reader(path, raw, f"nodes[{i}].")
            nr.unknown({"index", "address", "tls_name"})
            index = nr.int("index", 1, params.n)
            address = nr.get("address", str)
            try:
                parse_address(address)
            except ValueError as exc:
                raise nr.fail("address", str(exc)) from None
            tls_name = nr.get("tls_name", str, f"ittc-node-{index}")
            if not IDENTITY.match(tls_name):
                raise nr.fail("tls_name", "not a valid name")
            nodes.append(NodeEntry(index, address, tls_name))
        if sorted(n.index for n in nodes) != list(range(1, params.n + 1)):
            raise r.fail("nodes", f"must list nodes 1..{params.n} once each")
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
        )

    @staticmethod
    def render(
        params: PublicParams,
        nodes: list[NodeEntry],
        *,
        params_file: str = "params.json",
        public_key: str = "public.pem",
        ca: str = "ca/ca.pem",
        client_cert: str | None = "client/client.pem",
        client_key: str | None = "client/client.key",
    ) -> str:
        doc: dict[str, Any] = {
            "format": CLUSTER_FORMAT,
            "version": VERSION,
            "key_id": params.key_id,
            "params": params_file,
            "public_key": public_key,
            "ca": ca,
        }
        if client_cert and client_key:
            doc["client"] = {"cert": client_cert, "key": client_key}
        doc["nodes"] = [
            {"index": n.index, "address": n.address, "tls_name": n.tls_name} for n in nodes
        ]
        header = (
            f"ittc cluster file: key {params.short_id}, {params.bits}-bit, "
            f"k={params.k} of n={params.n}.\nPublic: copy it to every combiner. "
            "Paths are relative to this file."
        )
        return dump_toml(doc, header)
