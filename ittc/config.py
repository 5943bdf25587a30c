"""The two files people edit: the cluster file and a node's config (both TOML).

``cluster.toml`` (public, copied to every combiner) names the key, its public parameters
and where each node listens. ``node.toml`` (one per site) names what one node daemon
needs. Relative paths in either are relative to the file's own folder, so a folder can be
moved or copied to a site as a whole.

Reading checks everything and raises :class:`~ittc.errors.ConfigError` naming the file
and the field; nothing secret is ever written into these files.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ittc.errors import ConfigError, ParameterError
from ittc.scheme.params import PublicParams

__all__ = ["ClusterFile", "Limits", "NodeConfig", "NodeEntry", "dump_toml", "parse_address"]

CLUSTER_FORMAT = "ittc.cluster"
NODE_FORMAT = "ittc.node"
VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# -- a small TOML writer (tomllib only reads) ----------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | pathlib.Path):
        text = str(value)
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: Mapping[str, Any], header: str = "") -> str:
    """TOML for nested mappings of scalars, lists, tables and arrays of tables."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if lines:
        lines.append("")

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_tables(v)}
        for key, value in scalars.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in table.items():
            name = f"{prefix}{key}"
            if _is_table(value):
                lines.append("")
                lines.append(f"[{name}]")
                emit(value, name + ".")
            elif _is_tables(value):
                for item in value:
                    lines.append("")
                    lines.append(f"[[{name}]]")
                    emit(item, name + ".")

    emit(data, "")
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_tables(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(
        isinstance(v, Mapping) for v in value)


# -- reading helpers -------------------------------------------------------------------

class _Reader:
    """Typed access to a parsed TOML document, with errors that name file and field."""

    def __init__(self, path: pathlib.Path, data: Mapping[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {problem}")

    def table(self, key: str, required: bool = True) -> _Reader:
        value = self.data.get(key)
        if value is None and not required:
            return _Reader(self.path, {}, f"{self.prefix}{key}.")
        if not isinstance(value, Mapping):
            raise self.fail(key, "missing table" if value is None else "must be a table")
        return _Reader(self.path, value, f"{self.prefix}{key}.")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(key, f"must be {getattr(kind, '__name__', kind)}")
        if not isinstance(value, kind):
            raise self.fail(key, f"must be {getattr(kind, '__name__', kind)}")
        return value

    def int(self, key: str, lo: int, hi: int, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if not lo <= value <= hi:
            raise self.fail(key, f"must be in {lo}..{hi}")
        return int(value)

    def path_(self, key: str, default: Any = ...) -> pathlib.Path | None:
        value = self.get(key, str, default)
        if value is None:
            return None
        p = pathlib.Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return tuple(value)

    def unknown(self, allowed: set[str]) -> None:
        extra = set(self.data) - allowed
        if extra:
            raise self.fail(sorted(extra)[0], "unknown field (misspelt?)")


def _load_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _check_format(reader: _Reader, expected: str) -> None:
    if reader.get("format", str, None) != expected:
        raise ConfigError(f"{reader.path}: not an {expected} file (format = \"{expected}\")")
    version = reader.get("version", int, None)
    if version != VERSION:
        raise ConfigError(f"{reader.path}: unsupported version {version!r} (this ittc reads "
                          f"version {VERSION})")


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), checked."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"address {text!r} is not host:port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        ipaddress.IPv6Address(host[1:-1])
    return host, port


def _load_params(reader: _Reader, key: str) -> PublicParams:
    path = reader.path_(key)
    assert path is not None
    try:
        return PublicParams.from_json(path.read_bytes())
    except FileNotFoundError:
        raise reader.fail(key, f"{path}: no such file") from None
    except ParameterError as exc:
        raise reader.fail(key, f"{path}: {exc}") from None


# -- the cluster file ------------------------------------------------------------------

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
        r = _Reader(path, _load_toml(path))
        _check_format(r, CLUSTER_FORMAT)
        r.unknown({"format", "version", "key_id", "params", "public_key", "ca", "client",
                   "nodes"})
        params = _load_params(r, "params")
        if r.get("key_id", str) != params.key_id:
            raise r.fail("key_id", "does not match the public parameters file")
        nodes_raw = r.get("nodes", list)
        nodes = []
        for i, raw in enumerate(nodes_raw):
            if not isinstance(raw, Mapping):
                raise r.fail(f"nodes[{i}]", "must be a table")
            nr = _Reader(path, raw, f"nodes[{i}].")
            nr.unknown({"index", "address", "tls_name"})
            index = nr.int("index", 1, params.n)
            address = nr.get("address", str)
            try:
                parse_address(address)
            except ValueError as exc:
                raise nr.fail("address", str(exc)) from None
            tls_name = nr.get("tls_name", str, f"ittc-node-{index}")
            if not _NAME.match(tls_name):
                raise nr.fail("tls_name", "not a valid name")
            nodes.append(NodeEntry(index, address, tls_name))
        if sorted(n.index for n in nodes) != list(range(1, params.n + 1)):
            raise r.fail("nodes", f"must list nodes 1..{params.n} once each")
        client = r.table("client", required=False)
        client.unknown({"cert", "key"})
        return cls(path=path, params=params, nodes=tuple(sorted(nodes, key=lambda n: n.index)),
                   ca=r.path_("ca") or path, public_key=r.path_("public_key", None),
                   client_cert=client.path_("cert", None), client_key=client.path_("key", None))

    @staticmethod
    def render(params: PublicParams, nodes: list[NodeEntry], *, params_file: str = "params.json",
               public_key: str = "public.pem", ca: str = "ca/ca.pem",
               client_cert: str | None = "client/client.pem",
               client_key: str | None = "client/client.key") -> str:
        doc: dict[str, Any] = {
            "format": CLUSTER_FORMAT, "version": VERSION, "key_id": params.key_id,
            "params": params_file, "public_key": public_key, "ca": ca,
        }
        if client_cert and client_key:
            doc["client"] = {"cert": client_cert, "key": client_key}
        doc["nodes"] = [{"index": n.index, "address": n.address, "tls_name": n.tls_name}
                        for n in nodes]
        header = (f"ittc cluster file: key {params.short_id}, {params.bits}-bit, "
                  f"k={params.k} of n={params.n}.\nPublic: copy it to every combiner. "
                  "Paths are relative to this file.")
        return dump_toml(doc, header)


# -- a node's config -------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    max_batch: int = 64
    max_message_bytes: int = 1 << 20
    #: A request's timestamp may differ from the node's clock by at most this much.
    freshness_seconds: float = 120.0
    #: Longest time the node spends on one request.
    max_deadline_seconds: float = 30.0
    #: Requests allowed to wait for compute at once; more are refused (RESOURCE_EXHAUSTED).
    max_pending_items: int = 4096


@dataclass(frozen=True)
class NodeConfig:
    path: pathlib.Path
    index: int
    listen: str
    params_file: pathlib.Path
    share_file: pathlib.Path
    tls_cert: pathlib.Path
    tls_key: pathlib.Path
    tls_ca: pathlib.Path
    allowed_clients: tuple[str, ...]
    audit_log: pathlib.Path
    passphrase_file: pathlib.Path | None = None
    passphrase_env: str | None = None
    #: Worker processes for exponentiations; 0 = threads in the daemon process.
    workers: int = 0
    #: Compute threads when ``workers == 0`` (0 = one per core).
    threads: int = 0
    #: Precomputed proof nonces to keep ready (``r``, ``v^r``).
    proof_nonces: int = 16
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeConfig:
        path = pathlib.Path(path).absolute()
        r = _Reader(path, _load_toml(path))
        _check_format(r, NODE_FORMAT)
        r.unknown({"format", "version", "node", "key", "tls", "access", "audit", "limits"})
        node, key, tls = r.table("node"), r.table("key"), r.table("tls")
        access, audit = r.table("access"), r.table("audit")
        limits = r.table("limits", required=False)
        node.unknown({"index", "listen", "workers", "threads", "proof_nonces"})
        key.unknown({"params", "share", "passphrase_file", "passphrase_env"})
        tls.unknown({"cert", "key", "ca"})
        access.unknown({"allowed_clients"})
        audit.unknown({"path"})
        limits.unknown({"max_batch", "max_message_bytes", "freshness_seconds",
                        "max_deadline_seconds", "max_pending_items"})
        listen = node.get("listen", str)
        try:
            parse_address(listen)
        except ValueError as exc:
            raise node.fail("listen", str(exc)) from None
        clients = access.strings("allowed_clients")
        for name in clients:
            if not _NAME.match(name):
                raise access.fail("allowed_clients", f"{name!r} is not a valid identity")
        passphrase_file = key.path_("passphrase_file", None)
        passphrase_env = key.get("passphrase_env", str, None)
        if passphrase_file is not None and passphrase_env is not None:
            raise key.fail("passphrase_file", "give passphrase_file or passphrase_env, not both")
        defaults = Limits()
        lim = Limits(
            max_batch=limits.int("max_batch", 1, 4096, defaults.max_batch),
            max_message_bytes=limits.int("max_message_bytes", 4096, 64 << 20,
                                         defaults.max_message_bytes),
            freshness_seconds=float(limits.get("freshness_seconds", (int, float),
                                               defaults.freshness_seconds)),
            max_deadline_seconds=float(limits.get("max_deadline_seconds", (int, float),
                                                  defaults.max_deadline_seconds)),
            max_pending_items=limits.int("max_pending_items", 1, 1 << 20,
                                         defaults.max_pending_items),
        )
        if not 0 < lim.freshness_seconds <= 86400:
            raise limits.fail("freshness_seconds", "must be in (0, 86400]")
        if not 0 < lim.max_deadline_seconds <= 3600:
            raise limits.fail("max_deadline_seconds", "must be in (0, 3600]")

        def required_path(reader: _Reader, k: str) -> pathlib.Path:
            p = reader.path_(k)
            assert p is not None
            return p

        return cls(
            path=path, index=node.int("index", 1, 64), listen=listen,
            params_file=required_path(key, "params"), share_file=required_path(key, "share"),
            tls_cert=required_path(tls, "cert"), tls_key=required_path(tls, "key"),
            tls_ca=required_path(tls, "ca"), allowed_clients=clients,
            audit_log=required_path(audit, "path"), passphrase_file=passphrase_file,
            passphrase_env=passphrase_env, workers=node.int("workers", 0, 256, 0),
            threads=node.int("threads", 0, 1024, 0),
            proof_nonces=node.int("proof_nonces", 0, 100000, 16), limits=lim)

    def load_params(self) -> PublicParams:
        r = _Reader(self.path, {"params": str(self.params_file)})
        params = _load_params(r, "params")
        if self.index > params.n:
            raise ConfigError(f"{self.path}: node.index {self.index} > n = {params.n}")
        return params

    @staticmethod
    def render(index: int, listen: str, *, allowed_clients: list[str],
               passphrase_file: str | None = None, passphrase_env: str | None = None,
               params: str = "params.json", share: str = "share.enc",
               cert: str = "tls.pem", key: str = "tls.key", ca: str = "ca.pem",
               audit: str = "audit.log", workers: int = 0, limits: Limits | None = None) -> str:
        lim = limits or Limits()
        key_table: dict[str, Any] = {"params": params, "share": share}
        if passphrase_file is not None:
            key_table["passphrase_file"] = passphrase_file
        if passphrase_env is not None:
            key_table["passphrase_env"] = passphrase_env
        doc = {
            "format": NODE_FORMAT, "version": VERSION,
            "node": {"index": index, "listen": listen, "workers": workers},
            "key": key_table,
            "tls": {"cert": cert, "key": key, "ca": ca},
            "access": {"allowed_clients": list(allowed_clients)},
            "audit": {"path": audit},
            "limits": {"max_batch": lim.max_batch, "max_message_bytes": lim.max_message_bytes,
                       "freshness_seconds": lim.freshness_seconds,
                       "max_deadline_seconds": lim.max_deadline_seconds,
                       "max_pending_items": lim.max_pending_items},
        }
        header = (f"ittc node {index}: run with `ittc node --config node.toml`.\n"
                  "Without passphrase_file or passphrase_env the node asks on its terminal.\n"
                  "Paths are relative to this file.")
        return dump_toml(doc, header)
