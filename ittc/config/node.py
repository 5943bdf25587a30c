"""``node.toml``: what one node daemon needs (one per site); relative paths are relative
to the file, so a site's folder can be moved as a whole.

The passphrase that opens the share file comes, in this order, from the systemd
credential named by ``passphrase_credential`` (when systemd passed the node credentials:
``$CREDENTIALS_DIRECTORY`` is set), from ``passphrase_file``, from the environment
variable ``passphrase_env``, or from the terminal.
"""

from __future__ import annotations

import os
import pathlib
import re
from dataclasses import dataclass, field

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
from ittc.errors import ConfigError
from ittc.scheme.ct import BACKENDS
from ittc.scheme.params import PublicParams

__all__ = ["NODE_FORMAT", "Limits", "NodeConfig", "render_node_toml"]

NODE_FORMAT = "ittc.node"
#: What a systemd credential name may be (it becomes a file name).
_CREDENTIAL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


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
    #: Name of the systemd credential holding the passphrase (LoadCredential=...).
    passphrase_credential: str | None = None
    #: Worker processes for exponentiations; 0 = threads in the daemon process.
    workers: int = 0
    #: Compute threads when ``workers == 0`` (0 = one per core).
    threads: int = 0
    #: Precomputed proof nonces to keep ready (``r``, ``v^r``).
    proof_nonces: int = 16
    #: Exponentiation backend (:data:`ittc.scheme.ct.BACKENDS`): auto, openssl or gmpy2.
    backend: str = "auto"
    limits: Limits = field(default_factory=Limits)
    #: The key may be below 2048 bits: a test key (the ceremony writes this only for one).
    insecure_small_key_for_tests: bool = False
    #: Resharing (``[reshare]``; all three or none): the site's key file, encrypted under
    #: the same passphrase as the share; the writable folder of the node's epochs (shares,
    #: certificates, runs); the cluster file of the epoch this config starts from, whose
    #: site identities are the ones that may approve the first reshare.
    site_key: pathlib.Path | None = None
    state_dir: pathlib.Path | None = None
    sites: pathlib.Path | None = None
    #: Plain HTTP for monitoring (``[monitoring]``, each off unless set): Prometheus
    #: metrics at ``/metrics``, and health at ``/healthz`` and ``/livez``, without TLS.
    metrics_listen: str | None = None
    health_listen: str | None = None
    #: Approve a plan that only refreshes the current epoch, when asked (a scheduled
    #: refresh), at most once per this many days; 0: never (every plan by hand).
    auto_approve_refresh_days: int = 0

    @property
    def reshares(self) -> bool:
        """Whether this node takes part in reshares (``[reshare]`` is configured)."""
        return self.site_key is not None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeConfig:
        path = pathlib.Path(path).absolute()
        r = Reader(path, load_toml(path))
        check_format(r, NODE_FORMAT)
        r.unknown(
            {
                "format",
                "version",
                "node",
                "key",
                "tls",
                "access",
                "audit",
                "limits",
                "reshare",
                "monitoring",
            }
        )
        node, key, tls = r.table("node"), r.table("key"), r.table("tls")
        access, audit = r.table("access"), r.table("audit")
        limits = r.table("limits", required=False)
        reshare = r.table("reshare", required=False)
        reshare.unknown({"site_key", "state_dir", "sites", "auto_approve_refresh_days"})
        reshare_paths = {k: reshare.path_(k, None) for k in ("site_key", "state_dir", "sites")}
        if any(reshare_paths.values()) and not all(reshare_paths.values()):
            raise reshare.fail(
                "site_key", "give site_key, state_dir and sites together (or none of them)"
            )
        node.unknown({"index", "listen", "workers", "threads", "proof_nonces", "backend"})
        key.unknown(
            {
                "params",
                "share",
                "passphrase_file",
                "passphrase_env",
                "passphrase_credential",
                SMALL_KEY_FIELD,
            }
        )
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
        monitoring = r.table("monitoring", required=False)
        monitoring.unknown({"metrics_listen", "health_listen"})
        watch = {k: monitoring.get(k, str, None) for k in ("metrics_listen", "health_listen")}
        for name, address in watch.items():
            if address is None:
                continue
            try:
                parse_address(address)
            except ValueError as exc:
                raise monitoring.fail(name, str(exc)) from None
            if address == listen:
                raise monitoring.fail(name, "is the node's own listen address (mutual TLS)")
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
        credential = key.get("passphrase_credential", str, None)
        if credential is not None and not _CREDENTIAL.match(credential):
            raise key.fail("passphrase_credential", f"{credential!r} is not a credential name")
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
            passphrase_credential=credential,
            workers=node.int("workers", 0, 256, 0),
            threads=node.int("threads", 0, 1024, 0),
            proof_nonces=node.int("proof_nonces", 0, 100000, 16),
            backend=backend,
            limits=lim,
            insecure_small_key_for_tests=key.get(SMALL_KEY_FIELD, bool, False),
            **reshare_paths,
            metrics_listen=watch["metrics_listen"],
            health_listen=watch["health_listen"],
            auto_approve_refresh_days=reshare.int("auto_approve_refresh_days", 0, 3650, 0),
        )

    def load_params(self) -> PublicParams:
        r = Reader(self.path, {"params": str(self.params_file)})
        params = load_params(r, "params", small_key_allowed=self.insecure_small_key_for_tests)
        if self.index > params.n:
            raise ConfigError(f"{self.path}: node.index {self.index} > n = {params.n}")
        return params


def render_node_toml(
    index: int,
    listen: str,
    *,
    allowed_clients: list[str],
    advertised: str | None = None,
    passphrase_file: str | None = None,
    passphrase_env: str | None = None,
    passphrase_credential: str | None = None,
    params: str = "params.json",
    share: str = "share.enc",
    cert: str = "tls.pem",
    key: str = "tls.key",
    ca: str = "ca.pem",
    audit: str = "audit.log",
    workers: int = 0,
    limits: Limits | None = None,
    small_key: bool = False,
    metrics_listen: str | None = None,
    health_listen: str | None = None,
) -> str:
    """The text of a node.toml, every field explained by a comment above it.

    ``advertised`` is the address combiners dial (from the cluster file); it is only
    mentioned in a comment: the node itself needs only where to ``listen``.
    """
    lim = limits or Limits()
    doc = writer.document(
        f"ittc node {index}: one share of the cluster's signing key, served to the\n"
        "combiners over mutual TLS. Start it with\n"
        "    ittc node --config node.toml      (or: python -m ittc_node --config node.toml)\n"
        "Relative paths are relative to this file's folder. A misspelt field is an error.\n"
        "The operator's guide (nodes/README.md in the ittc source) explains every field."
    )
    writer.field(doc, "format", NODE_FORMAT, "What this file is, and its format version.")
    writer.field(doc, "version", VERSION)

    node = writer.table(doc, "node", "This node.")
    writer.field(
        node, "index", index, "Which share this node holds (1..n): must match the share file."
    )
    reach = (
        f"Combiners dial this node at {advertised} (cluster.toml) and check its\n"
        f"certificate's name; the node binds here. They may differ (NAT, a DNS name).\n"
        if advertised is not None and advertised != listen
        else "Combiners dial the address in cluster.toml; the node binds here.\n"
    )
    writer.field(
        node,
        "listen",
        listen,
        "Address and port to listen on (host:port, [v6]:port; 0.0.0.0 = every interface).\n"
        + reach
        + "Mutual TLS only: there is no plaintext port.",
    )
    writer.field(
        node,
        "workers",
        workers,
        "0: compute in threads of the daemon; N: in N worker processes.",
    )
    node.add(tomlkit.comment("Also: threads, proof_nonces, backend (see nodes/README.md)."))

    k = writer.table(doc, "key", "The key share.")
    writer.field(k, "params", params, "The key's public parameters (public).")
    writer.field(
        k,
        "share",
        share,
        "This node's encrypted share (mode 0600; refused if others can read it).",
    )
    if small_key:
        writer.field(
            k,
            SMALL_KEY_FIELD,
            True,
            "A TEST key (below 2048 bits): it protects nothing, and loads only with this.",
        )
    about_source = (
        "The passphrase that opens the share file. Never on the command line.\n"
        "Under systemd with LoadCredential=/LoadCredentialEncrypted= (see\n"
        "ittc-node@.service), the credential named here is used; without systemd\n"
        "credentials, the file or environment variable below (else the terminal)."
    )
    first = True
    for name, value in (
        ("passphrase_credential", passphrase_credential),
        ("passphrase_file", passphrase_file),
        ("passphrase_env", passphrase_env),
    ):
        if value is not None:
            writer.field(k, name, value, about_source if first else "")
            first = False
    if first:
        k.add(tomlkit.comment(about_source.splitlines()[0]))
        k.add(tomlkit.comment("None is set: the node asks for it on its terminal."))

    t = writer.table(doc, "tls", "Mutual TLS.")
    writer.field(t, "cert", cert, f"This node's certificate (CN ittc-node-{index}).")
    writer.field(t, "key", key, "Its private key (mode 0600).")
    writer.field(t, "ca", ca, "The cluster CA: only clients it issued get past the handshake.")

    a = writer.table(doc, "access", "Who may sign.")
    writer.field(
        a,
        "allowed_clients",
        list(allowed_clients),
        "Client identities (certificate common names) allowed to call Sign and GetInfo.\n"
        "Health needs only a certificate from the cluster CA.",
    )

    au = writer.table(doc, "audit", "The audit log.")
    writer.field(
        au,
        "path",
        audit,
        "One fsynced, hash-chained line per request, signed or refused. Must be\n"
        "writable and must survive restarts: keep it out of the read-only config.",
    )

    li = writer.table(doc, "limits", "Bounds on what one caller can make this node do.")
    writer.field(li, "max_batch", lim.max_batch, "Items in one Sign request.")
    writer.field(
        li, "max_message_bytes", lim.max_message_bytes, "Largest request or answer, in bytes."
    )
    writer.field(
        li,
        "freshness_seconds",
        lim.freshness_seconds,
        "A request's timestamp may differ from this node's clock by this much (keep NTP on).",
    )
    writer.field(
        li,
        "max_deadline_seconds",
        lim.max_deadline_seconds,
        "Longest time spent on one request.",
    )
    writer.field(
        li,
        "max_pending_items",
        lim.max_pending_items,
        "Items waiting for compute before the node answers RESOURCE_EXHAUSTED.",
    )

    mo = writer.table(
        doc,
        "monitoring",
        "Plain HTTP (no TLS) for monitoring, each off unless set (nodes/README.md).",
    )
    about_metrics = (
        "Prometheus metrics at /metrics (and health). Bind it to loopback or a\nmanagement network."
    )
    about_health = (
        "Health without a client certificate, for a load balancer or a kubelet:\n"
        "/healthz answers 200 SERVING or 503 NOT_SERVING, /livez 200 while alive."
    )
    for name, value, about, example in (
        ("metrics_listen", metrics_listen, about_metrics, "127.0.0.1:9464"),
        ("health_listen", health_listen, about_health, "0.0.0.0:8080"),
    ):
        if value is not None:
            writer.field(mo, name, value, about)
        else:
            for line in about.splitlines():
                mo.add(tomlkit.comment(line))
            mo.add(tomlkit.comment(f'{name} = "{example}"'))
    return tomlkit.dumps(doc)
