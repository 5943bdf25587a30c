"""``node.toml``: what one node daemon needs (one per site); relative paths are relative
to the file, so a site's folder can be moved as a whole."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
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
from ittc.scheme.ct import BACKENDS
from ittc.scheme.params import PublicParams

__all__ = ["NODE_FORMAT", "Limits", "NodeConfig"]

NODE_FORMAT = "ittc.node"


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
    #: Exponentiation backend (:data:`ittc.scheme.ct.BACKENDS`): auto, openssl or gmpy2.
    backend: str = "auto"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeConfig:
        path = pathlib.Path(path).absolute()
        r = Reader(path, load_toml(path))
        check_format(r, NODE_FORMAT)
        r.unknown({"format", "version", "node", "key", "tls", "access", "audit", "limits"})
        node, key, tls = r.table("node"), r.table("key"), r.table("tls")
        access, audit = r.table("access"), r.table("audit")
        limits = r.table("limits", required=False)
        node.unknown({"index", "listen", "workers", "threads", "proof_nonces", "backend"})
        key.unknown({"params", "share", "passphrase_file", "passphrase_env"})
        tls.unknown({"cert", "key", "ca"})
        access.unknown({"allowed_clients"})
        audit.unknown({"path"})
        limits.unknown(
            {
                "max_batch",
                "max_message_bytes",
                "freshness_seconds",
                "max_deadline_seconds",
                "max_pending_items",
            }
        )
        listen = node.get("listen", str)
        try:
            parse_address(listen)
        except ValueError as exc:
            raise node.fail("listen", str(exc)) from None
        backend = node.get("backend", str, "auto")
        if backend not in BACKENDS:
            raise node.fail("backend", f"{backend!r} is not one of " + ", ".join(BACKENDS))
        clients = access.strings("allowed_clients")
        if not clients:
            raise access.fail(
                "allowed_clients",
                "is empty: the node would serve nobody; list the common names of the client "
                "certificates allowed to sign",
            )
        for name in clients:
            if not IDENTITY.match(name):
                raise access.fail("allowed_clients", f"{name!r} is not a valid identity")
        passphrase_file = key.path_("passphrase_file", None)
        passphrase_env = key.get("passphrase_env", str, None)
        if passphrase_file is not None and passphrase_env is not None:
            raise key.fail("passphrase_file", "give passphrase_file or passphrase_env, not both")
        defaults = Limits()
        lim = Limits(
            max_batch=limits.int("max_batch", 1, 4096, defaults.max_batch),
            max_message_bytes=limits.int(
                "max_message_bytes", 4096, 64 << 20, defaults.max_message_bytes
            ),
            freshness_seconds=float(
                limits.get("freshness_seconds", (int, float), defaults.freshness_seconds)
            ),
            max_deadline_seconds=float(
                limits.get("max_deadline_seconds", (int, float), defaults.max_deadline_seconds)
            ),
            max_pending_items=limits.int(
                "max_pending_items", 1, 1 << 20, defaults.max_pending_items
            ),
        )
        if not 0 < lim.freshness_seconds <= 86400:
            raise limits.fail("freshness_seconds", "must be in (0, 86400]")
        if not 0 < lim.max_deadline_seconds <= 3600:
            raise limits.fail("max_deadline_seconds", "must be in (0, 3600]")

        def required_path(reader: Reader, k: str) -> pathlib.Path:
            p = reader.path_(k)
            assert p is not None
            return p

        return cls(
            path=path,
            index=node.int("index", 1, 64),
            listen=listen,
            params_file=required_path(key, "params"),
            share_file=required_path(key, "share"),
            tls_cert=required_path(tls, "cert"),
            tls_key=required_path(tls, "key"),
            tls_ca=required_path(tls, "ca"),
            allowed_clients=clients,
            audit_log=required_path(audit, "path"),
            passphrase_file=passphrase_file,
            passphrase_env=passphrase_env,
            workers=node.int("workers", 0, 256, 0),
            threads=node.int("threads", 0, 1024, 0),
            proof_nonces=node.int("proof_nonces", 0, 100000, 16),
            backend=backend,
            limits=lim,
        )

    def load_params(self) -> PublicParams:
        r = Reader(self.path, {"params": str(self.params_file)})
        params = load_params(r, "params")
        if self.index > params.n:
            raise ConfigError(f"{self.path}: node.index {self.index} > n = {params.n}")
        return params

    @staticmethod
    def render(
        index: int,
        listen: str,
        *,
        allowed_clients: list[str],
        passphrase_file: str | None = None,
        passphrase_env: str | None = None,
        params: str = "params.json",
        share: str = "share.enc",
        cert: str = "tls.pem",
        key: str = "tls.key",
        ca: str = "ca.pem",
        audit: str = "audit.log",
        workers: int = 0,
        limits: Limits | None = None,
    ) -> str:
        lim = limits or Limits()
        key_table: dict[str, Any] = {"params": params, "share": share}
        if passphrase_file is not None:
            key_table["passphrase_file"] = passphrase_file
        if passphrase_env is not None:
            key_table["passphrase_env"] = passphrase_env
        doc = {
            "format": NODE_FORMAT,
            "version": VERSION,
            "node": {"index": index, "listen": listen, "workers": workers},
            "key": key_table,
            "tls": {"cert": cert, "key": key, "ca": ca},
            "access": {"allowed_clients": list(allowed_clients)},
            "audit": {"path": audit},
            "limits": {
                "max_batch": lim.max_batch,
                "max_message_bytes": lim.max_message_bytes,
                "freshness_seconds": lim.freshness_seconds,
                "max_deadline_seconds": lim.max_deadline_seconds,
                "max_pending_items": lim.max_pending_items,
            },
        }
        header = (
            f"ittc node {index}: run with `ittc node --config node.toml`.\n"
            "Without passphrase_file or passphrase_env the node asks on its terminal.\n"
            "Paths are relative to this file."
        )
        return dump_toml(doc, header)
