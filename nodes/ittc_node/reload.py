"""Reloading a running node (SIGHUP): its TLS identity and its allowed clients.

What a reload changes, from the next handshake or call on: the node's certificate and
key, the CA bundle its clients must come from (``[tls]``, the files and their contents),
and ``[access] allowed_clients``. What it keeps: the share (never re-read, never
re-decrypted: the passphrase may be gone from the host by now), the audit log and its
chain, the replay memory, connections already open, and every other setting. A changed
setting that needs a restart (``listen``, the share, the limits...) is named in the log
and in the audit line, and ignored.

A reload is all or nothing: the config is read again and the new identity checked as at
startup (key mode, key matches certificate, issued by a CA of the bundle, valid now); if
anything is wrong the node logs why, keeps serving exactly as before, and the audit line
says ``refused``. Either way one ``reload`` line goes into the audit log, naming the
certificate (serial, expiry, fingerprint), the CAs and the allowed clients in force.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ittc.config import NodeConfig
from ittc.errors import AuditLogError, IttcError
from ittc.wire.tls import ReloadableServerCredentials
from ittc_node.audit import AuditLog, utc_iso
from ittc_node.identity import TlsIdentity, load_identity
from ittc_node.sdnotify import Notifier
from ittc_node.service import SignerService

__all__ = ["RELOADED", "Reloader", "needs_restart"]

log = logging.getLogger("ittc_node.reload")

#: The config fields a reload applies (``NodeConfig`` attribute: its name in node.toml).
RELOADED = {
    "tls_cert": "tls.cert",
    "tls_key": "tls.key",
    "tls_ca": "tls.ca",
    "allowed_clients": "access.allowed_clients",
}

#: How the other fields are called in node.toml (for "needs a restart" messages).
_TOML_NAMES = {
    "index": "node.index",
    "listen": "node.listen",
    "params_file": "key.params",
    "share_file": "key.share",
    "audit_log": "audit.path",
    "passphrase_file": "key.passphrase_file",
    "passphrase_env": "key.passphrase_env",
    "passphrase_credential": "key.passphrase_credential",
    "workers": "node.workers",
    "threads": "node.threads",
    "proof_nonces": "node.proof_nonces",
    "backend": "node.backend",
    "limits": "limits",
    "insecure_small_key_for_tests": "key.insecure_small_key_for_tests",
    "site_key": "reshare.site_key",
    "state_dir": "reshare.state_dir",
    "sites": "reshare.sites",
    "metrics_listen": "monitoring.metrics_listen",
    "health_listen": "monitoring.health_listen",
    "auto_approve_refresh_days": "reshare.auto_approve_refresh_days",
}


def needs_restart(old: NodeConfig, new: NodeConfig) -> list[str]:
    """The settings (as named in node.toml) that differ and that only a restart applies."""
    changed = []
    for f in dataclasses.fields(NodeConfig):
        if f.name == "path" or f.name in RELOADED:
            continue
        if getattr(old, f.name) != getattr(new, f.name):
            changed.append(_TOML_NAMES.get(f.name, f.name))
    return changed


@dataclass
class Reloader:
    """Applies a reload to a serving node. ``on_identity`` is awaited with the new
    identity once it is in force (the daemon watches its expiry from then on)."""

    config: NodeConfig
    identity: TlsIdentity
    credentials: ReloadableServerCredentials
    service: SignerService
    audit: AuditLog
    clock: Callable[[], float]
    on_identity: Callable[[TlsIdentity], Awaitable[None]]
    notifier: Notifier

    async def reload(self) -> bool:
        """Read the config again and apply what can be applied; True if it was."""
        self.notifier.reloading()
        index = self.config.index
        log.info("node %d reloading %s", index, self.config.path)
        try:
            config = NodeConfig.load(self.config.path)
            if config.index != index:
                raise IttcError(f"{config.path}: node.index changed to {config.index}")
            identity, warnings = load_identity(config, self.clock())
        except (IttcError, OSError) as exc:
            reason = str(exc) if isinstance(exc, IttcError) else f"{exc.strerror or exc}"
            log.error(
                "reload refused, nothing changed (still serving the previous certificate "
                "and clients): %s",
                reason,
            )
            await self._audit({"outcome": "refused", "reason": reason})
            self.notifier.ready(f"{self._status()}; reload refused (see the log)")
            return False
        for warning in warnings:
            log.warning("%s", warning)
        ignored = needs_restart(self.config, config)
        before = self.service.allowed_clients
        self.credentials.replace(identity.key_pem, identity.cert_pem, identity.ca_pem)
        self.service.allow(config.allowed_clients)
        # Keep the settings that need a restart as they were; take the reloaded ones.
        self.config = dataclasses.replace(
            self.config, **{name: getattr(config, name) for name in RELOADED}
        )
        self.identity = identity
        await self.on_identity(identity)
        after = self.service.allowed_clients
        record: dict[str, Any] = {
            "outcome": "applied",
            "reason": "",
            "tls": identity.describe(),
            "allowed_clients": sorted(after),
            "added": sorted(after - before),
            "removed": sorted(before - after),
        }
        if ignored:
            record["needs_restart"] = ignored
            log.warning(
                "reload: %s changed but only a restart applies %s; ignored",
                ", ".join(ignored),
                "it" if len(ignored) == 1 else "them",
            )
        await self._audit(record)
        log.info(
            "node %d reloaded: certificate serial %s (expires %s), %d CA(s), %d allowed "
            "client(s)%s%s",
            index,
            record["tls"]["cert_serial"],
            record["tls"]["cert_not_after"],
            len(identity.cas),
            len(after),
            f", added {', '.join(record['added'])}" if record["added"] else "",
            f", removed {', '.join(record['removed'])}" if record["removed"] else "",
        )
        self.notifier.ready(self._status())
        return True

    def _status(self) -> str:
        return "serving" if self.service.serving else "NOT serving (see the log)"

    async def _audit(self, fields: dict[str, Any]) -> None:
        record = {"time": utc_iso(self.clock()), "type": "reload", "node": self.config.index}
        record.update(fields)
        try:
            await self.audit.append(record)
        except AuditLogError:
            pass  # logged by the audit log; health already reflects it
